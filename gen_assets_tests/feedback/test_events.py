"""Events: each field checked with a message naming it, files landed atomically, ingestion that keeps every
good row, quarantines the bad ones with line and reason and never counts an event twice, and click labels
that undo the bias of the server's own choices (inverse propensity weighting)."""

from __future__ import annotations

import json
import math
import shutil
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd
import pytest

import gen_assets.feedback.events as ev
from gen_assets.feedback.events import (
    EventPaths,
    append_events,
    arm_counts,
    check_event,
    click_labels,
    event_file,
    event_id_for,
    events_summary,
    events_version,
    ingest_events,
    reward_rows,
    validate_event_file,
)
from gen_assets.feedback.landing import FeedbackFileError
from gen_assets.store import registry
from gen_assets.store import warehouse as wh
from gen_assets.store.batches import batch_table, write_batch


def add_batch(con, directory, batch_id: str, modality: str, n: int) -> None:
    contents = [b"\x89PNG" + bytes([i]) for i in range(n)] if modality == "image" else [f"text {i}" for i in range(n)]
    table = batch_table(batch_id=batch_id, model_version="m1", modality=modality, categories=["c"] * n,
                        contents=contents, seed=0)
    path = write_batch(table, directory, batch_id)
    registry.register_batch(con, batch_id=batch_id, modality=modality, model_version="m1", path=str(path),
                            grid_path=None, n_samples=n)


@pytest.fixture
def con(tmp_path):
    """A warehouse whose `generated` view holds img-00000..00003 (image) and txt-00000..00002 (text)."""
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    wh.ensure_schema(connection)
    add_batch(connection, tmp_path / "batches", "img", "image", 4)
    add_batch(connection, tmp_path / "batches", "txt", "text", 3)
    yield connection
    connection.close()


@pytest.fixture
def paths(tmp_path):
    return EventPaths(tmp_path / "feedback" / "events").ensure()


def event(serve_id: str = "s1", kind: str = "impression", sample_id: str = "img-00000", **over) -> dict:
    modality = "text" if str(sample_id).startswith("txt") else "image"
    row = {"event_id": event_id_for(serve_id, kind), "serve_id": serve_id, "event": kind, "sample_id": sample_id,
           "user_id": "u1", "ts": "2024-05-01T12:00:00Z", "modality": modality,
           "category": "c", "model_version": "m1", "arm": "champion", "experiment_id": None, "probability": 0.5,
           "slot": None}
    row.update(over)
    return row


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps({k: v for k, v in r.items() if v is not None})) + "\n"
                   for r in rows)


def drop(paths: EventPaths, name: str, text: str):
    path = paths.incoming / name
    path.write_text(text)
    return path


def rows(con, sql: str, params=()):
    return con.execute(sql, list(params)).fetchall()


# -- checking one event --------------------------------------------------------------------------------


def test_a_good_event_is_checked_into_an_event_with_utc_time():
    e, problem = check_event(event(ts="2024-05-01T14:00:00+02:00", probability=1))
    assert problem is None
    assert (e.event, e.modality, e.probability, e.slot) == ("impression", "image", 1.0, None)
    assert e.ts == datetime(2024, 5, 1, 12)
    assert check_event(event(ts="2024-05-01T12:00:00"))[0].ts == datetime(2024, 5, 1, 12)  # no offset: UTC
    assert check_event(event(user_id=7))[0].user_id == "7"  # optional ids: a number is its text


@pytest.mark.parametrize(
    "over, message",
    [
        ({"event_id": None}, "missing event_id"),
        ({"serve_id": "  "}, "missing serve_id"),
        ({"sample_id": 12}, "sample_id must be a string, got a number 12"),
        ({"event": "view"}, "event must be one of impression, click, conversion, got 'view'"),
        ({"event": None}, "missing event"),
        ({"modality": "audio"}, "modality must be one of image, text, got 'audio'"),
        ({"category": ""}, "missing category"),
        ({"model_version": ["m1"]}, 'model_version must be a string, got an array ["m1"]'),
        ({"arm": None}, "missing arm"),
        ({"ts": None}, "missing ts"),
        ({"ts": "last tuesday"}, "ts 'last tuesday' is not an ISO-8601 timestamp"),
        ({"ts": 1714564800}, "ts must be an ISO-8601 string, got a number"),
        ({"probability": None}, "missing probability"),
        ({"probability": 0}, "probability 0 is outside (0, 1]"),
        ({"probability": 1.5}, "probability 1.5 is outside (0, 1]"),
        ({"probability": -0.2}, "probability -0.2 is outside (0, 1]"),
        ({"probability": "0.5"}, "probability must be a number in (0, 1], got a string '0.5'"),
        ({"probability": True}, "probability must be a number in (0, 1], got a boolean true"),
        ({"probability": math.nan}, "probability must be a finite number in (0, 1], got nan"),
        ({"slot": {"x": 1}}, "slot must be a string, got an object"),
        ({"experiment_id": False}, "experiment_id must be a string, got a boolean"),
    ],
)
def test_each_bad_field_is_named(over, message):
    e, problem = check_event(event(**over))
    assert e is None and message in problem, problem


