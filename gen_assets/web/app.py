"""The review page (`gen-assets serve`): people see the champion's curated content and rate it.

Pages (server-rendered HTML, Jinja2; a small script adds keyboard shortcuts, forms work without it):
    GET  /gallery?modality=&category=&page=   curated samples of one modality, rating controls per card
    POST /ratings                             the rating form (CSRF token; redirects back, or JSON for the script)
    POST /login                               the write token, when GEN_ASSETS_WEB_TOKEN is set
    GET  /dashboard                           metric trends, champion and candidates, last batches and runs
    GET  /dashboard/trend/{modality}.png      the trend plot of a modality (gen_assets.media.plots.trend_png)
    GET  /samples/{sample_id}.png             an image sample from the warehouse, cacheable
JSON API (errors are {"error": "..."} naming what is wrong):
    GET  /api/samples?modality=&category=&page=&per_page=   curated samples, images as URLs
    POST /api/ratings   {"sample_id", "rating", "comment"?, "user_id"?} -> 201 (200 for a replayed key)
    GET  /api/status    ratings waiting, the last retrain, how fresh the warehouse read is
    GET  /api/content?category=&modality=&user_id=&slot=   one curated sample to show a customer (serving.py)
    POST /api/events    {"serve_id", "event": impression|click|conversion, "ts"?, "user_id"?} or {"events": [...]}
                        -> 202; landed as a file in feedback/events/incoming/ for the `events` asset

Reads come from `catalog.Catalog` (short read-only connections, a last-good snapshot while a run holds
the warehouse); the app never writes to the warehouse. Ratings land as files in the feedback landing
zone (`ratings.RatingDesk`), which the feedback asset ingests and feedback_sensor counts. No part of a
request becomes a file path: samples are looked up by validated id, static files and plots by fixed name.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import secrets
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from gen_assets.settings import Paths
from gen_assets.web.catalog import MODALITIES, Catalog, CuratedSample, Snapshot, WarehouseBusy
from gen_assets.web.config import WebConfig
from gen_assets.web.ratings import (
    IDEMPOTENCY_KEY,
    SAMPLE_ID,
    THUMBS,
    UNKNOWN_SAMPLE,
    RatingConflict,
    RatingDesk,
    WaitingRatings,
    check_rating,
)
from gen_assets.feedback.events import EventPaths, append_events, check_event, event_id_for
from gen_assets.web.runs import RecentRuns
from gen_assets.web.serving import EVENTS, EventBatcher, ServeIdError, ServeTokens, Serving, serving_key
from gen_assets.web.security import (
    AUTH_COOKIE,
    SESSION_COOKIE,
    BodyTooLarge,
    FailureThrottle,
    Guard,
    SecurityHeaders,
    TokenThrottled,
    client_address,
    read_body,
)

HERE = Path(__file__).resolve().parent
STATIC_TYPES = {"review.css": "text/css; charset=utf-8", "review.js": "text/javascript; charset=utf-8"}
MAX_PER_PAGE = 100
MAX_FORM_FIELDS = 20
MAX_EVENTS_PER_REQUEST = 100
SLOT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
TREND_COLUMNS = ("model_version", "batch_id", "measured_at")  # the rest of a trend row are metrics
FORM = "application/x-www-form-urlencoded"


class ApiError(Exception):
    """A 4xx/5xx answer with a message saying what is wrong (JSON for the API, a page for people)."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def create_app(paths: Paths | None = None, config: WebConfig | None = None) -> Starlette:
    """The ASGI app; `paths` default to GEN_ASSETS_HOME, `config` to the environment's settings."""
    review = Review(paths or Paths.from_env(), config or WebConfig.from_env())
    app = Starlette(
        routes=review.routes(),
        # TrustedHost first: a page of another site that rebinds its DNS name to 127.0.0.1 sends its own
        # Host, and is refused before any route (the CSRF check compares Origin with a trusted Host)
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(review.config.trusted_hosts)),
                    Middleware(SecurityHeaders)],
        exception_handlers={HTTPException: review.http_error, ApiError: review.api_error,
                            TokenThrottled: review.throttled_error,
                            WarehouseBusy: review.busy_error, Exception: review.server_error},
    )
    app.state.review = review
    return app


