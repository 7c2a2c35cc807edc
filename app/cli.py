"""`n8n-gate`: serve, migrate, and manage API keys."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import math
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import asyncpg

from app import OPERATOR_METRICS_DIR, WORKERS_METRICS_DIR_VARIABLE, metrics, migrations, tracing
from app.alerts import repo as alerts_repo
from app.config import ConfigError, Settings, load_settings
from app.embedded import EmbeddedUnavailable, start_embedded
from app.errors import GateError
from app.ingress.routes_file import IngressRoute, RoutesFileError, load_routes
from app.ingress.service import resolve_tenants
from app.logs import log_config
from app.server import BoundedHttpToolsProtocol
from app.tenants import repo as tenants_repo
from app.tenants.service import create_key, rotate_key
from app.tenants.signing import CACHE_SECONDS as signing_cache_seconds
from app.tenants.signing import new_signing_secret

DEFAULT_TENANT = "default"
T = TypeVar("T")


class CliError(Exception):
    """One line for the operator; no traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        result: int = args.handler(args, settings)
        return result
    except (ConfigError, CliError, EmbeddedUnavailable) as exc:
        for line in str(exc).splitlines():
            print(f"n8n-gate: {line}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="n8n-gate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(handler=_migrate)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create an API key (printed once)")
    create.add_argument("--tenant", required=True)
    create.add_argument(
        "--read-only", action="store_true", help="status and list only: no triggers, no retries"
    )
    create.set_defaults(handler=_keys_create)
    rotate = keys.add_parser(
        "rotate", help="replace an API key: a new one now, the old one working for an overlap"
    )
    rotate.add_argument("prefix")
    rotate.add_argument(
        "--overlap-seconds",
        type=_seconds,
        default=86400.0,
        help="how long the old key keeps working (default: a day; 0: not at all)",
    )
    rotate.set_defaults(handler=_keys_rotate)
    keys.add_parser("list", help="list API keys (prefixes only)").set_defaults(handler=_keys_list)
    revoke = keys.add_parser("revoke", help="revoke an API key by its prefix")
    revoke.add_argument("prefix")
    revoke.set_defaults(handler=_keys_revoke)
    signing = keys.add_parser(
        "signing-secret",
        help="show (or rotate) the secret the gateway signs its calls to n8n with",
    )
    signing.add_argument("--tenant", required=True)
    signing.add_argument("--rotate", action="store_true", help="sign with a new secret")
    signing.add_argument(
        "--overlap-seconds",
        type=_seconds,
        default=86400.0,
        help=(
            "how long the previous secret keeps signing beside the new one (default: a day; "
            f"at least {signing_cache_seconds:g}, as processes may sign with it that long)"
        ),
    )
    signing.set_defaults(handler=_keys_signing_secret)

    routes = commands.add_parser("routes", help="provider routes (GATE_ROUTES_FILE)")
    routes_commands = routes.add_subparsers(dest="routes_command", required=True)
    check = routes_commands.add_parser("check", help="validate a routes file without serving")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_routes_check)

    alerts = commands.add_parser("alerts", help="alerts sent to GATE_ALERT_URL")
    alerts_commands = alerts.add_subparsers(dest="alerts_command", required=True)
    alerts_list = alerts_commands.add_parser("list", help="list alerts, newest first")
    alerts_list.add_argument(
        "--status",
        choices=("pending", "sending", "delivered", "failed"),
        help="only these (failed: given up after GATE_ALERT_MAX_SENDS sends)",
    )
    alerts_list.add_argument("--limit", type=int, default=50)
    alerts_list.set_defaults(handler=_alerts_list)
    return parser


def database_url(settings: Settings) -> str:
    """DATABASE_URL, or the embedded server in GATE_DATA_DIR (started and migrated)."""
    if settings.database_url is not None:
        return str(settings.database_url)
    url = start_embedded(settings.data_dir).url
    migrations.upgrade(url)
    return url


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    routes = _load_routes(settings.routes_file) if settings.routes_file else None
    if tracing.requested():
        try:
            tracing.check_environment()
        except tracing.TracingConfigError as exc:
            raise CliError(str(exc)) from None
    embedded = settings.database_url is None
    url = database_url(settings)
    if not embedded:
        _require_current_schema(url, settings)
    _run(_bootstrap_default_key(url, settings))  # first: a route may name tenant 'default'
    if routes:
        _run(_with_admin(url, lambda conn: resolve_tenants(conn, routes), settings))
    os.environ["DATABASE_URL"] = url  # worker processes read their settings afresh
    if args.workers > 1:
        _share_metrics_between_workers()
    # uvicorn shuts down gracefully, then re-raises the signal it caught; exiting through
    # Python instead (not the default handler) lets atexit stop the embedded server.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            # The gateway reads forwarded headers itself (GATE_TRUSTED_PROXIES), and needs
            # the real peer to append it to X-Forwarded-For.
            proxy_headers=False,
            server_header=False,
            access_log=settings.access_log,
            log_config=log_config(settings.log_level, settings.log_format),
            http=BoundedHttpToolsProtocol,
            limit_concurrency=settings.max_connections,
        )
    return 0


