"""Settings, read once from the environment (and `.env`); environment variables win."""

from __future__ import annotations

import ipaddress
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # The two settings every deployment names get their conventional, unprefixed names.
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    n8n_base_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://localhost:5678"), validation_alias="N8N_BASE_URL"
    )

    data_dir: Path = Path(".n8n-gate")
    db_pool_min_size: int = Field(default=2, ge=0, le=1000)
    db_pool_max_size: int = Field(default=20, ge=1, le=1000)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    db_command_timeout_seconds: float = Field(default=10.0, gt=0)
    db_batch_max_calls: int = Field(default=64, ge=1, le=10_000)

    n8n_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    n8n_timeout_seconds: float = Field(default=300.0, gt=0)
    n8n_max_connections: int = Field(default=100, ge=1)
    n8n_max_answer_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    n8n_startup_wait_seconds: float = Field(default=15.0, ge=0)

    access_log: bool = True
    max_head_bytes: int = Field(default=16 * 1024, ge=1024)
    head_timeout_seconds: float = Field(default=15.0, gt=0)
    body_timeout_seconds: float = Field(default=60.0, gt=0)
    max_connections: int = Field(default=2048, ge=1)
    api_docs: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Peers whose X-Forwarded-Proto / -Host are believed: "10.0.0.0/8,127.0.0.1". Empty: none.
    trusted_proxies: str = ""
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    max_bytes_in_flight: int = Field(default=256 * 1024 * 1024, ge=1)
    send_timeout_seconds: float = Field(default=30.0, gt=0)
    send_min_bytes_per_second: int = Field(default=256 * 1024, ge=1)
    lease_seconds: float = Field(default=30.0, gt=0)
    lease_renew_seconds: float = Field(default=10.0, gt=0)
    unknown_outcome: Literal["retry", "refuse"] = "retry"
    max_stored_body_bytes: int = Field(default=8 * 1024 * 1024, ge=0)
    max_wait_seconds: int = Field(default=60, ge=0)
    retry_after_seconds: int = Field(default=1, ge=1)
    auth_cache_seconds: float = Field(default=5.0, ge=0)
    delivery_workers: int = Field(default=4, ge=0, le=1000)
    delivery_max_per_workflow: int = Field(default=4, ge=0)
    delivery_poll_seconds: float = Field(default=1.0, gt=0)
    retry_base_seconds: float = Field(default=1.0, gt=0)
    retry_cap_seconds: float = Field(default=300.0, gt=0)
    retry_max_attempts: int = Field(default=10, ge=1)
    key_retention_seconds: float = Field(default=24 * 3600, gt=0)
    failed_key_retention_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    reaper_interval_seconds: float = Field(default=60.0, ge=0)
    reaper_batch_size: int = Field(default=500, ge=1, le=100_000)
    replay_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    replay_cache_seconds: float = Field(default=300.0, ge=0)
    list_max_limit: int = Field(default=200, ge=1, le=10_000)

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
