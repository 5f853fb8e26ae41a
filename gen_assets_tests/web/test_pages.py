"""The pages as a browser without JavaScript sees them: the gallery, the rating form (CSRF token, redirect
back), signing in with the write token, the dashboard."""

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from gen_assets_tests.web.conftest import IMAGE_BATCH, IMAGE_CHAMPION, IMAGE_TUNED, TEXT_BATCH, TEXT_CHAMPION, incoming_rows

IMAGE = f"{IMAGE_BATCH}-00000"


def hidden(html: str, name: str, sample_id: str | None = None) -> str:
    """The value of a hidden field (of the given sample's form)."""
    if sample_id:
        html = html[html.index(f'id="card-{sample_id}"'):]
    return re.search(rf'name="{name}" value="([^"]*)"', html).group(1)


def form_for(html: str, card: str, **fields) -> dict:
    """The fields the form of a card posts, changed by `fields`."""
    keys = ("csrf", "sample_id", "nonce", "modality", "category", "page")
    return {**{k: hidden(html, k, card) for k in keys}, **fields}


def test_the_gallery_shows_images_as_images_with_id_model_and_score(client):
    response = client.get("/gallery")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    html = response.text
    assert f'<img src="/samples/{IMAGE}.png"' in html
    assert IMAGE in html and IMAGE_CHAMPION in html and "0.800" in html
    assert "20 samples, page 1 of 3" in html  # page_size 8 in the tests
    assert 'rel="next" href="/gallery?modality=image&amp;page=2"' in html
    assert "Ratings waiting for the next retrain: <strong id=\"waiting-count\">0</strong>" in html
    assert f"<code>{IMAGE_TUNED}</code>" in html  # the last retrain of images
    assert 'aria-current="page">image</a>' in html


def test_the_gallery_shows_texts_as_text_per_category(client):
    html = client.get("/gallery", params={"modality": "text", "category": "tragedy"}).text
    assert "To be, or not to be, that is the question:" in html and "<blockquote" in html
    assert "If music be the food of love" not in html  # a comedy
    assert TEXT_CHAMPION in html and "2 samples in category tragedy" in html
    assert re.search(r"Last retrain \(text\):\s+never", html)


def test_the_gallery_pages_clamp_and_bad_queries_say_what_is_wrong(client):
    assert "page 3 of 3" in client.get("/gallery", params={"page": 99}).text
    response = client.get("/gallery", params={"modality": "video"})
    assert response.status_code == 400 and "unknown modality &#39;video&#39;" in response.text


def test_the_rating_form_works_without_javascript_and_redirects_back(client, home):
    page = client.get("/gallery", params={"modality": "image", "category": "0"})
    assert page.cookies.get("gen_assets_session")
    response = client.post("/ratings", data=form_for(page.text, IMAGE, rating="3", comment="thin stroke"))
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert location.path == "/gallery" and location.fragment == f"card-{IMAGE}"
    assert parse_qs(location.query) == {"modality": ["image"], "category": ["0"], "rated": [IMAGE], "rating": ["3"]}
    back = client.get(response.headers["location"])
    assert f"Thank you: your rating 3 of {IMAGE} landed." in back.text
    assert '<strong id="waiting-count">1</strong>' in back.text
    [row] = incoming_rows(home)
    assert (row["sample_id"], row["rating"], row["comment"]) == (IMAGE, 3, "thin stroke")
    assert re.fullmatch(r"web-[0-9a-f]{12}", row["user_id"])  # a pseudonym per browser session


def test_thumbs_map_to_five_and_one(client, home):
    page = client.get("/gallery").text
    assert client.post("/ratings", data=form_for(page, IMAGE, thumb="up")).status_code == 303
    second = f"{IMAGE_BATCH}-00001"
    assert client.post("/ratings", data=form_for(page, second, thumb="down")).status_code == 303
    assert {(r["sample_id"], r["rating"]) for r in incoming_rows(home)} == {(IMAGE, 5), (second, 1)}


def test_the_script_gets_json_and_a_resubmitted_form_lands_once(client, home):
    page = client.get("/gallery").text
    fields = form_for(page, IMAGE, rating="4")
    first = client.post("/ratings", data=fields, headers={"Accept": "application/json"})
    assert first.status_code == 201 and first.json()["rating"] == 4 and first.json()["next_nonce"]
    again = client.post("/ratings", data=fields, headers={"Accept": "application/json"})  # e.g. a double submit
    assert again.status_code == 200 and again.json()["replayed"] is True
    fresh = client.post("/ratings", data={**fields, "nonce": first.json()["next_nonce"], "rating": "5"},
                        headers={"Accept": "application/json"})
    assert fresh.status_code == 201  # the next rating of the same card is a new one
    assert [r["rating"] for r in incoming_rows(home)] == [4, 5]


@pytest.mark.parametrize(
    "change, headers, message",
    [
        ({"csrf": ""}, {}, "the form has expired or did not come from this page"),
        ({"csrf": "0" * 64}, {}, "the form has expired or did not come from this page"),
        ({}, {"Origin": "http://evil.example"}, "the form was posted from another site (http://evil.example)"),
    ],
)
def test_a_form_without_its_csrf_token_or_from_another_site_is_refused(client, home, change, headers, message):
    page = client.get("/gallery").text
    response = client.post("/ratings", data=form_for(page, IMAGE, rating="3", **change), headers=headers)
    assert response.status_code == 403 and message in response.text.replace("&#39;", "'")
    assert incoming_rows(home) == []


