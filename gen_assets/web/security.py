"""Who may write, and how much: the write token, sessions and CSRF, body limits, response headers.

- Writes need the token (GEN_ASSETS_WEB_TOKEN) when one is set: the API as `Authorization: Bearer
  <token>`; people sign in once with it on the page, which leaves a signed cookie for their session.
  Wrong tokens are throttled per client address (`FailureThrottle`: a few at once, then one per
  interval, 429 with Retry-After meanwhile), and compared in constant time.
- The rating form carries a CSRF token: an HMAC of the session cookie (random, HttpOnly,
  SameSite=Lax) under the app's secret, so another site can neither read nor forge it. A form post
  whose Origin names another host is refused as well.
- The JSON API takes only `Content-Type: application/json`, which a page on another site cannot send
  without a CORS preflight that this app never grants: that is its CSRF protection.
- A body is read up to a limit and refused (413) past it, whatever Content-Length claims.
- Every response says: no sniffing, no framing, scripts and styles from this origin only.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE = "gen_assets_session"
AUTH_COOKIE = "gen_assets_auth"
_SESSION = re.compile(r"[0-9a-f]{32}")

SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
     b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class BodyTooLarge(Exception):
    pass


class TokenThrottled(Exception):
    """Too many wrong tokens from one client address: no token is compared until `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many wrong tokens from this address; retry in {retry_after} s")
        self.retry_after = retry_after


class FailureThrottle:
    """Failed attempts per client, as a token bucket: `burst` failures at once, then one more every
    `refill_seconds`. A client with no attempt left is refused before its token is even compared, so a
    guesser learns nothing while throttled: guessing runs at one try per `refill_seconds` per address.
    Memory is bounded: past `max_clients`, clients whose bucket is full again are forgotten first."""

    def __init__(self, burst: int = 10, refill_seconds: float = 1.0, *, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.burst, self.refill_seconds, self.max_clients, self.clock = burst, refill_seconds, max_clients, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (attempts left, when counted)
        self._lock = threading.Lock()

    def _left(self, client: str, now: float) -> float:
        left, at = self._buckets.get(client, (self.burst, now))
        return min(self.burst, left + (now - at) / self.refill_seconds)

    def wait_seconds(self, client: str) -> float:
        """How long this client must wait before its next attempt (0: it may try now)."""
        with self._lock:
            left = self._left(client, self.clock())
        return 0.0 if left >= 1 else (1 - left) * self.refill_seconds

    def failed(self, client: str) -> None:
        with self._lock:
            now = self.clock()
            self._buckets[client] = (self._left(client, now) - 1, now)
            if len(self._buckets) > self.max_clients:
                self._forget(now)

    def _forget(self, now: float) -> None:
        for client in [c for c in self._buckets if self._left(c, now) >= self.burst]:
            del self._buckets[client]
        while len(self._buckets) > self.max_clients:  # many addresses failing at once: the oldest go
            del self._buckets[min(self._buckets, key=lambda c: self._buckets[c][1])]


class Guard:
    """Sessions, CSRF tokens and the write token, all under one secret."""

    def __init__(self, secret: bytes, token: str | None, throttle: FailureThrottle | None = None):
        self.secret = secret
        self.token = token
        self.throttle = throttle or FailureThrottle()

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self.secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    # sessions and CSRF

    @staticmethod
    def session_id(request: Request) -> str | None:
        sid = request.cookies.get(SESSION_COOKIE, "")
        return sid if _SESSION.fullmatch(sid) else None

    @staticmethod
    def new_session_id() -> str:
        return secrets.token_hex(16)

    def csrf_token(self, sid: str) -> str:
        return self._sign("csrf", sid)

    def csrf_problem(self, request: Request, presented: str | None) -> str | None:
        """Why a form post is refused (None: it is fine)."""
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
            return f"the form was posted from another site ({origin})"
        sid = self.session_id(request)
        if sid is None:
            return "no session cookie: reload the page (cookies must be enabled) and rate again"
        if not presented or not hmac.compare_digest(presented, self.csrf_token(sid)):
            return "the form has expired or did not come from this page: reload the page and rate again"
        return None

    # the write token

    @property
    def needs_token(self) -> bool:
        return self.token is not None

    def token_matches(self, presented: str | None, client: str) -> bool:
        """Whether `presented` is the write token. Raises TokenThrottled while `client` (its address) has
        failed too often; a wrong token counts against it (no token at all is no guess, and does not)."""
        if self.token is None:
            return True
        if presented is None:
            return False
        wait = self.throttle.wait_seconds(client)
        if wait > 0:
            raise TokenThrottled(max(1, math.ceil(wait)))
        # digests of equal length: the comparison's time tells nothing, not even the token's length
        if hmac.compare_digest(hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest(),
                               hashlib.sha256(self.token.encode()).digest()):
            return True
        self.throttle.failed(client)
        return False

    def bearer_ok(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return self.token_matches(value.strip() if scheme.lower() == "bearer" else None, client_address(request))

    def auth_cookie(self, sid: str) -> str:
        # bound to the session and to the token: a new token signs everybody out
        return self._sign("auth", sid + hashlib.sha256((self.token or "").encode()).hexdigest())

    def signed_in(self, request: Request) -> bool:
        if self.token is None:
            return True
        sid = self.session_id(request)
        cookie = request.cookies.get(AUTH_COOKIE, "")
        return sid is not None and hmac.compare_digest(cookie, self.auth_cookie(sid))


def client_address(request: Request) -> str:
    """The peer's address, what throttling counts by (behind a proxy: the proxy's, unless uvicorn is told
    to trust its X-Forwarded-For)."""
    return request.client.host if request.client else "unknown"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused past `limit` bytes (whatever Content-Length says)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body is {declared} bytes; at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class SecurityHeaders:
    """ASGI middleware: the headers of SECURITY_HEADERS on every HTTP response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
