"""Outages of the database and the broker while jobs are created and trained (issue 10): nothing lost,
nothing duplicated, the API answers 503 while the database is away.

A private Postgres (initdb + pg_ctl as the postgres user, on a free port) and a private Redis, never
the shared ones; `juice api` and `juice worker --sweeper` as real processes; SFT jobs of the tiny
model long enough to live through each fault injected twice. Before the worker's outbox, the metrics
written while the database was away were dropped (552 of 1,200 points in the issue's probe) and the
API answered 500.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ARTIFACTS, TEST_SECRET_KEY, Deployment, fast_env, free_port, run_cli
from tests.helpers import chat_jsonl, sft_job_body, upload, wait_status

pytestmark = pytest.mark.integration

OUTAGES = 2
OUTAGE_S = 6.0


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail(f"{name} not found under /usr/lib/postgresql (install postgresql)")
    return found[-1]


def _as_postgres(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = list(args) if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


class PrivatePostgres:
    def __init__(self, root: Path) -> None:
        self.data, self.port = root / "pgdata", free_port()
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        _as_postgres(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self.log = root / "postgres.log"
        self.start()
        _as_postgres(_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "juice")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/juice"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "start")

    def stop(self) -> None:
        _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(["redis-server", *args], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).returncode:
            assert time.monotonic() < deadline, "redis did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture()
def deployment(
    tmp_path: Path, tiny_model_dir: Path
) -> Iterator[tuple[Deployment, PrivatePostgres, PrivateRedis]]:
    # Its own folder under /tmp: pytest's tmp_path is private to root, and initdb runs as postgres.
    pg_root = Path(tempfile.mkdtemp(prefix="juice-pg-"))
    pg = PrivatePostgres(pg_root)
    redis = PrivateRedis()
    home = tmp_path / "home"
    env = fast_env(
        home,
        JUICE_DATABASE_URL=pg.url,
        JUICE_BROKER_URL=f"redis://127.0.0.1:{redis.port}/0",
        JUICE_STORAGE_URL=f"file://{home / 'store'}",
        JUICE_MODEL_ROOTS=str(tiny_model_dir),
        JUICE_SECRET_KEY=TEST_SECRET_KEY,
        JUICE_STALE_AFTER_S="60",  # an outage of seconds must not get a live job re-queued
        JUICE_REQUEUE_AFTER_S="3",  # a message lost with the broker is re-sent within seconds
    )
    run_cli(["db", "upgrade"], env)
    dep = None
    try:
        dep = Deployment(env, ARTIFACTS / "logs" / "db-outage")
        dep.start_worker(sweeper=True)
        yield dep, pg, redis
    finally:
        if dep is not None:
            dep.stop()
        redis.stop()
        with contextlib.suppress(subprocess.CalledProcessError):
            pg.stop()
        shutil.rmtree(pg_root, ignore_errors=True)


def test_metrics_survive_postgres_restarts_and_the_api_answers_503(deployment) -> None:
    dep, pg, _ = deployment
    client = dep.client(dep.new_key("acme"))
    train = upload(client, chat_jsonl(24))
    job = client.post(
        "/fine_tuning/jobs",
        json=sft_job_body(
            "tiny-llama", train["id"], n_epochs=40, batch_size=1, checkpoint_interval=200, logging_interval=1
        ),
    )
    assert job.status_code == 200, job.text
    job = job.json()
    total = 24 * 40
    raw = httpx.Client(base_url=dep.url, timeout=30)
    answers: list[tuple[int, str | None, str | None]] = []
    for _ in range(OUTAGES):
        deadline = time.monotonic() + 240
        start_step = None
        while time.monotonic() < deadline:  # wait for training to be under way (again)
            j = client.get(f"/fine_tuning/jobs/{job['id']}").json()
            step = (j.get("progress") or {}).get("step") or 0
            start_step = start_step if start_step is not None else step
            if j["status"] == "running" and step >= start_step + 20:
                break
            time.sleep(0.3)
        pg.stop()
        down_until = time.monotonic() + OUTAGE_S
        while time.monotonic() < down_until:
            r = client.get("/fine_tuning/jobs")
            answers.append((r.status_code, r.headers.get("retry-after"), r.json()["error"]["code"]))
            assert raw.get("/healthz").status_code == 200  # alive: nothing to restart
            assert raw.get("/readyz").status_code == 503  # not ready: no traffic please
            time.sleep(0.5)
        pg.start()
    done = wait_status(client, job["id"], {"succeeded", "failed", "cancelled"}, timeout=600)
    assert done["status"] == "succeeded", done
    assert answers and set(answers) == {(503, "5", "database_unavailable")}
    assert raw.get("/readyz").status_code == 200  # recovered by itself

    series = client.get(
        f"/fine_tuning/jobs/{job['id']}/metrics/series", params={"names": "train/loss", "max_points": 20000}
    ).json()["series"]["train/loss"]
    steps = series["step"]
    assert len(steps) == total and sorted(steps) == list(range(1, total + 1)), (
        f"{len(steps)} points of {total}; missing {sorted(set(range(1, total + 1)) - set(steps))[:20]}"
    )
    events = client.get(f"/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
    assert sum(e["message"] == "The job has successfully completed." for e in events) == 1


def test_a_job_created_while_the_broker_is_down_runs_once_it_is_back(deployment) -> None:
    """Broker down at create: the API still answers at once (the job row is the source of truth),
    and the sweeper sends the message the broker never got as soon as the broker is back."""
    dep, _, redis = deployment
    client = dep.client(dep.new_key("acme"))
    train = upload(client, chat_jsonl(8))
    body = sft_job_body("tiny-llama", train["id"], n_epochs=1, batch_size=4)
    for attempt in range(2):  # injected twice
        redis.stop()
        started = time.monotonic()
        r = client.post("/fine_tuning/jobs", json=body)
        took = time.monotonic() - started
        assert r.status_code == 200 and r.json()["status"] == "queued", r.text
        assert took < 15, f"create took {took:.1f} s with the broker down"
        time.sleep(2)
        redis.start()
        done = wait_status(client, r.json()["id"], {"succeeded", "failed", "cancelled"}, timeout=240)
        assert done["status"] == "succeeded", (attempt, done)


def test_a_redis_restart_mid_training_loses_no_job_and_no_point(deployment) -> None:
    """The broker restarted (twice, losing everything it held: no persistence) while a job trains: the
    job still finishes once, every metric point is there once. The jobs table, not the broker, is the
    source of truth."""
    dep, _, redis = deployment
    client = dep.client(dep.new_key("acme"))
    train = upload(client, chat_jsonl(24))
    body = sft_job_body("tiny-llama", train["id"], n_epochs=25, batch_size=1, logging_interval=1)
    r = client.post("/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    job, total = r.json(), 24 * 25
    last = 0
    for _ in range(2):
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            step = (client.get(f"/fine_tuning/jobs/{job['id']}").json().get("progress") or {}).get(
                "step"
            ) or 0
            if step >= last + 20:
                break
            time.sleep(0.3)
        last = step
        redis.stop()
        time.sleep(4)
        redis.start()
    done = wait_status(client, job["id"], {"succeeded", "failed", "cancelled"}, timeout=600)
    assert done["status"] == "succeeded", done
    steps = client.get(
        f"/fine_tuning/jobs/{job['id']}/metrics/series", params={"names": "train/loss", "max_points": 20000}
    ).json()["series"]["train/loss"]["step"]
    assert sorted(steps) == list(range(1, total + 1))
    events = client.get(f"/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
    assert sum(e["message"] == "The job has successfully completed." for e in events) == 1
