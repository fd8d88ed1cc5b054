"""Gateway settings from ``GATEWAY_*`` environment variables (secrets arrive as mounted files).

Every field below is read from ``GATEWAY_<FIELD NAME IN UPPER CASE>``; e.g. ``request_timeout_s`` from
``GATEWAY_REQUEST_TIMEOUT_S``. A bad value stops startup with one line naming the variable, the value and
what is allowed (``SettingsError``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class SettingsError(ValueError):
    pass


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- listeners ---
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    metrics_port: int = Field(default=9090, ge=0, le=65535)  # 0 disables the metrics listener
    # --- config and secrets (files, so Kubernetes Secrets can be mounted) ---
    models_file: Path = Path("/etc/gateway/models.yaml")
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password_file: Path | None = None
    redis_cluster: bool = False  # ElastiCache cluster mode: keys of one request share the {org_id} hash slot
    redis_timeout_s: float = Field(default=0.25, gt=0)
    redis_reconnect_interval_s: float = Field(default=1.0, gt=0)
    database_url_file: Path | None = None  # the master user's DSN: migrations and role provisioning only
    # Set: the gateway serves as this least-privilege role, authenticating with RDS IAM tokens (no password);
    # it creates and grants the role itself at start, as the master user. Unset: everything runs as the DSN's user.
    database_iam_user: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    database_iam_region: str | None = None  # region of the RDS instance (signs the token); default: AWS_REGION
    admin_token_file: Path | None = None
    spill_dir: Path = Path("/var/lib/gateway/spill")
    # --- limits ---
    # degraded mode: each replica enforces limit / replicas, replicas = the live replicas seen in Redis heartbeats
    # before the outage, never fewer than this (the infra sets the HPA minimum)
    expected_replicas: int = Field(default=1, ge=1)
    replica_heartbeat_s: float = Field(default=5.0, gt=0)  # a replica is live while its heartbeat is < 3 of these old
    inflight_ttl_s: float = Field(default=900.0, gt=0)  # in-flight slots of a dead replica expire after this
    # --- request handling ---
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    request_timeout_s: float = Field(default=600.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    stream_idle_timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    retry_base_delay_s: float = Field(default=0.05, ge=0)
    retry_max_delay_s: float = Field(default=1.0, ge=0)
    # --- routing ---
    health_interval_s: float = Field(default=5.0, gt=0)
    health_timeout_s: float = Field(default=2.0, gt=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=30.0, gt=0)
    affinity_epsilon: float = Field(default=0.25, ge=0)
    affinity_prefix_chars: int = Field(default=2048, ge=1)
    # --- scale from zero (a model's catalog ``wake_timeout_s`` turns holding on) ---
    max_held_requests: int = Field(default=500, ge=0)  # requests one replica holds while models wake; more: 503
    wake_probe_interval_s: float = Field(default=1.0, gt=0)  # health checks of a model that has requests held
    # --- cache ---
    cache_ttl_s: float = Field(default=60.0, ge=0)  # 0 disables the response cache
    cache_max_entry_bytes: int = Field(default=256 * 1024, gt=0)
    # --- keys, logs, shutdown ---
    key_cache_ttl_s: float = Field(default=5.0, ge=0)
    log_prompts: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    drain_timeout_s: float = Field(default=25.0, ge=0)
    # An idle client connection is kept this long; behind an ALB it must exceed the ALB's idle timeout, or the ALB
    # reuses a connection the gateway has just closed (a 502). The platform sets it from the ALB's value.
    keep_alive_s: int = Field(default=75, ge=1, le=4100)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        raw = {
            name: env[f"GATEWAY_{name.upper()}"]
            for name in cls.model_fields
            if f"GATEWAY_{name.upper()}" in env
        }
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else "?"
            given = raw.get(field, "<missing>")
            raise SettingsError(
                f"GATEWAY_{field.upper()}={given!r} is invalid: {err['msg']}"
            ) from None

    def read_secret(self, path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise SettingsError(f"cannot read secret file {path}: {exc.strerror}") from None

    def database_dsn(self) -> str | None:
        return self.read_secret(self.database_url_file)
