"""Serving content to customers (GET /api/content) and what they do with it (POST /api/events)."""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from gen_assets.feedback.events import EventPaths, ingest_events
from gen_assets.settings import Paths
from gen_assets.store import registry, samples
from gen_assets.web.catalog import CuratedSample, Snapshot
from gen_assets.web.serving import ServeClaim, ServeIdError, ServeTokens, Serving, ServingSettings, serving_key

from .conftest import IMAGE_CHAMPION, TEXT_CHAMPION, TEXT_BATCH, TEXTS, _add_batch, _register


def event_rows(home: Path) -> list[dict]:
    rows = []
    for path in sorted((home / "feedback" / "events" / "incoming").glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def serve(client, **params) -> dict:
    response = client.get("/api/content", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def post_events(client, *events, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = events[0] if len(events) == 1 else {"events": list(events)}
    return client.post("/api/events", json=body, headers=headers)


# -- serve ids ----------------------------------------------------------------------------------------------


def test_a_serve_id_carries_what_was_served_and_cannot_be_forged(tmp_path):
    tokens = ServeTokens(serving_key(tmp_path))
    claim = ServeClaim("text-1-00001", "text", "comedy", "gpt-1", "challenger", 0.125, "exp-1", "hero", "u1", 1.0)
    serve_id = tokens.issue(claim)
    assert tokens.verify(serve_id) == claim
    assert serving_key(tmp_path) == tokens.key  # kept in the home: serve ids outlive a restart
    prefix, body, mac = serve_id.split(".")
    forged = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged["p"] = 0.9  # an event may not claim another probability
    forged_body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    for bad in (f"{prefix}.{forged_body}.{mac}", serve_id[:-2] + "xx", "nonsense", None, 42):
        with pytest.raises(ServeIdError):
            tokens.verify(bad)
    with pytest.raises(ServeIdError):
        ServeTokens(b"another key" * 3).verify(serve_id)


# -- choosing, without HTTP ---------------------------------------------------------------------------------


def _snapshot(n: int = 4, *, counts=None, experiment=None, versions=("champ",)) -> Snapshot:
    samples = tuple(CuratedSample(f"s{v}{i}", "text", "shoes", v, "b", 1.0, i + 1, "2026-01-01", f"text {i}")
                    for v in versions for i in range(n))
    return Snapshot(samples=samples, registry={"text": {"champion": {"version": versions[0]}}},
                    event_counts=counts or {}, experiments={"text": experiment} if experiment else {},
                    signature=("s", len(counts or {})))


def test_the_bandit_serves_the_sample_people_click_most_and_keeps_the_others(tmp_path):
    serving = Serving(ServeTokens(b"k" * 32), tmp_path)
    snap = _snapshot(counts={"schamp0": (400, 8), "schamp1": (400, 40), "schamp2": (400, 8), "schamp3": (400, 8)})
    rng = np.random.default_rng(0)
    served = Counter(serving.choose(snap, "text", "shoes", rng=rng).sample.sample_id for _ in range(2000))
    assert served.most_common(1)[0][0] == "schamp1"
    assert served["schamp1"] > 0.5 * 2000
    assert min(served.values()) >= 0.01 * 2000  # the minimum share: every sample is still seen
    # the logged probability is the one the choice was drawn from
    one = serving.choose(snap, "text", "shoes", rng=rng)
    assert 0.0 < one.probability <= 1.0 and one.arm == "champion" and one.experiment_id is None


def test_exploratory_samples_are_not_served():
    samples = (CuratedSample("a", "text", "shoes", "v", "b", 1.0, 1, "t", "x"),
               CuratedSample("b", "text", "shoes", "v", "b", 1.0, 2, "t", "y", exploratory=True))
    snap = Snapshot(samples=samples, registry={"text": {"champion": {"version": "v"}}}, signature=("x",))
    serving = Serving(ServeTokens(b"k" * 32), Path("/nonexistent"))
    assert {serving.choose(snap, "text", "shoes").sample.sample_id for _ in range(50)} == {"a"}
    with pytest.raises(LookupError, match="nothing curated"):
        serving.choose(snap, "text", "boots")


def test_an_experiment_splits_traffic_sticky_per_user_and_moves_it_to_the_better_model(tmp_path):
    experiment = {"experiment_id": "exp-1", "champion": "champ", "challenger": "chall", "allocation": "bandit",
                  "challenger_share": 0.5}
    serving = Serving(ServeTokens(b"k" * 32), tmp_path, ServingSettings(refresh_seconds=0.0))
    snap = _snapshot(experiment=experiment, versions=("champ", "chall"))
    rng = np.random.default_rng(1)
    arms = {u: serving.choose(snap, "text", "shoes", user_id=u, rng=rng).arm for u in map(str, range(400))}
    assert 0.35 < Counter(arms.values())["challenger"] / 400 < 0.65  # no evidence yet: about half each
    again = {u: serving.choose(snap, "text", "shoes", user_id=u, rng=rng).arm for u in map(str, range(400))}
    assert again == arms  # the same person keeps seeing the same model
    for served in (serving.choose(snap, "text", "shoes", user_id="7", rng=rng) for _ in range(5)):
        assert served.sample.model_version == ("chall" if served.arm == "challenger" else "champ")
        assert served.probability <= served.arm_share + 1e-9
    # the challenger is clicked twice as often: the bandit moves traffic to it, keeping the champion's minimum
    better = _snapshot(experiment=experiment, versions=("champ", "chall"))
    better = Snapshot(**{**better.__dict__, "arm_counts": {("exp-1", "champion"): (2000, 60),
                                                             ("exp-1", "challenger"): (2000, 120)},
                         "signature": ("later",)})
    shares = serving.experiment_shares(better, experiment)
    assert shares[1] > 0.85 and shares[0] >= 0.1 - 1e-9
    fixed = {**experiment, "allocation": "fixed", "challenger_share": 0.2}
    assert serving.experiment_shares(better, fixed) == pytest.approx([0.8, 0.2])


# -- over HTTP ------------------------------------------------------------------------------------------------


def test_content_answers_one_curated_sample_with_its_serve_id(client):
    body = serve(client, category="comedy", user_id="u-1", slot="hero")
    assert body["modality"] == "text" and body["category"] == "comedy" and body["model_version"] == TEXT_CHAMPION
    assert body["text"] in TEXTS["comedy"] and body["arm"] == "champion" and body["experiment_id"] is None
    assert 0.0 < body["probability"] <= 1.0 and body["slot"] == "hero" and body["user_id"] == "u-1"
    assert body["serve_id"].startswith("s1.")
    image = serve(client, category="3")
    assert image["modality"] == "image" and image["image_url"].endswith(f"/samples/{image['sample_id']}.png")
    assert image["model_version"] == IMAGE_CHAMPION
    assert client.get("/api/content", params={"category": "comedy"}).headers["cache-control"] == "no-store"


@pytest.mark.parametrize("params, status, message", [
    ({}, 400, "category is required"),
    ({"category": "opera"}, 400, "unknown category 'opera'"),
    ({"category": "comedy", "modality": "image"}, 400, "unknown category 'comedy' for image"),
    ({"category": "comedy", "colour": "red"}, 400, "unknown parameter(s) 'colour'"),
    ({"category": "comedy", "slot": "a b"}, 400, "slot must be"),
    ({"category": "comedy", "user_id": "u" * 65}, 400, "user_id is 65 characters"),
])
def test_content_refuses_a_bad_request_saying_why(client, params, status, message):
    response = client.get("/api/content", params=params)
    assert response.status_code == status and message in response.json()["error"]


def test_events_land_with_the_serve_fields_and_retries_are_harmless(client, home):
    served = serve(client, category="tragedy", user_id="u-2")
    impression = {"serve_id": served["serve_id"], "event": "impression"}
    click = {"serve_id": served["serve_id"], "event": "click", "ts": "2026-11-29T10:00:00Z"}
    answer = post_events(client, impression, click)
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 2
    assert post_events(client, click).json()["event_ids"] == answer.json()["event_ids"][1:]  # a retry: same id
    rows = event_rows(home)
    assert len(rows) == 3
    for row in rows:
        assert row["sample_id"] == served["sample_id"] and row["model_version"] == TEXT_CHAMPION
        assert row["probability"] == pytest.approx(served["probability"]) and row["arm"] == "champion"
        assert row["user_id"] == "u-2" and row["category"] == "tragedy"
    # the events asset's ingestion keeps one event per serve and kind
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        ingest_events(con, EventPaths(home / "feedback" / "events"))
        stored = con.execute("SELECT event, count(*) FROM events GROUP BY event ORDER BY event").fetchall()
    assert stored == [("click", 1), ("impression", 1)]


@pytest.mark.parametrize("event, message", [
    ({"serve_id": "s1.abc.def", "event": "click"}, "serve_id"),
    ({"event": "click"}, "serve_id"),
    ({"serve_id": "SERVED", "event": "purchase"}, "event must be one of impression, click, conversion"),
    ({"serve_id": "SERVED", "event": "click", "sample_id": "text-other-00001"}, "is not the sample this serve_id"),
    ({"serve_id": "SERVED", "event": "click", "price": 3}, "unknown field(s) 'price'"),
    ({"serve_id": "SERVED", "event": "click", "ts": "yesterday"}, "ts"),
    ([1, 2], "an event must be a JSON object"),
])
def test_a_bad_event_is_refused_saying_what_is_wrong_and_nothing_lands(client, home, event, message):
    served = serve(client, category="comedy")
    if isinstance(event, dict):
        event = {k: (served["serve_id"] if v == "SERVED" else v) for k, v in event.items()}
    response = client.post("/api/events", json=event)
    assert response.status_code in (400, 422) and message in response.json()["error"], response.text
    assert event_rows(home) == []


def test_one_bad_event_in_a_batch_refuses_the_batch_naming_it(client, home):
    served = serve(client, category="comedy")
    response = post_events(client, {"serve_id": served["serve_id"], "event": "impression"},
                           {"serve_id": served["serve_id"], "event": "like"})
    assert response.status_code == 422 and response.json()["error"].startswith("event 1: ")
    assert event_rows(home) == []


def test_events_need_the_token_when_one_is_set(make_client):
    client = make_client(token="t0ken")
    served = serve(client, category="comedy")  # reading content needs none
    event = {"serve_id": served["serve_id"], "event": "impression"}
    assert post_events(client, event).status_code == 401
    assert post_events(client, event, token="t0ken").status_code == 202


def test_clicks_move_the_bandit_at_once_without_waiting_for_ingestion(client):
    # tragedy has two curated samples: clicking only one makes it the one mostly served
    favourite = None
    for _ in range(150):
        served = serve(client, category="tragedy")
        favourite = favourite or served["sample_id"]
        events = [{"serve_id": served["serve_id"], "event": "impression"}]
        if served["sample_id"] == favourite:
            events.append({"serve_id": served["serve_id"], "event": "click"})
        assert post_events(client, *events).status_code == 202
    shown = Counter(serve(client, category="tragedy")["sample_id"] for _ in range(200))
    assert shown[favourite] > 120


def test_a_challengers_content_is_served_to_its_share_of_users(client, home):
    challenger = "gpt-7c0ffee12345"
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        _register(con, challenger, "text", "gpt")
        categories = [c for c, texts in TEXTS.items() for _ in texts]
        ids = _add_batch(con, Paths(home), "text", "text-chall", challenger, categories,
                         [t.upper() for texts in TEXTS.values() for t in texts])
        old = con.execute("SELECT sample_id, category, reward, rank FROM curated WHERE modality = 'text'").df()
        new = pd.DataFrame({"sample_id": ids, "category": categories, "reward": 0.5, "rank": [1, 2, 3] * 3})
        samples.replace_curated(con, "text", TEXT_BATCH, pd.concat([old, new], ignore_index=True))
        experiment_id = registry.start_experiment(con, challenger, allocation="fixed", challenger_share=0.3,
                                                  actor="test", reason="passed the gate")
    arms = Counter()
    for user in range(300):
        body = serve(client, category="history", user_id=f"user-{user}")
        assert body["experiment_id"] == experiment_id
        assert (body["text"].isupper()) == (body["arm"] == "challenger")
        assert body["model_version"] == (challenger if body["arm"] == "challenger" else TEXT_CHAMPION)
        arms[body["arm"]] += 1
    assert 0.2 < arms["challenger"] / 300 < 0.4
    assert serve(client, category="history", user_id="user-5")["arm"] == serve(client, category="history",
                                                                                 user_id="user-5")["arm"]


def test_many_clients_posting_events_at_once_lose_none(client, home):
    served = [serve(client, category=c) for c in ("comedy", "history", "tragedy") for _ in range(10)]
    errors = []

    def post(s):
        for kind in ("impression", "click", "conversion"):
            r = post_events(client, {"serve_id": s["serve_id"], "event": kind})
            if r.status_code != 202:
                errors.append(r.text)

    threads = [threading.Thread(target=post, args=(s,)) for s in served]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = event_rows(home)
    assert len(rows) == 90 and len({r["event_id"] for r in rows}) == 90
    assert not list((home / "feedback" / "events" / "incoming").glob(".*"))  # no half-written file left


def _start_server(home: Path, port: int):
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    env = {**os.environ, "GEN_ASSETS_HOME": str(home), "GEN_ASSETS_WEB_SECRET": "crash-test-secret"}
    proc = subprocess.Popen([sys.executable, "-m", "gen_assets.web", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=1)
            return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the server did not start")
            time.sleep(0.1)


def test_a_server_killed_while_events_land_loses_no_acknowledged_event_and_a_retry_lands_the_rest(home):
    """SIGKILL in the middle of 8 clients posting: every event answered 202 is in a whole file; after a
    restart (which removes half-written temporary files) the clients retry what was not answered, with the
    same serve ids: each event is there exactly once."""
    import socket

    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    server = _start_server(home, port)
    try:
        serve_ids = [requests.get(f"{base}/api/content", params={"category": "comedy"}).json()["serve_id"]
                     for _ in range(240)]
        acknowledged, lock = set(), threading.Lock()

        def client(ids):
            with requests.Session() as session:
                for sid in ids:
                    try:
                        r = session.post(f"{base}/api/events", json={"serve_id": sid, "event": "impression"},
                                         timeout=5)
                    except requests.RequestException:
                        return  # the server is gone
                    if r.status_code == 202:
                        with lock:
                            acknowledged.update(r.json()["event_ids"])

        threads = [threading.Thread(target=client, args=(serve_ids[i::8],)) for i in range(8)]
        for t in threads:
            t.start()
        while len(acknowledged) < 60:
            threading.Event().wait(0.005)
        server.kill()  # SIGKILL: no clean shutdown
        server.wait()
        for t in threads:
            t.join()
    finally:
        if server.poll() is None:
            server.kill()
    landed = event_rows(home)  # every file parses whole
    assert acknowledged <= {r["event_id"] for r in landed}
    assert len(acknowledged) < 240, "the kill came after everything had landed: the test proved nothing"

    server = _start_server(home, port)
    try:
        assert not list((home / "feedback" / "events" / "incoming").glob(".*")), "temporary files were removed"
        with requests.Session() as session:  # the clients retry everything they did not see answered
            for sid in serve_ids:
                r = session.post(f"{base}/api/events", json={"serve_id": sid, "event": "impression"})
                assert r.status_code == 202
    finally:
        server.kill()
        server.wait()
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        ingest_events(con, EventPaths(home / "feedback" / "events"))
        stored = con.execute("SELECT count(*), count(DISTINCT serve_id) FROM events").fetchone()
    assert stored == (240, 240)


def test_50_concurrent_clients_get_content_and_land_events_through_a_real_server(home):
    """A real uvicorn server: 50 clients x 10 serves, each serve's impression posted back; every answer is
    good, every serve id verifies, every event lands once."""
    import requests

    from gen_assets.web.app import create_app

    from .conftest import live_server, test_config

    app = create_app(Paths(home), test_config())
    answers, errors, lock = [], [], threading.Lock()
    with live_server(app) as base:
        def client(n):
            with requests.Session() as session:
                for i in range(10):
                    r = session.get(f"{base}/api/content", params={"category": ("comedy", "history", "3")[i % 3],
                                                                   "user_id": f"u{n}"})
                    e = session.post(f"{base}/api/events", json={"serve_id": r.json().get("serve_id"),
                                                                 "event": "impression"})
                    with lock:
                        (answers if r.status_code == 200 and e.status_code == 202 else errors).append(r.json())

        threads = [threading.Thread(target=client, args=(n,)) for n in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == [] and len(answers) == 500
    tokens = app.state.review.serving.tokens
    assert all(tokens.verify(a["serve_id"]).sample_id == a["sample_id"] for a in answers)
    rows = event_rows(home)
    assert len(rows) == 500 and {r["serve_id"] for r in rows} == {a["serve_id"] for a in answers}


def test_the_event_batcher_answers_each_request_after_its_file_and_isolates_a_bad_one(tmp_path):
    from gen_assets.web.serving import EventBatcher

    written = []

    def write(rows):
        if any(r.get("bad") for r in rows):
            raise ValueError("row 0: bad")
        path = tmp_path / f"f{len(written)}.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows))
        written.append(rows)
        return path

    batcher = EventBatcher(write, flush_seconds=0.05)
    futures = [batcher.land([{"n": i}]) for i in range(20)]
    names = [f.result(timeout=10) for f in futures]
    assert len(written) < 20  # requests queued together share a file
    assert sorted(r["n"] for rows in written for r in rows) == list(range(20))  # each landed exactly once
    assert all((tmp_path / n).exists() for n in names)
    # a batch that cannot be written is tried per request: only the bad one fails
    futures = [batcher.land([{"n": 20}]), batcher.land([{"bad": True}]), batcher.land([{"n": 21}])]
    assert futures[0].result(timeout=10) and futures[2].result(timeout=10)
    with pytest.raises(ValueError, match="bad"):
        futures[1].result(timeout=10)
    assert sorted(r["n"] for rows in written for r in rows) == list(range(22))
