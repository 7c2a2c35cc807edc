"""What the dashboard's pages show, as plain values: filters read from a query string, headers
with their secrets redacted, bodies pretty-printed or described, times and durations in words.
Nothing here knows the web framework or the database."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode

from app.errors import InvalidRequest
from app.executions.repo import STATUSES, ExecutionFilter
from app.executions.schemas import decode_cursor

MODES = ("webhook", "webhook-test")
REDACTED = "[redacted]"
# Header names that carry a credential or a signature; Idempotency-Key is the execution's name.
_SECRET_NAME = re.compile(
    r"auth|cookie|token|secret|signature|passw|key|session|credential|csrf|hmac|jwt|private"
    r"|^sig|-sig$",
    re.IGNORECASE,
)
_NOT_SECRET = frozenset({"idempotency-key"})
# Values that are a credential whatever their header is called.
_SECRET_VALUE = re.compile(
    r"^\s*(bearer|basic|digest|token|negotiate)\s|n8ng_|whsec_|^\s*(sk|rk)_(live|test)_",
    re.IGNORECASE,
)
# Bodies shown on the page; the download has the whole stored body.
SHOWN_BODY_CHARS = 64 * 1024
_PRETTY_JSON_BYTES = 1024 * 1024
MAX_FILTER_CHARS = 255


@dataclass(frozen=True)
class Header:
    name: str
    value: str
    redacted: bool


def redact_headers(headers: Sequence[tuple[str, str]]) -> list[Header]:
    return [_header(name, value) for name, value in headers]


def _header(name: str, value: str) -> Header:
    secret = _secret_name(name) or bool(_SECRET_VALUE.search(value))
    return Header(name=name, value=REDACTED if secret else value, redacted=secret)


def _secret_name(name: str) -> bool:
    return name.lower() not in _NOT_SECRET and bool(_SECRET_NAME.search(name))


def redact_query(query: str) -> str:
    """The query string with the values of credential-like parameters redacted."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    shown = [(n, REDACTED if _secret_name(n) or _SECRET_VALUE.search(v) else v) for n, v in pairs]
    return urlencode(shown, safe="[]")


@dataclass(frozen=True)
class Body:
    size: int
    kind: Literal["empty", "json", "text", "binary"]
    text: str = ""
    cut: bool = False  # the page shows the first SHOWN_BODY_CHARS only


