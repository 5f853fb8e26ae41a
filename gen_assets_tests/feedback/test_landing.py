"""The landing zone: validation (structural errors raise naming the file, row problems are listed), atomic
import named by time and content, and append_ratings under many concurrent writers."""

from __future__ import annotations

import json
import threading
from datetime import datetime

import pytest

from gen_assets.feedback.landing import (
    stable_text,
    FeedbackFileError,
    FeedbackPaths,
    append_ratings,
    check_values,
    import_file,
    landing_files,
    parse_records,
    validate_file,
)


def write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


GOOD_CSV = "sample_id,rating,user_id,ts,comment\nb1-00000,5,ann,2024-05-01T12:00:00Z,lovely\nb1-00001,2,bob,,\n"


def test_validate_counts_rows_and_lists_row_problems_with_line_numbers(tmp_path):
    text = GOOD_CSV + "b1-00002,3.5,cy,,\nb1-00003,4,dee,yesterday,\n,4,eve,,\nb1-00004,4\n"
    summary = validate_file(write(tmp_path, "r.csv", text))
    assert summary.rows == 6
    assert summary.errors == [
        "line 4: rating must be a whole number from 1 to 5, got '3.5'",
        "line 5: ts 'yesterday' is not an ISO-8601 timestamp",
        "line 6: missing sample_id",
        "line 7: malformed CSV line: 2 fields, the header has 5",
    ]


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("empty.csv", "", "empty file"),
        ("blank.jsonl", "\n  \n", "empty file"),
        ("header_only.csv", "sample_id,rating\n", "header but no rows"),
        ("no_rating.csv", "sample_id,score\nb1-00000,4\n", "no 'rating' column"),
        ("no_columns.csv", "foo,bar\n1,2\n", "no 'sample_id' or 'rating' column"),
        ("ratings.txt", "sample_id,rating\nb1-00000,4\n", "not a rating file"),
        ("arrays.jsonl", '[1, 2]\n"x"\n', "no line is a JSON object"),
        ("wrong_fields.jsonl", '{"sample_id": "b1-00000", "score": 4}\n', "no record has a 'rating' field"),
        ("quote.csv", 'sample_id,rating,comment\nb1-00000,4,"never closed\nb1-00001,5,x\n', "unterminated quote"),
        ("latin1.csv", "sample_id,rating,comment\nb1-00000,4,caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_structural_problems_raise_naming_the_file(tmp_path, name, content, problem):
    path = write(tmp_path, name, content)
    with pytest.raises(FeedbackFileError, match=problem) as info:
        validate_file(path)
    assert name in str(info.value)


def test_missing_file_raises_naming_it(tmp_path):
    with pytest.raises(FeedbackFileError, match="nope.csv: file does not exist"):
        validate_file(tmp_path / "nope.csv")


def test_jsonl_malformed_lines_are_row_problems_not_fatal(tmp_path):
    text = '{"sample_id": "b1-00000", "rating": 4}\n{"sample_id": "b1-00001", "rating": \n[1]\n\n{"sample_id": "b1-00002"}\n'
    summary = validate_file(write(tmp_path, "r.jsonl", text))
    assert summary.rows == 4
    assert summary.errors[0].startswith("line 2: malformed line: invalid JSON")
    assert summary.errors[1:] == ["line 3: malformed line: expected a JSON object, got an array", "line 5: missing rating"]


@pytest.mark.parametrize(
    "rating, ok",
    [(1, True), (5, True), ("4", True), (" 3 ", True), (0, False), (6, False), (3.5, False), (5.0, False),
     ("3.5", False), ("five", False), (True, False), (None, False), ("", False),
     ("\u0665", False), ("\uff15", False), ("1\u0660", False)],  # Arabic-Indic and fullwidth digits: ASCII only
)
def test_rating_is_a_whole_number_from_1_to_5(rating, ok):
    parsed, reason = check_values({"sample_id": "s", "rating": rating})
    assert (parsed is not None) == ok, reason
    if ok:
        assert parsed.rating == int(str(rating).strip())


def test_timestamps_are_stored_as_utc():
    parsed, _ = check_values({"sample_id": "s", "rating": 3, "ts": "2024-05-01T14:00:00+02:00"})
    assert parsed.ts == datetime(2024, 5, 1, 12, 0)
    parsed, _ = check_values({"sample_id": "s", "rating": 3, "ts": "2024-05-01T12:00:00"})  # naive: UTC
    assert parsed.ts == datetime(2024, 5, 1, 12, 0)


def test_csv_line_numbers_follow_multiline_fields(tmp_path):
    text = 'sample_id,rating,comment\nb1-00000,4,"two\nlines"\n\nb1-00001,"x"y,z\nb1-00002,9,\n'
    records = parse_records("r.csv", text.encode())
    assert [r.line for r in records] == [2, 5, 6]
    assert records[0].values["comment"] == "two\nlines"
    assert records[1].values is None and "malformed CSV line" in records[1].error


def test_import_lands_atomically_once_per_content(tmp_path):
    src = write(tmp_path, "my ratings.csv", GOOD_CSV)
    paths = FeedbackPaths(tmp_path / "feedback")
    landed = import_file(src, paths.root)
    assert landed.parent == paths.incoming
    stamp, sha8, original = landed.name.split("-", 2)
    assert stamp.endswith("Z") and len(sha8) == 8 and original == "my_ratings.csv"
    assert landed.read_text() == GOOD_CSV
    again = import_file(src, paths.root)
    assert again == landed
    assert [p.name for p in paths.incoming.iterdir()] == [landed.name]  # no temporary file left either
    # once ingested (moved to processed/), the same content is still not landed again
    moved = paths.processed / landed.name
    landed.rename(moved)
    assert import_file(src, paths.root) == moved
    assert list(paths.incoming.iterdir()) == []


def test_import_refuses_a_broken_file_and_lands_nothing(tmp_path):
    src = write(tmp_path, "bad.csv", "sample_id,score\nb1-00000,4\n")
    paths = FeedbackPaths(tmp_path / "feedback")
    with pytest.raises(FeedbackFileError, match="bad.csv"):
        import_file(src, paths)
    assert not paths.incoming.exists() or list(paths.incoming.iterdir()) == []


def test_import_failure_while_writing_leaves_no_file(tmp_path, monkeypatch):
    src = write(tmp_path, "r.csv", GOOD_CSV)
    paths = FeedbackPaths(tmp_path / "feedback")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr("gen_assets.store.files.os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        import_file(src, paths)
    assert list(paths.incoming.iterdir()) == []  # the temporary file is gone too
    assert landing_files(paths.incoming) == []


def test_append_ratings_checks_rows_and_fills_ts(tmp_path, monkeypatch):
    paths = FeedbackPaths(tmp_path / "feedback")
    path = append_ratings(paths, [{"sample_id": "b1-00000", "rating": 4, "user_id": "ann", "comment": "ok"}])
    [row] = [json.loads(line) for line in path.read_text().splitlines()]
    assert row["sample_id"] == "b1-00000" and row["rating"] == 4 and row["ts"].endswith("Z")
    with pytest.raises(ValueError, match="row 1: rating 6 is outside 1..5"):
        append_ratings(paths, [{"sample_id": "a", "rating": 3}, {"sample_id": "b", "rating": 6}])
    with pytest.raises(ValueError, match="unknown field"):
        append_ratings(paths, [{"sample_id": "a", "rating": 3, "stars": 3}])
    assert landing_files(paths.incoming) == [path]
    # the same rows twice in the same microsecond still make two files: no write ever replaces another
    monkeypatch.setattr("gen_assets.feedback.landing._stamp", lambda: "20240501T000000.000000Z")
    same = [{"sample_id": "b1-00000", "rating": 4, "ts": "2024-05-01T00:00:00Z"}]
    assert append_ratings(paths, same) != append_ratings(paths, same)
    assert len(landing_files(paths.incoming)) == 3


def test_concurrent_append_ratings_lose_and_duplicate_nothing(tmp_path):
    paths = FeedbackPaths(tmp_path / "feedback")
    threads_n, calls = 50, 20
    barrier = threading.Barrier(threads_n)
    errors = []

    def writer(t: int) -> None:
        try:
            barrier.wait()
            for i in range(calls):
                append_ratings(paths, [{"sample_id": "b1-00000", "rating": 3, "user_id": f"u{t}", "ts": f"2024-05-01T00:00:{i:02d}Z"}])
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    files = landing_files(paths.incoming)
    assert len(files) == threads_n * calls
    assert [p for p in paths.incoming.iterdir() if p.name.startswith(".")] == []
    ratings = [(r["user_id"], r["ts"]) for p in files for r in map(json.loads, p.read_text().splitlines())]
    assert len(ratings) == len(set(ratings)) == threads_n * calls


def test_reasons_never_carry_memory_addresses():
    """A reason is stable text: a value of no JSON type shows as its type, never as its repr."""
    _, reason = check_values({"sample_id": object(), "rating": object(), "user_id": "ann"})
    assert reason == ("sample_id must be a string, got a value of type object; "
                      "rating must be a whole number from 1 to 5, got a value of type object")
    assert stable_text(TypeError(f"cannot use {object()!r} here")) == "cannot use <object object> here"
