"""The one settings object. Every deployment knob is a `JUICE_*` environment variable.

The embedded default (no variables set) keeps all state under `$JUICE_HOME` (default `~/.juice`):
a SQLite file, a folder-based Celery broker, a local artifact folder and a model root. Production sets
`JUICE_DATABASE_URL=postgresql+psycopg://...`, `JUICE_BROKER_URL=redis://...` and
`JUICE_STORAGE_URL=<any fsspec URL>`. No code path exists only for tests.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path(os.environ.get("JUICE_HOME") or Path.home() / ".juice").expanduser()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JUICE_", env_file=None, extra="ignore")

    home: Path = Field(
        default_factory=_default_home, description="Folder for all embedded-mode state; default `~/.juice`."
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL (`postgresql+psycopg://...` in production);"
        " default `sqlite:///$JUICE_HOME/juice.db`.",
    )
    broker_url: str = Field(
        "",
        description="Celery broker URL (`redis://...`, `amqp://...`); default `filesystem://`, a folder"
        " broker in `$JUICE_HOME/broker` (no broker process).",
    )
    storage_url: str = Field(
        "",
        description="Artifact store, any fsspec URL (install its package, e.g. s3fs for `s3://`);"
        " default `$JUICE_HOME/artifacts`.",
    )
    model_roots: str = Field(
        "", description="`:`-separated allow-list of local model folders; default `$JUICE_HOME/models`."
    )
    model_aliases: str = Field(
        "",
        description=(
            "Other names for local base models, `alias=model,alias=model`: e.g."
            " `gpt-4o-mini-2024-07-18=SmolLM2-135M-Instruct`, so code written for OpenAI's model names runs"
            " unchanged. An alias is listed, trained and served like the model it names."
        ),
    )
    work_dir: str = Field(
        "", description="Worker scratch folder for running jobs; default `$JUICE_HOME/work`."
    )
    allow_hub_models: bool = Field(True, description="Accept Hugging Face hub ids as a job's base model.")
    secret_key: SecretStr = Field(
        SecretStr(""),
        description=(
            "Server secret that signs checkpoint download links: at least 32 characters, the same on every"
            " API process. Unset with a SQLite database (the embedded default): generated once into"
            " $JUICE_HOME/secret_key (mode 0600) and read back by every process on that home. Unset with any"
            " other database: the API refuses to start (a per-process secret would break links across"
            " replicas). Changing it invalidates every outstanding link."
        ),
    )

    host: str = Field("127.0.0.1", description="API bind address for `juice api` / `juice up`.")
    port: int = Field(8000, description="API port for `juice api` / `juice up`.")
    public_url: str = Field("", description="URL printed for users; default `http://HOST:PORT`.")

    mlflow_tracking_uri: str = Field(
        "",
        description=(
            "MLflow tracking server that jobs with an `mlflow` integration log to (the worker sends the"
            " REST API its metrics; MLFLOW_TRACKING_TOKEN or _USERNAME/_PASSWORD authenticate). Unset:"
            " such jobs are refused."
        ),
    )
    wandb_mode: Literal["", "offline", "online"] = Field(
        "",
        description=(
            "W&B for jobs with a `wandb` integration: `offline` writes runs under JUICE_WANDB_DIR (`wandb"
            " sync` uploads them later), `online` sends them (WANDB_API_KEY on the workers). Unset: refused."
        ),
    )
    wandb_dir: str = Field("", description="Where offline W&B runs are written; default `$JUICE_HOME/wandb`.")
    inference_backend: Literal["juice", "openai"] = Field(
        "juice",
        description=(
            "Who answers POST /v1/chat/completions: `juice`, Juice's inference worker (`juice inference`),"
            " told where each model's weights are; `openai`, any OpenAI-compatible server (vLLM's, with"
            " the fine-tuned models registered under their ft: names), sent the request as it came."
        ),
    )
    inference_url: str = Field(
        "",
        description="Base URL of the inference server the API forwards chat completions to;"
        " default `http://INFERENCE_HOST:INFERENCE_PORT`.",
    )
    inference_api_key: SecretStr = Field(
        SecretStr(""),
        description=(
            "Bearer token the API presents to the inference server; default derived from the server"
            " secret, so the API and `juice inference` on one home agree without configuration."
        ),
    )
    inference_host: str = Field("127.0.0.1", description="Bind address of `juice inference`.")
    inference_port: int = Field(
        8001,
        description="Port of `juice inference`; a second `juice up` on one machine needs its own (it"
        " refuses a taken one).",
    )
    inference_max_models: int = Field(
        2, ge=1, le=64, description="Models `juice inference` keeps loaded; the least recently used goes."
    )
    inference_max_pending: int = Field(
        16,
        ge=1,
        description="Replies `juice inference` has in flight at most; more get 503 `inference_busy` with"
        " Retry-After.",
    )
    inference_default_max_tokens: int = Field(
        512, ge=1, description="A reply's token budget when the request sets neither max_tokens field."
    )
    inference_max_tokens: int = Field(
        4096, ge=1, description="The largest max_tokens (or max_completion_tokens) a request may ask for."
    )
    inference_timeout_s: float = Field(
        600.0,
        gt=0,
        description="Seconds the API waits for the inference server (a model's first load included).",
    )
    max_upload_bytes: int = Field(512 * 1024 * 1024, description="Largest accepted upload (OpenAI: 512 MB).")
    queue_name: str = Field("juice.jobs", description="Celery queue that GPU workers consume.")
    heartbeat_interval_s: float = Field(10.0, description="How often a running job's worker beats.")
    stale_after_s: float = Field(120.0, description="A running job whose heartbeat is older is re-queued.")
    requeue_after_s: float = Field(
        60.0,
        description="A queued job's message older than this may be lost: the sweeper re-sends only as many"
        " as the broker's own message count says are missing (worker.lifecycle.sweep), so a backlog never"
        " gets copies.",
    )
    sweep_interval_s: float = Field(
        30.0, description="How often the sweeper runs (in workers started with --sweeper)."
    )
    db_outage_grace_s: float = Field(
        3600.0,
        description="How long a worker whose job ended waits for an unreachable database to write "
        "its held metrics and final status before giving the job up to the sweeper (it resumes then).",
    )
    max_attempts: int = Field(
        3,
        description="Worker losses (stale heartbeats) after which a job fails with `worker_lost`; a"
        " hand-over at shutdown is not one.",
    )
    visibility_timeout_s: int = Field(
        7 * 24 * 3600,
        description="Redis redelivery timeout, set everywhere Celery reads it; longer than any job.",
    )
    grader_python: str = Field(
        "",
        description="Interpreter that python graders run on, confined (graders/sandbox.py): one the user"
        " `nobody` can execute, with numpy, scipy, sympy and rapidfuzz; default `.grader-venv/bin/python` of"
        " the installation (scripts/setup.sh builds it) if there, else the service's own Python.",
    )
    webhook_allow_private_networks: bool = Field(
        False,
        description="Allow webhook receivers on private, loopback and link-local addresses (checked at"
        " creation and, after DNS, at every delivery).",
    )
    webhook_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Seconds a webhook receiver has to answer."
    )
    webhook_poll_interval_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often the dispatcher of `juice worker --sweeper` sends due webhooks.",
    )
    cancel_poll_interval_s: float = Field(
        1.0, description="How often a running job re-reads cancel_requested and pause_requested."
    )
    metrics_poll_interval_s: float = Field(
        0.5, description="How often the API process reads new metrics for all its live streams (one poll)."
    )
    max_streams_per_tenant: int = Field(
        32,
        description="Open `/metrics/stream` connections one tenant may hold per API process; more get 429"
        " with Retry-After.",
    )
    max_running_jobs_per_tenant: int = Field(
        8,
        ge=0,
        description="Jobs of one tenant that workers run at once; the rest wait `queued`, taking no place in"
        " the broker meanwhile, so they never hold up other tenants. 0: no cap.",
    )
    max_processes_per_job: int = Field(
        8,
        ge=1,
        description="Largest resources.processes a job may ask for: the training processes (one per GPU) "
        "a worker starts for one job under torch.distributed.run; more get 400 naming resources.processes.",
    )
    max_queued_jobs_per_tenant: int = Field(
        100,
        ge=0,
        description="Queued jobs one tenant may have; creating another gets 429 `too_many_queued_jobs` with"
        " Retry-After and writes nothing. 0: no cap.",
    )
    rate_limit_per_s: float = Field(
        20.0,
        ge=0,
        description="Authenticated requests per second per tenant (a token bucket of JUICE_RATE_LIMIT_BURST"
        " tokens), per API process: N replicas admit N times the rate. Over it: 429 `rate_limit_exceeded`"
        " with Retry-After (the openai SDK waits and retries). 0: off.",
    )
    rate_limit_burst: int = Field(
        100,
        ge=1,
        description="Requests a tenant may send at once above JUICE_RATE_LIMIT_PER_S (the bucket size).",
    )

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    # Derived values: computed, never stored twice.
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'juice.db'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return self.home / "broker"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or str(self.home / "artifacts")

    @property
    def model_root_paths(self) -> list[Path]:
        raw = self.model_roots or str(self.home / "models")
        return [Path(p).expanduser().resolve() for p in raw.split(":") if p]

    @property
    def model_alias_map(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.model_aliases.split(",") if "=" in item)
        return {alias.strip(): target.strip() for alias, target in pairs if alias.strip() and target.strip()}

    @property
    def work_path(self) -> Path:
        return Path(self.work_dir).expanduser() if self.work_dir else self.home / "work"

    @property
    def resolved_public_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def resolved_inference_url(self) -> str:
        return (self.inference_url or f"http://{self.inference_host}:{self.inference_port}").rstrip("/")

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def grader_interpreter(self) -> str:
        """`grader_python`, or its default (the field's description)."""
        if self.grader_python:
            return self.grader_python
        bundled = Path(__file__).resolve().parents[2] / ".grader-venv"
        # resolved: .grader-venv may link to /opt/juice-grader-venv (scripts/setup.sh), which nobody can reach
        return str(bundled.resolve() / "bin" / "python") if bundled.exists() else sys.executable


@lru_cache
def get_settings() -> Settings:
    return Settings()
