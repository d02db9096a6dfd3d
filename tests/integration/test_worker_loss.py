"""A worker SIGKILLed mid-job (SFT, and IRFT with its generated slice and reference log-probs in the
checkpoint): the sweeper re-queues the job and another worker resumes it from the newest checkpoint,
losing only the steps after it; the metric series has no duplicated steps."""

from __future__ import annotations

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
    with fresh_pg_database() as pg, fresh_redis_db(8) as rd:
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


def _job_body(method: str, train_file: str) -> dict:
    body = sft_job_body("tiny-llama", train_file, n_epochs=6, batch_size=2, checkpoint_interval=4)
    if method == "irft":  # SPIN (T = 1): 48 steps too, against one generated slice cached in the checkpoint
        hp = body["method"]["sft"]["hyperparameters"]
        hp.update(outer_iterations=1, generation={"max_new_tokens": 8})
        body["method"] = {"type": "irft", "irft": {"hyperparameters": hp}}
    return body


@pytest.mark.parametrize("method", ["sft", "irft"])
def test_sigkilled_worker_job_resumes_from_checkpoint(isolated: Deployment, method: str) -> None:
    dep = isolated
    client = dep.client(dep.new_key("resilient"))
    first = dep.start_worker(sweeper=True)
    train = upload(client, chat_jsonl(16))
    # 16 examples / batch 2 = 8 steps per epoch, 6 epochs = 48 steps, a checkpoint every 4 steps.
    r = client.post("/fine_tuning/jobs", json=_job_body(method, train["id"]))
    assert r.status_code == 200, r.text
    job = r.json()
    deadline = time.monotonic() + 120
    while True:
        ckpts = client.get(f"/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
        if ckpts:
            break
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    first.stop(sig=signal.SIGKILL)  # the whole worker: parent and the child that trains
    killed_at = client.get(f"/fine_tuning/jobs/{job['id']}").json()
    assert killed_at["status"] == "running"
    lost_after = max(
        c["step_number"] for c in client.get(f"/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
    )

    dep.start_worker(sweeper=True)
    done = wait_status(client, job["id"], {"succeeded", "failed", "cancelled"}, timeout=240)
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2
    messages = [
        e["message"]
        for e in client.get(f"/fine_tuning/jobs/{job['id']}/events", params={"limit": 200}).json()["data"]
    ]
    assert any("stopped beating; job re-queued" in m for m in messages), messages
    resumed = [m for m in messages if m.startswith("Resuming from the checkpoint at step")]
    assert len(resumed) == 1 and int(resumed[0].rsplit(" ", 1)[1].rstrip(".")) >= lost_after
    metrics = client.get(f"/fine_tuning/jobs/{job['id']}/metrics", params={"names": "train/loss"}).json()[
        "data"
    ]
    steps = Counter(p["step"] for p in metrics)
    assert sorted(steps) == list(range(1, 49)) and set(steps.values()) == {1}, steps
    assert [
        c["step_number"]
        for c in client.get(f"/fine_tuning/jobs/{job['id']}/checkpoints", params={"limit": 100}).json()[
            "data"
        ]
    ] == list(range(48, 0, -4))
