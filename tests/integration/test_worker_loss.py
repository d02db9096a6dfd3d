"""Workers killed and shut down mid-job, each fault injected twice per job, for SFT and for IRFT (whose
checkpoint holds its generated slice and reference log-probs):

- SIGKILL: the sweeper re-queues the job once the heartbeat is stale and another worker resumes it
  from the newest checkpoint, redoing only the steps after it (at most one checkpoint interval).
- SIGTERM (to the Celery parent, as `docker stop` sends it, and to the whole process group, as a
  service manager does): the worker checkpoints the step it is on, re-queues the job and exits; the
  next worker resumes at that very step, so no step is redone, and no worker loss is counted.

After each, the metric series has every step exactly once and the job succeeds."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    ARTIFACTS,
    TEST_SECRET_KEY,
    Deployment,
    fast_env,
    fresh_pg_database,
    fresh_redis_db,
)
from tests.helpers import chat_jsonl, sft_job_body, upload, wait_status

pytestmark = pytest.mark.integration


@pytest.fixture()
def isolated(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Deployment]:
    """A deployment with its own database and Redis db, so no other sweeper touches its jobs."""
    with fresh_pg_database() as pg, fresh_redis_db(1) as rd:
        env = fast_env(
            tmp_path / "home",
            JUICE_DATABASE_URL=pg,
            JUICE_BROKER_URL=rd,
            JUICE_STORAGE_URL=f"file://{tmp_path / 'store'}",
            JUICE_MODEL_ROOTS=str(tiny_model_dir),
            JUICE_SECRET_KEY=TEST_SECRET_KEY,
        )
        dep = Deployment(env, ARTIFACTS / "logs" / "worker-loss")
        try:
            yield dep
        finally:
            dep.stop()


def _job_body(method: str, train_file: str, n_epochs: int = 6, checkpoint_interval: int = 4) -> dict:
    body = sft_job_body(
        "tiny-llama", train_file, n_epochs=n_epochs, batch_size=2, checkpoint_interval=checkpoint_interval
    )
    if method == "irft":  # SPIN (T = 1): 48 steps too, against one generated slice cached in the checkpoint
        hp = body["method"]["sft"]["hyperparameters"]
        hp.update(outer_iterations=1, generation={"max_new_tokens": 8})
        body["method"] = {"type": "irft", "irft": {"hyperparameters": hp}}
    return body


def _checkpoint_steps(client, job_id: str) -> list[int]:
    data = client.get(f"/fine_tuning/jobs/{job_id}/checkpoints", params={"limit": 100}).json()["data"]
    return [c["step_number"] for c in data]


def _messages(client, job_id: str) -> list[str]:
    data = client.get(f"/fine_tuning/jobs/{job_id}/events", params={"limit": 500}).json()["data"]
    return [e["message"] for e in data]


def _resumed_at(messages: list[str]) -> list[int]:
    return sorted(
        int(m.rsplit(" ", 1)[1].rstrip("."))
        for m in messages
        if m.startswith("Resuming from the checkpoint at step")
    )


def _assert_every_step_once(client, job_id: str, total: int) -> None:
    metrics = client.get(f"/fine_tuning/jobs/{job_id}/metrics", params={"names": "train/loss"}).json()
    steps = Counter(p["step"] for p in metrics["data"])
    assert sorted(steps) == list(range(1, total + 1)) and set(steps.values()) == {1}, steps


@pytest.mark.parametrize("method", ["sft", "irft"])
def test_sigkilled_worker_job_resumes_from_checkpoint(isolated: Deployment, method: str) -> None:
    dep = isolated
    client = dep.client(dep.new_key("resilient"))
    worker = dep.start_worker(sweeper=True)
    train = upload(client, chat_jsonl(16))
    # 16 examples / batch 2 = 8 steps per epoch, 6 epochs = 48 steps, a checkpoint every 4 steps.
    r = client.post("/fine_tuning/jobs", json=_job_body(method, train["id"]))
    assert r.status_code == 200, r.text
    job = r.json()
    lost_after = []
    for kill in range(2):  # two losses: max_attempts (3) tolerates them
        deadline = time.monotonic() + 180
        floor = max(lost_after, default=0)
        while not [s for s in _checkpoint_steps(client, job["id"]) if s > floor]:
            assert time.monotonic() < deadline, f"no new checkpoint appeared before kill {kill + 1}"
            time.sleep(0.1)
        worker.stop(sig=signal.SIGKILL)  # the whole worker: parent and the child that trains
        assert client.get(f"/fine_tuning/jobs/{job['id']}").json()["status"] == "running"
        lost_after.append(max(_checkpoint_steps(client, job["id"])))
        worker = dep.start_worker(sweeper=True)

    done = wait_status(client, job["id"], {"succeeded", "failed", "cancelled"}, timeout=300)
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 3
    messages = _messages(client, job["id"])
    assert sum("stopped beating; job re-queued" in m for m in messages) == 2, messages
    resumed = _resumed_at(messages)
    # each resume starts at the newest checkpoint there was: at most one interval (4 steps) redone
    assert len(resumed) == 2 and all(r >= lost for r, lost in zip(resumed, lost_after, strict=True)), (
        resumed,
        lost_after,
    )
    _assert_every_step_once(client, job["id"], 48)
    assert _checkpoint_steps(client, job["id"]) == list(range(48, 0, -4))


@pytest.mark.parametrize("method", ["sft", "irft"])
def test_sigterm_hands_the_job_over_at_the_current_step(isolated: Deployment, method: str) -> None:
    dep = isolated
    client = dep.client(dep.new_key("graceful"))
    worker = dep.start_worker(sweeper=True)
    train = upload(client, chat_jsonl(16))
    # 8 steps per epoch, 10 epochs = 80 steps; no checkpoint is due before the last step.
    body = _job_body(method, train["id"], n_epochs=10, checkpoint_interval=1000)
    job = client.post("/fine_tuning/jobs", json=body).json()
    handed_over: list[int] = []
    for term in range(2):
        reached = 0
        deadline = time.monotonic() + 180
        while reached < max(handed_over, default=0) + 5:
            assert time.monotonic() < deadline, "the job made no progress"
            time.sleep(0.05)
            reached = client.get(f"/fine_tuning/jobs/{job['id']}").json()["progress"]["step"] or 0
        # First as `docker stop` does (the parent only), then as a service manager does (the group).
        if term == 0:
            worker.proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(worker.proc.pid, signal.SIGTERM)
        assert worker.proc.wait(timeout=60) == 0, worker.output()[-3000:]
        now = client.get(f"/fine_tuning/jobs/{job['id']}").json()
        assert now["status"] == "queued", now
        step = max(_checkpoint_steps(client, job["id"]))
        assert step >= reached and step < 80
        handed_over.append(step)
        assert any(
            f"is shutting down: the job was checkpointed at step {step}" in m
            for m in _messages(client, job["id"])
        )
        worker = dep.start_worker(sweeper=True)

    done = wait_status(client, job["id"], {"succeeded", "failed", "cancelled"}, timeout=300)
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 3
    messages = _messages(client, job["id"])
    assert not [m for m in messages if "stopped beating" in m]  # no loss: nothing waited for a sweep
    assert _resumed_at(messages) == handed_over  # resumed exactly where it stopped: 0 steps redone
    _assert_every_step_once(client, job["id"], 80)
    assert sorted(_checkpoint_steps(client, job["id"])) == [*handed_over, 80]
