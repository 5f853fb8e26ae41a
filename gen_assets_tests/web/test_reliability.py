"""Many raters at once lose and duplicate nothing, and the page keeps serving while a run holds the
warehouse."""

import http.client
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import duckdb

from gen_assets.feedback.ingest import ingest_file, ingest_pending
from gen_assets.feedback.landing import validate_file
from gen_assets.feedback.pending import scan
from gen_assets.settings import Paths
from gen_assets.web.app import create_app
from gen_assets.web.catalog import Catalog, WarehouseBusy
from gen_assets.web.ratings import WaitingRatings
from gen_assets_tests.web.conftest import IMAGE_BATCH, TEXT_BATCH, holding_warehouse, incoming_rows, live_server, test_config

CLIENTS, RATINGS_EACH = 50, 20
SAMPLES = [f"{IMAGE_BATCH}-{i:05d}" for i in range(30)] + [f"{TEXT_BATCH}-{i:05d}" for i in range(9)]


def post_json(conn: http.client.HTTPConnection, path: str, body: dict, headers: dict) -> tuple[int, dict]:
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json", **headers})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_50_concurrent_raters_lose_no_rating_and_duplicate_none(home):
    """50 clients post 20 ratings each at once over real HTTP; every 4th rating is sent twice (a client
    retrying after a timeout, with the same Idempotency-Key). Exactly 1000 ratings land, each once, in files
    the feedback asset ingests."""
    start = threading.Barrier(CLIENTS)

    def rater(n: int, url: str) -> Counter:
        netloc = urlsplit(url).netloc
        conn = http.client.HTTPConnection(netloc, timeout=30)
        statuses = Counter()
        start.wait()
        for k in range(RATINGS_EACH):
            rating = {"sample_id": SAMPLES[(n + k) % len(SAMPLES)], "rating": 1 + (n + k) % 5,
                      "user_id": f"rater-{n:02d}", "comment": f"rating {k}"}
            key = {"Idempotency-Key": f"rater-{n:02d}-{k:02d}"}
            for _ in range(2 if k % 4 == 0 else 1):
                status, body = post_json(conn, "/api/ratings", rating, key)
                statuses[status] += 1
                assert status in (200, 201), body
        conn.close()
        return statuses

    app = create_app(Paths(home), test_config())
    began = time.monotonic()
    with live_server(app) as url, ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(rater, range(CLIENTS), [url] * CLIENTS))
    seconds = time.monotonic() - began
    statuses = sum(results, Counter())
    retries = CLIENTS * RATINGS_EACH // 4
    assert statuses == {201: CLIENTS * RATINGS_EACH, 200: retries}

    rows = incoming_rows(home)
    assert len(rows) == CLIENTS * RATINGS_EACH
    assert len({(r["user_id"], r["comment"]) for r in rows}) == CLIENTS * RATINGS_EACH  # each rating once
    incoming = home / "feedback" / "incoming"
    assert sum(f.ratings for f in scan(incoming)) == CLIENTS * RATINGS_EACH  # what the sensor counts
    files = sorted(incoming.glob("*.jsonl"))
    assert all(validate_file(path).errors == [] for path in files)  # every row passes ingestion's checks
    # the feedback asset's ingestion takes them unchanged (a sample of files: each is its own transaction)
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        ingested = [ingest_file(con, path, home / "feedback" / "processed") for path in files[::40]]
        assert [(r.rows_ok, r.rows_quarantined) for r in ingested] == [(1, 0)] * len(ingested)
    print(f"\n{CLIENTS} clients x {RATINGS_EACH} ratings (+{retries} retries) over HTTP in {seconds:.1f} s")


def test_the_same_key_sent_at_once_from_many_threads_lands_once(client, home):
    app = client.app
    rating = {"sample_id": SAMPLES[0], "rating": 3}
    go = threading.Barrier(10)

    def send(_):
        from starlette.testclient import TestClient

        with TestClient(app) as c:
            go.wait()
            return c.post("/api/ratings", json=rating, headers={"Idempotency-Key": "double-click"}).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = Counter(pool.map(send, range(10)))
    assert statuses == {201: 1, 200: 9}
    assert len(incoming_rows(home)) == 1


