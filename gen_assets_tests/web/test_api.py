"""The JSON API beside the pages: curated samples, ratings into the landing zone, status; errors that say
what is wrong; images by sample id."""

import json
import time

import pytest

from gen_assets.feedback.landing import validate_file
from gen_assets_tests.web.conftest import (
    CURATED_PER_CATEGORY,
    IMAGE_BATCH,
    IMAGE_CHAMPION,
    IMAGE_TUNED,
    TEXT_BATCH,
    incoming_rows,
)

IMAGE = f"{IMAGE_BATCH}-00000"  # digit 0, rank 1
NOT_CURATED = f"{IMAGE_BATCH}-00002"  # digit 0, rank 3: generated but not curated
TEXT = f"{TEXT_BATCH}-00000"


def test_samples_lists_the_curated_set_with_ids_scores_and_image_urls(client):
    body = client.get("/api/samples").json()
    assert body["total"] == 10 * CURATED_PER_CATEGORY + 3 * CURATED_PER_CATEGORY
    first = body["samples"][0]
    assert first == {
        "sample_id": IMAGE, "modality": "image", "category": "0", "model_version": IMAGE_CHAMPION,
        "batch_id": IMAGE_BATCH, "reward": pytest.approx(0.8), "rank": 1, "created_at": first["created_at"],
        "exploratory": False, "image_url": f"http://testserver/samples/{IMAGE}.png",
    }
    texts = [s for s in body["samples"] if s["modality"] == "text"]
    assert texts[0]["text"].startswith("If music be the food of love") and "image_url" not in texts[0]
    assert NOT_CURATED not in {s["sample_id"] for s in body["samples"]}


def test_exploratory_samples_are_marked_in_the_api_and_on_the_page(home, make_client):
    """Curation shows, beside the curated set, samples the reward model is least sure about: marked as such."""
    import duckdb
    import pandas as pd

    from gen_assets.store import samples

    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        rows = con.execute("SELECT sample_id, category, reward, rank, batch_id FROM curated "
                           "WHERE modality = 'text' ORDER BY category, rank").fetchall()
        extra = con.execute("SELECT sample_id, category FROM generated WHERE modality = 'text' AND sample_id NOT IN "
                            "(SELECT sample_id FROM curated) ORDER BY sample_id LIMIT 1").fetchone()
        frame = pd.DataFrame([{"sample_id": r[0], "category": r[1], "reward": r[2], "rank": r[3], "exploratory": False}
                              for r in rows] + [{"sample_id": extra[0], "category": extra[1], "reward": 0.1,
                                                 "rank": 99, "exploratory": True}])
        samples.replace_curated(con, "text", rows[0][4], frame)
    client = make_client()
    body = client.get("/api/samples", params={"modality": "text", "per_page": 50}).json()
    marked = {s["sample_id"]: s["exploratory"] for s in body["samples"]}
    assert marked[extra[0]] is True and sum(marked.values()) == 1
    html = client.get("/gallery", params={"modality": "text", "category": extra[1]}).text
    assert html.count(">exploring</span>") == 1


def test_samples_filter_by_modality_and_category_and_page(client):
    body = client.get("/api/samples", params={"modality": "image", "category": "3"}).json()
    assert [(s["category"], s["rank"]) for s in body["samples"]] == [("3", 1), ("3", 2)]
    page = client.get("/api/samples", params={"modality": "image", "per_page": 6, "page": 2}).json()
    assert (page["total"], page["pages"], page["page"]) == (20, 4, 2)
    assert [s["category"] for s in page["samples"]] == ["3", "3", "4", "4", "5", "5"]  # categories in digit order
    beyond = client.get("/api/samples", params={"modality": "image", "page": 9}).json()
    assert beyond["samples"] == [] and beyond["total"] == 20


@pytest.mark.parametrize(
    "params, message",
    [
        ({"modality": "video"}, "unknown modality 'video'; curated modalities: image, text"),
        ({"modality": "text", "category": "poetry"}, "unknown category 'poetry' for text; categories: comedy, history, tragedy"),
        ({"category": "poetry"}, "unknown category 'poetry'"),
        ({"per_page": "0"}, "per_page must be from 1 to 100, got 0"),
        ({"page": "two"}, "page must be a whole number, got 'two'"),
        ({"page": "0"}, "page must be 1 or more"),
    ],
)
def test_samples_refuses_bad_parameters_naming_them(client, params, message):
    response = client.get("/api/samples", params=params)
    assert response.status_code == 400 and message in response.json()["error"]


