"""The dashboard at /ui: executions, one execution, dead letters and the delivery queue of the
signed-in key's tenant, as server-rendered pages (Jinja2, autoescaped; plain forms, a few lines
of vendored script; no asset from elsewhere).

It is an application of its own, mounted on the gateway's, so that its errors are HTML pages
with their status rather than the API's problem+json. Every state-changing form carries the
session's form token and must come from this origin (Sec-Fetch-Site, else Origin); the sign-in
form too, with a token in a cookie of its own. Every query runs in a transaction scoped to the
session's tenant (Row Level Security).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import db
from app.deps import Services
from app.errors import (
    ExecutionNotFound,
    GateError,
    InvalidRequest,
    NotRetryable,
    PayloadTooLarge,
    ReadOnlyKey,
    Unauthorized,
)
from app.executions.repo import STATUSES, ExecutionRow, ListedExecution, QueueTarget
from app.executions.schemas import encode_cursor
from app.forwarding.headers import is_trusted
from app.ui import views
from app.ui.sessions import Session, Sessions, form_token_matches

logger = logging.getLogger(__name__)

COOKIE = "n8n_gate_session"
FORM_COOKIE = "n8n_gate_form"  # the sign-in form's token, before there is a session
PAGE_SIZE = 50
COUNT_CAP = 10_000
BULK_RETRY_LIMIT = 1000  # dead letters one "retry all matching" puts back, as the API's limit
MAX_SELECTED = 200
MAX_FORM_BYTES = 64 * 1024
# How long each of a page's statements may run (SET LOCAL statement_timeout): a filter no index
# serves reads every execution of the tenant, and the list's counts refresh every 10 s.
STATEMENT_TIMEOUT_MS = 5000
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}

_STATIC = Path(__file__).with_name("static")
# Asked for with ?v=<this>, so that browsers may keep them and still get a new build's at once.
STATIC_VERSION = hashlib.sha256(
    b"".join(f.read_bytes() for f in sorted(_STATIC.iterdir()) if f.is_file())
).hexdigest()[:12]

_templates = Environment(
    loader=PackageLoader("app.ui", "templates"),
    autoescape=select_autoescape(["html"], default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters.update(
    key_path=views.key_path, timestamp=views.timestamp, duration=views.duration
)
_templates.globals.update(
    between=views.between, count_text=views.count_text, static_version=STATIC_VERSION
)


class FormRefused(GateError):
    """A state-changing form without this session's token, or sent from another site. Shown
    as a page only; never an API answer."""

    status_code = 403
    slug = "form-refused"
    title = "Form refused"


@dataclass(frozen=True)
class Visit:
    """One request to the dashboard: the gateway's services, who is signed in, and where the
    dashboard lives (its path under any --root-path)."""

    request: Request
    services: Services
    session: Session | None
    base: str

    @property
    def now(self) -> datetime:
        return datetime.now(UTC)

    def signed_in(self) -> Session:
        if self.session is None:
            raise Unauthorized("Your session ended. Sign in again.")
        return self.session

    def writer(self) -> Session:
        session = self.signed_in()
        if session.read_only:
            raise ReadOnlyKey(
                "This session's API key is read-only: it shows everything but cannot retry. "
                "Sign in with a key created without --read-only."
            )
        return session


def _sessions(services: Services) -> Sessions:
    return Sessions(services.pool, lifetime_seconds=services.settings.ui_session_seconds)


async def _visit(request: Request) -> Visit:
    services: Services = request.state.services
    session = await _sessions(services).resume(request.cookies.get(COOKIE))
    return Visit(request, services, session, base=request.scope.get("root_path", ""))


VisitDep = Annotated[Visit, Depends(_visit)]


def create_ui() -> FastAPI:
    ui = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    ui.router.redirect_slashes = False
    ui.mount("/static", StaticFiles(packages=[("app.ui", "static")]), name="static")
    for path, endpoint, methods in _ROUTES:
        ui.add_api_route(path, endpoint, methods=methods, response_class=HTMLResponse)
    ui.add_exception_handler(GateError, _on_gate_error)
    ui.add_exception_handler(db.DatabaseUnreachable, _on_database_unreachable)
    ui.add_exception_handler(StarletteHTTPException, _on_http_error)
    ui.add_exception_handler(RequestValidationError, _on_validation_error)
    ui.add_exception_handler(Exception, _on_unexpected)
    return ui


def mount_ui(app: FastAPI) -> None:
    """Serve the dashboard at /ui (and /ui/...) of `app`."""
    app.router.routes.append(_UiMount("/ui", app=_Contained(_SecurityHeaders(create_ui()))))


# ---------------------------------------------------------------------------------------------
# Pages


async def executions_page(visit: VisitDep) -> Response:
    if visit.session is None:
        return _sign_in_page(visit)
    query = views.list_query(visit.request.query_params)
    executions = visit.services.executions
    page = await executions.list_recent(
        tenant=visit.session.tenant,
        filters=query.filters(),
        before_id=query.before_id(),
        after_id=query.after_id(),
        limit=PAGE_SIZE,
        timeout_ms=STATEMENT_TIMEOUT_MS,
    )
    counts = await executions.count_by_status(
        tenant=visit.session.tenant,
        filters=query.filters(),
        cap=COUNT_CAP,
        timeout_ms=STATEMENT_TIMEOUT_MS,
    )
    return _render(
        visit,
        "executions.html",
        status_code=400 if query.errors else 200,
        nav="executions",
        query=query,
        rows=[_row(row, visit.now) for row in page.items],
        counts=counts,
        statuses=STATUSES,
        modes=views.MODES,
        older=query.link(before=encode_cursor(page.next_before_id))
        if page.next_before_id
        else None,
        newer=query.link(after=encode_cursor(page.newer_after_id)) if page.newer_after_id else None,
    )


async def counts_json(visit: VisitDep) -> Response:
    """The list's counts, for its page to refresh them in place (ui.js)."""
    if visit.session is None:
        return JSONResponse({"signed_in": False}, status_code=401)
    query = views.list_query(visit.request.query_params)
    counts = await visit.services.executions.count_by_status(
        tenant=visit.session.tenant,
        filters=query.filters(),
        cap=COUNT_CAP,
        timeout_ms=STATEMENT_TIMEOUT_MS,
    )
    shown = {s: views.count_text(n, s in counts.at_least) for s, n in counts.counts.items()}
    return JSONResponse({"signed_in": True, "counts": shown})