def _share_metrics_between_workers() -> None:
    """Worker processes write their metrics to files in one directory, which a scrape of any
    of them reads whole (prometheus-client's multiprocess mode): the operator's
    PROMETHEUS_MULTIPROC_DIR, else a private one removed at exit. Emptied first: an earlier
    run's values must not count. This process itself keeps its (unused) values in memory
    (app/__init__.py)."""
    if OPERATOR_METRICS_DIR:
        directory = Path(OPERATOR_METRICS_DIR)
    else:
        directory = Path(tempfile.mkdtemp(prefix="n8n-gate-metrics-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    metrics.prepare_multiprocess_directory(directory)
    os.environ[WORKERS_METRICS_DIR_VARIABLE] = str(directory)


def _keys_signing_secret(args: argparse.Namespace, settings: Settings) -> int:
    url = database_url(settings)

    async def show(conn: asyncpg.Connection) -> list[tenants_repo.SigningSecret]:
        tenant_id = await tenants_repo.find_tenant_id(conn, name=args.tenant)
        if tenant_id is None:
            raise CliError(f"no tenant {args.tenant!r}")
        if args.rotate:
            await tenants_repo.rotate_signing_secret(
                conn,
                tenant_id=tenant_id,
                tenant_name=args.tenant,
                new=new_signing_secret(),
                # A process signs with the secrets it read up to a minute ago.
                overlap_seconds=max(args.overlap_seconds, signing_cache_seconds),
            )
        else:  # the first is made on first use; made here if asked for before
            await tenants_repo.signing_secrets(conn, tenant_id=tenant_id, new=new_signing_secret())
        return await tenants_repo.live_signing_secrets(conn, tenant_name=args.tenant)

    for secret in _run(_with_admin(url, show, settings)):
        until = (
            f"until {secret.expires_at.isoformat(timespec='seconds')}"
            if secret.expires_at
            else "current"
        )
        print(f"{secret.secret}  {until}")
    return 0


def _seconds(text: str) -> float:
    """A duration for argparse: a finite, non-negative number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(seconds) or not 0 <= seconds <= 10 * 365 * 86400:
        raise argparse.ArgumentTypeError(f"must be 0 to ten years in seconds, not {text!r}")
    return seconds


def _routes_check(args: argparse.Namespace, settings: Settings) -> int:
    routes = _load_routes(args.file)
    for route in routes.values():
        print(
            f"/in/{route.name}: tenant {route.tenant}, {route.scheme}, key from "
            f"{route.key_source}, {route.respond} to /{route.mode}/{route.raw_path}"
        )
    count = f"{len(routes)} route{'s' if len(routes) != 1 else ''}"
    print(f"{args.file}: {count}, valid (their tenants are checked when the gateway starts)")
    return 0


def _load_routes(path: Path) -> dict[str, IngressRoute]:
    try:
        return load_routes(path)
    except RoutesFileError as exc:
        raise CliError(str(exc)) from None


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    url = database_url(settings)
    # Alembic would answer an unreachable database with a traceback: say it in one line first.
    _run(_with_admin(url, migrations.schema_state, settings))
    migrations.upgrade(url)
    print(f"schema is at {migrations.head_revision()}")
    return 0


def _keys_create(args: argparse.Namespace, settings: Settings) -> int:
    new_key = _run(
        _with_admin(
            database_url(settings),
            lambda conn: create_key(conn, tenant_name=args.tenant, read_only=args.read_only),
            settings,
        )
    )
    print(f"tenant {new_key.tenant.name}: {new_key.secret}")
    print("Store it now: it is not shown again.", file=sys.stderr)
    return 0


def _keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    prefix = _prefix_of(args.prefix)
    secret = _run(
        _with_admin(
            database_url(settings),
            lambda conn: rotate_key(conn, prefix=prefix, overlap_seconds=args.overlap_seconds),
            settings,
        )
    )
    print(secret)
    print(
        f"Store it now: it is not shown again. {prefix} works for at most "
        f"{args.overlap_seconds:g} s more.",
        file=sys.stderr,
    )
    return 0


def _keys_list(args: argparse.Namespace, settings: Settings) -> int:
    keys = _run(_with_admin(database_url(settings), tenants_repo.list_keys, settings))
    columns = ("prefix", "tenant", "rights", "created", "last used", "revoked", "expires")
    widths = (14, 24, 8, 27, 27, 27)
    print(
        "".join(f"{name:<{width}}" for name, width in zip(columns, widths, strict=False))
        + columns[-1]
    )
    for key in keys:
        values = (
            key.prefix,
            key.tenant,
            "read" if key.read_only else "write",
            _when(key.created_at),
            _when(key.last_used_at),
            _when(key.revoked_at),
        )
        line = "".join(f"{value:<{width}}" for value, width in zip(values, widths, strict=True))
        print(line + _when(key.expires_at))
    return 0


def _alerts_list(args: argparse.Namespace, settings: Settings) -> int:
    if not 1 <= args.limit <= 10_000:
        raise CliError("--limit must be 1 to 10000")
    alerts = _run(
        _with_admin(
            database_url(settings),
            lambda conn: alerts_repo.list_alerts(conn, status=args.status, limit=args.limit),
            settings,
        )
    )
    for alert in alerts:
        print(
            f"{alert.id}  {_when(alert.occurred_at)}  {alert.status:<9} sends={alert.sends}  "
            f"{alert.type}  tenant={alert.tenant}  {alert.workflow}  key={alert.idempotency_key!r}"
            + (f"  last error: {alert.last_error}" if alert.last_error else "")
        )
    if not alerts:
        print("no alerts", file=sys.stderr)
    return 0


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "-"


def _prefix_of(key_or_prefix: str) -> str:
    """The public prefix, given it or the whole key."""
    return key_or_prefix.removeprefix("n8ng_").split("_")[0]


def _keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    prefix = _prefix_of(args.prefix)
    revoked = _run(
        _with_admin(
            database_url(settings),
            lambda conn: tenants_repo.revoke_key(conn, prefix=prefix),
            settings,
        )
    )
    if not revoked:
        raise CliError(f"no live API key with prefix {prefix!r} ('n8n-gate keys list' shows them)")
    print(f"revoked {prefix}")
    return 0


def _require_current_schema(url: str, settings: Settings) -> None:
    state = _run(_with_admin(url, migrations.schema_state, settings))
    if not state.is_current:
        raise CliError(
            f"the database schema is at {state.current or 'nothing'} but this build needs "
            f"{state.head}; run 'n8n-gate migrate' first"
        )


async def _bootstrap_default_key(url: str, settings: Settings) -> None:
    async def create_if_none(conn: asyncpg.Connection) -> None:
        if await tenants_repo.count_keys(conn) == 0:
            new_key = await create_key(conn, tenant_name=DEFAULT_TENANT)
            print(
                f"\nNo API keys yet: created tenant '{DEFAULT_TENANT}' with this key "
                f"(shown once):\n    {new_key.secret}\n",
                flush=True,
            )

    await _with_admin(url, create_if_none, settings)


async def _with_admin(
    url: str, action: Callable[[asyncpg.Connection], Awaitable[T]], settings: Settings
) -> T:
    timeout = settings.db_connect_timeout_seconds
    try:
        conn = await asyncpg.connect(url, timeout=timeout)
    except TimeoutError:
        raise CliError(
            f"the database did not answer within {timeout:g} s "
            "(GATE_DB_CONNECT_TIMEOUT_SECONDS). Check DATABASE_URL and that PostgreSQL is up."
        ) from None
    except (OSError, asyncpg.PostgresError) as exc:
        raise CliError(
            f"cannot connect to the database: {exc}. Check DATABASE_URL and that PostgreSQL is up."
        ) from None
    try:
        return await action(conn)
    except asyncpg.UndefinedTableError:
        raise CliError("the database has no schema yet; run 'n8n-gate migrate' first") from None
    except GateError as exc:
        raise CliError(exc.detail) from None
    except RoutesFileError as exc:
        raise CliError(str(exc)) from None
    finally:
        await conn.close()


def _run(awaitable: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await awaitable

    return asyncio.run(wrapper())
