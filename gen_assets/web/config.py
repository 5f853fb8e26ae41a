"""How the review page runs: bind address, the write token, the Dagster UI's address and the limits.

Everything has a default that is safe on a laptop (loopback only, no token needed there) and an
environment variable to change it, so `gen-assets serve` needs no flags in the common case:

    GEN_ASSETS_WEB_HOST     bind address (default 127.0.0.1: only this machine can reach the page)
    GEN_ASSETS_WEB_PORT     port (default 8000; the Dagster UI is on 3000)
    GEN_ASSETS_WEB_TOKEN    when set, every write (a rating, by form or API) needs this token
    GEN_ASSETS_WEB_SECRET   key that signs the session and CSRF cookies (default: random per process,
                            so a restart asks open pages to reload before rating again)
    GEN_ASSETS_DAGSTER_URL  the Dagster UI the dashboard links to (default http://127.0.0.1:3000)
    GEN_ASSETS_WEB_ALLOWED_HOSTS  comma-separated Host names the page answers to (default: the loopback
                            names when bound to loopback, so a DNS-rebinding page cannot reach it;
                            any host otherwise)
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"


@dataclass(frozen=True)
class WebConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None  # None: writes need no token (fine on loopback)
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    dagster_url: str = DEFAULT_DAGSTER_URL
    page_size: int = 24  # cards per gallery page
    max_body_bytes: int = 8 * 1024  # a rating is a few hundred bytes; anything larger is refused (413)
    max_comment_chars: int = 1000
    max_user_id_chars: int = 64
    # the warehouse: how long to try a locked file before answering from the last snapshot (or 503)
    busy_retry_seconds: float = 1.0
    # after a failed read, serve the last snapshot this long before trying the file again, so a
    # retrain that holds the file is not pestered by a read per request
    busy_backoff_seconds: float = 1.0
    allowed_hosts: tuple[str, ...] | None = None  # None: see trusted_hosts
    # wrong write tokens per client address: this many at once, then one more per interval (429 meanwhile)
    token_failures_burst: int = 10
    token_failure_refill_seconds: float = 1.0
    # the server: a request must arrive whole (headers and body) within this time, or its client is
    # dropped; beyond max_connections open connections new requests are answered 503
    request_timeout_seconds: float = 10.0
    max_connections: int = 512

    @classmethod
    def from_env(cls, host: str | None = None, port: int | None = None, **overrides) -> "WebConfig":
        """The environment's settings; explicit arguments (the command line's flags) win."""
        env = os.environ
        secret = env.get("GEN_ASSETS_WEB_SECRET")
        return cls(
            host=host or env.get("GEN_ASSETS_WEB_HOST") or DEFAULT_HOST,
            port=int(port or env.get("GEN_ASSETS_WEB_PORT") or DEFAULT_PORT),
            token=env.get("GEN_ASSETS_WEB_TOKEN") or None,
            dagster_url=(env.get("GEN_ASSETS_DAGSTER_URL") or DEFAULT_DAGSTER_URL).rstrip("/"),
            allowed_hosts=tuple(h.strip() for h in env["GEN_ASSETS_WEB_ALLOWED_HOSTS"].split(",") if h.strip())
            if env.get("GEN_ASSETS_WEB_ALLOWED_HOSTS") else None,
            **({"secret": secret.encode()} if secret else {}),
            **overrides,
        )

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")

    @property
    def trusted_hosts(self) -> tuple[str, ...]:
        """Host header values the app accepts ("*": any)."""
        if self.allowed_hosts:
            return self.allowed_hosts
        return ("127.0.0.1", "localhost", "::1", "[::1]") if self.loopback else ("*",)
