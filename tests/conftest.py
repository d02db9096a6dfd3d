"""Shared fixtures: real Postgres, real Redis, real `juice` processes over real HTTP.

Nothing here is mocked. Postgres and Redis must be reachable (scripts/test.sh starts them); tests that
need them fail loudly rather than skip, because a silently skipped integration suite proves nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

PG_ADMIN = os.environ.get("JUICE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE = os.environ.get("JUICE_TEST_REDIS", "redis://127.0.0.1:6379")
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
# Production (non-SQLite) deployments must be given the link-signing secret; a fixed one serves the tests.
TEST_SECRET_KEY = "juice-test-secret-" + "0123456789abcdef" * 2
# No model hub here: a hub id a test (or a generated request) names fails at once instead of waiting on
# the network. Set before any test module imports huggingface_hub, which reads it once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.testing import make_tiny_model_dir

    root = tmp_path_factory.mktemp("models")
    make_tiny_model_dir(root / "tiny-llama", seed=0)
    return root


@contextmanager
def fresh_pg_database(migrated: bool = True) -> Iterator[str]:
    """A new Postgres database (dropped afterwards); its SQLAlchemy URL."""
    from api.db import migrate

    name = f"juice_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    try:
        if migrated:
            migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated Postgres database for this test session."""
    with fresh_pg_database() as url:
        yield url


@contextmanager
def fresh_redis_db(db: int) -> Iterator[str]:
    """Redis database number `db`, emptied before and after."""
    url = f"{REDIS_BASE}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with fresh_redis_db(7) as url:
        yield url


def fast_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a juice process with short intervals so failures surface in seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUICE_")}
    env.update(
        {
            "JUICE_HOME": str(home),
            "JUICE_HEARTBEAT_INTERVAL_S": "1",
            "JUICE_CANCEL_POLL_INTERVAL_S": "0.5",
            "JUICE_STALE_AFTER_S": "8",
            "JUICE_SWEEP_INTERVAL_S": "2",
            "JUICE_REQUEUE_AFTER_S": "30",
            "JUICE_METRICS_POLL_INTERVAL_S": "0.2",
            "JUICE_ALLOW_HUB_MODELS": "true",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "JUICE_INFERENCE_PORT": str(free_port()),  # never the default 8001 another Juice may hold
        }
    )
    env.update(extra)
    return env


def _limit_address_space(limit: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class JuiceProcess:
    """A `juice` subcommand running as a real process, its output kept in a log file."""

    def __init__(
        self, args: list[str], env: dict[str, str], log_path: Path, address_space: int | None = None
    ) -> None:
        """`address_space`: an RLIMIT_AS for the process and its children, in bytes (a smaller machine)."""
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")  # noqa: SIM115  # open for the process's lifetime, closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "juice.cli", *args],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if address_space is None else lambda: _limit_address_space(address_space),
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = 15, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self._log.close()


def run_cli(args: list[str], env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "juice.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def wait_http(url: str, proc: JuiceProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"process exited early:\n{proc.output()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not up after {timeout}s:\n{proc.output()[-3000:]}")


class Deployment:
    """API + worker processes sharing one configuration, and an authenticated HTTP client."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = JuiceProcess(["api", "--port", str(self.port)], env, logs / "api.log")
        self.workers: list[JuiceProcess] = []
        wait_http(f"{self.url}/healthz", self.api)

    def start_worker(
        self, sweeper: bool = True, address_space: int | None = None, **extra_env: str
    ) -> JuiceProcess:
        args = ["worker", "--loglevel", "info"] + (["--sweeper"] if sweeper else [])
        env = {**self.env, **extra_env}
        w = JuiceProcess(args, env, self.logs / f"worker-{len(self.workers)}.log", address_space)
        self.workers.append(w)
        return w

    def start_inference(self) -> JuiceProcess:
        """`juice inference` on this deployment's JUICE_INFERENCE_PORT, up and answering."""
        proc = JuiceProcess(["inference", "--loglevel", "info"], self.env, self.logs / "inference.log")
        wait_http(f"http://127.0.0.1:{self.env['JUICE_INFERENCE_PORT']}/healthz", proc)
        return proc

    def new_key(self, tenant: str) -> str:
        return run_cli(["keys", "create", "--tenant", tenant], self.env).strip().splitlines()[-1]

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        self.api.stop()


@pytest.fixture(scope="session")
def prod(
    tmp_path_factory: pytest.TempPathFactory, pg_url: str, redis_url: str, tiny_model_dir: Path
) -> Iterator[Deployment]:
    """Production mode: Postgres + Redis broker + an fsspec `file://` artifact store + a worker process."""
    home = tmp_path_factory.mktemp("juice-prod")
    env = fast_env(
        home,
        JUICE_DATABASE_URL=pg_url,
        JUICE_BROKER_URL=redis_url,
        JUICE_STORAGE_URL=f"file://{home / 'store'}",
        JUICE_MODEL_ROOTS=str(tiny_model_dir),
        JUICE_SECRET_KEY=TEST_SECRET_KEY,
    )
    dep = Deployment(env, ARTIFACTS / "logs" / "prod")
    dep.start_worker(sweeper=True)
    yield dep
    dep.stop()


@pytest.fixture(scope="session")
def prod_inference(prod: Deployment) -> Iterator[JuiceProcess]:
    """`juice inference` beside the `prod` deployment: what its /v1/chat/completions forwards to."""
    proc = prod.start_inference()
    yield proc
    proc.stop()


@contextmanager
def isolated_deployment(
    home: Path, store_url: str, model_roots: Path, redis_db: int, logs: str, **extra_env: str
) -> Iterator[Deployment]:
    """A Deployment on its own Postgres database and Redis db, so no other sweeper touches its jobs."""
    with fresh_pg_database() as pg, fresh_redis_db(redis_db) as rd:
        env = fast_env(
            home,
            JUICE_DATABASE_URL=pg,
            JUICE_BROKER_URL=rd,
            JUICE_STORAGE_URL=store_url,
            JUICE_MODEL_ROOTS=str(model_roots),
            JUICE_SECRET_KEY=TEST_SECRET_KEY,
            **extra_env,
        )
        dep = Deployment(env, ARTIFACTS / "logs" / logs)
        try:
            yield dep
        finally:
            dep.stop()
