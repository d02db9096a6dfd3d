"""A job that asks for two training processes (`resources.processes`, sent by the official `openai` SDK
as extra_body) runs through the real API and worker (Postgres, Redis, a Celery worker process): the
worker launches two gloo ranks under torch.distributed.run, replays rank 0's metrics, events and
checkpoints into the job, and the job ends as an in-process one does; a cancel stops the processes."""

from __future__ import annotations

import io
import time

import openai
import pytest

from tests.conftest import Deployment
from tests.helpers import chat_jsonl

pytestmark = pytest.mark.integration


def _wait(client: openai.OpenAI, job_id: str, statuses: set[str], timeout: float = 300):
    deadline = time.monotonic() + timeout
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status not in statuses:
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    return job


def test_a_two_process_spin_job_through_the_sdk(prod: Deployment) -> None:
    client = openai.OpenAI(base_url=f"{prod.url}/v1", api_key=prod.new_key("ddp-user"), max_retries=0)
    train = client.files.create(file=("chats.jsonl", io.BytesIO(chat_jsonl(8))), purpose="fine-tune")
    method = {
        "type": "irft",
        "irft": {
            "hyperparameters": {
                "outer_iterations": 1,
                "batch_size": 2,
                "n_epochs": 1,
                "generation": {"max_new_tokens": 6},
            }
        },
    }
    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=train.id,
        seed=3,
        method=method,  # type: ignore[arg-type]  # a Juice method type
        extra_body={"resources": {"processes": 2}},
    )
    assert job.model_extra and job.model_extra["resources"] == {"processes": 2}
    job = _wait(client, job.id, {"succeeded", "failed", "cancelled"})
    assert job.status == "succeeded", job.error
    # 8 examples, 2 per process on 2 processes: 2 steps (the worker's progress total agrees)
    assert job.model_extra and job.model_extra["progress"] == {"step": 2, "total_steps": 2}
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    started = next(e for e in events if e.message.startswith("Training for"))
    assert started.data and started.data["num_processes"] == 2
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and checkpoints[0].step_number == 2


def test_a_cancel_reaches_the_processes(prod: Deployment) -> None:
    client = openai.OpenAI(base_url=f"{prod.url}/v1", api_key=prod.new_key("ddp-cancel"), max_retries=0)
    train = client.files.create(file=("chats.jsonl", io.BytesIO(chat_jsonl(40))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=train.id,
        hyperparameters={"n_epochs": 50, "batch_size": 1},
        extra_body={"resources": {"processes": 2}},
    )
    _wait(client, job.id, {"running"})
    deadline = time.monotonic() + 120
    while not (job := client.fine_tuning.jobs.retrieve(job.id)).model_extra["progress"]["step"]:
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    client.fine_tuning.jobs.cancel(job.id)
    job = _wait(client, job.id, {"cancelled", "failed", "succeeded"}, timeout=120)
    assert job.status == "cancelled", job.error
    assert job.model_extra and job.model_extra["progress"]["step"] < 1000