async def execution_page(key: str, visit: VisitDep) -> Response:
    if visit.session is None:
        return _sign_in_page(visit)
    inspection = await visit.services.executions.inspect(
        tenant=visit.session.tenant, key=key, timeout_ms=STATEMENT_TIMEOUT_MS
    )
    detail, request = inspection.detail, inspection.request
    row = detail.row
    response_headers = _pairs(row.response_headers)
    return _render(
        visit,
        "execution.html",
        nav="executions",
        row=row,
        attempts=detail.attempts,
        request=request,
        request_headers=views.redact_headers(request.headers) if request else [],
        request_query=views.redact_query(request.query) if request else "",
        request_body=views.body_view(request.body, views.content_type_of(request.headers))
        if request
        else None,
        response_headers=views.redact_headers(response_headers),
        response_body=views.body_view(row.response_body or b"", row.response_content_type)
        if row.response_status is not None
        else None,
        response_truncated=row.response_body_bytes is not None
        and row.response_body_bytes > len(row.response_body or b""),
        dead_letter=row.status == "failed" and row.deliver_async,
    )


async def body_download(which: str, key: str, visit: VisitDep) -> Response:
    if visit.session is None:
        return _sign_in_page(visit)
    if which not in ("request", "response"):
        raise StarletteHTTPException(404)
    inspection = await visit.services.executions.inspect(
        tenant=visit.session.tenant, key=key, timeout_ms=STATEMENT_TIMEOUT_MS
    )
    if which == "request":
        body = inspection.request.body if inspection.request else None
    else:
        body = inspection.detail.row.response_body
    if body is None:
        raise ExecutionNotFound(f"This execution has no stored {which} body.")
    # Never with the recorded content type: a stored HTML answer must not run on this origin.
    return Response(
        body,
        media_type="application/octet-stream",
        headers={"content-disposition": f'attachment; filename="{which}-body.bin"'},
    )


