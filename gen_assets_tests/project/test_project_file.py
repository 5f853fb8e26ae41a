"""The project file (gen_assets.yaml): strict validation, what the definitions build from it (jobs'
launchpad config, the schedule's and the sensor's run config, switches, feedback policy), the gate
rule for profiles, and `gen-assets init` / `config`."""

import json
from pathlib import Path

import dagster as dg
import pytest

from gen_assets import cli
from gen_assets.definitions import build_definitions, project_for
from gen_assets.defs.jobs import RETRAIN_ASSETS
from gen_assets.feedback.landing import append_ratings
from gen_assets.project.effective import effective_config, run_config
from gen_assets.project.file import ProjectError
from gen_assets.settings import Paths
from gen_assets_tests.defs.test_sensors import home, ratings  # noqa: F401  (the sensor's fixture home)

PROJECT = """\
images:
  source: my_images        # relative: to this file's folder
  channels: 3
texts:
  source: builtin:shakespeare
  text_column: body
gate:
  image: {tolerance: 0.25, max_ratio_to_floor: 2.0}
  text: {max_bits_per_byte: 2.2}
feedback: {min_new_ratings: 7, max_age_seconds: 600}
schedules: {nightly: true, prune: false, feedback_sensor: false}
assets:
  image_generator: {max_epochs: 120}
"""


@pytest.fixture
def project_home(tmp_path, monkeypatch):
    monkeypatch.setenv("GEN_ASSETS_HOME", str(tmp_path))
    monkeypatch.delenv("GEN_ASSETS_PROJECT", raising=False)
    (tmp_path / "gen_assets.yaml").write_text(PROJECT)
    return Paths(tmp_path)


def ops_config(config: dict, op: str) -> dict:
    return config["ops"][op]["config"]


def test_the_file_becomes_each_assets_config(project_home):
    config = project_for(project_home).config
    assert config["raw_images"] == {"source": str(project_home.home / "my_images")}
    assert config["clean_images"] == {"channels": 3}
    assert config["raw_texts"] == {"source": "builtin:shakespeare", "text_column": "body"}
    assert config["image_champion"] == {"tolerance": 0.25, "max_ratio_to_floor": 2.0}
    assert config["text_champion"] == {"max_bits_per_byte": 2.2}
    assert config["image_generator"] == {"max_epochs": 120}