def test_a_rating_lands_in_the_landing_zone_in_the_feedback_format(client, home):
    response = client.post("/api/ratings", json={"sample_id": TEXT, "rating": 4, "comment": "a fine line"})
    assert response.status_code == 201
    body = response.json()
    assert (body["sample_id"], body["rating"], body["comment"], body["replayed"], body["ratings_waiting"]) == (
        TEXT, 4, "a fine line", False, 1)
    [path] = (home / "feedback" / "incoming").iterdir()
    assert path.name == body["file"] and path.suffix == ".jsonl"
    summary = validate_file(path)  # what `gen-assets feedback import` and the feedback asset accept
    assert (summary.rows, summary.errors) == (1, [])
    [row] = incoming_rows(home)
    assert row["sample_id"] == TEXT and row["rating"] == 4 and row["comment"] == "a fine line" and row["ts"].endswith("Z")
    assert client.get("/api/status").json()["ratings_waiting"] == 1


@pytest.mark.parametrize(
    "payload, status, message",
    [
        ({"sample_id": IMAGE, "rating": 6}, 422, "rating 6 is outside 1..5"),
        ({"sample_id": IMAGE, "rating": 0}, 422, "rating 0 is outside 1..5"),
        ({"sample_id": IMAGE, "rating": 3.5}, 422, "rating must be a whole number from 1 to 5, got 3.5"),
        ({"sample_id": IMAGE, "rating": "five"}, 422, "rating must be a whole number from 1 to 5, got 'five'"),
        ({"sample_id": IMAGE}, 422, "missing rating"),
        ({"rating": 3}, 422, "missing sample_id"),
        ({"sample_id": "image-nope-00001", "rating": 3}, 422, "unknown sample_id 'image-nope-00001'"),
        ({"sample_id": "../../etc/passwd", "rating": 3}, 422, "is not a sample id"),
        ({"sample_id": IMAGE, "rating": 3, "comment": "x" * 1001}, 422, "comment is 1001 characters; at most 1000"),
        ({"sample_id": IMAGE, "rating": 3, "user_id": "u" * 65}, 422, "user_id is 65 characters; at most 64"),
        ({"sample_id": IMAGE, "rating": 3, "ts": "2020-01-01"}, 422, "unknown field(s) 'ts'"),
    ],
)
def test_a_bad_rating_is_refused_with_what_is_wrong_and_lands_nothing(client, home, payload, status, message):
    response = client.post("/api/ratings", json=payload)
    assert response.status_code == status and message in response.json()["error"]
    assert incoming_rows(home) == []


def test_bodies_that_are_not_a_json_rating_are_refused(client, home):
    def post(content, content_type="application/json"):
        return client.post("/api/ratings", content=content, headers={"Content-Type": content_type})

    cases = [
        (post(b"{not json"), 400, "the body is not JSON"),
        (post(b"[1, 2]"), 400, "the body must be a JSON object"),
        (post(b"sample_id=x&rating=3", "application/x-www-form-urlencoded"), 415, "send the rating as JSON"),
        (post(json.dumps({"sample_id": IMAGE, "rating": 3, "comment": "y" * 9000}).encode()), 413, "at most 8192"),
    ]
    for response, status, message in cases:
        assert response.status_code == status and message in response.json()["error"], response.text
    assert incoming_rows(home) == []


