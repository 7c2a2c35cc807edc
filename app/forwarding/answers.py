"""What an answer from n8n means: the workflow's own answer, or one of n8n's own pages.

n8n answers some requests itself, before or instead of a workflow: while it starts, for a path
no active workflow listens on, for a path registered under another method. Those answers are
told apart by their exact shape (status, content type and n8n's own wording), never by a
substring a workflow could also write: a workflow's 404 or HTML page is its answer, final.
"""

from __future__ import annotations

import enum
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


@dataclass(frozen=True)
class Answer:
    """The parts of n8n's answer that decide what it means."""

    status: int
    content_type: str | None
    body: bytes


# Answers after which the workflow may have run although n8n did not say how it went.
OUTCOME_UNKNOWN = frozenset({AnswerKind.PROXY_TIMEOUT, AnswerKind.COULD_NOT_EXECUTE})


def classify(answer: Answer, *, method: str, path: str) -> AnswerKind:
    """What `answer` to `method path` (the path as sent, without the query) means."""
    if is_starting_page(answer, method=method, path=path):
        return AnswerKind.STARTING
    if answer.status == 503 and _n8n_error_message(answer, code=503) == _DATABASE_NOT_READY:
        return AnswerKind.STARTING
    if answer.status == 404:
        message = _n8n_error_message(answer)
        if message is not None and _NOT_REGISTERED.fullmatch(message):
            return AnswerKind.NOT_REGISTERED
        if message is not None and _WRONG_METHOD.fullmatch(message):
            return AnswerKind.WRONG_METHOD
        return AnswerKind.WORKFLOW
    if answer.status == 500 and _n8n_error_message(answer, code=0) == _COULD_NOT_EXECUTE:
        return AnswerKind.COULD_NOT_EXECUTE
    if answer.status in PROXY_TIMEOUTS:
        return AnswerKind.PROXY_TIMEOUT
    if answer.status >= 500:
        return AnswerKind.SERVER_ERROR
    return AnswerKind.WORKFLOW


def is_starting_page(answer: Answer, *, method: str, path: str) -> bool:
    """n8n's own pages while it starts: its placeholder, then Express's 404 for this request."""
    if not _is_html(answer.content_type):
        return False
    if answer.status == 200:
        return answer.body.strip() == STARTING_UP_BODY
    if answer.status == 404:
        page = _EXPRESS_404.fullmatch(answer.body)
        return page is not None and page["method"] == method.encode() and _same_path(page, path)
    return False


def _same_path(page: re.Match[bytes], path: str) -> bool:
    # Express escapes the path for HTML; a webhook path holds none of the escaped characters.
    return page["path"].decode("utf-8", "replace") == path


def _is_html(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";")[0].strip().lower() == "text/html"


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
