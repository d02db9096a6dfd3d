"""Shared fixtures: real Postgres, real Redis, real `juice` processes over real HTTP; and the tiers.

Nothing here is mocked. Postgres and Redis must be reachable (scripts/test.sh starts them); tests that
need them fail loudly rather than skip, because a silently skipped integration suite proves nothing.

Tiers: scripts/test.sh runs everything; scripts/test_fast.sh runs `-m "not integration and not browser
and not slow"`. The `integration` and `browser` marks are not written by hand: pytest_collection_modifyitems
sets them from a test's folder and from the fixtures it uses (SERVICE_FIXTURES, BROWSER_FIXTURES), and a
test that reaches Postgres, Redis or a `juice` process some other way (fresh_pg_database, fresh_redis_db,
JuiceProcess) without the mark fails, so the fast tier cannot quietly start depending on a service.
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

# pytest loads this file as the module `conftest`, and test modules import its helpers as `tests.conftest`:
# make those one module, so both see the same state (the Postgres template, the running test).
if __name__ == "conftest":
    sys.modules.setdefault("tests.conftest", sys.modules[__name__])

PG_ADMIN = os.environ.get("JUICE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE = os.environ.get("JUICE_TEST_REDIS", "redis://127.0.0.1:6379")
REPO = Path(__file__).resolve().parents[1]
# Several test processes (pytest-xdist, scripts/test.sh): each is "gw<k>" and gets its own artifact folder
# and Redis databases; Postgres databases and ports are unique per test anyway.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
WORKER_INDEX = int(XDIST_WORKER.removeprefix("gw") or 0)
ARTIFACTS = REPO / "test-artifacts" / XDIST_WORKER if XDIST_WORKER else REPO / "test-artifacts"
# Redis databases (fresh_redis_db slots) a test process uses: 0 the session's `prod`, 1 one isolated
# deployment at a time (isolated_deployment, worker loss), 2 the sweeper test's
REDIS_SLOTS = 3
# Production (non-SQLite) deployments must be given the link-signing secret; a fixed one serves the tests.
TEST_SECRET_KEY = "juice-test-secret-" + "0123456789abcdef" * 2
# No model hub here: a hub id a test (or a generated request) names fails at once instead of waiting on
# the network. Set before any test module imports huggingface_hub, which reads it once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# Tiers. Folders whose every test needs services or a browser, and the fixtures that do (a test using
# one of these, directly or through another fixture, is in item.fixturenames).
SERVICE_DIRS = ("integration", "faults")
BROWSER_DIRS = ("dashboard",)
SERVICE_FIXTURES = frozenset({"pg_url", "redis_url", "prod", "prod_inference"})
BROWSER_FIXTURES = frozenset({"browser"})
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.resolve().parts[len(TESTS.parts) :]
        top = parts[0] if item.path.resolve().is_relative_to(TESTS) and len(parts) > 1 else ""
        used = set(getattr(item, "fixturenames", ()))
        if top in SERVICE_DIRS or used & SERVICE_FIXTURES:
            item.add_marker(pytest.mark.integration)
        if top in BROWSER_DIRS or used & BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)
    if XDIST_WORKER:
        longest_modules_first(items)


def longest_modules_first(items: list[pytest.Item]) -> None:
    """Order the modules by how long their tests take (any slow test first, then any needing services or a
    browser, then the rest), keeping each module's own order: with --dist loadscope a module is one unit
    of work, and a long one handed out last would leave the other processes idle while it runs. Every
    process computes the same order, as xdist requires."""

    def weight(item: pytest.Item) -> int:
        marks = {m.name for m in item.iter_markers()}
        return 2 if "slow" in marks else 1 if marks & {"integration", "browser"} else 0

    module_weight: dict[Path, int] = {}
    for item in items:
        module_weight[item.path] = max(module_weight.get(item.path, 0), weight(item))
    items.sort(key=lambda item: -module_weight[item.path])  # stable: each module's order is kept


_current_item: pytest.Item | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Set before any fixture of the test (session-scoped ones included) is set up.
    global _current_item
    _current_item = item


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    global _current_item
    _current_item = None


def require_integration_mark(what: str) -> None:
    """Fail the running test if it reaches a service without the `integration` mark (see the docstring)."""
    item = _current_item
    if item is not None and item.get_closest_marker("integration") is None:
        pytest.fail(
            f"{item.nodeid} uses {what} but is not marked integration, so the fast tier would run it: "
            "put it under tests/integration or have it use a fixture in SERVICE_FIXTURES",
            pytrace=False,
        )


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


def _pg_url(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"


_pg_template: str | None = None


def _migrated_pg_template() -> str:
    """A database migrated to head once per test session, that migrated databases are copied from."""
    global _pg_template
    if _pg_template is None:
        from api.db import migrate

        name = f"juice_test_template_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            migrate.upgrade(_pg_url(name))  # NullPool: no connection to it stays open, as TEMPLATE needs
        except BaseException:
            _drop_pg_database(name)
            raise
        _pg_template = name
    return _pg_template


def _drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _pg_template is not None:
        _drop_pg_database(_pg_template)


@contextmanager
def fresh_pg_database(migrated: bool = True) -> Iterator[str]:
    """A new Postgres database (dropped afterwards); its SQLAlchemy URL.

    `migrated`: at head, copied from the session's template (CREATE DATABASE ... TEMPLATE) rather than
    running every migration again; the copy is a database of its own, as isolated as a fresh one."""
    require_integration_mark("Postgres")
    name = f"juice_test_{uuid.uuid4().hex[:10]}"
    template = f' TEMPLATE "{_migrated_pg_template()}"' if migrated else ""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{template}')
    try:
        yield _pg_url(name)
    finally:
        _drop_pg_database(name)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated Postgres database for this test session."""
    with fresh_pg_database() as url:
        yield url


@contextmanager
def fresh_redis_db(slot: int) -> Iterator[str]:
    """This test process's Redis database number `slot` (0 .. REDIS_SLOTS - 1), emptied before and after:
    database 1 + slot + REDIS_SLOTS x the xdist worker's index, so that parallel processes never share
    one (Redis has 16: five processes fit, database 0 is left to whoever else uses this Redis)."""
    require_integration_mark("Redis")
    assert 0 <= slot < REDIS_SLOTS
    url = f"{REDIS_BASE}/{1 + slot + REDIS_SLOTS * WORKER_INDEX}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with fresh_redis_db(0) as url:
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
        require_integration_mark(f"a `juice {args[0]}` process")
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
    """A Deployment on its own Postgres database and Redis db (a fresh_redis_db slot: 1, one such
    deployment at a time per test process), so no other sweeper touches its jobs."""
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
