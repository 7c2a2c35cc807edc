"""Settings, read once from the environment (and `.env`); environment variables win."""

from __future__ import annotations

import ipaddress
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Each named workflow is a label value in every histogram bucket: a bound, not a suggestion.
MAX_METRICS_WORKFLOWS = 200


def workflow_paths(listed: str) -> list[str]:
    """GATE_METRICS_WORKFLOWS as paths: split on commas, blanks and slashes at the ends dropped."""
    return [path.strip().strip("/") for path in listed.split(",") if path.strip().strip("/")]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # The two settings every deployment names get their conventional, unprefixed names.
    database_url: str | None = Field(
        default=None,
        validation_alias="DATABASE_URL",
        examples=["postgresql://gate:secret@127.0.0.1:5432/n8n_gate"],
        description=(
            "PostgreSQL for executions and API keys "
            "(`postgresql://user:pass@host:5432/db`). Unset: `n8n-gate serve` runs "
            "a private embedded PostgreSQL in GATE_DATA_DIR."
        ),
    )
    n8n_base_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://localhost:5678"),
        validation_alias="N8N_BASE_URL",
        description=(
            "Where n8n listens; triggers go to {N8N_BASE_URL}/webhook/<path> and "
            "/webhook-test/<path>. No user or password: each caller's Authorization"
            " is forwarded."
        ),
    )

    data_dir: Path = Field(
        default=Path(".n8n-gate"),
        description=("Data directory of the embedded PostgreSQL (used only without DATABASE_URL)."),
    )
    db_pool_min_size: int = Field(
        default=2, ge=0, le=1000, description="Database connections a process keeps open."
    )
    db_pool_max_size: int = Field(
        default=20, ge=1, le=1000, description="Most database connections per process."
    )
    db_connect_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description=(
            "Longest a new database connection may take; a request then gets 503 "
            "rather than hang on a database that stopped answering."
        ),
    )
    db_command_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Longest any one statement may take."
    )
    db_batch_max_calls: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description=(
            "Group commit: most concurrent claims, accepts or outcome records that "
            "share one statement and one commit (1 turns it off)."
        ),
    )

    n8n_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Longest connecting to n8n may take."
    )
    n8n_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description=(
            "Longest n8n may take to answer whole "
            '(a "When Last Node Finishes" workflow runs inside it).'
        ),
    )
    n8n_max_connections: int = Field(
        default=100, ge=1, description="Most connections to n8n per process."
    )
    n8n_max_answer_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1,
        description=(
            "Largest answer taken from n8n, as received and once decoded; larger is"
            " 502 n8n-answer-too-large, recorded as the key's answer (the workflow "
            "ran)."
        ),
    )
    n8n_reuse_connections: bool = Field(
        default=False,
        description=(
            "Send forwards over kept-alive connections. Off by default: n8n's graceful "
            "shutdown waits for its executions while reused connections keep bringing "
            "new ones, until it exits as crashed."
        ),
    )
    n8n_startup_wait_seconds: float = Field(
        default=15.0,
        ge=0,
        description=(
            "How long a forward waits for a starting (or refusing) n8n to become "
            "ready before giving up (503 n8n-starting); 0: at once."
        ),
    )

    access_log: bool = Field(default=True, description="One log line per request.")
    max_head_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        description=(
            "Largest request line and headers (n8n's own limit too); larger is a 431 at once."
        ),
    )
    head_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        description=(
            "A connection whose request head has not arrived whole this long after "
            "it began is closed."
        ),
    )
    body_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description=(
            "A trigger's body must arrive whole this long after its head; later is a 408."
        ),
    )
    max_connections: int = Field(
        default=2048,
        ge=1,
        description=("Connections and requests in progress per process; past it new ones get 503."),
    )
    api_docs: bool = Field(
        default=False,
        description=(
            "Serve /docs and /redoc (their pages load scripts from a CDN); "
            "/openapi.json is always there."
        ),
    )
    ui: bool = Field(
        default=True,
        description=(
            "Serve the dashboard at /ui (sign-in with an API key; docs/dashboard.md). "
            "false: /ui is 404."
        ),
    )
    ui_session_seconds: int = Field(
        default=8 * 3600,
        ge=60,
        le=30 * 24 * 3600,
        description=(
            "How long a dashboard sign-in lasts; revoking or expiring its API key ends it sooner."
        ),
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description=(
            "Log lines as text, or as JSON objects (time, level, logger, message, and the "
            "request's id, tenant, key, workflow, execution, attempt)."
        ),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description=(
            "The gateway's own log lines: failed attempts (WARNING), dead letters "
            "and unknown outcomes (ERROR)."
        ),
    )
    metrics_token: str | None = Field(
        default=None,
        min_length=16,
        repr=False,
        description=(
            "GET /metrics answers the Prometheus exposition format to `Authorization: Bearer "
            "<this token>` (401 without it); unset: /metrics is 404. At least 16 characters."
        ),
    )
    metrics_workflows: str = Field(
        default="",
        examples=["orders,stripe-events,customer/signup"],
        description=(
            "Workflow paths (comma-separated, as in /webhook/<path>) whose forwards get a "
            "label of their own in the latency histogram; all others are counted as `other`."
        ),
    )
    # Peers whose X-Forwarded-Proto / -Host are believed: "10.0.0.0/8,127.0.0.1". Empty: none.
    trusted_proxies: str = Field(
        default="",
        description=(
            "Peers (IPs or networks, comma-separated) whose X-Forwarded-Proto and "
            "-Host reach n8n; empty: none."
        ),
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1,
        description=("Largest request body accepted; larger gets 413 (n8n's default limit too)."),
    )
    max_bytes_in_flight: int = Field(
        default=256 * 1024 * 1024,
        ge=1,
        description=(
            "Bodies and answers a process holds in memory for requests in flight; "
            "past it a new body or replay gets 503 gateway-busy and a fresh answer "
            "from n8n waits on disk."
        ),
    )
    send_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "A caller has this long, plus its answer's size at "
            "GATE_SEND_MIN_BYTES_PER_SECOND, to read its answer; then its "
            "connection is dropped."
        ),
    )
    send_min_bytes_per_second: int = Field(
        default=256 * 1024,
        ge=1,
        description=("The slowest reading a caller is allowed, for the send deadline."),
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "A running attempt's lease: a process that dies leaves its attempt to "
            "be taken over this long after its last renewal."
        ),
    )
    lease_renew_seconds: float = Field(
        default=10.0,
        gt=0,
        description=(
            "How often a running attempt's lease is renewed (shorter than GATE_LEASE_SECONDS)."
        ),
    )
    unknown_outcome: Literal["retry", "refuse"] = Field(
        default="retry",
        description=(
            "When n8n may have run it but no answer came: `retry` runs it again "
            "(at-least-once), `refuse` answers 409 execution-outcome-unknown "
            "(at-most-once)."
        ),
    )
    max_stored_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=0,
        description=(
            "n8n's answers are stored, and replayed, up to this size (truncated "
            "beyond, with a header saying so)."
        ),
    )
    max_wait_seconds: int = Field(default=60, ge=0, description="Longest Prefer: wait honoured.")
    retry_after_seconds: int = Field(
        default=1, ge=1, description="Retry-After on a 409 execution-in-flight."
    )
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description=(
            "How long a process trusts a verified API key (a revoked key works at most this long)."
        ),
    )
    delivery_workers: int = Field(
        default=4,
        ge=0,
        le=1000,
        description=("Async deliveries in flight per process (0: this process delivers none)."),
    )
    delivery_max_per_workflow: int = Field(
        default=4,
        ge=0,
        description=(
            "Async deliveries in flight to one n8n webhook, across all processes (0: no limit)."
        ),
    )
    delivery_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description=(
            "How often an idle process looks for due deliveries accepted elsewhere "
            "or retries come due."
        ),
    )
    retry_base_seconds: float = Field(
        default=1.0,
        gt=0,
        description=("First backoff of an async delivery that failed (full jitter, doubling)."),
    )
    retry_cap_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Longest backoff between two attempts of an async delivery.",
    )
    retry_max_attempts: int = Field(
        default=10,
        ge=1,
        description=("Attempts of an async delivery before it ends as a dead letter."),
    )
    key_retention_seconds: float = Field(
        default=24 * 3600, gt=0, description="How long a finished key is kept and replayed."
    )
    failed_key_retention_seconds: float = Field(
        default=7 * 24 * 3600, gt=0, description="How long a failed key (a dead letter) is kept."
    )
    reaper_interval_seconds: float = Field(
        default=60.0,
        ge=0,
        description=("How often each process deletes expired executions (0: never)."),
    )
    reaper_batch_size: int = Field(
        default=500, ge=1, le=100_000, description="Expired executions deleted per transaction."
    )
    replay_cache_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description=(
            "In-memory copies of completed executions for replays, per process, "
            "counting bodies, headers and keys."
        ),
    )
    replay_cache_seconds: float = Field(
        default=300.0, ge=0, description="Longest a completed execution stays in the replay cache."
    )
    list_max_limit: int = Field(
        default=200, ge=1, le=10_000, description="Largest page of the list endpoint."
    )
    rate_limit_per_second: float = Field(
        default=0.0,
        ge=0,
        le=1_000_000,
        description=(
            "Triggers and provider deliveries a tenant may send per second, across every "
            "process (0: no limit); past it, 429 with Retry-After. Costs a database round trip "
            "per request when on."
        ),
    )
    rate_limit_burst: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description=(
            "How many requests a tenant may send at once before the rate applies "
            "(0: one second's worth)."
        ),
    )
    routes_file: Path | None = Field(
        default=None,
        description=(
            "TOML file of provider routes (POST /in/<route>: signed deliveries from Stripe, "
            "GitHub, Standard Webhooks...); checked at start. Unset: no /in routes."
        ),
    )
    signature_tolerance_seconds: float = Field(
        default=300.0,
        gt=0,
        le=24 * 3600,
        description=(
            "How far a signed delivery's timestamp may be from now (schemes with one); "
            "a route's `tolerance_seconds` overrides it."
        ),
    )
    alert_url: AnyHttpUrl | None = Field(
        default=None,
        repr=False,  # a Slack incoming webhook's URL is its credential
        examples=["https://n8n.example.com/webhook/gate-alerts"],
        description=(
            "Where an alert is posted (JSON, signed like the calls to n8n) when an execution "
            "becomes a dead letter or ends with its outcome unknown: an n8n workflow's webhook, "
            "a Slack incoming webhook... Set it on every process. Unset: no alerts."
        ),
    )
    alert_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Longest one send of an alert may take; longer is a failed send.",
    )
    alert_max_sends: int = Field(
        default=30,
        ge=1,
        le=100,
        description=(
            "Sends of an alert, with the deliveries' backoff, before it is given up (an "
            "ERROR log line; `n8n-gate alerts list` shows it). 30 with the default backoff: "
            "a receiver may be away about an hour."
        ),
    )
    public_url: AnyHttpUrl | None = Field(
        default=None,
        examples=["https://gate.example.com"],
        description=(
            "The gateway's address as its operators reach it (https://gate.example.com): "
            "an alert links to the execution's dashboard page under it. Unset: the link is "
            "the relative API path /v1/executions/<key>."
        ),
    )

    @field_validator("database_url", mode="before")
    @classmethod
    def _postgres_url(cls, value: object) -> object:
        if value in ("", None):
            return None  # unset: `n8n-gate serve` starts the embedded server
        if not isinstance(value, str) or not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "must be a postgresql:// URL, e.g. postgresql://user:pass@host:5432/db"
            )
        return value

    @field_validator("routes_file", "alert_url", "public_url", "metrics_token", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if value == "" else value  # as .env.example writes it, commented or not

    @field_validator("metrics_workflows")
    @classmethod
    def _workflow_list(cls, value: str) -> str:
        paths = workflow_paths(value)
        if len(paths) > MAX_METRICS_WORKFLOWS:
            raise ValueError(f"at most {MAX_METRICS_WORKFLOWS} workflows")
        if any(len(path) > 200 for path in paths):
            raise ValueError("a workflow path is at most 200 characters")
        return value

    @cached_property
    def metrics_workflow_paths(self) -> frozenset[str]:
        return frozenset(workflow_paths(self.metrics_workflows))

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        try:
            parse_networks(value)
        except ValueError as exc:
            raise ValueError(f"must be IP addresses or networks, comma-separated ({exc})") from None
        return value

    @cached_property
    def trusted_proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return parse_networks(self.trusted_proxies)

    @field_validator("n8n_base_url")
    @classmethod
    def _no_credentials(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if value.username or value.password:
            raise ValueError(
                "must not hold a user or password: the gateway forwards each caller's own "
                "Authorization to n8n (put n8n's webhook credentials in the workflow instead)"
            )
        return value

    @model_validator(mode="after")
    def _renew_before_expiry(self) -> Settings:
        if self.lease_renew_seconds >= self.lease_seconds:
            raise ValueError("GATE_LEASE_RENEW_SECONDS must be shorter than GATE_LEASE_SECONDS")
        return self

    @model_validator(mode="after")
    def _one_body_fits(self) -> Settings:
        if self.max_bytes_in_flight < self.max_body_bytes:
            raise ValueError(
                "GATE_MAX_BYTES_IN_FLIGHT must be at least GATE_MAX_BODY_BYTES: "
                "no body of the largest size could ever be taken"
            )
        return self


def parse_networks(value: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(part.strip()) for part in value.split(",") if part.strip()]


class ConfigError(Exception):
    """A setting is invalid; the message names it in one line."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    if not first["loc"]:
        return f"invalid settings: {first['msg']}"
    name = str(first["loc"][0])
    env_name = name.upper() if name.isupper() or name in _UNPREFIXED else f"GATE_{name.upper()}"
    field = Settings.model_fields.get(name)
    if field is not None and not field.repr:  # a secret (an alert URL, a token): never shown
        return f"invalid setting {env_name}: {first['msg']}"
    return f"invalid setting {env_name}: {first['msg']} (got {_masked(first.get('input'))!r})"


def _masked(value: object) -> object:
    """A value as it may be printed: a password in a URL never is."""
    if not isinstance(value, str) or "@" not in value:
        return value
    scheme, sep, rest = value.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not sep or not at:
        return "***"
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{location}" if ":" in credentials else value


_UNPREFIXED = {"DATABASE_URL", "N8N_BASE_URL"}


@lru_cache
def get_settings() -> Settings:
    return load_settings()