async def dead_letters_page(visit: VisitDep) -> Response:
    if visit.session is None:
        return _sign_in_page(visit)
    query = views.dead_letter_query(visit.request.query_params)
    executions = visit.services.executions
    tenant = visit.session.tenant
    page = await executions.list_recent(
        tenant=tenant,
        filters=query.filters(),
        before_id=query.before_id(),
        limit=PAGE_SIZE,
        timeout_ms=STATEMENT_TIMEOUT_MS,
    )
    total = await executions.count(
        tenant=tenant, filters=query.filters(), cap=COUNT_CAP, timeout_ms=STATEMENT_TIMEOUT_MS
    )
    return _render(
        visit,
        "dead_letters.html",
        status_code=400 if query.errors else 200,
        nav="dead-letters",
        query=query,
        rows=[_row(row, visit.now) for row in page.items],
        total=views.count_text(total, total >= COUNT_CAP),
        older=query.link(before=encode_cursor(page.next_before_id))
        if page.next_before_id
        else None,
    )


async def confirm_retry(visit: VisitDep) -> Response:
    form = await _form(visit.request)
    _check_form(visit, form)
    session = visit.writer()
    keys = _selected_keys(form)
    query = views.dead_letter_query(_single(form))
    if query.errors:
        raise InvalidRequest(" ".join(query.errors))
    matching = None
    if not keys:
        # The retry takes what had failed by now: not dead letters that arrive meanwhile.
        query = dataclasses.replace(query, until=visit.now.isoformat())
        total = await visit.services.executions.count(
            tenant=session.tenant,
            filters=query.filters(),
            cap=COUNT_CAP,
            timeout_ms=STATEMENT_TIMEOUT_MS,
        )
        matching = {"count": total, "at_least": total >= COUNT_CAP}
    return _render(
        visit,
        "confirm_retry.html",
        nav="dead-letters",
        keys=keys,
        query=query,
        matching=matching,
        bulk_limit=BULK_RETRY_LIMIT,
    )


async def retry(visit: VisitDep) -> Response:
    form = await _form(visit.request)
    _check_form(visit, form)
    session = visit.writer()
    keys = _selected_keys(form)
    query = views.dead_letter_query(_single(form))
    if query.errors:
        raise InvalidRequest(" ".join(query.errors))
    executions = visit.services.executions
    requeued: list[ExecutionRow] = []
    skipped: list[tuple[str, str]] = []
    if keys:
        for key in keys:
            try:
                requeued.append((await executions.retry(tenant=session.tenant, key=key)).row)
            except (NotRetryable, ExecutionNotFound) as refused:
                skipped.append((key, refused.detail))
        left = 0
        bulk_keys: list[str] = []
    else:
        if not query.until:
            raise InvalidRequest(
                "Retrying all matching dead letters needs its confirmation page: go back to the "
                "dead letters and choose 'Retry all matching' again."
            )
        bulk_keys = await executions.retry_failed(
            tenant=session.tenant,
            workflow=query.workflow or None,
            failed_since=query.since(),
            failed_before=query.until_time(),
            limit=BULK_RETRY_LIMIT,
        )
        left = await executions.count(
            tenant=session.tenant, filters=query.filters(), cap=1, timeout_ms=STATEMENT_TIMEOUT_MS
        )
    return _render(
        visit,
        "retried.html",
        nav="dead-letters",
        requeued=[_row(row, visit.now) for row in requeued],
        bulk_keys=bulk_keys,
        skipped=skipped,
        left=left,
        query=query,
    )


