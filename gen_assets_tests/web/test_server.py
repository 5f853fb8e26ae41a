"""`gen-assets serve`: settings from the environment and flags, loopback by default, a warning when not."""

import pytest

from gen_assets.settings import Paths
from gen_assets.web import server
from gen_assets.web.config import WebConfig


def test_defaults_are_loopback_without_a_token(monkeypatch):
    for name in ("GEN_ASSETS_WEB_HOST", "GEN_ASSETS_WEB_PORT", "GEN_ASSETS_WEB_TOKEN", "GEN_ASSETS_WEB_SECRET",
                 "GEN_ASSETS_DAGSTER_URL"):
        monkeypatch.delenv(name, raising=False)
    config = WebConfig.from_env()
    assert (config.host, config.port, config.token, config.dagster_url) == ("127.0.0.1", 8000, None, "http://127.0.0.1:3000")
    assert config.loopback and len(config.secret) == 32


def test_the_environment_sets_and_flags_override(monkeypatch):
    monkeypatch.setenv("GEN_ASSETS_WEB_HOST", "0.0.0.0")
    monkeypatch.setenv("GEN_ASSETS_WEB_PORT", "9001")
    monkeypatch.setenv("GEN_ASSETS_WEB_TOKEN", "tok")
    monkeypatch.setenv("GEN_ASSETS_WEB_SECRET", "k" * 40)
    monkeypatch.setenv("GEN_ASSETS_DAGSTER_URL", "http://dagster.internal:3000/")
    config = WebConfig.from_env()
    assert (config.host, config.port, config.token, config.secret) == ("0.0.0.0", 9001, "tok", b"k" * 40)
    assert config.dagster_url == "http://dagster.internal:3000" and not config.loopback
    assert (WebConfig.from_env(host="127.0.0.2", port=8123).host, WebConfig.from_env(port=8123).port) == ("127.0.0.2", 8123)


@pytest.mark.parametrize("host, token, warned", [("127.0.0.1", None, False), ("0.0.0.0", None, True), ("0.0.0.0", "t", False)])
def test_serve_runs_uvicorn_and_warns_when_open_without_a_token(tmp_path, monkeypatch, capsys, host, token, warned):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    assert server.serve(Paths(tmp_path / "home"), WebConfig(host=host, port=8765, token=token)) == 0
    assert calls[0]["host"] == host and calls[0]["port"] == 8765 and calls[0]["workers"] == 1
    assert ("without GEN_ASSETS_WEB_TOKEN" in capsys.readouterr().err) is warned


def test_main_takes_host_and_port_flags(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setenv("GEN_ASSETS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(server, "serve", lambda paths, config: seen.append((paths, config)) or 0)
    assert server.main(["--host", "127.0.0.5", "--port", "8111"]) == 0
    [(paths, config)] = seen
    assert paths.home == (tmp_path / "home").resolve() and (config.host, config.port) == ("127.0.0.5", 8111)