def test_every_problem_of_an_event_is_reported_at_once():
    _, problem = check_event({"event": "click", "probability": 2})
    assert problem.split("; ")[:3] == ["missing event_id", "missing serve_id", "missing sample_id"]
    assert "probability 2 is outside (0, 1]" in problem and "missing ts" in problem


# -- writing event files -------------------------------------------------------------------------------


def test_append_events_lands_one_whole_file_with_ids_and_times_filled(paths):
    row = event()
    del row["event_id"], row["ts"]
    path = append_events(paths, [row, event("s1", "click")])
    assert path.parent == paths.incoming and path.suffix == ".jsonl" and not path.name.startswith(".")
    assert list(paths.incoming.iterdir()) == [path]  # no temporary file left behind
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["event_id"] == event_id_for("s1", "impression") and lines[0]["ts"].endswith("Z")
    assert validate_event_file(path) == []
    assert append_events(paths, [event()]) != path  # every call its own file


def test_append_events_checks_every_row_before_writing_anything(paths):
    with pytest.raises(ValueError, match=r"event_file: row 1: probability 0 is outside \(0, 1\]"):
        append_events(paths, [event(), event(probability=0)])
    with pytest.raises(ValueError, match=r"row 0: unknown field\(s\) 'colour'"):
        append_events(paths, [{**event(), "colour": "red"}])
    with pytest.raises(ValueError, match="no rows"):
        event_file([])
    assert list(paths.incoming.iterdir()) == []


def test_append_events_is_atomic_a_failed_write_leaves_nothing(paths, monkeypatch):
    import gen_assets.store.files as files

    def power_cut(*args):
        raise OSError("power cut")

    monkeypatch.setattr(files.os, "replace", power_cut)  # the rename that makes the file appear
    with pytest.raises(OSError, match="power cut"):
        append_events(paths, [event()])
    assert list(paths.incoming.iterdir()) == []  # neither the file nor its hidden temporary copy


# -- ingestion -----------------------------------------------------------------------------------------


def test_good_events_land_with_every_column_and_the_file_moves_to_processed(con, paths):
    path = drop(paths, "a.jsonl", jsonl(event("s1", experiment_id="x1", slot="top", probability=0.25),
                                        event("s1", "click", ts="2024-05-01T14:01:00+02:00"),
                                        event("s2", sample_id="txt-00001", arm="challenger")))
    before = events_version(con)
    [result] = ingest_events(con, paths)
    assert (result.rows_added, result.rows_duplicate, result.rows_quarantined, result.error) == (3, 0, 0, None)
    assert result.by_modality == {"image": 2, "text": 1}
    assert rows(con, "SELECT * EXCLUDE (ingested_at) FROM events ORDER BY serve_id, event DESC") == [
        (event_id_for("s1", "impression"), "s1", "impression", "img-00000", "u1", datetime(2024, 5, 1, 12), "image",
         "c", "m1", "champion", "x1", 0.25, "top", "a.jsonl"),
        (event_id_for("s1", "click"), "s1", "click", "img-00000", "u1", datetime(2024, 5, 1, 12, 1), "image",
         "c", "m1", "champion", None, 0.5, None, "a.jsonl"),
        (event_id_for("s2", "impression"), "s2", "impression", "txt-00001", "u1", datetime(2024, 5, 1, 12), "text",
         "c", "m1", "challenger", None, 0.5, None, "a.jsonl"),
    ]
    assert not path.exists() and (paths.processed / "a.jsonl").exists()
    assert rows(con, "SELECT file_name, rows_added, rows_duplicate, rows_quarantined FROM event_files") == [
        ("a.jsonl", 3, 0, 0)]
    assert events_version(con) != before


