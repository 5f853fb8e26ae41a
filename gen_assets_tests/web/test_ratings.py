"""The rating desk on its own: idempotency markers, a failed landing that can be retried, forgotten keys."""

import hashlib
import os
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
    real = landing.append_ratings

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(ratings, "append_ratings", disk_full)
    with pytest.raises(OSError):
        desk.land(ROW, "key-1")
    assert list(desk.keys.iterdir()) == []
    monkeypatch.setattr(ratings, "append_ratings", real)
    assert desk.land(ROW, "key-1").replayed is False
    assert desk.land(ROW, "key-1").replayed is True
    assert len(list(desk.paths.incoming.iterdir())) == 1


def test_a_key_whose_first_request_never_finished_is_refused_not_guessed(tmp_path):
    desk = RatingDesk(tmp_path / "feedback", wait_seconds=0.1)
    desk.keys.mkdir(parents=True)
    (desk.keys / (hashlib.sha256(b"stuck").hexdigest() + ".json")).write_text("")  # claimed, never answered
    with pytest.raises(RatingConflict, match="still being processed"):
        desk.land(ROW, "stuck")
    assert not desk.paths.incoming.exists() or list(desk.paths.incoming.iterdir()) == []


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
