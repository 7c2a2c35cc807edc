"""Dashboard sessions: signed in with an API key, kept on the server (ui_sessions, migration 0013).

Signing in makes a random 32-byte token; the browser keeps it in its cookie and the database
keeps its sha256 only, with the session's tenant, its API key's prefix and its end (now +
GATE_UI_SESSION_SECONDS, set by the database). Every page looks the session up again by the
token's hash: it must exist, not have ended, and its API key must still be live, so revoking or
expiring the key ends its sessions at once, in every process. Signing out deletes the row: a
copy of the cookie taken before is then worth nothing. Nothing that the database holds (the
key's hash, the token's) lets anyone make a session. The form token (CSRF) is an HMAC of the
session's token, which the HttpOnly cookie keeps from the page's scripts.

Only the owner reads ui_sessions, through SECURITY DEFINER functions (02_functions.sql), as
with api_keys; a start also deletes a few ended sessions, so the table holds about the live ones.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from app import db
from app.errors import Unauthorized
from app.tenants import repo
from app.tenants.service import KEY_PATTERN, hash_key
from app.tenants.tenant import Tenant

START = "SELECT ui_session_start($1, $2, $3)"
RESUME = (
    "SELECT tenant_id, tenant_name, key_prefix, read_only, expires_at FROM ui_session_resume($1)"
)
END = "SELECT ui_session_end($1)"

_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
_FORM = b"n8n-gate dashboard form"


@dataclass(frozen=True)
class Session:
    tenant: Tenant
    prefix: str
    read_only: bool
    expires_at: datetime
    form_token: str  # what every form of this session carries (CSRF)


@dataclass(frozen=True)
class SignedIn:
    session: Session
    cookie: str


class Sessions:
    def __init__(self, pool: db.Pool, *, lifetime_seconds: int) -> None:
        self._pool = pool
        self._lifetime = lifetime_seconds

    async def sign_in(self, api_key: str) -> SignedIn:
        """A new session for a live API key; Unauthorized for anything else."""
        api_key = api_key.strip()
        match = KEY_PATTERN.fullmatch(api_key)
        prefix = match.group(1) if match else ""
        async with db.connection(self._pool) as conn:
            stored = await repo.find_key(conn, prefix=prefix) if match else None
            if stored is None or not hmac.compare_digest(stored.key_hash, hash_key(api_key)):
                stored = None
            token = secrets.token_urlsafe(32)
            expires_at: datetime | None = (
                await conn.fetchval(START, _hash(token), prefix, float(self._lifetime))
                if stored is not None
                else None
            )
        if stored is None or expires_at is None:
            raise Unauthorized(
                "That API key is unknown, revoked or expired. Paste a whole key as "
                "'n8n-gate keys create' printed it (n8ng_...)."
            )
        session = Session(
            tenant=Tenant(id=stored.tenant_id, name=stored.tenant_name),
            prefix=prefix,
            read_only=stored.read_only,
            expires_at=expires_at,
            form_token=_form_token(token),
        )
        return SignedIn(session=session, cookie=token)

    async def resume(self, cookie: str | None) -> Session | None:
        """The session a cookie names, while it lasts and its key is live; None otherwise (a
        tampered, foreign, ended or signed-out cookie is no session)."""
        if cookie is None or not _TOKEN.fullmatch(cookie):
            return None
        async with db.connection(self._pool) as conn:
            found = await conn.fetchrow(RESUME, _hash(cookie))
        if found is None:
            return None
        return Session(
            tenant=Tenant(id=found["tenant_id"], name=found["tenant_name"]),
            prefix=found["key_prefix"],
            read_only=found["read_only"],
            expires_at=found["expires_at"],
            form_token=_form_token(cookie),
        )

    async def sign_out(self, cookie: str | None) -> None:
        """End the session a cookie names, at once (any copy of the cookie with it)."""
        if cookie is None or not _TOKEN.fullmatch(cookie):
            return
        async with db.connection(self._pool) as conn:
            await conn.execute(END, _hash(cookie))


def form_token_matches(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(session.form_token, sent)


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _form_token(token: str) -> str:
    return hmac.new(token.encode(), _FORM, hashlib.sha256).hexdigest()