class Review:
    """The app's parts and its endpoints."""

    def __init__(self, paths: Paths, config: WebConfig):
        self.paths, self.config = paths, config
        self.catalog = Catalog(paths.warehouse, artifacts=paths.artifacts_location,
                               busy_retry_seconds=config.busy_retry_seconds,
                               busy_backoff_seconds=config.busy_backoff_seconds)
        self.desk = RatingDesk(paths.feedback)
        self.desk.recover()  # ratings of requests a crash interrupted: landed once, or their keys freed
        self.waiting = WaitingRatings(self.desk.paths.incoming)
        self.runs = RecentRuns(paths.dagster_home)
        self.event_paths = EventPaths(paths.feedback / "events")
        self.event_paths.incoming.mkdir(parents=True, exist_ok=True)
        for tmp in self.event_paths.incoming.glob(".*.tmp"):  # a request a crash interrupted: never answered
            tmp.unlink(missing_ok=True)
        self.serving = Serving(ServeTokens(serving_key(self.event_paths.root, secret_from_env())),
                               self.event_paths.incoming)
        self.events = EventBatcher(lambda rows: append_events(self.event_paths, rows))
        self.guard = Guard(config.secret, config.token,
                           FailureThrottle(config.token_failures_burst, config.token_failure_refill_seconds))
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                                     undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.static = {name: (HERE / "static" / name).read_bytes() for name in STATIC_TYPES}
        self.static_version = hashlib.sha256(b"".join(self.static.values())).hexdigest()[:10]
        self._trends: dict[tuple, bytes] = {}
        self._plot_lock = threading.Lock()  # matplotlib's pyplot is not thread-safe

    def routes(self) -> list[Route]:
        return [
            Route("/", self.home),
            Route("/gallery", self.gallery, name="gallery"),
            Route("/ratings", self.rate_form, methods=["POST"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/dashboard", self.dashboard, name="dashboard"),
            Route("/dashboard/trend/{modality}.png", self.trend_plot, name="trend_png"),
            Route("/samples/{sample_id}.png", self.sample_png, name="sample_png"),
            Route("/static/{name}", self.static_file, name="static"),
            Route("/api/samples", self.api_samples),
            Route("/api/ratings", self.api_rate, methods=["POST"]),
            Route("/api/status", self.api_status),
            Route("/api/content", self.api_content),
            Route("/api/events", self.api_events, methods=["POST"]),
        ]

    # -- shared pieces -----------------------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        return await run_in_threadpool(self.catalog.current)

    async def status(self, snap: Snapshot, modality: str | None = None) -> dict:
        return {
            "ratings_waiting": await run_in_threadpool(self.waiting.count),
            "modality": modality,  # the last retrain of this modality (None: of any)
            "last_retrain": snap.newest_retrain(modality),
            "read_at": snap.read_at.strftime("%Y-%m-%d %H:%M:%S UTC") if snap.read_at else None,
            "stale": snap.stale,
        }

    def render(self, request: Request, name: str, context: dict, status: int = 200) -> HTMLResponse:
        sid = self.guard.session_id(request)
        new_session = sid is None
        sid = sid or self.guard.new_session_id()
        html = self.templates.get_template(name).render(
            static_version=self.static_version, dagster_url=self.config.dagster_url, csrf=self.guard.csrf_token(sid),
            **context)
        response = HTMLResponse(html, status_code=status)
        if new_session:
            response.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="lax", path="/",
                                secure=request.url.scheme == "https")
        return response

    @staticmethod
    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")

    async def http_error(self, request: Request, exc: HTTPException) -> Response:
        message = {404: f"nothing at {request.url.path}", 405: f"{request.method} is not allowed here"}.get(
            exc.status_code, exc.detail)
        return self.error_response(request, exc.status_code, message, exc.headers)

    async def api_error(self, request: Request, exc: ApiError) -> Response:
        return self.error_response(request, exc.status, exc.message, exc.headers)

    async def throttled_error(self, request: Request, exc: TokenThrottled) -> Response:
        return self.error_response(request, 429, str(exc), {"Retry-After": str(exc.retry_after)})

    async def busy_error(self, request: Request, exc: WarehouseBusy) -> Response:
        return self.error_response(request, 503, str(exc), {"Retry-After": str(exc.retry_after)})

    async def server_error(self, request: Request, exc: Exception) -> Response:
        # the traceback goes to the server's log (uvicorn); the answer names no internals
        return self.error_response(request, 500, "internal error: the server's log has the details")

    def error_response(self, request: Request, status: int, message: str, headers: dict | None = None) -> Response:
        if self.wants_json(request):
            return JSONResponse({"error": message}, status_code=status, headers=headers)
        response = self.render(request, "error.html", {"code": status, "message": message}, status)
        response.headers.update(headers or {})
        return response

    # -- pages ---------------------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/gallery", status_code=302)

    async def gallery(self, request: Request) -> Response:
        snap = await self.snapshot()
        query = request.query_params
        modality, category = self.choose(snap, query.get("modality"), query.get("category"))
        samples = snap.curated(modality, category)
        page, pages = page_of(int_param(query.get("page"), "page", 1), len(samples), self.config.page_size, clamp=True)
        shown = samples[(page - 1) * self.config.page_size: page * self.config.page_size]
        context = {
            "modalities": snap.modalities, "modality": modality,
            "categories": snap.categories(modality) if modality else [], "category": category,
            "cards": [self.card(request, s) for s in shown], "page": page, "pages": pages, "total": len(samples),
            "status": await self.status(snap, modality),
            "can_rate": self.guard.signed_in(request), "needs_token": self.guard.needs_token,
            "flash": self.flash(snap, query), "max_comment": self.config.max_comment_chars,
            "url": lambda **kw: gallery_url(**{"modality": modality, "category": category, "page": page, **kw}),
        }
        return self.render(request, "gallery.html", context)

    def choose(self, snap: Snapshot, modality: str | None, category: str | None) -> tuple[str | None, str | None]:
        """The modality and category a request asks for, checked against what is curated (a modality of the
        pipeline with nothing curated yet is chosen, and shows empty)."""
        modalities = snap.modalities
        if not modality:
            modality = modalities[0] if modalities else None
        elif modality not in modalities and modality not in MODALITIES:
            raise ApiError(400, f"unknown modality {modality!r}; " + choices("curated modalities", modalities))
        if not category:
            return modality, None
        categories = snap.categories(modality) if modality else []
        if category not in categories:
            raise ApiError(400, f"unknown category {category!r} for {modality}; " + choices("categories", categories))
        return modality, category

    def card(self, request: Request, s: CuratedSample) -> dict:
        return {
            "sample": s,
            "image_url": request.url_for("sample_png", sample_id=s.sample_id).path if s.modality == "image" else None,
            "nonce": secrets.token_urlsafe(12),
            "dom_id": "card-" + s.sample_id,
        }

    @staticmethod
    def flash(snap: Snapshot, query) -> str | None:
        """The note after a rating posted without the script: only values this app produced are shown."""
        rated, rating = query.get("rated", ""), query.get("rating", "")
        if rated in snap.known and rating in ("1", "2", "3", "4", "5"):
            return f"Thank you: your rating {rating} of {rated} landed."
        return None

    async def dashboard(self, request: Request) -> Response:
        snap = await self.snapshot()
        runs, runs_note = await run_in_threadpool(self.runs.get)
        shares = self.serving.current_shares(snap)
        sections = []
        for modality, entry in sorted(snap.registry.items()):
            trend = entry.get("trend", [])
            sections.append({
                "modality": modality, "champion": entry.get("champion"), "candidates": entry.get("candidates", []),
                "promotions": entry.get("promotions", []), "trend": trend[-5:][::-1],
                "trend_keys": [k for k in (trend[-1] if trend else {}) if k not in TREND_COLUMNS],
                "trend_url": request.url_for("trend_png", modality=modality).path if trend else None,
                "curated": len(snap.curated(modality)), "last_retrain": snap.newest_retrain(modality),
                "experiments": [self.experiment_view(snap, e) for e in entry.get("experiments", [])],
                "serving": [s for s in shares if s["modality"] == modality],
            })
        context = {"sections": sections, "batches": snap.batches, "runs": runs, "runs_note": runs_note,
                   "status": await self.status(snap)}
        return self.render(request, "dashboard.html", context)

    def experiment_view(self, snap: Snapshot, e: dict) -> dict:
        """An experiment as the dashboard shows it: the recorded figures, and the live traffic shares."""
        figures = e.get("figures") or {}
        arms = {a["arm"]: a for a in figures.get("arms", [])}
        live = snap.experiments.get(e["modality"])
        shares = None
        if e["status"] == "running" and live and live["experiment_id"] == e["experiment_id"]:
            shares = self.serving.experiment_shares(snap, live)
        rows = []
        for i, arm in enumerate(("champion", "challenger")):
            a = arms.get(arm, {})
            rows.append({"arm": arm, "model": e[arm], "impressions": a.get("impressions", 0),
                         "clicks": a.get("clicks", 0), "rate": a.get("rate"), "low": a.get("low"),
                         "high": a.get("high"), "expected_loss": a.get("expected_loss"),
                         "share": None if shares is None else shares[i]})
        return {**e, "arms": rows, "p_beats": figures.get("p_challenger_beats"),
                "decision": figures.get("decision"), "why": figures.get("reason") or e.get("reason")}

    async def trend_plot(self, request: Request) -> Response:
        snap = await self.snapshot()
        modality = request.path_params["modality"]
        entry = snap.registry.get(modality)
        if not entry or not entry.get("trend"):
            with_trend = [m for m, e in snap.registry.items() if e.get("trend")]
            raise ApiError(404, f"no metric trend for modality {modality!r}; " + choices("modalities with one", with_trend))
        png = await run_in_threadpool(self.trend_png, modality, entry["trend"], snap.read_at)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    def trend_png(self, modality: str, trend: list[dict], read_at) -> bytes:
        from gen_assets.media.plots import trend_png
        from gen_assets.store.registry import TREND_METRICS

        key = (modality, read_at, len(trend))
        with self._plot_lock:
            if key not in self._trends:
                if len(self._trends) > 16:
                    self._trends.clear()
                self._trends[key] = trend_png(trend, TREND_METRICS.get(modality, ()), f"{modality} metrics")
            return self._trends[key]

    async def sample_png(self, request: Request) -> Response:
        sample_id = request.path_params["sample_id"]
        if not SAMPLE_ID.fullmatch(sample_id):
            raise ApiError(404, "not a sample id (letters, digits, '.', '_', '-'; at most 128)")
        data = await run_in_threadpool(self.catalog.image, sample_id)
        if data is None:
            snap = await self.snapshot()
            kind = snap.known.get(sample_id)
            raise ApiError(404, f"sample {sample_id!r} is a {kind} sample, not an image" if kind
                           else f"no sample {sample_id!r} in generated")
        etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
        headers = {"ETag": etag, "Cache-Control": "public, max-age=86400, immutable"}  # a sample never changes
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/png", headers=headers)

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.static:
            raise ApiError(404, f"no static file {name[:60]!r}")
        return Response(self.static[name], media_type=STATIC_TYPES[name],
                        headers={"Cache-Control": "public, max-age=86400"})  # the page links it with ?v=<hash>

    # -- the rating form ----------------------------------------------------------------------------------

    async def read_form(self, request: Request) -> dict[str, str]:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM:
            raise ApiError(415, f"a form must be sent as {FORM}")
        try:
            body = await read_body(request, self.config.max_body_bytes)
        except BodyTooLarge as e:
            raise ApiError(413, str(e)) from None
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS,
                              errors="strict")
        except (UnicodeDecodeError, ValueError) as e:
            raise ApiError(400, f"the form could not be read: {e}") from None
        return {k: v[0] for k, v in fields.items()}

    async def rate_form(self, request: Request) -> Response:
        """A rating from the gallery's form: checked like the API's, answered with a redirect back to the
        same page (or JSON when the page's script sent it)."""
        form = await self.read_form(request)
        problem = self.guard.csrf_problem(request, form.get("csrf"))
        if problem:
            raise ApiError(403, problem)
        if not self.guard.signed_in(request):
            raise ApiError(401, "rating needs the review token: sign in on the gallery page first")
        thumb = form.get("thumb")
        if thumb is not None and thumb not in THUMBS:
            raise ApiError(422, f"thumb must be {' or '.join(THUMBS)}, got {thumb[:20]!r}")
        sid = self.guard.session_id(request)
        values = {
            "sample_id": form.get("sample_id"),
            "rating": THUMBS[thumb] if thumb else form.get("rating") or None,
            "comment": (form.get("comment") or "").strip() or None,
            # a pseudonym per browser session: who rated what, without a name
            "user_id": "web-" + hashlib.sha256(sid.encode()).hexdigest()[:12],
        }
        if values["rating"] is None:
            raise ApiError(422, "missing rating: choose 1 to 5, or a thumb up or down")
        nonce = form.get("nonce")
        key = f"form:{sid}:{nonce}" if nonce and IDEMPOTENCY_KEY.fullmatch(nonce) else None
        row, landed, waiting = await self.land(values, key)
        if self.wants_json(request):
            return JSONResponse({**self.rating_answer(row, landed, waiting), "next_nonce": secrets.token_urlsafe(12)},
                                status_code=200 if landed.replayed else 201)
        snap = await self.snapshot()
        modality, category = self.back_to(snap, form.get("modality"), form.get("category"))
        url = gallery_url(modality=modality, category=category, page=form.get("page"), rated=row["sample_id"],
                          rating=row["rating"])
        return RedirectResponse(url + "#card-" + row["sample_id"], status_code=303)

    @staticmethod
    def back_to(snap: Snapshot, modality: str | None, category: str | None) -> tuple[str | None, str | None]:
        """Where the form came from, if still curated (the redirect never carries a value we did not check)."""
        if modality not in snap.modalities:
            return None, None
        return modality, category if category in snap.categories(modality) else None

    async def login(self, request: Request) -> Response:
        form = await self.read_form(request)
        problem = self.guard.csrf_problem(request, form.get("csrf"))
        if problem:
            raise ApiError(403, problem)
        if not self.guard.token_matches(form.get("token") or None, client_address(request)):
            await asyncio.sleep(0.2)  # a guess costs time
            raise ApiError(401, "wrong token")
        snap = await self.snapshot()
        modality, category = self.back_to(snap, form.get("modality"), form.get("category"))
        response = RedirectResponse(gallery_url(modality=modality, category=category, page=form.get("page")), 303)
        sid = self.guard.session_id(request)
        response.set_cookie(AUTH_COOKIE, self.guard.auth_cookie(sid), httponly=True, samesite="lax", path="/",
                            secure=request.url.scheme == "https")
        return response

    # -- the JSON API -------------------------------------------------------------------------------------

    async def api_samples(self, request: Request) -> Response:
        snap = await self.snapshot()
        query = request.query_params
        modality, category = query.get("modality") or None, query.get("category") or None
        if modality:
            modality, category = self.choose(snap, modality, category)
        elif category and category not in {c for m in snap.modalities for c in snap.categories(m)}:
            raise ApiError(400, f"unknown category {category!r}; give a modality to list its categories")
        per_page = int_param(query.get("per_page"), "per_page", 50)
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ApiError(400, f"per_page must be from 1 to {MAX_PER_PAGE}, got {per_page}")
        samples = snap.curated(modality, category)
        page, pages = page_of(int_param(query.get("page"), "page", 1), len(samples), per_page, clamp=False)
        shown = samples[(page - 1) * per_page: page * per_page]
        body = {
            "modality": modality, "category": category, "page": page, "pages": pages, "per_page": per_page,
            "total": len(samples), "stale": snap.stale, "read_at": snap.read_at.isoformat() if snap.read_at else None,
            "samples": [self.sample_json(request, s) for s in shown],
        }
        if modality and modality not in snap.modalities:
            body["note"] = f"nothing curated yet for {modality}"
        return JSONResponse(body)

    @staticmethod
    def sample_json(request: Request, s: CuratedSample) -> dict:
        out = {"sample_id": s.sample_id, "modality": s.modality, "category": s.category,
               "model_version": s.model_version, "batch_id": s.batch_id, "reward": s.reward, "rank": s.rank,
               "created_at": s.created_at, "exploratory": s.exploratory}
        if s.modality == "image":
            out["image_url"] = str(request.url_for("sample_png", sample_id=s.sample_id))
        else:
            out["text"] = s.text
            out["prompt"] = s.prompt  # the brief it was written for (None: conditioned on the category alone)
        return out

    async def json_write(self, request: Request, what: str, max_bytes: int):
        """The JSON body of an API write, once the bearer token (when one is set), the content type and the
        size passed; a 4xx naming what is wrong otherwise."""
        if not self.guard.bearer_ok(request):
            raise ApiError(401, "missing or wrong token: send the header Authorization: Bearer <token>",
                           {"WWW-Authenticate": "Bearer"})
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise ApiError(415, f"send {what} as JSON (Content-Type: application/json)")
        try:
            body = await read_body(request, max_bytes)
        except BodyTooLarge as e:
            raise ApiError(413, str(e)) from None
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ApiError(400, f"the body is not JSON: {e}") from None

    async def api_rate(self, request: Request) -> Response:
        payload = await self.json_write(request, "the rating", self.config.max_body_bytes)
        if not isinstance(payload, dict):
            raise ApiError(400, 'the body must be a JSON object like {"sample_id": "...", "rating": 4}')
        key = request.headers.get("idempotency-key")
        if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
            raise ApiError(400, "Idempotency-Key must be 1 to 128 printable ASCII characters without spaces")
        row, landed, waiting = await self.land(payload, key)
        return JSONResponse(self.rating_answer(row, landed, waiting), status_code=200 if landed.replayed else 201)

    async def land(self, values: dict, key: str | None):
        """Check a rating against the samples there are, land it once; (row, Landed, ratings waiting)."""
        snap = await self.snapshot()
        row, problem = check_rating(values, snap.known, max_comment=self.config.max_comment_chars,
                                    max_user_id=self.config.max_user_id_chars)
        if problem and snap.stale and problem.startswith(UNKNOWN_SAMPLE):
            # maybe a sample of a batch written since the last read: it cannot be checked until the run ends
            raise ApiError(503, f"the warehouse is busy (a run is writing it): sample {values['sample_id']!r} "
                                "cannot be checked now; retry in a few seconds", {"Retry-After": "2"})
        if problem:
            raise ApiError(422, problem)
        try:
            landed = await run_in_threadpool(self.desk.land, row, key)
        except RatingConflict as e:
            raise ApiError(409, str(e)) from None
        self.waiting.note(landed.file)
        return row, landed, await run_in_threadpool(self.waiting.count)

    @staticmethod
    def rating_answer(row: dict, landed, waiting: int) -> dict:
        return {**row, "file": landed.file, "replayed": landed.replayed, "ratings_waiting": waiting}

    async def api_content(self, request: Request) -> Response:
        """One curated sample for a customer to see; its serve_id goes back with the events."""
        snap = await self.snapshot()
        query = request.query_params
        unknown = sorted(set(query) - {"modality", "category", "user_id", "slot"})
        if unknown:
            raise ApiError(400, f"unknown parameter(s) {', '.join(map(repr, unknown))}; /api/content takes "
                                "category, modality, user_id, slot")
        category, modality = query.get("category") or None, query.get("modality") or None
        if not category:
            raise ApiError(400, "category is required: which category's content to serve")
        if modality:
            modality, category = self.choose(snap, modality, category)
        else:
            holders = [m for m in snap.modalities if category in snap.categories(m)]
            if len(holders) != 1:
                raise ApiError(400, f"category {category!r} is curated for {' and '.join(holders)}: give the modality"
                               if holders else f"unknown category {category!r}; " + choices(
                                   "curated categories", sorted({c for m in snap.modalities for c in snap.categories(m)})))
            modality = holders[0]
        user_id, slot = query.get("user_id") or None, query.get("slot") or None
        if user_id is not None and len(user_id) > self.config.max_user_id_chars:
            raise ApiError(400, f"user_id is {len(user_id)} characters; at most {self.config.max_user_id_chars}")
        if slot is not None and not SLOT.fullmatch(slot):
            raise ApiError(400, "slot must be 1 to 64 letters, digits or . _ : / -")
        try:
            served = self.serving.choose(snap, modality, category, user_id=user_id, slot=slot)
        except LookupError as e:
            raise ApiError(404, str(e)) from None
        body = {"serve_id": served.serve_id, "arm": served.arm, "probability": round(served.probability, 6),
                "experiment_id": served.experiment_id, "slot": slot, "user_id": user_id,
                **self.sample_json(request, served.sample)}
        for key in ("reward", "rank", "exploratory", "batch_id", "created_at"):
            body.pop(key, None)
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def api_events(self, request: Request) -> Response:
        """Impressions, clicks and conversions of served content: checked, landed atomically as one file.

        Each event's serve fields (sample, model, arm, probability) come from its verified serve_id, never
        from the request. event_id = sha256(serve_id:event) makes a retried request harmless: ingestion
        and the bandit's counts keep one event per serve and kind. Requests arriving together share one file
        (serving.EventBatcher: group commit), so ingestion sees a file per few milliseconds of traffic."""
        payload = await self.json_write(request, "the events", self.config.max_body_bytes * 16)
        items = payload.get("events") if isinstance(payload, dict) and set(payload) == {"events"} else [payload]
        if not isinstance(items, list) or not items or len(items) > MAX_EVENTS_PER_REQUEST:
            raise ApiError(400, 'send one event {"serve_id": ..., "event": "click"} or {"events": [...]} with 1 to '
                                f"{MAX_EVENTS_PER_REQUEST} of them")
        snap = await self.snapshot()
        rows = []
        for i, item in enumerate(items):
            where = f"event {i}: " if len(items) > 1 else ""
            row, problem = self.event_row(item, snap)
            if problem:
                raise ApiError(422, where + problem)
            rows.append(row)
        try:
            name = await asyncio.wrap_future(self.events.land(rows))  # answered once its file is on disk
        except ValueError as e:
            raise ApiError(422, str(e)) from None
        self.serving.note(snap, name, rows)
        return JSONResponse({"accepted": len(rows), "event_ids": [r["event_id"] for r in rows], "file": name},
                            status_code=202)

    def event_row(self, item, snap: Snapshot) -> tuple[dict | None, str | None]:
        if not isinstance(item, dict):
            return None, 'an event must be a JSON object like {"serve_id": "...", "event": "click"}'
        unknown = sorted(set(item) - {"serve_id", "event", "ts", "user_id", "sample_id"})
        if unknown:
            return None, f"unknown field(s) {', '.join(map(repr, unknown))}; an event has serve_id, event, ts, user_id"
        if item.get("event") not in EVENTS:
            return None, f"event must be one of {', '.join(EVENTS)}, got {str(item.get('event'))[:40]!r}"
        try:
            claim = self.serving.tokens.verify(item.get("serve_id"))
        except ServeIdError as e:
            return None, str(e)
        if item.get("sample_id") not in (None, claim.sample_id):
            return None, f"sample_id {str(item['sample_id'])[:140]!r} is not the sample this serve_id served"
        user_id = item.get("user_id", claim.user_id)
        if user_id is not None and (not isinstance(user_id, str) or len(user_id) > self.config.max_user_id_chars):
            return None, f"user_id must be a string of at most {self.config.max_user_id_chars} characters"
        values = {"event_id": event_id_for(item["serve_id"], item["event"]), "serve_id": item["serve_id"],
                  "event": item["event"], "sample_id": claim.sample_id, "user_id": user_id,
                  "ts": item.get("ts") or datetime.now(timezone.utc).isoformat(), "modality": claim.modality,
                  "category": claim.category, "model_version": claim.model_version, "arm": claim.arm,
                  "experiment_id": claim.experiment_id, "probability": claim.probability, "slot": claim.slot}
        _, problem = check_event(values)
        return (None, problem) if problem else (values, None)

    async def api_status(self, request: Request) -> Response:
        snap = await self.snapshot()
        status = await self.status(snap)
        status.pop("modality")
        return JSONResponse({
            **status,
            "last_retrain_by_modality": dict(snap.last_retrain),
            "curated": {m: len(snap.curated(m)) for m in snap.modalities},
            "busy_since": snap.busy_since.isoformat() if snap.busy_since else None,
        })


