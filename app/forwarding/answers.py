"""What an answer from n8n means: the workflow's own answer, or one of n8n's own pages.

n8n answers some requests itself, before or instead of a workflow: while it starts, for a path
no active workflow listens on, for a path registered under another method. Those answers are
told apart by their exact shape (status, content type and n8n's own wording), never by a
substring a workflow could also write: a workflow's 404 or HTML page is its answer, final.
"""

from __future__ import annotations

import enum
import html
import json
import re
from dataclasses import dataclass

# What a proxy in front of n8n answers when n8n took too long: 504 (nginx, load balancers),
# 524 (Cloudflare, so n8n Cloud, after 100 s). n8n had the request, so the workflow may have
# run or still be running. (A 502 is more often n8n down than n8n hanging up: not counted.)
PROXY_TIMEOUTS = frozenset({504, 524})

# n8n's placeholder page while it starts, served with 200 for every path.
STARTING_UP_BODY = b"n8n is starting up. Please wait"
# Express's default 404 page, served before n8n has mounted its webhook routes.
_EXPRESS_404 = re.compile(
    rb'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
    rb"</head>\n<body>\n<pre>Cannot (?P<method>[A-Z]+) (?P<path>[^<]*)</pre>\n</body>\n</html>\n?"
)
# n8n's own "not registered" messages (packages/cli/src/webhooks), whole.
_NOT_REGISTERED = re.compile(r'The requested webhook "[^"\n]+" is not registered\.')
_WRONG_METHOD = re.compile(
    r"This webhook is not registered for [A-Z]+ requests\. "
    r"Did you mean to make a [A-Z]+(?:(?:, [A-Z]+)* or [A-Z]+)? request\?"
)
# n8n's answer while its database connection is not up (abstract-server.js).
_DATABASE_NOT_READY = "Database is not ready!"
# n8n's answer when it could not run an execution, seen for triggers that arrive as n8n stops.
# Sometimes n8n had stored the execution already and runs it at its next start (2.x's enqueued
# execution recovery), sometimes not at all: the workflow may or may not run.
_COULD_NOT_EXECUTE = "There was a problem executing the workflow"
_N8N_ERROR_FIELDS = frozenset({"code", "message", "hint", "stacktrace"})


class AnswerKind(enum.Enum):
    WORKFLOW = "workflow"  # the workflow's answer (any status): final
    STARTING = "starting"  # n8n is starting: nothing ran, send again once it is ready
    NOT_REGISTERED = "not-registered"  # no active workflow on this path (yet): nothing ran
    WRONG_METHOD = "wrong-method"  # the path is active under another method: nothing ran
    SERVER_ERROR = "server-error"  # 5xx: the workflow failed, or n8n did
    PROXY_TIMEOUT = "proxy-timeout"  # a proxy gave up waiting: the workflow may have run
    COULD_NOT_EXECUTE = "could-not-execute"  # n8n may run it at its next start, or never
    REFUSED = "refused"  # n8n (its Webhook node's auth, Node's parser) refused: nothing ran


# The Webhook node refusing a caller (its authentication, its IP allow-list) answers with one
# of these as a bare body, no content type (n8n-nodes-base/nodes/Webhook).
_WEBHOOK_REFUSALS = frozenset(
    {
        b"Authorization is required!",
        b"Authorization data is wrong!",
        b"Authorization problem!",
        b"IP is not allowed to access the webhook!",
    }
)
_WEBHOOK_REALM = 'Basic realm="Webhook"'


@dataclass(frozen=True)
class Answer:
    """The parts of n8n's answer that decide what it means."""

    status: int
    content_type: str | None
    body: bytes
    content_length: int | None = None  # as declared: an answer to HEAD has no body
    authenticate: str | None = None  # WWW-Authenticate


# Answers after which the workflow may have run although n8n did not say how it went.
OUTCOME_UNKNOWN = frozenset({AnswerKind.PROXY_TIMEOUT, AnswerKind.COULD_NOT_EXECUTE})


