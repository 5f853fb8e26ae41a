"""Ingestion: one transaction per file, every bad row in quarantine with its line and reason, the same
content never twice, and crashes (raised or a killed process) before, inside and after the transaction
losing and duplicating nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone

import duckdb
import pytest

import gen_assets.feedback.ingest as ingest
from gen_assets.feedback.ingest import (
    ensure_feedback_schema,
    failed_files,
    feedback_version,
    ingest_file,
    ingest_pending,
    quarantine_share_by_file,
    ratings_for,
    ratings_summary,
    record_feedback_version,
    unknown_sample_count,
)
from gen_assets.feedback.landing import FeedbackPaths, import_file, validate_file
from gen_assets.store import registry
from gen_assets.store import warehouse as wh
from gen_assets.store.batches import batch_table, write_batch

HEADER = "sample_id,rating,user_id,ts,comment\n"


def add_batch(con, directory, batch_id: str, modality: str, n: int) -> None:
    contents = [b"\x89PNG" + bytes([i]) for i in range(n)] if modality == "image" else [f"text {i}" for i in range(n)]
    table = batch_table(batch_id=batch_id, model_version="m1", modality=modality, categories=["c"] * n,
                        contents=contents, seed=0)
    path = write_batch(table, directory, batch_id)
    registry.register_batch(con, batch_id=batch_id, modality=modality, model_version="m1", path=str(path),
                            grid_path=None, n_samples=n)


@pytest.fixture
def warehouse(tmp_path):
    """A warehouse whose `generated` view holds img-00000..00003 (image) and txt-00000..00002 (text)."""
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    wh.ensure_schema(con)
    add_batch(con, tmp_path / "batches", "img", "image", 4)
    add_batch(con, tmp_path / "batches", "txt", "text", 3)
    yield con, db
    con.close()


@pytest.fixture
def paths(tmp_path):
    return FeedbackPaths(tmp_path / "feedback").ensure()


def drop(paths, name: str, text: str):
    path = paths.incoming / name
    path.write_text(text)
    return path


def rows(con, sql: str, params=()):
    return con.execute(sql, list(params)).fetchall()


def test_good_file_lands_in_feedback_with_modality_and_moves_to_processed(warehouse, paths):
    con, _ = warehouse
    path = drop(paths, "a.csv", HEADER + "img-00000,5,ann,2024-05-01T14:00:00+02:00,nice\ntxt-00001,2,bob,2024-05-01T12:00:00Z,\n")
    before = feedback_version(con)
    [result] = ingest_pending(con, paths.root)
    assert (result.file_name, result.rows_ok, result.rows_quarantined, result.already_ingested) == ("a.csv", 2, 0, False)
    assert result.by_modality == {"image": 1, "text": 1}
    assert rows(con, "SELECT sample_id, rating, user_id, ts, comment, modality, file_name, line FROM feedback ORDER BY line") == [
        ("img-00000", 5, "ann", datetime(2024, 5, 1, 12, 0), "nice", "image", "a.csv", 2),
        ("txt-00001", 2, "bob", datetime(2024, 5, 1, 12, 0), None, "text", "a.csv", 3),
    ]
    assert not path.exists() and (paths.processed / "a.csv").exists()
    assert rows(con, "SELECT file_name, rows_ok, rows_quarantined FROM feedback_files") == [("a.csv", 2, 0)]
    assert feedback_version(con) != before
    assert ratings_summary(con) == {"image": {"ratings": 1, "samples": 1, "mean_rating": 5.0},
                                    "text": {"ratings": 1, "samples": 1, "mean_rating": 2.0}}


def test_every_bad_row_kind_is_quarantined_with_its_line_and_reason(warehouse, paths):
    con, _ = warehouse
    lines = [
        "img-00000,4,ann,2024-05-01T12:00:00Z,good",  # 2
        "nope-00000,4,ann,2024-05-01T12:00:00Z,",  # 3 unknown sample
        "img-00001,0,ann,,",  # 4
        "img-00001,6,ann,,",  # 5
        "img-00001,3.5,ann,,",  # 6
        "img-00001,five,ann,,",  # 7
        "img-00001,,ann,,",  # 8 missing rating
        ",3,ann,,",  # 9 missing sample_id
        "img-00001,3,ann,last tuesday,",  # 10
        "img-00001,3,ann",  # 11 malformed: too few fields
        "img-00000,2,ann,2024-05-01T12:00:00Z,again",  # 12 duplicate of line 2
        "img-00000,2,bob,2024-05-01T12:00:00Z,",  # 13 good: another user
    ]
    drop(paths, "mixed.csv", HEADER + "\n".join(lines) + "\n")
    drop(paths, "mixed.jsonl", '{"sample_id": "txt-00000", "rating": 4}\n{"sample_id": "txt-00001", "rating": 4\n"just a string"\n')
    results = ingest_pending(con, paths.root)
    assert [(r.file_name, r.rows_ok, r.rows_quarantined) for r in results] == [("mixed.csv", 2, 10), ("mixed.jsonl", 1, 2)]
    got = rows(con, "SELECT source, row_id::INTEGER, reason, snapshot_version FROM quarantine WHERE asset = 'feedback' ORDER BY source, row_id::INTEGER")
    csv_sha, jsonl_sha = results[0].file_sha, results[1].file_sha
    assert [(s, r, reason) for s, r, reason, _ in got] == [
        ("mixed.csv", 3, "unknown sample_id 'nope-00000' (not in generated)"),
        ("mixed.csv", 4, "rating 0 is outside 1..5"),
        ("mixed.csv", 5, "rating 6 is outside 1..5"),
        ("mixed.csv", 6, "rating must be a whole number from 1 to 5, got '3.5'"),
        ("mixed.csv", 7, "rating must be a whole number from 1 to 5, got 'five'"),
        ("mixed.csv", 8, "missing rating"),
        ("mixed.csv", 9, "missing sample_id"),
        ("mixed.csv", 10, "ts 'last tuesday' is not an ISO-8601 timestamp"),
        ("mixed.csv", 11, "malformed CSV line: 3 fields, the header has 5"),
        ("mixed.csv", 12, "duplicate of line 2"),
        ("mixed.jsonl", 2, got[10][2]),
        ("mixed.jsonl", 3, "malformed line: expected a JSON object, got a string"),
    ]
    assert got[10][2].startswith("malformed line: invalid JSON")
    assert {v for *_, v in got} == {csv_sha, jsonl_sha}
    assert sorted(rows(con, "SELECT line FROM feedback WHERE file_name = 'mixed.csv'")) == [(2,), (13,)]
    shares = quarantine_share_by_file(con)
    assert shares == {"mixed.csv": pytest.approx(10 / 12), "mixed.jsonl": pytest.approx(2 / 3)}
    assert unknown_sample_count(con) == 0


def test_missing_ts_is_the_files_landing_time(warehouse, paths):
    con, _ = warehouse
    path = drop(paths, "a.jsonl", '{"sample_id": "img-00000", "rating": 4}\n')
    landed = datetime(2024, 3, 2, 10, 30, tzinfo=timezone.utc)
    os.utime(path, (landed.timestamp(), landed.timestamp()))
    ingest_pending(con, paths.root)
    assert rows(con, "SELECT ts FROM feedback") == [(datetime(2024, 3, 2, 10, 30),)]


def test_same_content_twice_is_ingested_once(warehouse, paths):
    con, _ = warehouse
    text = HEADER + "img-00000,4,ann,2024-05-01T12:00:00Z,\n"
    drop(paths, "a.csv", text)
    drop(paths, "b.csv", text)  # the same content under another name
    first, second = ingest_pending(con, paths.root)
    assert (first.rows_ok, first.already_ingested) == (1, False)
    assert (second.rows_ok, second.already_ingested) == (1, True)
    version = feedback_version(con)
    drop(paths, "a.csv", text)  # and dropped again under its own name
    [third] = ingest_pending(con, paths.root)
    assert third.already_ingested
    assert rows(con, "SELECT count(*) FROM feedback") == [(1,)]
    assert rows(con, "SELECT count(*) FROM feedback_files") == [(1,)]
    assert feedback_version(con) == version
    assert sorted(p.name for p in paths.processed.iterdir()) == ["a.csv", "b.csv"]
    assert list(paths.incoming.iterdir()) == []
    assert ingest_pending(con, paths.root) == []


def test_crash_between_commit_and_move_loses_and_duplicates_nothing(warehouse, paths, monkeypatch):
    con, _ = warehouse
    path = drop(paths, "a.csv", HEADER + "img-00000,4,ann,2024-05-01T12:00:00Z,\nimg-00001,9,ann,,\n")
    real_move = ingest._move

    def crash(*args):
        raise OSError("power cut")

    monkeypatch.setattr(ingest, "_move", crash)
    with pytest.raises(OSError, match="power cut"):
        ingest_pending(con, paths.root)
    assert path.exists()  # committed but not moved
    assert rows(con, "SELECT count(*) FROM feedback") == [(1,)]
    monkeypatch.setattr(ingest, "_move", real_move)
    [again] = ingest_pending(con, paths.root)
    assert again.already_ingested and (again.rows_ok, again.rows_quarantined) == (1, 1)
    assert rows(con, "SELECT count(*) FROM feedback") == [(1,)]
    assert rows(con, "SELECT count(*) FROM quarantine WHERE asset = 'feedback'") == [(1,)]
    assert not path.exists() and (paths.processed / "a.csv").exists()


def test_failure_inside_the_transaction_leaves_nothing_and_the_file_waiting(warehouse, paths, monkeypatch):
    con, _ = warehouse
    path = drop(paths, "a.csv", HEADER + "img-00000,4,ann,2024-05-01T12:00:00Z,\nimg-00001,9,ann,,\n")

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ingest.wh, "insert_quarantine", crash)  # after the feedback rows went in
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_pending(con, paths.root)
    for table in ("feedback", "feedback_files", "quarantine"):
        assert rows(con, f"SELECT count(*) FROM {table}") == [(0,)], table
    assert path.exists()
    monkeypatch.undo()
    [result] = ingest_pending(con, paths.root)
    assert (result.rows_ok, result.rows_quarantined) == (1, 1)


def test_a_concurrent_run_committing_the_same_content_first_wins_cleanly(warehouse, paths, monkeypatch, tmp_path):
    con, _ = warehouse
    text = HEADER + "img-00000,4,ann,2024-05-01T12:00:00Z,\n"
    path = drop(paths, "a.csv", text)
    other_dir = tmp_path / "elsewhere"
    other_dir.mkdir()
    (other_dir / "a-copy.csv").write_text(text)
    real_insert = ingest.wh.insert_quarantine
    other = con.cursor()  # a second connection to the same database

    def race(c, rows_):
        monkeypatch.setattr(ingest.wh, "insert_quarantine", real_insert)
        assert ingest_file(other, other_dir / "a-copy.csv", paths.processed).rows_ok == 1  # commits first
        return real_insert(c, rows_)

    monkeypatch.setattr(ingest.wh, "insert_quarantine", race)
    result = ingest_file(con, path, paths.processed)  # its own commit conflicts with the other's
    assert result.already_ingested and result.rows_ok == 1
    assert rows(con, "SELECT count(*) FROM feedback") == [(1,)]
    assert not path.exists()
    other.close()


KILLED = """
import os, sys, duckdb
import gen_assets.feedback.ingest as ingest
where = sys.argv[3]
if where == "inside":   # killed after the feedback rows went in, before the commit
    ingest.wh.insert_quarantine = lambda *a, **k: os._exit(17)