# -- small helpers --------------------------------------------------------------------------------------


def secret_from_env() -> bytes | None:
    """GEN_ASSETS_WEB_SECRET when set: serve ids signed with it verify on every server that shares it."""
    value = os.environ.get("GEN_ASSETS_WEB_SECRET")
    return value.encode() if value else None


def int_param(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if not re.fullmatch(r"[0-9]{1,6}", value):
        raise ApiError(400, f"{name} must be a whole number, got {value[:20]!r}")
    return int(value)


def page_of(page: int, total: int, per_page: int, *, clamp: bool) -> tuple[int, int]:
    """(page, pages); pages count from 1 and an empty listing has one (empty) page."""
    pages = max(1, math.ceil(total / per_page))
    if page < 1:
        raise ApiError(400, f"page must be 1 or more, got {page}")
    return (min(page, pages) if clamp else page), pages


def gallery_url(modality: str | None = None, category: str | None = None, page=None, **extra) -> str:
    """A gallery link; a page number that is not one (e.g. from a form) is left out."""
    page = str(page) if page is not None and re.fullmatch(r"[0-9]{1,6}", str(page)) and int(page) > 1 else None
    params = {"modality": modality, "category": category, "page": page, **extra}
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return "/gallery" + ("?" + query if query else "")


def choices(what: str, names: list[str]) -> str:
    return f"{what}: {', '.join(names)}" if names else f"there are no {what} yet (run `gen-assets run` first)"