def body_view(body: bytes, content_type: str | None) -> Body:
    if not body:
        return Body(size=0, kind="empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Body(size=len(body), kind="binary")
    if _looks_json(text, content_type) and len(body) <= _PRETTY_JSON_BYTES:
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
            kind: Literal["json", "text"] = "json"
        except (ValueError, RecursionError):
            kind = "text"
    else:
        kind = "text"
    if "\x00" in text:
        return Body(size=len(body), kind="binary")
    cut = len(text) > SHOWN_BODY_CHARS
    return Body(size=len(body), kind=kind, text=text[:SHOWN_BODY_CHARS], cut=cut)


def _looks_json(text: str, content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return True
    return not media and text.lstrip()[:1] in ("{", "[")


def content_type_of(headers: Sequence[tuple[str, str]]) -> str | None:
    return next((v for n, v in headers if n.lower() == "content-type"), None)


def key_path(key: str) -> str:
    """An idempotency key as one URL path segment (its '/' and '?' encoded)."""
    return quote(key, safe="")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def between(start: datetime | None, end: datetime | None) -> str:
    return duration((end - start).total_seconds() if start and end else None)


def ago(moment: datetime | None, now: datetime) -> str:
    """'5 min ago', 'in 12 s': how far `moment` is from `now`, in the largest whole unit."""
    if moment is None:
        return "—"
    seconds = (now - moment).total_seconds()
    words = _span(abs(seconds))
    if words == "now":
        return "just now"
    return f"{words} ago" if seconds >= 0 else f"in {words}"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return "now"


def timestamp(moment: datetime | None) -> str:
    return "—" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def count_text(n: int, at_least: bool) -> str:
    return f"{n:,}+" if at_least else f"{n:,}"


@dataclass(frozen=True)
class ListQuery:
    """The executions list's filters and page, as read from its query string."""

    status: str = ""
    workflow: str = ""
    mode: str = ""
    created_from: str = ""  # as typed: YYYY-MM-DDTHH:MM, UTC
    created_to: str = ""
    key: str = ""  # a prefix
    before: str = ""  # cursors
    after: str = ""
    errors: list[str] = field(default_factory=list)

    def filters(self) -> ExecutionFilter:
        return ExecutionFilter(
            status=self.status or None,
            workflow=self.workflow or None,
            mode=self.mode or None,
            created_from=_moment(self.created_from),
            created_to=_moment(self.created_to),
            key_prefix=self.key or None,
        )

    def before_id(self) -> int | None:
        return decode_cursor(self.before) if self.before else None

    def after_id(self) -> int | None:
        return decode_cursor(self.after) if self.after and not self.before else None

    def link(self, **changes: str) -> str:
        """This list's query string with `changes` (a page cursor, a status), empty values left
        out; a change of filter starts again from the newest."""
        values = {
            "status": self.status,
            "workflow": self.workflow,
            "mode": self.mode,
            "from": self.created_from,
            "to": self.created_to,
            "key": self.key,
            **changes,
        }
        shown = {name: value for name, value in values.items() if value}
        return "?" + urlencode(shown) if shown else "?"

    def cleared(self) -> str:
        """The list with its status tab only."""
        return "?" + urlencode({"status": self.status}) if self.status else "?"

    @property
    def filtered(self) -> bool:
        return any((self.workflow, self.mode, self.created_from, self.created_to, self.key))


def list_query(params: Mapping[str, str]) -> ListQuery:
    """The list's filters from a query string; a filter that cannot be read is left out and
    named in `errors`, for the page to say so."""
    errors: list[str] = []
    status = _choice(params.get("status", ""), STATUSES, "status", errors)
    mode = _choice(params.get("mode", ""), MODES, "mode", errors)
    created_from = _time_text(params.get("from", ""), "From", errors)
    created_to = _time_text(params.get("to", ""), "To", errors)
    before = _cursor(params.get("before", ""), errors)
    after = _cursor(params.get("after", ""), errors)
    return ListQuery(
        status=status,
        workflow=_text(params.get("workflow", ""), "Workflow", errors),
        mode=mode,
        created_from=created_from,
        created_to=created_to,
        key=_text(params.get("key", ""), "Key", errors, strip=False),
        before=before,
        after=after,
        errors=errors,
    )


@dataclass(frozen=True)
class DeadLetterQuery:
    workflow: str = ""
    failed_since: str = ""
    before: str = ""
    # "Retry all matching": when its confirmation counted them (ISO 8601, UTC); the retry takes
    # only dead letters that had failed by then.
    until: str = ""
    errors: list[str] = field(default_factory=list)

    def filters(self) -> ExecutionFilter:
        return ExecutionFilter(
            status="failed",
            deliver_async=True,
            workflow=self.workflow or None,
            finished_from=_moment(self.failed_since),
            finished_before=self.until_time(),
        )

    def since(self) -> datetime | None:
        return _moment(self.failed_since)

    def until_time(self) -> datetime | None:
        return _instant(self.until) if self.until else None

    def before_id(self) -> int | None:
        return decode_cursor(self.before) if self.before else None

    def link(self, **changes: str) -> str:
        values = {"workflow": self.workflow, "since": self.failed_since, **changes}
        shown = {name: value for name, value in values.items() if value}
        return "?" + urlencode(shown) if shown else "?"


def dead_letter_query(params: Mapping[str, str]) -> DeadLetterQuery:
    errors: list[str] = []
    return DeadLetterQuery(
        workflow=_text(params.get("workflow", ""), "Workflow", errors),
        failed_since=_time_text(params.get("since", ""), "Failed since", errors),
        before=_cursor(params.get("before", ""), errors),
        until=_until(params.get("until", ""), errors),
        errors=errors,
    )


def _until(value: str, errors: list[str]) -> str:
    if value and _instant(value) is None:
        errors.append("That confirmation is not one this dashboard made; confirm again.")
        return ""
    return value


def _instant(value: str) -> datetime | None:
    """An ISO 8601 time with its offset, as the confirmation page writes it."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _choice(value: str, allowed: Sequence[str], name: str, errors: list[str]) -> str:
    if value and value not in allowed:
        errors.append(f"Unknown {name}; choose one of {', '.join(allowed)}.")
        return ""
    return value


def _text(value: str, label: str, errors: list[str], *, strip: bool = True) -> str:
    value = value.strip() if strip else value
    if len(value) > MAX_FILTER_CHARS or not value.isprintable():
        errors.append(f"{label}: at most {MAX_FILTER_CHARS} printable characters.")
        return ""
    return value


def _time_text(value: str, label: str, errors: list[str]) -> str:
    value = value.strip()
    if value and _parse_time(value) is None:
        errors.append(f"{label}: a time as YYYY-MM-DD HH:MM (UTC).")
        return ""
    return value


def _moment(value: str) -> datetime | None:
    return _parse_time(value) if value else None


def _parse_time(value: str) -> datetime | None:
    """A time typed into the filter (a datetime-local field, or by hand), read as UTC."""
    for pattern in ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _cursor(value: str, errors: list[str]) -> str:
    if not value:
        return ""
    try:
        decode_cursor(value)
    except InvalidRequest:
        errors.append("That page link is not one this dashboard made; showing the newest.")
        return ""
    return value
