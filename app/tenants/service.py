"""API keys: minted once, stored as SHA-256, checked in constant time, cached briefly."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import asyncpg

from app import db
from app.errors import InvalidRequest, ReadOnlyKey, Unauthorized
from app.tenants import repo
from app.tenants.tenant import Tenant

logger = logging.getLogger(__name__)

KEY_PREFIX = "n8ng"
# How often a process notes that a key it verified was used (`keys list`: last used).
NOTE_USE_SECONDS = 60.0
KEY_PATTERN = re.compile(r"^n8ng_([0-9a-f]{12})_[A-Za-z0-9_-]{32,64}$")
TENANT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


Access = Literal["read", "write"]


@dataclass(frozen=True)
class Caller:
    tenant: Tenant
    read_only: bool
    prefix: str


@dataclass(frozen=True)
class NewKey:
    tenant: Tenant
    prefix: str
    secret: str


def hash_key(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


def mint_key() -> tuple[str, str]:
    prefix = secrets.token_hex(6)
    return prefix, f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"


async def create_key(
    conn: asyncpg.Connection, *, tenant_name: str, read_only: bool = False
) -> NewKey:
    if not TENANT_NAME_PATTERN.fullmatch(tenant_name):
        raise InvalidRequest(
            "Tenant names are 1-64 characters: letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    prefix, secret = mint_key()
    async with conn.transaction():
        tenant_id = await repo.upsert_tenant(conn, name=tenant_name)
        await repo.insert_key(
            conn,
            tenant_id=tenant_id,
            prefix=prefix,
            key_hash=hash_key(secret),
            read_only=read_only,
        )
    return NewKey(tenant=Tenant(id=tenant_id, name=tenant_name), prefix=prefix, secret=secret)


async def rotate_key(conn: asyncpg.Connection, *, prefix: str, overlap_seconds: float) -> str:
    """A new key for the tenant of `prefix`, with its rights; the old one works for
    `overlap_seconds` more. Returns the new key (shown once)."""
    new_prefix, secret = mint_key()
    async with conn.transaction():
        rotated = await repo.rotate_out_key(conn, prefix=prefix, overlap_seconds=overlap_seconds)
        if rotated is None:
            raise InvalidRequest(f"No live API key with prefix {prefix!r}.")
        tenant_id, read_only = rotated
        await repo.insert_key(
            conn,
            tenant_id=tenant_id,
            prefix=new_prefix,
            key_hash=hash_key(secret),
            read_only=read_only,
        )
    return secret


class Authenticator:
    """Maps a bearer key to its tenant. A verified key is remembered for `cache_seconds`, so a
    revoked key may keep working that long in a process that has just used it."""

    def __init__(self, pool: db.Pool, *, cache_seconds: float) -> None:
        self._pool = pool
        self._cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[Caller, float]] = {}
        self._noted: dict[str, float] = {}  # prefix → when this process last noted its use
        self._notes: set[asyncio.Task[None]] = set()

    async def authenticate(
        self, *, authorization: str | None, gate_key: str | None, access: Access
    ) -> Tenant:
        """The tenant of the API key in `gate_key` (N8n-Gate-Key) when sent, else in
        `authorization` (Bearer); 403 when `access` is "write" and the key is read-only."""
        api_key = _bearer_token(authorization) if gate_key is None else gate_key.strip()
        digest = hash_key(api_key)
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            caller = cached[0]
        else:
            caller = await self._verify(api_key, digest)
            if self._cache_seconds > 0:
                self._remember(digest, caller)
        self._note_use(caller.prefix)
        if access == "write" and caller.read_only:
            raise ReadOnlyKey(
                "This API key is read-only: it may read executions (status, list) but not "
                "trigger or retry them. Use a key created without --read-only."
            )
        return caller.tenant

    async def _verify(self, api_key: str, digest: bytes) -> Caller:
        match = KEY_PATTERN.fullmatch(api_key)
        if match is None:
            raise _invalid_key()
        async with db.connection(self._pool) as conn:
            stored = await repo.find_key(conn, prefix=match.group(1))
        if stored is None or not hmac.compare_digest(stored.key_hash, digest):
            raise _invalid_key()
        tenant = Tenant(id=stored.tenant_id, name=stored.tenant_name)
        return Caller(tenant=tenant, read_only=stored.read_only, prefix=match.group(1))

    def _note_use(self, prefix: str) -> None:
        """Note in the background that the key was used, at most once a minute per process:
        never a write per request, and never a wait for one."""
        now = time.monotonic()
        if now - self._noted.get(prefix, -math.inf) < NOTE_USE_SECONDS:
            return
        if len(self._noted) > 10_000:
            self._noted.clear()
        self._noted[prefix] = now
        task = asyncio.create_task(self._note(prefix))
        self._notes.add(task)
        task.add_done_callback(self._notes.discard)

    async def _note(self, prefix: str) -> None:
        try:
            async with db.connection(self._pool) as conn:
                await repo.note_key_used(conn, prefix=prefix)
        except Exception as exc:  # best effort: a use a minute later notes it
            logger.debug("could not note the use of API key %s: %r", prefix, exc)

    def _remember(self, digest: bytes, caller: Caller) -> None:
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (caller, time.monotonic() + self._cache_seconds)


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized(
            "Send your API key as 'Authorization: Bearer <key>' (or as 'N8n-Gate-Key: <key>' "
            "when Authorization is for n8n's webhook). "
            "Create one with 'n8n-gate keys create --tenant NAME'.",
            headers={"WWW-Authenticate": 'Bearer realm="n8n-gate"'},
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "The Authorization header must use the Bearer scheme: 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": 'Bearer realm="n8n-gate"'},
        )
    return token.strip()


def _invalid_key() -> Unauthorized:
    return Unauthorized(
        "The API key is unknown, revoked or expired. Check the key, or create one with "
        "'n8n-gate keys create --tenant NAME'.",
        headers={"WWW-Authenticate": 'Bearer realm="n8n-gate", error="invalid_token"'},
    )