def test_a_body_larger_than_declared_is_cut_off(client):
    def chunks():
        yield b'{"sample_id": "' + IMAGE.encode() + b'", "comment": "'
        for _ in range(20):
            yield b"z" * 1024
        yield b'", "rating": 3}'

    response = client.post("/api/ratings", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "over 8192 bytes" in response.json()["error"]


def test_the_token_when_set_is_required_for_writes_only(make_client, home):
    client = make_client(token="s3cret")
    rating = {"sample_id": IMAGE, "rating": 5}
    missing = client.post("/api/ratings", json=rating)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["error"]
    assert client.post("/api/ratings", json=rating, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/api/ratings", json=rating, headers={"Authorization": "Bearer s3cret"}).status_code == 201
    assert client.get("/api/samples").status_code == 200  # reads need no token
    assert len(incoming_rows(home)) == 1


def test_a_retried_request_with_its_idempotency_key_lands_once(client, home):
    rating = {"sample_id": IMAGE, "rating": 2, "comment": "blurry"}
    first = client.post("/api/ratings", json=rating, headers={"Idempotency-Key": "rater-7-0001"})
    again = client.post("/api/ratings", json=rating, headers={"Idempotency-Key": "rater-7-0001"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["replayed"] is True and again.json()["file"] == first.json()["file"]
    other = client.post("/api/ratings", json={**rating, "rating": 5}, headers={"Idempotency-Key": "rater-7-0001"})
    assert other.status_code == 409 and "already used for a different rating" in other.json()["error"]
    bad = client.post("/api/ratings", json=rating, headers={"Idempotency-Key": "has spaces"})
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["error"]
    assert len(incoming_rows(home)) == 1
    # the key's marker is named by its hash, beside the landing zone: never by what the client sent
    [marker] = (home / "feedback" / "web" / "keys").iterdir()
    assert "rater" not in marker.name and len(marker.stem) == 64


def test_status_tells_ratings_waiting_and_the_last_retrain(client):
    status = client.get("/api/status").json()
    assert status["ratings_waiting"] == 0 and status["stale"] is False
    assert status["last_retrain"]["model_version"] == IMAGE_TUNED
    assert status["last_retrain_by_modality"].keys() == {"image"}  # text was never retrained
    assert status["curated"] == {"image": 20, "text": 6}


def test_images_are_served_by_sample_id_with_caching_headers(client):
    response = client.get(f"/samples/{IMAGE}.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")
    assert "max-age" in response.headers["cache-control"] and response.headers["etag"]
    cached = client.get(f"/samples/{IMAGE}.png", headers={"If-None-Match": response.headers["etag"]})
    assert cached.status_code == 304 and cached.content == b""
    assert client.get(f"/samples/{NOT_CURATED}.png").content.startswith(b"\x89PNG")  # any generated image


@pytest.mark.parametrize(
    "path, message",
    [
        (f"/samples/{TEXT}.png", "is a text sample, not an image"),
        ("/samples/image-nope-00001.png", "no sample 'image-nope-00001' in generated"),
        ("/samples/..%2F..%2Fwarehouse.duckdb.png", "nothing at /samples/../../warehouse.duckdb.png"),
        ("/samples/..%5Cwarehouse.duckdb.png", "not a sample id"),
        ("/samples/%2E%2E.png", "not a sample id"),
        ("/static/..%2Fapp.py", "nothing at /static/../app.py"),
        ("/static/app.py", "no static file 'app.py'"),
        ("/dashboard/trend/video.png", "no metric trend for modality 'video'"),
    ],
)
def test_nothing_outside_the_known_names_is_served(client, path, message):
    response = client.get(path, headers={"Accept": "application/json"})
    assert response.status_code == 404 and message in response.json()["error"]


def test_unknown_routes_and_methods_answer_json_errors_under_api(client):
    assert client.get("/api/nothing").json() == {"error": "nothing at /api/nothing"}
    response = client.get("/api/ratings")
    assert response.status_code == 405 and response.json() == {"error": "GET is not allowed here"}


def test_every_response_carries_the_security_headers(client):
    for response in (client.get("/gallery"), client.get("/api/samples"), client.get(f"/samples/{IMAGE}.png")):
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"


def test_an_unexpected_failure_is_a_json_500_without_internals(make_client, home, monkeypatch):
    from starlette.testclient import TestClient

    client = make_client()
    review = client.app.state.review

    def broken():
        raise RuntimeError("secret internals")

    monkeypatch.setattr(review.catalog, "current", broken)
    with TestClient(client.app, raise_server_exceptions=False) as raw:
        response = raw.get("/api/samples")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error: the server's log has the details"}


def test_a_foreign_host_header_is_refused(make_client):
    """DNS rebinding: another site's page resolved to 127.0.0.1 still sends its own Host."""
    client = make_client(allowed_hosts=None)  # the default for a loopback bind: loopback names only
    assert client.get("/api/samples", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/api/samples", headers={"host": "127.0.0.1:8000"}).status_code == 200


def test_wrong_tokens_are_throttled_per_address_and_the_right_one_works_after_the_wait(make_client, home):
    client = make_client(token="s3cret")
    rating = {"sample_id": IMAGE, "rating": 5}
    statuses = []
    for i in range(20):  # well within a second
        response = client.post("/api/ratings", json=rating, headers={"Authorization": f"Bearer guess-{i}"})
        statuses.append(response.status_code)
    assert statuses[:10] == [401] * 10  # the burst: wrong, and said so
    assert statuses[-1] == 429
    throttled = client.post("/api/ratings", json=rating, headers={"Authorization": "Bearer s3cret"})
    assert throttled.status_code == 429  # not even the right token is compared while throttled
    wait = int(throttled.headers["retry-after"])
    assert 1 <= wait <= 2 and "too many wrong tokens" in throttled.json()["error"]
    time.sleep(wait)
    assert client.post("/api/ratings", json=rating, headers={"Authorization": "Bearer s3cret"}).status_code == 201
    assert len(incoming_rows(home)) == 1


def test_the_sign_in_form_is_throttled_too(make_client):
    client = make_client(token="s3cret", token_failures_burst=2)
    client.get("/gallery")  # the session cookie
    csrf = client.app.state.review.guard.csrf_token(client.cookies["gen_assets_session"])
    statuses = [client.post("/login", data={"csrf": csrf, "token": "nope"}).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]


@pytest.mark.parametrize("field, value", [("comment", "bad \\ud800 text"), ("user_id", "\\udc00"),
                                          ("sample_id", "\\ud800")])
def test_a_lone_surrogate_is_a_422_not_a_server_error(client, home, field, value):
    body = '{"sample_id": "%s", "rating": 4, "%s": "%s"}' % (IMAGE, field, value)
    response = client.post("/api/ratings", content=body.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert "lone surrogate" in response.json()["error"] or "not a sample id" in response.json()["error"]
    assert incoming_rows(home) == []