async def queue_page(visit: VisitDep) -> Response:
    if visit.session is None:
        return _sign_in_page(visit)
    targets = await visit.services.executions.queue_summary(
        tenant=visit.session.tenant, timeout_ms=STATEMENT_TIMEOUT_MS
    )
    return _render(
        visit,
        "queue.html",
        nav="queue",
        targets=[_target(target) for target in targets],
        depth=sum(t.depth for t in targets),
        due=sum(t.due for t in targets),
        running=sum(t.running for t in targets),
    )


async def sign_in(visit: VisitDep) -> Response:
    form = await _form(visit.request)
    _check_origin(visit.request)
    cookie_token = visit.request.cookies.get(FORM_COOKIE)
    sent = _single(form).get("form_token")
    if not cookie_token or not sent or not secrets.compare_digest(cookie_token, sent):
        raise FormRefused(
            "The sign-in form expired or came from another site. Reload the page and sign in."
        )
    next_path = _safe_next(_single(form).get("next", ""))
    try:
        signed = await _sessions(visit.services).sign_in(_single(form).get("api_key", ""))
    except Unauthorized as refused:
        logger.info("dashboard sign-in refused: unknown, revoked or expired API key")
        return _sign_in_page(visit, error=refused.detail, status_code=401, next_path=next_path)
    response = RedirectResponse(visit.base + (next_path or "/"), status_code=303)
    _set_cookie(visit, response, COOKIE, signed.cookie, max_age=_lifetime(visit))
    response.delete_cookie(FORM_COOKIE, path=_cookie_path(visit))
    logger.info("dashboard sign-in with API key %s", signed.session.prefix)
    return response


async def sign_out(visit: VisitDep) -> Response:
    form = await _form(visit.request)
    if visit.session is not None:
        _check_form(visit, form)
        await _sessions(visit.services).sign_out(visit.request.cookies.get(COOKIE))
        logger.info("dashboard sign-out of API key %s", visit.session.prefix)
    response = RedirectResponse(visit.base + "/", status_code=303)
    response.delete_cookie(
        COOKIE, path=_cookie_path(visit), httponly=True, samesite="strict", secure=_https(visit)
    )
    return response


_ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/", executions_page, ["GET"]),
    ("/counts", counts_json, ["GET"]),
    ("/executions/{key:path}", execution_page, ["GET"]),
    ("/bodies/{which}/{key:path}", body_download, ["GET"]),
    ("/dead-letters", dead_letters_page, ["GET"]),
    ("/dead-letters/confirm", confirm_retry, ["POST"]),
    ("/dead-letters/retry", retry, ["POST"]),
    ("/queue", queue_page, ["GET"]),
    ("/sign-in", sign_in, ["POST"]),
    ("/sign-out", sign_out, ["POST"]),
]


# ---------------------------------------------------------------------------------------------
# Rendering


def _render(
    visit: Visit,
    template: str,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    html = _templates.get_template(template).render(
        base=visit.base,
        session=visit.session,
        now=visit.now,
        nav=context.pop("nav", ""),
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers=headers)


def _sign_in_page(
    visit: Visit, *, error: str | None = None, status_code: int = 200, next_path: str = ""
) -> HTMLResponse:
    """The sign-in page, answered in place of any page asked for without a session; signed in,
    the browser comes back to the page it asked for."""
    if _arrived_from_another_site(visit.request):
        return _reload_from_here()
    if not next_path and visit.request.method == "GET":
        asked = visit.request.url.path[len(visit.base) :]
        query = visit.request.url.query
        next_path = _safe_next(asked + (f"?{query}" if query else ""))
    token = visit.request.cookies.get(FORM_COOKIE, "")
    if not (40 <= len(token) <= 64 and token.replace("-", "").replace("_", "").isalnum()):
        token = secrets.token_urlsafe(32)
    response = _render(
        visit,
        "sign_in.html",
        status_code=status_code,
        form_token=token,
        error=error,
        next_path="" if next_path == "/" else next_path,
    )
    response.headers["cache-control"] = "no-store"
    _set_cookie(visit, response, FORM_COOKIE, token, max_age=3600)
    return response


def _arrived_from_another_site(request: Request) -> bool:
    """A link followed from another site (an alert in Slack or mail, Grafana): the browser
    sends no SameSite=Strict cookie with it, signed in or not."""
    return (
        request.method == "GET"
        and request.headers.get("sec-fetch-site") == "cross-site"
        and COOKIE not in request.cookies
    )


def _reload_from_here() -> HTMLResponse:
    """The same URL again, asked by this site's own page: its Strict cookie goes with it. The
    reload is same-origin, so it never comes back here."""
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="0"><title>n8n-gate</title></head>'
        "<body><p>Opening…</p></body></html>"
    )
    return HTMLResponse(page, headers={"cache-control": "no-store"})


