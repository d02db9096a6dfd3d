"""The official `openai` SDK drives Juice with nothing but base_url and api_key changed."""

from __future__ import annotations

import io
import time

import openai
import pytest

from tests.conftest import Deployment
from tests.helpers import chat_jsonl

pytestmark = pytest.mark.integration


def test_openai_sdk_full_flow(prod: Deployment) -> None:
    client = openai.OpenAI(base_url=f"{prod.url}/v1", api_key=prod.new_key("sdk-user"), max_retries=0)

    uploaded = client.files.create(file=("train.jsonl", io.BytesIO(chat_jsonl(8))), purpose="fine-tune")
    assert uploaded.id.startswith("file-") and uploaded.status == "processed"
    assert client.files.retrieve(uploaded.id).bytes == uploaded.bytes
    assert client.files.content(uploaded.id).read() == chat_jsonl(8)
    assert uploaded.id in [f.id for f in client.files.list()]

    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=uploaded.id,
        suffix="sdk",
        seed=3,
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 50}
            },
        },
        extra_headers={"Idempotency-Key": "sdk-job-1"},
    )
    assert job.status == "queued" and job.model == "tiny-llama"

    models = {m.id: m for m in client.models.list()}
    assert models["tiny-llama"].owned_by == "juice" and models["tiny-llama"].object == "model"
    assert client.models.retrieve("tiny-llama").created == models["tiny-llama"].created
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"

    deadline = time.monotonic() + 240
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model and job.fine_tuned_model.startswith("ft:tiny-llama:sdk-user:sdk:")
    tuned = client.models.retrieve(job.fine_tuned_model)
    assert tuned.owned_by == "sdk-user" and tuned.created == job.finished_at
    assert job.fine_tuned_model in [m.id for m in client.models.list()]
    assert job.trained_tokens and job.trained_tokens > 0
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 4
    # OpenAI's result file: the per-step metrics CSV, through the Files API
    assert len(job.result_files) == 1
    assert client.files.retrieve(job.result_files[0]).purpose == "fine-tune-results"
    rows = client.files.content(job.result_files[0]).text.splitlines()
    assert rows[0].startswith("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy")
    assert len(rows) == 1 + 4  # 8 examples / batch 4 = 2 steps per epoch, 2 epochs

    # OpenAI's "fine-tune a fine-tuned model": the tuned model as the next job's base
    again = client.fine_tuning.jobs.create(
        model=job.fine_tuned_model, training_file=uploaded.id, suffix="again"
    )
    while (again := client.fine_tuning.jobs.retrieve(again.id)).status not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline + 120, again
        time.sleep(0.5)
    assert again.status == "succeeded", again.error
    assert again.model == job.fine_tuned_model and again.fine_tuned_model.startswith(
        "ft:tiny-llama:sdk-user:again:"
    )

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=3))  # auto-pages past 3
    assert events[0].message == "The job has successfully completed."
    assert len(events) > 3 and len({e.id for e in events}) == len(events)

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and checkpoints[0].step_number == 4
    assert checkpoints[0].metrics.train_loss is not None
    assert job.id in [j.id for j in client.fine_tuning.jobs.list(limit=5)]

    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-doesnotexist")
    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(
            model="tiny-llama",
            training_file=uploaded.id,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}},
        )
    assert bad.value.param == "method.supervised.hyperparameters.n_epochs"


def test_openai_sdk_pause_and_resume(prod: Deployment) -> None:
    """`jobs.pause` on a running job: it checkpoints and reads `paused`; `jobs.resume`: `queued`, then
    it finishes from that checkpoint under the same id (real worker process)."""
    client = openai.OpenAI(base_url=f"{prod.url}/v1", api_key=prod.new_key("sdk-pauser"), max_retries=0)
    uploaded = client.files.create(file=("train.jsonl", io.BytesIO(chat_jsonl(16))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=uploaded.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 10, "batch_size": 2}}},
    )
    deadline = time.monotonic() + 120
    while ((client.fine_tuning.jobs.retrieve(job.id).to_dict().get("progress") or {}).get("step") or 0) < 2:
        assert time.monotonic() < deadline  # Juice's `progress` extension; the SDK keeps unknown fields
        time.sleep(0.1)
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.id == job.id and paused.status in ("running", "paused")
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status != "paused":
        assert job.status == "running" and time.monotonic() < deadline, job
        time.sleep(0.1)
    at = client.fine_tuning.jobs.checkpoints.list(job.id).data[0].step_number
    assert 0 < at < 80
    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    deadline = time.monotonic() + 240
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    assert job.status == "succeeded", job.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert f"Resuming from the checkpoint at step {at}." in messages
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.resume(job.id)