def test_pages_keep_serving_from_the_last_snapshot_while_a_run_holds_the_warehouse(client, home):
    assert client.get("/gallery").status_code == 200  # a first good read
    with holding_warehouse(home / "warehouse.duckdb"):
        began = time.monotonic()
        gallery = client.get("/gallery")
        assert gallery.status_code == 200 and "The warehouse is busy (a run is writing it)" in gallery.text
        samples = client.get("/api/samples", params={"modality": "image"}).json()
        assert samples["stale"] is True and samples["total"] == 20
        assert client.get(f"/samples/{SAMPLES[0]}.png").status_code == 200
        assert client.get("/dashboard").status_code == 200
        assert client.get("/dashboard/trend/text.png").status_code == 200
        rated = client.post("/api/ratings", json={"sample_id": SAMPLES[1], "rating": 5})
        assert rated.status_code == 201  # ratings go to files: a retrain does not stop them
        new_sample = client.post("/api/ratings", json={"sample_id": "image-fresh-00001", "rating": 5})
        assert new_sample.status_code == 503 and new_sample.headers["retry-after"] == "2"
        assert "sample 'image-fresh-00001' cannot be checked now" in new_sample.json()["error"]
        assert client.get("/api/status").json()["stale"] is True
        assert time.monotonic() - began < 5  # answered from memory, no waiting on the lock
    time.sleep(test_config().busy_backoff_seconds)
    after = client.get("/api/samples").json()
    assert after["stale"] is False
    assert len(incoming_rows(home)) == 1


def test_a_cold_start_during_a_run_answers_503_quickly_and_recovers(make_client, home):
    with holding_warehouse(home / "warehouse.duckdb"):
        client = make_client()
        began = time.monotonic()
        response = client.get("/api/samples")
        assert response.status_code == 503 and response.headers["retry-after"] == "2"
        assert "the warehouse is busy" in response.json()["error"]
        page = client.get("/gallery")
        assert page.status_code == 503 and "the warehouse is busy" in page.text
        assert time.monotonic() - began < 5
    time.sleep(test_config().busy_backoff_seconds)
    assert client.get("/api/samples").json()["total"] == 26


def test_waiting_ratings_count_like_the_sensor_and_follow_ingestion(home):
    incoming = home / "feedback" / "incoming"
    incoming.mkdir(parents=True)
    (incoming / "a.csv").write_text(f"sample_id,rating\n{SAMPLES[0]},4\n{SAMPLES[1]},9\n")  # a bad row counts too
    (incoming / "broken.txt").write_text("not ratings")  # a broken file: 0, like scan
    (incoming / ".partial.jsonl").write_text("{}")  # still being written: ignored
    waiting = WaitingRatings(incoming, min_interval_seconds=0)
    assert waiting.count() == 2 == sum(f.ratings for f in scan(incoming))
    (incoming / "b.jsonl").write_text(json.dumps({"sample_id": SAMPLES[2], "rating": 1}) + "\n")
    assert waiting.count() == 3
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        ingest_pending(con, home / "feedback")
    assert waiting.count() == 0


def test_many_requests_at_a_cold_start_during_a_run_do_not_queue_on_the_lock(home):
    """One request tries the file for busy_retry_seconds; the ones that waited behind it answer at once."""
    catalog = Catalog(home / "warehouse.duckdb", busy_retry_seconds=0.5, busy_backoff_seconds=2.0)

    def read(_):
        try:
            catalog.current()
            return "read"
        except WarehouseBusy:
            return "busy"

    with holding_warehouse(home / "warehouse.duckdb"):
        began = time.monotonic()
        with ThreadPoolExecutor(20) as pool:
            answers = Counter(pool.map(read, range(20)))
        seconds = time.monotonic() - began
    assert answers == {"busy": 20} and seconds < 2.5  # not 20 x 0.5 s
