"""Who may write, and how much: the write token, sessions and CSRF, body limits, response headers.

- Writes need the token (GEN_ASSETS_WEB_TOKEN) when one is set: the API as `Authorization: Bearer
  <token>`; people sign in once with it on the page, which leaves a signed cookie for their session.
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
import re
import secrets
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


class Guard:
    """Sessions, CSRF tokens and the write token, all under one secret."""

    def __init__(self, secret: bytes, token: str | None):
        self.secret = secret
        self.token = token

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

    def token_matches(self, presented: str | None) -> bool:
        if self.token is None:
            return True
        return presented is not None and hmac.compare_digest(presented.encode(), self.token.encode())

    def bearer_ok(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return self.token_matches(value.strip() if scheme.lower() == "bearer" else None)

    def auth_cookie(self, sid: str) -> str:
        # bound to the session and to the token: a new token signs everybody out
        return self._sign("auth", sid + hashlib.sha256((self.token or "").encode()).hexdigest())

    def signed_in(self, request: Request) -> bool:
        if self.token is None:
            return True
        sid = self.session_id(request)
        cookie = request.cookies.get(AUTH_COOKIE, "")
        return sid is not None and hmac.compare_digest(cookie, self.auth_cookie(sid))


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