def test_bad_rows_are_quarantined_with_line_and_reason_and_the_good_ones_kept(con, paths):
    text = jsonl(
        event("s1"),  # 1
        event("s2", probability=0),  # 2
        event("s3", sample_id="img-99999"),  # 3 unknown sample
        "{not json",  # 4
        "",  # 5: blank, skipped
        '"a string"',  # 6
        event("s4", sample_id="txt-00000", modality="image"),  # 7: the sample is a text
        event("s5", event_id=event_id_for("s1", "impression")),  # 8: s1's id for another serve
        event("s1"),  # 9: line 1 again (a retry logged twice)
        event("s6", ts="soon", probability="high"),  # 10
    )
    drop(paths, "mixed.jsonl", text)
    [result] = ingest_events(con, paths)
    assert (result.rows_added, result.rows_duplicate, result.rows_quarantined) == (1, 1, 7)
    got = rows(con, "SELECT source, row_id::INTEGER, reason, snapshot_version FROM quarantine WHERE asset = 'events' "
                    "ORDER BY row_id::INTEGER")
    assert [(s, r, reason) for s, r, reason, _ in got] == [
        ("mixed.jsonl", 2, "probability 0 is outside (0, 1]: the chance with which this sample was served"),
        ("mixed.jsonl", 3, "unknown sample_id 'img-99999' (not in generated)"),
        ("mixed.jsonl", 4, got[2][2]),
        ("mixed.jsonl", 6, "malformed line: expected a JSON object, got a string"),
        ("mixed.jsonl", 7, "modality 'image' does not match sample 'txt-00000', a text sample"),
        ("mixed.jsonl", 8, f"event_id '{event_id_for('s1', 'impression')}' already names another event on line 1"),
        ("mixed.jsonl", 10, "ts 'soon' is not an ISO-8601 timestamp; probability must be a number in (0, 1], "
                            "got a string 'high'"),
    ]
    assert got[2][2].startswith("malformed line: invalid JSON")
    assert {v for *_, v in got} == {result.file_sha}
    assert rows(con, "SELECT serve_id FROM events") == [("s1",)]
    assert validate_event_file(paths.processed / "mixed.jsonl")[0] == "line 2: " + got[0][2]


def test_a_file_ingested_again_and_a_retried_request_add_nothing(con, paths):
    text = jsonl(event("s1"), event("s1", "click"), event("s2", probability=0))
    drop(paths, "a.jsonl", text)
    [first] = ingest_events(con, paths)
    version = events_version(con)
    shutil.copy(paths.processed / "a.jsonl", paths.incoming / "a-again.jsonl")  # the same content once more
    [again] = ingest_events(con, paths)
    assert again.already_ingested and (again.rows_added, again.rows_quarantined) == (first.rows_added, 1)
    # the server retried a request: the same events (another ts) in a new file, one really new
    drop(paths, "b.jsonl", jsonl(event("s1", "click", ts="2024-05-01T12:00:05Z"), event("s3")))
    [retry] = ingest_events(con, paths)
    assert (retry.rows_added, retry.rows_duplicate, retry.rows_quarantined) == (1, 1, 0)
    assert rows(con, "SELECT count(*) FROM events") == [(3,)]
    assert rows(con, "SELECT count(*) FROM quarantine WHERE asset = 'events'") == [(1,)]
    assert events_version(con) != version
    version = events_version(con)
    drop(paths, "c.jsonl", jsonl(event("s3")))  # duplicates only: the version stays
    [dup] = ingest_events(con, paths)
    assert (dup.rows_added, dup.rows_duplicate) == (0, 1) and events_version(con) == version
    # an id already stored for another event is quarantined, naming the file that has it
    drop(paths, "d.jsonl", jsonl(event("s9", event_id=event_id_for("s3", "impression"))))
    [clash] = ingest_events(con, paths)
    assert clash.rows_quarantined == 1
    assert rows(con, "SELECT reason FROM quarantine WHERE source = 'd.jsonl'") == [
        (f"event_id '{event_id_for('s3', 'impression')}' already names another event, from b.jsonl",)]
    assert list(paths.incoming.iterdir()) == []