def _error_page(
    request: Request,
    status_code: int,
    title: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    base = request.scope.get("root_path", "")
    html = _templates.get_template("error.html").render(
        base=base, session=None, nav="", now=datetime.now(UTC), status_code=status_code,
        title=title, message=message,
    )  # fmt: skip
    return HTMLResponse(html, status_code=status_code, headers=headers)


@dataclass(frozen=True)
class RowView:
    """An execution as a list row or a page header shows it."""

    row: ExecutionRow | ListedExecution
    key_path: str
    created_ago: str
    finished_ago: str
    next_attempt_in: str
    duration: str


def _row(row: ExecutionRow | ListedExecution, now: datetime) -> RowView:
    return RowView(
        row=row,
        key_path=views.key_path(row.idempotency_key),
        created_ago=views.ago(row.created_at, now),
        finished_ago=views.ago(row.finished_at, now),
        next_attempt_in=views.ago(row.next_attempt_at, now),
        duration=views.between(row.started_at, row.finished_at),
    )


@dataclass(frozen=True)
class TargetView:
    mode: str
    workflow: str
    depth: int
    due: int
    running: int
    scheduled: int
    oldest_due: str  # how long the oldest due item has waited
    oldest_due_at: str
    late: bool  # waited past LATE_SECONDS
    next_due: str
    oldest_key: str | None


LATE_SECONDS = 60


def _target(target: QueueTarget) -> TargetView:
    mode, _, workflow = target.target.partition(" ")
    waited = (target.now - target.oldest_due_at).total_seconds() if target.oldest_due_at else None
    return TargetView(
        mode=mode,
        workflow=workflow,
        depth=target.depth,
        due=target.due,
        running=target.running,
        scheduled=target.depth - target.due - target.running,
        oldest_due=views.duration(waited),
        oldest_due_at=views.timestamp(target.oldest_due_at),
        late=waited is not None and waited > LATE_SECONDS,
        next_due="now" if target.due else views.ago(target.next_due_at, target.now),
        oldest_key=target.oldest_key,
    )


def _pairs(headers_json: str | None) -> list[tuple[str, str]]:
    if not headers_json:
        return []
    return [(str(name), str(value)) for name, value in json.loads(headers_json)]


# ---------------------------------------------------------------------------------------------
# Forms, cookies and the origin check


async def _form(request: Request) -> dict[str, list[str]]:
    """An urlencoded form's fields, read up to MAX_FORM_BYTES."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge("That form is too large for the dashboard.")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and media != "application/x-www-form-urlencoded":
        raise InvalidRequest("The dashboard's forms are sent urlencoded; use its pages.")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=1000)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("That form could not be read.") from None
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    return fields


def _single(form: Mapping[str, list[str]]) -> dict[str, str]:
    return {name: values[0] for name, values in form.items()}


def _selected_keys(form: Mapping[str, list[str]]) -> list[str]:
    keys = list(dict.fromkeys(key for key in form.get("key", []) if key))
    if len(keys) > MAX_SELECTED:
        raise InvalidRequest(f"Select at most {MAX_SELECTED} executions at a time.")
    return keys


def _check_form(visit: Visit, form: Mapping[str, list[str]]) -> None:
    """A state-changing form must come from this origin, with this session's token."""
    _check_origin(visit.request)
    session = visit.signed_in()
    if not form_token_matches(session, _single(form).get("form_token")):
        raise FormRefused(
            "This form is not from your current session (it may have expired, or come from "
            "another site). Go back, reload the page and try again."
        )


def _check_origin(request: Request) -> None:
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None:
        same = site in ("same-origin", "none")
    elif origin is not None:
        same = origin != "null" and urlsplit(origin).netloc == request.headers.get("host")
    else:
        same = True  # neither header (not a browser, or an old one): the token decides
    if not same:
        raise FormRefused(
            "This form was sent from another site. Use the dashboard's own pages to make changes."
        )


def _safe_next(path: str) -> str:
    """A path inside the dashboard to return to after sign-in; anything else is dropped."""
    ok = (
        path.startswith("/")
        and not path.startswith("//")
        and "\\" not in path
        and path.isprintable()
        and len(path) <= 2048
    )
    return path if ok else ""


def _lifetime(visit: Visit) -> int:
    return visit.services.settings.ui_session_seconds


def _https(visit: Visit) -> bool:
    """Whether the browser reached the dashboard over https: directly, or through a proxy
    trusted with X-Forwarded-Proto (GATE_TRUSTED_PROXIES)."""
    request = visit.request
    if request.url.scheme == "https":
        return True
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    peer = request.client.host if request.client else None
    return proto == "https" and is_trusted(peer, visit.services.settings.trusted_proxy_networks)


def _cookie_path(visit: Visit) -> str:
    return visit.base or "/"


def _set_cookie(visit: Visit, response: Response, name: str, value: str, *, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=_cookie_path(visit),
        httponly=True,
        samesite="strict",
        secure=_https(visit),
    )


# ---------------------------------------------------------------------------------------------
# Errors: pages with their status, never problem+json


async def _on_gate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GateError)
    headers = {n: v for n, v in exc.headers.items() if n.lower() != "www-authenticate"}
    return _error_page(request, exc.status_code, exc.title, exc.detail, headers)


