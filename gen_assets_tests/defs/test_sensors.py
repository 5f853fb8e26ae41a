"""feedback_sensor ticks, with build_sensor_context: no files -> skip; new files -> one run; same -> none."""

import json

import dagster as dg
import duckdb
import pytest

from gen_assets.feedback.landing import append_ratings
from gen_assets.defs.jobs import RETRAIN_ASSETS
from gen_assets.defs.resources import build_resources
from gen_assets.defs.sensors import FeedbackPolicy, feedback_sensor
from gen_assets.settings import Paths
from gen_assets.store import registry
from gen_assets.store.batches import batch_table, write_batch


@pytest.fixture
def home(tmp_path):
    paths = Paths(tmp_path).ensure()
    con = duckdb.connect(str(paths.warehouse))
    for modality, contents in (("image", [b"png"] * 40), ("text", ["to be?"] * 40)):
        table = batch_table(batch_id=f"{modality}-b", model_version="m", modality=modality,
                            categories=["a"] * 40, contents=contents, seed=0)
        path = write_batch(table, paths.batches, f"{modality}-b")
        registry.register_batch(con, batch_id=f"{modality}-b", modality=modality, model_version="m", path=str(path),
                                grid_path=None, n_samples=40)
    con.close()
    return paths


def tick(paths, cursor=None, min_new_ratings=50):
    resources = build_resources(paths)
    context = dg.build_sensor_context(
        cursor=cursor,
        resources={"artifacts": resources["artifacts"], "warehouse": resources["warehouse"],
                   "feedback_policy": FeedbackPolicy(min_new_ratings=min_new_ratings)},
    )
    return feedback_sensor(context), context.cursor


def ratings(modality, n, start=0):
    return [{"sample_id": f"{modality}-b-{i:05d}", "rating": 1 + i % 5, "user_id": f"u{i}"} for i in range(start, start + n)]


def test_no_files_is_a_skip(home):
    result, _ = tick(home)
    assert isinstance(result, dg.SkipReason)


def test_below_threshold_waits_and_keeps_the_cursor(home):
    append_ratings(home.feedback, ratings("image", 10))
    result, cursor = tick(home)
    assert isinstance(result, dg.SkipReason) and "waiting" in result.skip_message
    assert not json.loads(cursor or "[]")


def test_new_files_request_one_run_per_modality_and_never_twice(home):
    append_ratings(home.feedback, ratings("image", 30))
    append_ratings(home.feedback, ratings("image", 25, start=5))
    requests, cursor = tick(home)
    assert len(requests) == 1
    [request] = requests
    assert {k.to_user_string() for k in request.asset_selection} == set(RETRAIN_ASSETS["image"])
    assert request.tags["gen_assets/modality"] == "image"
    assert request.tags["gen_assets/profile"] == "demo"  # retrain_job runs without run config: the defaults
    again, _ = tick(home, cursor=cursor)
    assert isinstance(again, dg.SkipReason)

    append_ratings(home.feedback, ratings("text", 60))
    more, _ = tick(home, cursor=cursor)
    assert [r.tags["gen_assets/modality"] for r in more] == ["text"]
    assert more[0].run_key != request.run_key


def test_events_of_served_content_request_a_retrain_of_their_modality_once_enough_wait(home):
    from gen_assets.defs.sensors import build_events_sensor
    from gen_assets.feedback.events import EventPaths, append_events

    sensor = build_events_sensor()

    def events_tick(cursor=None):
        resources = build_resources(home)
        context = dg.build_sensor_context(cursor=cursor, resources={
            "artifacts": resources["artifacts"], "feedback_policy": FeedbackPolicy(min_new_events=30)})
        return sensor(context), context.cursor

    def events(n, start=0):
        return [{"serve_id": f"s{i}", "event": "impression", "sample_id": f"text-b-{i % 40:05d}", "modality": "text",
                 "category": "a", "model_version": "m", "arm": "champion", "probability": 0.5,
                 "ts": "2026-11-29T10:00:00Z"} for i in range(start, start + n)]

    paths = EventPaths(home.feedback / "events")
    assert isinstance(events_tick()[0], dg.SkipReason)
    append_events(paths, events(20))
    result, cursor = events_tick()
    assert isinstance(result, dg.SkipReason) and "waiting: 20 new events" in result.skip_message
    append_events(paths, events(20, start=20))
    result, cursor = events_tick(cursor)
    [request] = result
    assert request.tags["gen_assets/trigger"] == "events" and request.run_key.startswith("events-text-")
    assert [k.path[-1] for k in request.asset_selection] == RETRAIN_ASSETS["text"]
    again, _ = events_tick(cursor)
    assert isinstance(again, dg.SkipReason)  # the same files never ask twice