def test_the_jobs_launchpad_schedule_and_sensor_carry_the_projects_config(project_home):
    defs = build_definitions(project_home, timezone="UTC")
    for name in ("image_job", "nightly_job"):  # the launchpad's default config
        default = defs.resolve_job_def(name).run_config
        assert ops_config(default, "raw_images")["source"] == str(project_home.home / "my_images"), name
        assert dg.validate_run_config(defs.resolve_job_def(name), default)
    assert "raw_images" not in defs.resolve_job_def("text_job").run_config["ops"]

    schedule = defs.resolve_schedule_def("nightly_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert defs.resolve_schedule_def("prune_schedule").default_status == dg.DefaultScheduleStatus.STOPPED
    [request] = schedule.evaluate_tick(dg.build_schedule_context()).run_requests
    assert ops_config(request.run_config, "raw_images")["source"] == str(project_home.home / "my_images")
    assert ops_config(request.run_config, "image_generator") == {"max_epochs": 120}

    sensor = defs.resolve_sensor_def("feedback_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert defs.resources["feedback_policy"].min_new_ratings == 7
    assert defs.resources["feedback_policy"].max_age_seconds == 600


def test_the_sensors_retrain_requests_carry_the_projects_config(home, monkeypatch):  # noqa: F811
    monkeypatch.delenv("GEN_ASSETS_PROJECT", raising=False)
    (home.home / "gen_assets.yaml").write_text(PROJECT)
    defs = build_definitions(home, timezone="UTC")
    append_ratings(home.feedback, ratings("image", 8))  # above the project's 7, below the default 50
    context = dg.build_sensor_context(resources={key: defs.resources[key]
                                                 for key in ("artifacts", "warehouse", "feedback_policy")})
    [request] = defs.resolve_sensor_def("feedback_sensor")(context)
    assert {key.to_user_string() for key in request.asset_selection} == set(RETRAIN_ASSETS["image"])
    assert ops_config(request.run_config, "image_champion") == {"tolerance": 0.25, "max_ratio_to_floor": 2.0}
    assert set(request.run_config["ops"]) <= set(RETRAIN_ASSETS["image"]), "config only for the selected assets"
    assert dg.validate_run_config(defs.resolve_job_def("retrain_job"), request.run_config)


@pytest.mark.parametrize("text, key, allowed", [
    ("images:\n  sorce: x\n", "images.sorce", "source"),
    ("imagez:\n  source: x\n", "imagez", "images, texts, gate, feedback, schedules, assets"),
    ("gate:\n  image: {promote: m}\n", "gate.image.promote", "tolerance"),
    ("assets:\n  image_generator: {max_epoch: 3}\n", "assets.image_generator.max_epoch", "max_epochs"),
    ("assets:\n  no_such_asset: {x: 1}\n", "assets.no_such_asset", "image_generator"),
    ("schedules:\n  nightly: sometimes\n", "schedules.nightly", None),
    ("feedback:\n  min_new_ratings: lots\n", "feedback.min_new_ratings", None),
    ("assets:\n  image_generator: {max_epochs: many}\n", "assets.image_generator.max_epochs", None),
])
def test_unknown_keys_and_wrong_types_are_clear_errors(tmp_path, monkeypatch, capsys, text, key, allowed):
    path = tmp_path / "elsewhere.yaml"
    path.write_text(text)
    monkeypatch.setenv("GEN_ASSETS_HOME", str(tmp_path / "home"))
    with pytest.raises(ProjectError) as e:
        monkeypatch.setenv("GEN_ASSETS_PROJECT", str(path))
        project_for(Paths(tmp_path / "home"))
    message = str(e.value)
    assert message.startswith(f"{path}: ") and f"{key}:" in message, message
    if allowed:
        assert "allowed: " in message and allowed in message.split("allowed: ", 1)[1], message
    monkeypatch.delenv("GEN_ASSETS_PROJECT")
    assert cli.main(["--project", str(path), "config"]) == 2
    assert f"{path}: {key}:" in capsys.readouterr().err


def test_a_named_project_file_must_exist(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GEN_ASSETS_HOME", str(tmp_path))
    assert cli.main(["config", "--project", str(tmp_path / "missing.yaml")]) == 2
    assert "no such project file" in capsys.readouterr().err


def test_a_profile_never_loosens_the_gate_of_an_existing_champion():
    defaults = {"image_champion": {"tolerance": 1.0, "max_ratio_to_floor": 3.0, "per_class": 100},
                "text_champion": {"tolerance": 0.03, "max_bits_per_byte": 3.0, "guard_briefs": 8}}
    fresh = effective_config(defaults, {}, "smoke", champions=())
    assert fresh["image_champion"]["tolerance"].value == 10.0, "no champion yet: smoke crowns its first model"
    assert fresh["image_champion"]["max_ratio_to_floor"].value is None

    settled = effective_config(defaults, {"text_champion": {"max_bits_per_byte": 2.2}}, "smoke",
                               champions=("image", "text"))
    image, text = settled["image_champion"], settled["text_champion"]
    assert (image["tolerance"].value, image["max_ratio_to_floor"].value) == (1.0, 3.0)
    assert image["tolerance"].origin.startswith("default; profile smoke would loosen the gate")
    assert image["per_class"].value == 20 and image["per_class"].origin == "profile smoke", "not a gate field"
    assert (text["tolerance"].value, text["max_bits_per_byte"].value) == (0.03, 2.2)
    assert text["max_bits_per_byte"].origin.startswith("project file; ")
    settled_text = ops_config(run_config(settled, {"text_champion"}), "text_champion")
    assert {k: settled_text[k] for k in ("tolerance", "max_bits_per_byte", "guard_briefs")} == {
        "tolerance": 0.03, "max_bits_per_byte": 2.2, "guard_briefs": 2}

    # a profile may tighten it
    strict = effective_config({"image_champion": {"tolerance": 20.0, "max_ratio_to_floor": None}}, {}, "smoke",
                              champions=("image",))
    assert strict["image_champion"]["tolerance"].value == 10.0


def test_init_writes_a_commented_file_and_never_overwrites(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GEN_ASSETS_HOME", str(tmp_path))
    monkeypatch.delenv("GEN_ASSETS_PROJECT", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pics").mkdir()
    assert cli.main(["init", "--images", "pics"]) == 0
    written = (tmp_path / "gen_assets.yaml").read_text()
    assert written.startswith("#") and "gate:" in written and "schedules:" in written
    assert project_for(Paths(tmp_path)).config["raw_images"] == {"source": str(tmp_path / "pics")}

    (tmp_path / "gen_assets.yaml").write_text("# mine\n")
    assert cli.main(["init", "--texts", "corpus.csv"]) == 1
    assert "exists already" in capsys.readouterr().err
    assert (tmp_path / "gen_assets.yaml").read_text() == "# mine\n"
    assert cli.main(["init", "--force"]) == 0
    assert "builtin:digits" in (tmp_path / "gen_assets.yaml").read_text()

    other = tmp_path / "projects" / "b.yaml"
    assert cli.main(["init", "--project", str(other)]) == 0 and other.is_file()


def test_config_shows_each_setting_and_where_it_came_from(project_home, monkeypatch, capsys):
    monkeypatch.setenv("GEN_ASSETS_TIMEZONE", "Europe/Berlin")
    capsys.readouterr()
    assert cli.main(["config", "--json", "--profile", "smoke"]) == 0
    data = json.loads(capsys.readouterr().out)
    general, assets = data["general"], data["assets"]
    assert general["project_file"] == {"value": str(project_home.home / "gen_assets.yaml"),
                                       "origin": "default (in GEN_ASSETS_HOME)"}
    assert general["timezone"] == {"value": "Europe/Berlin", "origin": "environment (GEN_ASSETS_TIMEZONE)"}
    assert general["feedback.min_new_ratings"] == {"value": 7, "origin": "project file"}
    assert general["schedules.prune"] == {"value": False, "origin": "project file"}
    assert assets["raw_images"]["source"]["origin"] == "project file"
    assert assets["raw_images"]["labels"] == {"value": None, "origin": "default"}
    assert assets["image_generator"]["max_epochs"] == {"value": 8, "origin": "profile smoke"}
    assert assets["image_generator"]["patience"]["origin"] == "profile smoke"
    assert assets["image_champion"]["tolerance"] == {  # the user's own gate holds under every profile
        "value": 0.25, "origin": "project file; profile smoke would loosen the project file's gate to 10.0"}

    assert cli.main(["config"]) == 0
    text = capsys.readouterr().out
    section = text.split("\nimage_generator\n", 1)[1]
    line = next(line for line in section.splitlines() if line.strip().startswith("max_epochs"))
    assert "120" in line and line.rstrip().endswith("project file")


def test_no_project_file_is_the_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("GEN_ASSETS_PROJECT", raising=False)
    defs = build_definitions(Paths(tmp_path), timezone="UTC")
    assert "raw_images" not in defs.resolve_job_def("image_job").run_config.get("ops", {})
    assert defs.resolve_sensor_def("feedback_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_schedule_def("nightly_schedule").default_status == dg.DefaultScheduleStatus.STOPPED


def test_the_project_files_gate_holds_under_every_profile_and_smoke_may_replace_its_own_champions():
    defaults = {"image_champion": {"tolerance": 1.0, "max_ratio_to_floor": 3.0}}
    mine = effective_config(defaults, {"image_champion": {"max_ratio_to_floor": 2.0}}, "smoke", champions=())
    assert mine["image_champion"]["max_ratio_to_floor"].value == 2.0, "the user's own bar, even before a champion"
    assert "the project file's gate" in mine["image_champion"]["max_ratio_to_floor"].origin
    assert mine["image_champion"]["tolerance"].value == 10.0, "a default the profile may loosen on a smoke home"


def test_a_champion_remembers_the_gate_it_was_decided_under(tmp_path, monkeypatch):
    """cli.champions_in: a champion decided under smoke's gate does not protect itself from smoke; one decided
    under the demo profile (or the project's, by a schedule) does."""
    import duckdb

    from gen_assets.settings import Paths
    from gen_assets.store import registry

    monkeypatch.setenv("GEN_ASSETS_HOME", str(tmp_path))
    paths = Paths.from_env().ensure()
    with duckdb.connect(str(paths.warehouse)) as con:
        registry.register_model(con, model_version="dcgan-1", modality="image", arch="dcgan", config={},
                                input_versions={}, checkpoint_path="models/image/dcgan-1.pt", checkpoint_sha="1")
        registry.promote(con, "dcgan-1", actor="t", reason="first")
        registry.record_gate_profile(con, "dcgan-1", "smoke")
    assert cli.champions_in(paths, {"image", "text"}, "smoke") == set()
    assert cli.champions_in(paths, {"image"}, "demo") == {"image"}
    with duckdb.connect(str(paths.warehouse)) as con:
        registry.record_gate_profile(con, "dcgan-1", "demo")
        assert registry.champion(con, "image")["gate_profile"] == "demo"
    assert cli.champions_in(paths, {"image"}, "smoke") == {"image"}
