"""The sensor's logic: scanning incoming/, deciding on a run by count or age with one run_key per batch of
files, a cursor that only moves when a run is requested, and the modalities of the waiting files."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import duckdb

from gen_assets.feedback.landing import FeedbackPaths, append_ratings
from gen_assets.feedback.pending import PendingFile, decide, files_by_modality, run_key_for, scan
from gen_assets.store import registry
from gen_assets.store import warehouse as wh
from gen_assets.store.batches import batch_table, write_batch

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def pending(name: str, ratings: int, minutes_ago: float = 1, sha: str | None = None) -> PendingFile:
    return PendingFile(name, sha or f"sha-{name}", ratings, NOW - timedelta(minutes=minutes_ago))


def test_no_files_no_run():
    d = decide([], None, now=NOW)
    assert d.run_key is None and d.files == [] and json.loads(d.new_cursor) == {"seen": []}


def test_below_threshold_waits_and_keeps_the_cursor():
    cursor = decide([pending("a", 30)], None, min_new_ratings=20, now=NOW).new_cursor  # a seen, in a run
    d = decide([pending("a", 30), pending("b", 10), pending("c", 20)], cursor, min_new_ratings=50, now=NOW)
    assert d.run_key is None and [f.name for f in d.files] == ["b", "c"]
    assert d.new_cursor == cursor
    assert "waiting: 30 new ratings" in d.reason


def test_at_threshold_one_run_then_none_for_the_same_files():
    files = [pending("a", 20), pending("b", 30)]
    d = decide(files, None, min_new_ratings=50, now=NOW)
    assert d.run_key == run_key_for(files) and [f.name for f in d.files] == ["a", "b"]
    assert "50 new ratings in 2 new files" in d.reason
    again = decide(files, d.new_cursor, min_new_ratings=50, now=NOW)
    assert again.run_key is None and again.files == []
    # the key depends on the files, not their order, and changes with any file's content
    assert run_key_for(list(reversed(files))) == d.run_key
    assert run_key_for([pending("a", 20), pending("b", 30, sha="edited")]) != d.run_key


def test_a_file_edited_in_place_is_new_again_and_gone_files_leave_the_cursor():
    d = decide([pending("a", 60)], None, now=NOW)
    d2 = decide([pending("a", 60, sha="v2"), pending("b", 1)], d.new_cursor, min_new_ratings=50, now=NOW)
    assert [f.name for f in d2.files] == ["a", "b"] and d2.run_key is not None
    assert json.loads(d2.new_cursor) == {"seen": [["a", "v2"], ["b", "sha-b"]]}  # ("a", "sha-a") is gone


def test_an_old_file_triggers_a_run_by_age():
    young = decide([pending("a", 3, minutes_ago=30)], None, min_new_ratings=50, max_age_seconds=3600, now=NOW)
    assert young.run_key is None
    old = decide([pending("a", 3, minutes_ago=61)], None, min_new_ratings=50, max_age_seconds=3600, now=NOW)
    assert old.run_key is not None and "waited 3660 s" in old.reason
    assert json.loads(old.new_cursor) == {"seen": [["a", "sha-a"]]}


def test_an_unreadable_cursor_counts_as_empty():
    d = decide([pending("a", 60)], "not json", now=NOW)
    assert d.run_key is not None


def test_scan_lists_files_with_counts_sha_and_landing_time(tmp_path):
    paths = FeedbackPaths(tmp_path).ensure()
    (paths.incoming / "a.csv").write_text("sample_id,rating\nimg-00000,4\n\nimg-00001,9\n")
    (paths.incoming / "b.csv").write_text("not,a,rating,file\n")  # broken: listed with 0 ratings
    (paths.incoming / ".c.jsonl.tmp").write_text('{"sample_id": "x", "rating": 1}\n')  # still being written
    append_ratings(paths, [{"sample_id": "txt-00000", "rating": 5}, {"sample_id": "txt-00001", "rating": 1}])
    landed = NOW.timestamp()
    os.utime(paths.incoming / "a.csv", (landed, landed))
    files = scan(paths.incoming)
    # in name order: the appended file's name starts with its landing time, digits before letters
    assert [(f.name[-5:], f.ratings) for f in files] == [("jsonl", 2), ("a.csv", 2), ("b.csv", 0)]
    assert files[1].oldest == NOW and len(files[1].sha) == 64
    assert files[1].sample_ids == ("img-00000", "img-00001")
    assert files[0].sample_ids == ("txt-00000", "txt-00001")
    # what scan reports drives decide: 4 ratings, below 5 or 4; a.csv landed a minute before "now"
    assert decide(files, None, min_new_ratings=5, now=NOW + timedelta(minutes=1)).run_key is None
    assert decide(files, None, min_new_ratings=4, now=NOW + timedelta(minutes=1)).run_key is not None


def test_files_are_grouped_by_the_modality_of_their_samples(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    wh.ensure_schema(con)
    for batch_id, modality, contents in (("img", "image", [b"a", b"b"]), ("txt", "text", ["x", "y"])):
        table = batch_table(batch_id=batch_id, model_version="m", modality=modality, categories=["c", "c"],
                            contents=contents, seed=0)
        path = write_batch(table, tmp_path, batch_id)
        registry.register_batch(con, batch_id=batch_id, modality=modality, model_version="m", path=str(path),
                                grid_path=None, n_samples=2)
    files = [
        PendingFile("images", "s1", 2, NOW, ("img-00000", "img-00001")),
        PendingFile("both", "s2", 2, NOW, ("img-00000", "txt-00001")),
        PendingFile("unknown", "s3", 1, NOW, ("gone-00000",)),
    ]
    groups = files_by_modality(con, files)
    assert {m: [f.name for f in fs] for m, fs in groups.items()} == {
        "image": ["images", "both"], "text": ["both"], None: ["unknown"]}
    keys = {run_key_for(files, m) for m in ("image", "text")}
    assert len(keys) == 2 and all(k.startswith(("feedback-image-", "feedback-text-")) for k in keys)
    con.close()
