"""`gen-assets serve`: the review page under uvicorn, one process, bound to 127.0.0.1 unless told otherwise.

One process on purpose: ratings land as files (safe from any number of processes), but the snapshot of
the warehouse and the count of waiting ratings are kept in memory, and one process with its thread pool
serves many raters (the tests: 50 concurrent clients).

Slow clients: uvicorn's keep-alive timeout covers only the wait *between* requests, so a client that
sends its headers or body a byte at a time (or never finishes them) held its connection for ever, and
a few hundred of them filled `limit_concurrency`: everyone else got 503. `DeadlineProtocol` gives every
request `request_timeout_seconds` from its first byte (from the connection, for the first request) to
its last; a client still sending by then is disconnected.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from gen_assets.settings import Paths
from gen_assets.web.config import WebConfig


def serve(paths: Paths, config: WebConfig) -> int:
    import uvicorn

    from gen_assets.web.app import create_app

    paths.ensure()
    if not config.loopback and config.token is None:
        print(f"gen-assets serve: listening on {config.host} without GEN_ASSETS_WEB_TOKEN: anyone who can reach "
              "this address can rate; set a token to require one for writes", file=sys.stderr)
    print(f"gen-assets serve: http://{config.host}:{config.port}/gallery  (home {paths.home})", flush=True)
    uvicorn.run(create_app(paths, config), **uvicorn_settings(config))
    return 0


def uvicorn_settings(config: WebConfig) -> dict:
    """uvicorn's settings for the review page (`uvicorn.run` / `uvicorn.Config` keyword arguments)."""
    return {
        "host": config.host, "port": config.port, "workers": 1, "log_level": "info", "server_header": False,
        "timeout_keep_alive": 5, "limit_concurrency": config.max_connections,
        "http": deadline_protocol(config.request_timeout_seconds),
    }


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for reading each whole request (headers and body)."""

    request_timeout_seconds = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self.conn.their_state is not h11.SEND_BODY:
            self._disarm()  # read whole (DONE), or over (closed, an error answered 400)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.request_timeout_seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.logger.info("dropped a client still sending its request after %.0f s", self.request_timeout_seconds)
            self.transport.close()  # an app still reading the body sees http.disconnect


def deadline_protocol(seconds: float) -> type[DeadlineProtocol]:
    return type("DeadlineProtocol", (DeadlineProtocol,), {"request_timeout_seconds": seconds})


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--host", default=None,
                        help="bind address (default: GEN_ASSETS_WEB_HOST, else 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=None, help="port (default: GEN_ASSETS_WEB_PORT, else 8000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="python -m gen_assets.web", description=__doc__))
    args = parser.parse_args(argv)
    return serve(Paths.from_env(), WebConfig.from_env(host=args.host, port=args.port))
