"""The business end, through the product: a candidate that passes the gate becomes a challenger, its content is
served beside the champion's through /api/content, customers' clicks land through /api/events, and the next
run's `experiments` asset decides (or a person stops it from the CLI). The split is fixed (50/50) here, so the
evidence after 400 serves does not depend on the bandit's draws; the bandit's split is tested in
web/test_serving.py and measured by benchmarks/online_loop.py."""

import io
import json

import duckdb
import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from gen_assets import cli
from gen_assets.settings import Paths
from gen_assets.web.app import create_app
from gen_assets.web.config import WebConfig
from gen_assets_tests.smoke import smoke_run

PROJECT = """
gate:
  image:
    challenger_share: 0.5
    allocation: fixed
assets:
  experiments:
    min_impressions: 60
    max_expected_loss: 0.05
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("online")
    (home / "gen_assets.yaml").write_text(PROJECT)
    with smoke_run(home, "image"):
        yield home


def rate_for_ink(home, tmp_path, name: str) -> None:
    """Ratings that like ink, imported: the next retrain tunes a candidate toward them."""
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        images = con.execute("SELECT sample_id, content FROM generated WHERE modality = 'image'").fetchall()
    ink = {sid: float(np.asarray(Image.open(io.BytesIO(png))).mean()) for sid, png in images}
    order = sorted(ink, key=ink.get)
    lines = ["sample_id,rating"] + [f"{sid},{1 + (4 * i) // len(order)}" for i, sid in enumerate(order)]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    assert cli.main(["feedback", "import", str(path)]) == 0


def running(home) -> tuple | None:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute("SELECT experiment_id, champion_version, challenger_version FROM experiments "
                           "WHERE status = 'running'").fetchone()


def test_a_challenger_is_served_clicked_and_promoted_by_its_experiment(home, tmp_path, capsys):
    rate_for_ink(home, tmp_path, "ratings-1.csv")
    assert cli.main(["retrain", "--modality", "image", "--profile", "smoke"]) == 0
    experiment = running(home)
    assert experiment is not None, "the candidate passed the gate: it is a challenger, not the champion yet"
    experiment_id, champion, challenger = experiment
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        status = dict(con.execute("SELECT model_version, status FROM models").fetchall())
        served_versions = {v for (v,) in con.execute("SELECT DISTINCT model_version FROM curated "
                                                     "WHERE modality = 'image'").fetchall()}
    assert status[champion] == "champion" and status[challenger] == "challenger"
    assert served_versions == {champion, challenger}  # each arm has its own curated content

    client = TestClient(create_app(Paths(home), WebConfig(secret=b"x" * 32, allowed_hosts=("testserver",))))
    arms = {}
    rng = np.random.default_rng(0)
    for i in range(400):
        body = client.get("/api/content", params={"category": str(i % 10), "user_id": f"u{i % 97}"}).json()
        assert body["experiment_id"] == experiment_id
        arms[body["arm"]] = arms.get(body["arm"], 0) + 1
        events = [{"serve_id": body["serve_id"], "event": "impression"}]
        if rng.random() < (0.3 if body["arm"] == "challenger" else 0.05):  # customers prefer the challenger
            events.append({"serve_id": body["serve_id"], "event": "click"})
        assert client.post("/api/events", json={"events": events}).status_code == 202
    assert 0.35 < arms["challenger"] / 400 < 0.65  # a fixed 50/50 split, sticky per user
    dashboard = client.get("/dashboard").text
    assert experiment_id in dashboard and "traffic now" in dashboard

    assert cli.main(["retrain", "--modality", "image", "--profile", "smoke"]) == 0
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        ended = con.execute("SELECT status, reason, figures FROM experiments WHERE experiment_id = ?",
                            [experiment_id]).fetchone()
        promotion = con.execute("SELECT action, model_version, previous_version, reason FROM promotions "
                                "WHERE model_version = ? ORDER BY acted_at DESC LIMIT 1", [challenger]).fetchone()
        events = con.execute("SELECT count(*) FILTER (event = 'impression'), count(*) FILTER (event = 'click') "
                             "FROM events").fetchone()
    assert events[0] == 400 and events[1] > 0
    assert ended[0] == "promoted", ended
    figures = json.loads(ended[2])
    assert figures["p_challenger_beats"] >= 0.95 and {a["arm"] for a in figures["arms"]} == {"champion", "challenger"}
    assert promotion[:3] == ("promote", challenger, champion) and experiment_id in promotion[3]
    capsys.readouterr()
    assert cli.main(["experiment", "list"]) == 0
    assert experiment_id in capsys.readouterr().out


def test_a_person_stops_an_experiment_and_the_champion_stays(home, tmp_path, capsys):
    if running(home) is None:  # a new candidate from new ratings: a new experiment
        rate_for_ink(home, tmp_path, "ratings-2.csv")
        assert cli.main(["retrain", "--modality", "image", "--profile", "smoke"]) == 0
    experiment = running(home)
    assert experiment is not None
    experiment_id, champion, challenger = experiment
    assert cli.main(["experiment", "stop", "--modality", "image", "--reason", "brand review", "--by", "ana"]) == 0
    assert running(home) is None
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        status, decided_by, reason = con.execute("SELECT status, decided_by, reason FROM experiments "
                                                 "WHERE experiment_id = ?", [experiment_id]).fetchone()
        models = dict(con.execute("SELECT model_version, status FROM models").fetchall())
    assert (status, decided_by, reason) == ("stopped", "ana", "brand review")
    assert models[champion] == "champion" and models[challenger] == "retired"
    assert cli.main(["experiment", "stop", "--modality", "image"]) == 1  # nothing running now