@pytest.mark.parametrize(
    "name, text, problem",
    [
        ("a.csv", "event_id,serve_id\n", "not an event file: expected .jsonl, got '.csv'"),
        ("a.jsonl", "\n\n", "empty file (no events)"),
        ("a.jsonl", "[1]\nnope\n", "not JSONL events: no line is a JSON object (line 1: malformed line: expected a "
                                   "JSON object, got an array)"),
        ("a.jsonl", '{"sample_id": "img-00000", "rating": 4}\n', "no record has a 'event_id' or 'serve_id'"),
    ],
)
def test_a_structurally_broken_file_goes_to_failed_whole_without_blocking_the_others(con, paths, name, text, problem):
    broken = drop(paths, name, text)
    drop(paths, "b.jsonl", jsonl(event("s1")))
    refused, good = ingest_events(con, paths)
    assert refused.error and problem in refused.error and name in refused.error
    assert not broken.exists() and (paths.failed / name).exists()
    assert good.rows_added == 1 and (paths.processed / "b.jsonl").exists()
    assert rows(con, "SELECT source, row_id, reason FROM quarantine WHERE asset = 'events'") == [
        (name, None, f"file refused: {refused.error.split(': ', 1)[1]}")]
    with pytest.raises(FeedbackFileError, match="jsonl|events|record"):
        validate_event_file(paths.failed / name)


def test_a_crash_before_the_commit_leaves_nothing_and_the_file_waiting(con, paths, monkeypatch):
    path = drop(paths, "a.jsonl", jsonl(event("s1"), event("s2", probability=0)))

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ev.wh, "insert_quarantine", crash)  # after the events went in, before the commit
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_events(con, paths)
    for table in ("events", "event_files", "quarantine"):
        assert rows(con, f"SELECT count(*) FROM {table}") == [(0,)], table
    assert path.exists()
    monkeypatch.undo()
    [result] = ingest_events(con, paths)
    assert (result.rows_added, result.rows_quarantined) == (1, 1) and not path.exists()


def test_a_crash_between_commit_and_move_only_moves_the_file_next_time(con, paths, monkeypatch):
    path = drop(paths, "a.jsonl", jsonl(event("s1"), event("s2", probability=0)))
    real_move = ev._move

    def crash(*args):
        raise OSError("power cut")

    monkeypatch.setattr(ev, "_move", crash)
    with pytest.raises(OSError, match="power cut"):
        ingest_events(con, paths)
    assert path.exists() and rows(con, "SELECT count(*) FROM events") == [(1,)]
    monkeypatch.setattr(ev, "_move", real_move)
    [again] = ingest_events(con, paths)
    assert again.already_ingested and (again.rows_added, again.rows_quarantined) == (1, 1)
    assert rows(con, "SELECT count(*) FROM quarantine") == [(1,)] and not path.exists()


def test_hidden_files_are_still_being_written_and_wait(con, paths):
    (paths.incoming / ".tmp-being-written.jsonl").write_text(jsonl(event("s1")))
    assert ingest_events(con, paths) == []
    assert rows(con, "SELECT count(*) FROM events") == [(0,)]


# -- reading back --------------------------------------------------------------------------------------


def test_summary_and_arm_counts(con, paths):
    drop(paths, "a.jsonl", jsonl(
        event("s1", experiment_id="x"), event("s1", "click", experiment_id="x"), event("s1", "conversion"),
        event("s2", arm="challenger", experiment_id="x"), event("s3", arm="challenger", experiment_id="x"),
        event("s3", "click", arm="challenger", experiment_id="x"),
        event("s4", arm="challenger", experiment_id="y"),
        event("s5", "click", experiment_id="x"),  # its impression has not landed: not counted
        event("t1", sample_id="txt-00000"),
    ))
    ingest_events(con, paths)
    assert events_summary(con) == {
        "image": {"impressions": 4, "clicks": 3, "conversions": 1, "samples": 1, "click_rate": 0.75},
        "text": {"impressions": 1, "clicks": 0, "conversions": 0, "samples": 1, "click_rate": 0.0},
    }
    assert arm_counts(con, "x") == {"champion": (1, 1), "challenger": (2, 1)}
    assert arm_counts(con, "nope") == {}


def served(con, paths, requests: list[tuple[str, str, float, bool]], name: str = "served.jsonl") -> None:
    """Land and ingest (serve_id, sample_id, probability, clicked) requests as impression and click events."""
    lines = []
    for serve_id, sample_id, p, clicked in requests:
        lines.append(event(serve_id, sample_id=sample_id, probability=p))
        if clicked:
            lines.append(event(serve_id, "click", sample_id=sample_id, probability=p))
    drop(paths, name, jsonl(*lines))
    [result] = ingest_events(con, paths)
    assert result.rows_quarantined == 0


