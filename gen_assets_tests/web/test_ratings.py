"""The rating desk on its own: idempotency markers, a failed landing that can be retried, forgotten keys."""

import hashlib
import os
import subprocess
import sys
import time

import pytest

from gen_assets.feedback import landing
from gen_assets.web import ratings
from gen_assets.web.ratings import RatingConflict, RatingDesk, check_rating

ROW = {"sample_id": "image-b-00001", "rating": 4, "user_id": None, "comment": None}


def test_check_rating_uses_the_landing_zone_rules_and_the_known_samples():
    known = {"image-b-00001": "image"}
    limits = {"max_comment": 10, "max_user_id": 5}
    assert check_rating({"sample_id": " image-b-00001 ", "rating": "4"}, known, **limits) == (ROW, None)
    assert check_rating({"sample_id": "image-b-00001", "rating": 4, "comment": 7}, known, **limits)[0]["comment"] == "7"
    _, problem = check_rating({"sample_id": 12, "rating": 9}, known, **limits)
    assert problem == "sample_id must be a string, got a number 12; rating 9 is outside 1..5"  # every problem at once


def test_a_landing_that_fails_frees_its_key_for_the_retry(tmp_path, monkeypatch):
    desk = RatingDesk(tmp_path / "feedback")
    real = ratings._write_synced

    def disk_full(path, data):
        path.write_bytes(data[:3])  # a part of it, then the disk is full
        raise OSError("No space left on device")

    monkeypatch.setattr(ratings, "_write_synced", disk_full)
    with pytest.raises(OSError):
        desk.land(ROW, "key-1")
    assert list(desk.keys.iterdir()) == [] and list(desk.paths.incoming.iterdir()) == []  # no orphan .tmp
    monkeypatch.setattr(ratings, "_write_synced", real)
    assert desk.land(ROW, "key-1").replayed is False
    assert desk.land(ROW, "key-1").replayed is True
    assert len(list(desk.paths.incoming.iterdir())) == 1


def test_a_key_still_in_flight_is_refused_not_guessed(tmp_path):
    desk = RatingDesk(tmp_path / "feedback", wait_seconds=0.1)
    desk.keys.mkdir(parents=True)
    marker = desk.keys / (hashlib.sha256(b"busy").hexdigest() + ".json")
    fd = desk._claim(marker)  # another request holds the key and is still landing its rating
    try:
        with pytest.raises(RatingConflict, match="still being processed"):
            desk.land(ROW, "busy")
    finally:
        os.close(fd)
    assert not desk.paths.incoming.exists() or list(desk.paths.incoming.iterdir()) == []


CRASH = """
import os, sys
from pathlib import Path
from gen_assets.web import ratings
where = sys.argv[2]
if where == "before_record":   # the temporary file half written, no record: nothing landed
    def half(path, data):
        Path(path).write_bytes(data[:10])
        os._exit(17)
    ratings._write_synced = half
else:                           # the record written, killed before the rename into incoming/
    ratings.os.replace = lambda *a: os._exit(17)
ratings.RatingDesk(Path(sys.argv[1])).land({"sample_id": "image-b-00001", "rating": 4}, "crash-key")
"""


def crash_while_landing(root, where: str) -> None:
    child = subprocess.run([sys.executable, "-c", CRASH, str(root), where], capture_output=True, text=True, timeout=60)
    assert child.returncode == 17, child.stderr


def test_a_crash_after_the_record_is_landed_at_start_up_and_the_retry_finds_it(tmp_path):
    root = tmp_path / "feedback"
    crash_while_landing(root, "after_record")
    [tmp] = (root / "incoming").iterdir()
    assert tmp.name.startswith(".") and tmp.name.endswith(".tmp")  # the rating, not yet in incoming/
    desk = RatingDesk(root, wait_seconds=0.1)
    desk.recover()  # what the server does at start-up
    [landed] = landing.landing_files(root / "incoming")
    assert [p.name for p in (root / "incoming").iterdir()] == [landed.name]
    again = desk.land({"sample_id": "image-b-00001", "rating": 4}, "crash-key")
    assert again == ratings.Landed(landed.name, replayed=True)
    assert len(list((root / "incoming").iterdir())) == 1


def test_a_crash_after_the_record_is_landed_by_the_retry_itself(tmp_path):
    root = tmp_path / "feedback"
    crash_while_landing(root, "after_record")
    again = RatingDesk(root, wait_seconds=0.1).land({"sample_id": "image-b-00001", "rating": 4}, "crash-key")
    assert again.replayed and [p.name for p in (root / "incoming").iterdir()] == [again.file]


def test_a_crash_before_the_record_frees_the_key_and_the_retry_lands_once(tmp_path):
    root = tmp_path / "feedback"
    crash_while_landing(root, "before_record")
    desk = RatingDesk(root, wait_seconds=0.1)
    desk.recover()
    assert list((root / "incoming").iterdir()) == [] and list(desk.keys.iterdir()) == []  # swept, released
    first = desk.land({"sample_id": "image-b-00001", "rating": 4}, "crash-key")
    assert first.replayed is False
    assert desk.land({"sample_id": "image-b-00001", "rating": 4}, "crash-key") == ratings.Landed(first.file, True)
    assert [p.name for p in (root / "incoming").iterdir()] == [first.file]


def test_a_crash_before_the_record_is_resolved_by_the_retry_without_a_restart(tmp_path):
    root = tmp_path / "feedback"
    crash_while_landing(root, "before_record")
    first = RatingDesk(root, wait_seconds=0.1).land({"sample_id": "image-b-00001", "rating": 4}, "crash-key")
    assert first.replayed is False and [p.name for p in (root / "incoming").iterdir()] == [first.file]


def test_keys_are_forgotten_after_their_ttl(tmp_path):
    desk = RatingDesk(tmp_path / "feedback", key_ttl_seconds=60)
    desk.land(ROW, "old")
    [marker] = desk.keys.iterdir()
    an_hour_ago = time.time() - 3600
    os.utime(marker, (an_hour_ago, an_hour_ago))
    desk._next_sweep = 0.0  # the sweep runs at most hourly; this test does not wait an hour
    desk.land(ROW, "new")
    assert not marker.exists() and len(list(desk.keys.iterdir())) == 1  # only "new" is remembered
    assert desk.land(ROW, "old").replayed is False  # a forgotten key lands again
