"""Dashboard sessions: signed in with an API key, kept in a signed cookie, no state on the server.

The cookie holds the key's prefix, an expiry and a random nonce, signed (itsdangerous, HMAC
SHA-256) with the key's stored hash. Every page looks the key up again by its prefix: a revoked or
expired key ends its sessions at once, in every process, and no secret needs configuring. The
hash never leaves the database and the service; the cookie shows nothing that `keys list` does
not. The form token (CSRF) is an HMAC of the session's nonce under the same hash.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from app import db
from app.errors import Unauthorized
from app.tenants import repo
from app.tenants.service import KEY_PATTERN, hash_key
from app.tenants.tenant import Tenant

_SALT = b"n8n-gate dashboard session"
_PREFIX = re.compile(r"[0-9a-f]{12}")


@dataclass(frozen=True)
class Session:
    tenant: Tenant
    prefix: str
    read_only: bool
    expires_at: int  # Unix time
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
        stored = await self._lookup(match.group(1)) if match else None
        if stored is None or not hmac.compare_digest(stored.key_hash, hash_key(api_key)):
            raise Unauthorized(
                "That API key is unknown, revoked or expired. Paste a whole key as "
                "'n8n-gate keys create' printed it (n8ng_...)."
            )
        assert match is not None
        prefix, nonce = match.group(1), secrets.token_urlsafe(16)
        expires_at = int(time.time()) + self._lifetime
        token = _serializer(stored.key_hash).dumps({"p": prefix, "e": expires_at, "n": nonce})
        session = _session(stored, prefix, expires_at, nonce)
        return SignedIn(session=session, cookie=f"{prefix}.{token}")

    async def resume(self, cookie: str | None) -> Session | None:
        """The session a cookie holds, if its signature verifies under a live key and it has
        not expired; None otherwise (a tampered, foreign or stale cookie is no session)."""
        prefix, _, token = (cookie or "").partition(".")
        if not _PREFIX.fullmatch(prefix) or not token or len(token) > 512:
            return None
        stored = await self._lookup(prefix)
        if stored is None:
            return None
        try:
            payload: Any = _serializer(stored.key_hash).loads(token)
        except BadSignature:
            return None
        if not _well_formed(payload, prefix) or payload["e"] <= time.time():
            return None
        return _session(stored, prefix, payload["e"], payload["n"])

    async def _lookup(self, prefix: str) -> repo.StoredKey | None:
        async with db.connection(self._pool) as conn:
            return await repo.find_key(conn, prefix=prefix)


def form_token_matches(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(session.form_token, sent)


def _serializer(key_hash: bytes) -> URLSafeSerializer:
    return URLSafeSerializer(key_hash, salt=_SALT, signer_kwargs={"digest_method": hashlib.sha256})


def _well_formed(payload: Any, prefix: str) -> bool:
    return (
        isinstance(payload, dict)
        and payload.get("p") == prefix
        and isinstance(payload.get("e"), int)
        and isinstance(payload.get("n"), str)
    )


def _session(stored: repo.StoredKey, prefix: str, expires_at: int, nonce: str) -> Session:
    form_token = hmac.new(stored.key_hash, b"form " + nonce.encode(), hashlib.sha256).hexdigest()
    return Session(
        tenant=Tenant(id=stored.tenant_id, name=stored.tenant_name),
        prefix=prefix,
        read_only=stored.read_only,
        expires_at=expires_at,
        form_token=form_token,
    )