def test_ips_recovers_the_click_rate_a_biased_bandit_hides(con, paths):
    """Half the requests come from people likely to click (60% click sample A, else 10%). The bandit shows A to
    90% of the likely clickers and 10% of the others: among A's impressions 90% are likely clickers, so the
    plain share of clicked impressions says 55%. Shown to everyone, A would get 0.5 x 60% + 0.5 x 10% = 35%."""
    rng = np.random.default_rng(0)
    requests = []
    for i in range(8000):
        likely = rng.random() < 0.5
        p_a = 0.9 if likely else 0.1
        if rng.random() < p_a:
            requests.append((f"r{i}", "img-00000", p_a, bool(rng.random() < (0.6 if likely else 0.1))))
        else:
            requests.append((f"r{i}", "img-00001", 1 - p_a, bool(rng.random() < 0.3)))
    served(con, paths, requests)
    labels = click_labels(con, "image", min_impressions=20).set_index("sample_id")
    a = labels.loc["img-00000"]
    naive = a["clicks"] / a["impressions"]
    assert naive == pytest.approx(0.55, abs=0.03)  # biased by where the bandit showed it
    assert a["ips_rate"] == pytest.approx(0.35, abs=0.03)  # what serving it to everyone would give
    assert labels.loc["img-00001", "ips_rate"] == pytest.approx(0.3, abs=0.03)
    # A truly beats B (35% vs 30%); and its label says so, though the naive rates are 55% vs ~30% either way
    assert a["rating"] > labels.loc["img-00001", "rating"]


def test_click_labels_ratings_are_mid_rank_percentiles_and_weights_the_effective_impressions(con, paths):
    requests = []
    # img-00000: 40 impressions at p=0.5, 10 clicked -> 0.25; weight 1 (40 even impressions, capped)
    requests += [(f"a{i}", "img-00000", 0.5, i < 10) for i in range(40)]
    # img-00001: 10 at p=1 (3 clicked) and 10 at p=0.1 (5 clicked): sum(c/p) = 3 + 50, sum(1/p) = 10 + 100
    requests += [(f"b{i}", "img-00001", 1.0, i < 3) for i in range(10)]
    requests += [(f"c{i}", "img-00001", 0.1, i < 5) for i in range(10)]
    # img-00002: 20 at p=0.5, 5 clicked -> 0.25, a tie with img-00000
    requests += [(f"d{i}", "img-00002", 0.5, i < 5) for i in range(20)]
    # img-00003: 19 impressions, too few for a label
    requests += [(f"e{i}", "img-00003", 0.5, True) for i in range(19)]
    served(con, paths, requests)
    labels = click_labels(con, "image", min_impressions=20)
    assert list(labels.columns) == ["sample_id", "impressions", "clicks", "ips_rate", "rating", "weight"]
    assert list(labels["sample_id"]) == ["img-00000", "img-00001", "img-00002"]
    assert list(labels["impressions"]) == [40, 20, 20] and list(labels["clicks"]) == [10, 8, 5]
    np.testing.assert_allclose(labels["ips_rate"], [0.25, 53 / 110, 0.25])
    # ranks 1.5, 3, 1.5 of 3: percentiles (rank - 0.5) / 3
    np.testing.assert_allclose(labels["rating"], [1 + 4 * 1 / 3, 1 + 4 * 2.5 / 3, 1 + 4 * 1 / 3])
    ess_b = 110**2 / (10 * 1 + 10 * 100)  # ~12: ten impressions of p = 0.1 carry most of the estimate
    np.testing.assert_allclose(labels["weight"], [1.0, ess_b / 20, 1.0])
    assert click_labels(con, "text").empty
    assert len(click_labels(con, "image", min_impressions=19)) == 4
    with pytest.raises(ValueError, match="min_impressions must be >= 1"):
        click_labels(con, "image", min_impressions=0)


def test_reward_rows_put_ratings_and_click_labels_together():
    clicks = pd.DataFrame({"sample_id": ["b", "c"], "impressions": [20, 30], "clicks": [1, 2], "ips_rate": [0.05, 0.07],
                           "rating": [2.0, 4.0], "weight": [0.5, 1.0]})
    got = reward_rows([("a", 4.5), ("b", 2.0)], clicks)
    assert got.to_dict("records") == [
        {"sample_id": "a", "rating": 4.5, "weight": 1.0, "source": "ratings"},
        {"sample_id": "b", "rating": 2.0, "weight": 1.0, "source": "ratings"},
        {"sample_id": "b", "rating": 2.0, "weight": 0.5, "source": "clicks"},
        {"sample_id": "c", "rating": 4.0, "weight": 1.0, "source": "clicks"},
    ]
    only = reward_rows([("a", 4.5)], clicks.iloc[:0])
    assert list(only["source"]) == ["ratings"]