else:                   # killed after the commit, before the file moved
    ingest._move = lambda *a, **k: os._exit(17)
con = duckdb.connect(sys.argv[1])
ingest.ingest_pending(con, sys.argv[2])
"""


@pytest.mark.parametrize("where", ["inside", "after_commit"])
def test_a_killed_process_loses_and_duplicates_nothing(tmp_path, warehouse, paths, where):
    con, db = warehouse
    con.close()  # the child process needs the database file to itself
    path = drop(paths, "a.csv", HEADER + "img-00000,4,ann,2024-05-01T12:00:00Z,\nimg-00001,9,ann,,\n")
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED), str(db), str(paths.root), where],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 17, child.stderr
    assert path.exists()
    with duckdb.connect(str(db)) as con:
        committed = rows(con, "SELECT count(*) FROM feedback")[0][0]
        assert committed == (0 if where == "inside" else 1)
        [result] = ingest_pending(con, paths.root)
        assert result.already_ingested == (where == "after_commit")
        assert rows(con, "SELECT count(*) FROM feedback") == [(1,)]
        assert rows(con, "SELECT count(*) FROM quarantine WHERE asset = 'feedback'") == [(1,)]
        assert rows(con, "SELECT count(*) FROM feedback_files") == [(1,)]
    assert not path.exists() and (paths.processed / "a.csv").exists()


def test_a_broken_file_goes_to_failed_once_without_blocking_the_others(warehouse, paths, monkeypatch):
    con, _ = warehouse
    drop(paths, "a.csv", "sample_id,score\nimg-00000,4\n")
    drop(paths, "b.csv", HEADER + "img-00000,4,ann,,\n")
    real_move = ingest._move
    calls = []

    def crash_first(path, directory, sha):
        calls.append(path.name)
        if len(calls) == 1:
            raise OSError("power cut")
        return real_move(path, directory, sha)

    monkeypatch.setattr(ingest, "_move", crash_first)
    with pytest.raises(OSError):
        ingest_pending(con, paths.root)  # the broken file's quarantine row committed, the move failed
    failed, ok = ingest_pending(con, paths.root)
    assert failed.error and "a.csv" in failed.error and "no 'rating' column" in failed.error
    assert (paths.failed / "a.csv").exists() and (paths.processed / "b.csv").exists()
    assert ok.rows_ok == 1
    [(name, reason)] = failed_files(con)
    assert name == "a.csv" and reason.startswith("file refused: CSV header has no 'rating' column")
    assert rows(con, "SELECT count(*) FROM feedback_files") == [(1,)]


def test_unknown_sample_count_sees_samples_that_left_generated(warehouse, paths):
    con, _ = warehouse
    drop(paths, "a.csv", HEADER + "img-00000,4,ann,,\ntxt-00000,2,ann,,\ntxt-00000,4,bob,,\n")
    ingest_pending(con, paths.root)
    assert unknown_sample_count(con) == 0
    assert ratings_for(con, "text") == [("txt-00000", 3.0)]
    assert ratings_for(con, "image") == [("img-00000", 4.0)]
    con.execute("DELETE FROM batches WHERE batch_id = 'txt'")
    registry.refresh_generated_view(con)
    assert unknown_sample_count(con) == 2


def test_feedback_version_is_the_set_of_ingested_files(tmp_path, warehouse):
    con, _ = warehouse
    versions = []
    for order in (["a", "b"], ["b", "a"]):
        p = FeedbackPaths(tmp_path / f"fb-{'-'.join(order)}").ensure()
        c = duckdb.connect()
        ensure_feedback_schema(c)
        c.execute("CREATE OR REPLACE VIEW generated AS SELECT 'img-00000' AS sample_id, 'image' AS modality")
        for name in order:
            (p.incoming / f"{name}.csv").write_text(HEADER + f"img-00000,4,{name},,\n")
            ingest_file(c, p.incoming / f"{name}.csv", p.processed)
        versions.append(feedback_version(c))
        c.close()
    assert versions[0] == versions[1]


def test_read_helpers_work_on_a_read_only_warehouse_without_feedback(tmp_path):
    db = tmp_path / "empty.duckdb"
    duckdb.connect(str(db)).close()
    with duckdb.connect(str(db), read_only=True) as con:
        assert quarantine_share_by_file(con) == {}
        assert unknown_sample_count(con) == 0
        assert ratings_for(con, "image") == []
        assert failed_files(con) == []
        assert len(feedback_version(con)) == 16


def test_record_feedback_version_records_the_exact_set_of_files_once(warehouse, paths):
    con, _ = warehouse
    drop(paths, "a.csv", HEADER + "img-00000,4,ann,,\n")
    ingest_pending(con, paths.root)
    [sha_a] = [r[0] for r in rows(con, "SELECT file_sha FROM feedback_files")]
    version_a = record_feedback_version(con)
    assert version_a == feedback_version(con) and record_feedback_version(con) == version_a  # recorded once
    drop(paths, "b.csv", HEADER + "img-00001,2,bob,,\n")
    ingest_pending(con, paths.root)
    version_ab = record_feedback_version(con)
    shas = sorted(r[0] for r in rows(con, "SELECT file_sha FROM feedback_files"))
    assert version_ab != version_a
    assert rows(con, "SELECT feedback_version, file_shas FROM feedback_versions ORDER BY len(file_shas)") == [
        (version_a, [sha_a]), (version_ab, shas)]


def test_a_lone_surrogate_is_quarantined_and_never_jams_the_landing_zone(warehouse, paths, tmp_path):
    """A JSON "\\ud800" escape decodes to a string UTF-8 cannot hold: the import accepts the file, its row
    is quarantined at ingestion (the rest of the file kept), and the newer file is ingested too."""
    con, _ = warehouse
    src = tmp_path / "export.jsonl"
    src.write_text('{"sample_id": "img-00000", "rating": 4, "user_id": "ann", "comment": "bad \\ud800 text"}\n'
                   '{"sample_id": "img-00001", "rating": 5, "user_id": "ann"}\n')
    assert validate_file(src).errors == ["line 1: comment is not valid text: a lone surrogate \\ud800 at character 5"]
    import_file(src, paths)
    drop(paths, "zz-newer.csv", HEADER + "img-00002,3,bob,2024-05-01T12:00:00Z,\n")
    first, newer = ingest_pending(con, paths.root)
    assert (first.rows_ok, first.rows_quarantined, first.error) == (1, 1, None)
    assert (newer.rows_ok, newer.error) == (1, None)
    assert list(paths.incoming.iterdir()) == []
    [(reason,)] = rows(con, "SELECT reason FROM quarantine WHERE asset = 'feedback'")
    assert reason == "comment is not valid text: a lone surrogate \\ud800 at character 5"


def test_a_file_whose_content_fails_the_insert_goes_to_failed_with_a_stable_reason(warehouse, paths, monkeypatch):
    """A value no check caught (here: the Arrow conversion refuses it, naming an object with its address)
    fails only its own file: to failed/, with a reason free of memory addresses; newer files go on."""
    con, _ = warehouse
    drop(paths, "a.csv", HEADER + "img-00000,4,ann,2024-05-01T12:00:00Z,\n")
    drop(paths, "b.csv", HEADER + "img-00001,4,ann,2024-05-01T12:00:00Z,\n")
    real_table = ingest.pa.table

    def refuse_a(data, *args, **kwargs):
        if data.get("file_name") == ["a.csv"]:
            raise ingest.pa.ArrowTypeError(f"Could not convert {object()!r} with type object")
        return real_table(data, *args, **kwargs)

    monkeypatch.setattr(ingest.pa, "table", refuse_a)
    failed, ok = ingest_pending(con, paths.root)
    assert failed.error and (paths.failed / "a.csv").exists()
    assert ok.rows_ok == 1 and (paths.processed / "b.csv").exists()
    [(name, reason)] = failed_files(con)
    assert name == "a.csv"
    assert reason == "file refused: cannot be ingested: ArrowTypeError: Could not convert <object object> with type object"
    assert "0x" not in failed.error


def test_an_environment_failure_on_one_file_does_not_hold_back_the_newer_ones(warehouse, paths, monkeypatch):
    con, _ = warehouse
    a = drop(paths, "a.csv", HEADER + "img-00000,4,ann,2024-05-01T12:00:00Z,\n")
    drop(paths, "b.csv", HEADER + "img-00001,4,ann,2024-05-01T12:00:00Z,\n")
    real_ingest = ingest.ingest_file

    def disk_error_on_a(con_, path, processed):
        if path.name == "a.csv":
            raise OSError("I/O error")
        return real_ingest(con_, path, processed)

    monkeypatch.setattr(ingest, "ingest_file", disk_error_on_a)
    with pytest.raises(OSError, match="I/O error"):
        ingest_pending(con, paths.root)
    assert a.exists() and (paths.processed / "b.csv").exists()  # a waits for the next run; b did not wait
    assert rows(con, "SELECT sample_id FROM feedback") == [("img-00001",)]


def test_the_same_ratings_re_exported_with_crlf_are_not_counted_again(warehouse, paths):
    con, _ = warehouse
    lines = ["img-00000,4,ann,2024-05-01T12:00:00Z,nice", "img-00001,2,,2024-05-01T12:00:00Z,"]
    drop(paths, "a.csv", HEADER + "\n".join(lines) + "\n")
    drop(paths, "b.csv", (HEADER + "\n".join(lines + ["img-00002,5,ann,2024-05-01T12:00:00Z,"]) + "\n").replace("\n", "\r\n"))
    drop(paths, "c.jsonl", '{"sample_id": "img-00001", "rating": 3, "ts": "2024-05-01T14:00:00+02:00"}\n')
    first, second, third = ingest_pending(con, paths.root)
    assert (first.rows_ok, first.rows_quarantined) == (2, 0)
    assert (second.rows_ok, second.rows_quarantined, second.already_ingested) == (1, 2, False)
    assert (third.rows_ok, third.rows_quarantined) == (0, 1)  # anonymous, same sample and time: the same rating
    assert rows(con, "SELECT count(*) FROM feedback") == [(3,)]
    assert rows(con, "SELECT source, row_id::INTEGER, reason FROM quarantine ORDER BY source, row_id::INTEGER") == [
        ("b.csv", 2, "duplicate of a rating in a.csv"),
        ("b.csv", 3, "duplicate of a rating in a.csv"),
        ("c.jsonl", 1, "duplicate of a rating in a.csv"),
    ]


def test_a_timestamp_past_the_range_is_a_row_problem(warehouse, paths):
    con, _ = warehouse
    drop(paths, "a.jsonl", '{"sample_id": "img-00000", "rating": 4, "ts": "9999-12-31T23:59:59-01:00"}\n'
                           '{"sample_id": "img-00001", "rating": 4, "ts": "2024-05-01T12:00:00Z"}\n')
    [result] = ingest_pending(con, paths.root)
    assert (result.rows_ok, result.rows_quarantined, result.error) == (1, 1, None)
    assert rows(con, "SELECT reason FROM quarantine") == [("ts '9999-12-31T23:59:59-01:00' is out of range",)]