def test_a_form_from_another_session_is_refused(make_client, home):
    alice, mallory = make_client(), make_client()
    token_of_alice = form_for(alice.get("/gallery").text, IMAGE, rating="1")
    mallory.get("/gallery")
    assert mallory.post("/ratings", data=token_of_alice).status_code == 403
    assert incoming_rows(home) == []


def test_form_errors_are_pages_that_say_what_is_wrong(client, home):
    page = client.get("/gallery").text
    missing = client.post("/ratings", data=form_for(page, IMAGE))
    assert missing.status_code == 422 and "missing rating: choose 1 to 5, or a thumb up or down" in missing.text
    unknown = client.post("/ratings", data=form_for(page, IMAGE, rating="3", sample_id="image-nope-00009"))
    assert unknown.status_code == 422 and "unknown sample_id" in unknown.text
    too_long = client.post("/ratings", data=form_for(page, IMAGE, rating="3", comment="w" * 1200))
    assert too_long.status_code == 422 and "comment is 1200 characters; at most 1000" in too_long.text
    too_large = client.post("/ratings", data=form_for(page, IMAGE, rating="3", comment="w" * 9000))
    assert too_large.status_code == 413 and "at most 8192" in too_large.text
    assert incoming_rows(home) == []


def test_with_a_token_people_sign_in_before_rating(make_client, home):
    client = make_client(token="s3cret")
    page = client.get("/gallery").text
    assert 'action="/login"' in page and 'class="rate"' not in page
    csrf = hidden(page, "csrf")
    refused = client.post("/ratings", data={"csrf": csrf, "sample_id": IMAGE, "rating": "4"})
    assert refused.status_code == 401 and "sign in" in refused.text
    assert client.post("/login", data={"csrf": csrf, "token": "guess"}).status_code == 401
    signed_in = client.post("/login", data={"csrf": csrf, "token": "s3cret", "modality": "image"})
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/gallery?modality=image"
    page = client.get("/gallery").text
    assert 'class="rate"' in page and 'action="/login"' not in page
    assert client.post("/ratings", data=form_for(page, IMAGE, rating="4")).status_code == 303
    assert len(incoming_rows(home)) == 1


def test_the_dashboard_shows_champions_candidates_decisions_batches_and_runs(client):
    html = client.get("/dashboard").text
    assert f"<code>{IMAGE_CHAMPION}</code> (dcgan)" in html and f"<code>{TEXT_CHAMPION}</code> (gpt)" in html
    assert f"<td><code>{IMAGE_TUNED}</code></td>" in html  # the candidate
    assert "first champion" in html and "val_loss 1.89 &lt;= 2.0" in html  # the promotions' reasons
    assert '<img src="/dashboard/trend/image.png"' in html and '<img src="/dashboard/trend/text.png"' in html
    assert f"<code>{TEXT_BATCH}</code>" in html
    assert re.search(r'href="http://dagster.test:3000/runs/[0-9a-f-]{36}"[^>]*>retrain_job</a>', html)
    assert 'href="http://dagster.test:3000"' in html
    plot = client.get("/dashboard/trend/image.png")
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")


def test_a_home_without_a_warehouse_shows_empty_pages(make_client, tmp_path):
    client = make_client(tmp_path / "empty")
    assert "Nothing is curated yet" in client.get("/gallery").text
    html = client.get("/dashboard").text
    assert "No model yet" in html and "no runs recorded yet" in html
    assert client.get("/api/samples").json()["total"] == 0
    response = client.post("/api/ratings", json={"sample_id": IMAGE, "rating": 3})
    assert response.status_code == 422 and "unknown sample_id" in response.json()["error"]
    assert client.get("/").headers["location"] == "/gallery"


def test_a_modality_with_nothing_curated_is_empty_not_unknown(make_client, home):
    import duckdb
    import pandas as pd

    from gen_assets.store import samples

    with duckdb.connect(str(home / "warehouse.duckdb")) as con:  # curation kept nothing of the image batch
        samples.replace_curated(con, "image", IMAGE_BATCH, pd.DataFrame(columns=["sample_id", "category", "reward", "rank"]))
    client = make_client(home)
    page = client.get("/gallery", params={"modality": "image"})
    assert page.status_code == 200
    assert "Nothing is curated yet for image" in page.text and 'href="/gallery?modality=text"' in page.text
    api = client.get("/api/samples", params={"modality": "image"})
    assert api.status_code == 200
    body = api.json()
    assert (body["samples"], body["total"], body["note"]) == ([], 0, "nothing curated yet for image")
    assert "note" not in client.get("/api/samples", params={"modality": "text"}).json()
    assert client.get("/gallery").status_code == 200 and "Curated text samples" in client.get("/gallery").text
    video = client.get("/api/samples", params={"modality": "video"})  # not a modality of the pipeline at all
    assert video.status_code == 400 and "unknown modality 'video'; curated modalities: text" in video.json()["error"]