async def _on_database_unreachable(request: Request, exc: Exception) -> Response:
    return _error_page(
        request,
        503,
        "Database unavailable",
        "The gateway cannot reach its database right now, so the dashboard has nothing to "
        "show. Try again in a moment.",
        {"retry-after": "5"},
    )


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        return _error_page(request, 405, "Method not allowed", "This page is not sent that way.")
    return _error_page(request, 404, "Not found", "There is no such page in the dashboard.")


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    return _error_page(request, 400, "Bad request", "That address could not be read.")


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    logger.error("dashboard error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error_page(
        request, 500, "Internal error", "The dashboard hit an unexpected error; it was logged."
    )


# ---------------------------------------------------------------------------------------------
# ASGI wrappers


class _UiMount(Mount):
    """A mount that also answers its own path without the trailing slash (/ui as /ui/)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        root_path = scope.get("root_path", "")
        if scope["type"] == "http" and scope["path"][len(root_path) :] == self.path:
            slashed = {**scope, "path": scope["path"] + "/"}
            match, child = super().matches(slashed)
            return match, {**child, "path": slashed["path"]}
        return super().matches(scope)


class _SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    headers.append((name.encode(), value.encode()))
                if b"cache-control" not in present:
                    static = scope["path"].startswith(scope.get("root_path", "") + "/static/")
                    headers.append((b"cache-control", b"max-age=86400" if static else b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class _Contained:
    """Starlette raises an error again once its 500 page is sent; that page was the dashboard's
    own (logged there), so the error stops here rather than reach the API's handler."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watching(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watching)
        except Exception:
            if not started:
                raise
