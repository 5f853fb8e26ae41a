"""`gen-assets serve`: settings from the environment and flags, loopback by default, a warning when not."""

import http.client
import socket
import threading
import time

import pytest
import uvicorn

from gen_assets.settings import Paths
from gen_assets.web import server
from gen_assets.web.app import create_app
from gen_assets.web.config import WebConfig
from gen_assets_tests.web.conftest import test_config


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


SLOW_CLIENTS = 64


def test_slow_clients_are_dropped_and_everyone_else_is_served(home):
    """64 clients that never finish their request (half trickle a header byte now and then) fill the
    server's connections (max 64): within the request deadline they are dropped and a normal request is
    answered. Without the deadline they stay for ever and every other request gets 503."""
    config = test_config(request_timeout_seconds=1.0, max_connections=SLOW_CLIENTS)
    app = create_app(Paths(home), config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = {**server.uvicorn_settings(config), "log_level": "warning", "lifespan": "off"}
    uv = uvicorn.Server(uvicorn.Config(app, **settings))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    slow: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 10
        while not uv.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.01)
        for i in range(SLOW_CLIENTS):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /api/ratings HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
            slow.append(s)
        time.sleep(0.2)
        assert get_status(port) == 503  # the slow clients hold every connection
        began = time.monotonic()
        trickle_until = began + 3
        answered = None
        while answered is None and time.monotonic() < began + 5:
            for s in slow[::2]:  # a header byte now and then: each read is quick, the request never ends
                if time.monotonic() < trickle_until:
                    try:
                        s.send(b"X")
                    except OSError:
                        pass
            status = get_status(port)
            answered = time.monotonic() - began if status == 200 else None
            time.sleep(0.1)
        assert answered is not None and answered < 3, "a normal request was not served while slow clients waited"
        for s in slow:  # every slow client was disconnected by the server
            s.settimeout(3)
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
    finally:
        for s in slow:
            s.close()
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()


def get_status(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", "/api/status")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()