def classify(answer: Answer, *, method: str, paths: tuple[str, ...]) -> AnswerKind:
    """What `answer` to `method` on one of `paths` means. `paths` are the path as sent and as
    n8n may see it (a proxy in front may strip N8N_BASE_URL's own path)."""
    if is_starting_page(answer, method=method, paths=paths):
        return AnswerKind.STARTING
    if answer.status == 503 and _n8n_error_message(answer, code=503) == _DATABASE_NOT_READY:
        return AnswerKind.STARTING
    if _is_refusal(answer, method=method):
        return AnswerKind.REFUSED
    if answer.status == 404:
        return _classify_404(answer, method=method)
    if answer.status == 500 and _n8n_error_message(answer, code=0) == _COULD_NOT_EXECUTE:
        return AnswerKind.COULD_NOT_EXECUTE
    if answer.status in PROXY_TIMEOUTS:
        return AnswerKind.PROXY_TIMEOUT
    if answer.status >= 500:
        return AnswerKind.SERVER_ERROR
    return AnswerKind.WORKFLOW


def _classify_404(answer: Answer, *, method: str) -> AnswerKind:
    if method == "HEAD" and not answer.body and _is_json(answer.content_type):
        # n8n's own 404s come without their body to HEAD: "not registered" and "did you mean"
        # look alike then, and so would a workflow's JSON 404 to HEAD (taken as n8n's).
        return AnswerKind.NOT_REGISTERED
    message = _n8n_error_message(answer)
    if message is not None and _NOT_REGISTERED.fullmatch(message):
        return AnswerKind.NOT_REGISTERED
    if message is not None and _WRONG_METHOD.fullmatch(message):
        return AnswerKind.WRONG_METHOD
    return AnswerKind.WORKFLOW


def _is_refusal(answer: Answer, *, method: str) -> bool:
    """The Webhook node refused the caller, or Node refused the request's head (431)."""
    if answer.status == 431 and not answer.body:
        return True
    if answer.status not in (401, 403) or answer.content_type is not None:
        return False
    if method == "HEAD":
        return answer.authenticate == _WEBHOOK_REALM
    return answer.body in _WEBHOOK_REFUSALS


def is_starting_page(answer: Answer, *, method: str, paths: tuple[str, ...]) -> bool:
    """n8n's own pages while it starts: its placeholder, then Express's 404 for this request.
    To HEAD they come without a body, and are known by their declared length."""
    if not _is_html(answer.content_type):
        return False
    if method == "HEAD" and not answer.body:
        return answer.content_length in _starting_page_lengths(answer.status, paths)
    if answer.status == 200:
        return answer.body.strip() == STARTING_UP_BODY
    if answer.status == 404:
        page = _EXPRESS_404.fullmatch(answer.body)
        return page is not None and page["method"] == method.encode() and _on(page, paths)
    return False


def _starting_page_lengths(status: int, paths: tuple[str, ...]) -> set[int]:
    if status == 200:
        return {len(STARTING_UP_BODY)}
    if status != 404:
        return set()
    return {
        len(_express_page(method, path))
        for method in ("HEAD", "GET")  # Express routes HEAD as GET
        for path in paths
    }


def _express_page(method: str, path: str) -> bytes:
    escaped = html.escape(path, quote=True).replace("&#x27;", "&#39;")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
        f"</head>\n<body>\n<pre>Cannot {method} {escaped}</pre>\n</body>\n</html>\n"
    ).encode()


def _on(page: re.Match[bytes], paths: tuple[str, ...]) -> bool:
    """Express's page names the path HTML-escaped."""
    return html.unescape(page["path"].decode("utf-8", "replace")) in paths


def _is_html(content_type: str | None) -> bool:
    return _media_type(content_type) == "text/html"


def _is_json(content_type: str | None) -> bool:
    return _media_type(content_type) == "application/json"


def _media_type(content_type: str | None) -> str | None:
    return None if content_type is None else content_type.split(";")[0].strip().lower()


def _n8n_error_message(answer: Answer, *, code: int = 404) -> str | None:
    """The message of n8n's own JSON error body (`{"code":404,"message":...,"hint":...}`)."""
    try:
        payload = json.loads(answer.body)
    except ValueError:
        return None
    if not isinstance(payload, dict) or not set(payload) <= _N8N_ERROR_FIELDS:
        return None
    message = payload.get("message")
    if payload.get("code") != code or not isinstance(message, str):
        return None
    return message
