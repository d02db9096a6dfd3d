"""An OpenAI user's DPO job moves to Juice by changing base_url: the official `openai` SDK uploads an
OpenAI-format preference file and runs `method={"type": "dpo", ...}` through the real API and worker
(Postgres, Redis); the tuned checkpoint loads with transformers and every weight moved."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import openai
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tests.conftest import Deployment
from tests.helpers import QA, chat_jsonl, extract_tar

pytestmark = pytest.mark.integration

DPO_METRICS = {
    "train/loss",
    "train/lr",
    "train/grad_norm",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margin",
    "rewards/accuracy",
    "logps/chosen",
    "logps/rejected",
}


def openai_preference_jsonl() -> bytes:
    """OpenAI's DPO lines (docs/api.md, "Training files"): input messages, one preferred and one other answer."""
    lines = [
        json.dumps(
            {
                "input": {"messages": [{"role": "user", "content": q}]},
                "preferred_output": [{"role": "assistant", "content": a}],
                "non_preferred_output": [{"role": "assistant", "content": "I do not know."}],
            }
        )
        for q, a in QA
    ]
    return ("\n".join(lines) + "\n").encode()


def wait_final(client: openai.OpenAI, job_id: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    return job


def test_openai_sdk_dpo_job(prod: Deployment, tiny_model_dir: Path, tmp_path: Path) -> None:
    key = prod.new_key("dpo-user")
    client = openai.OpenAI(base_url=f"{prod.url}/v1", api_key=key, max_retries=0)

    pairs = client.files.create(
        file=("prefs.jsonl", io.BytesIO(openai_preference_jsonl())), purpose="fine-tune"
    )
    assert pairs.status == "processed"
    assert pairs.model_extra and pairs.model_extra["format"] == "preference"

    # A demonstration file is refused as DPO's training file, and the preference file as SFT's.
    chats = client.files.create(file=("chats.jsonl", io.BytesIO(chat_jsonl(4))), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as wrong:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=chats.id, method={"type": "dpo"})
    assert (wrong.value.code, wrong.value.param) == ("invalid_training_file", "training_file")
    with pytest.raises(openai.BadRequestError) as wrong:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=pairs.id)
    assert (wrong.value.code, wrong.value.param) == ("invalid_training_file", "training_file")
    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(
            model="tiny-llama",
            training_file=pairs.id,
            method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}},
        )
    assert bad.value.param == "method.dpo.hyperparameters.beta"

    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=pairs.id,
        validation_file=pairs.id,
        suffix="dpo",
        seed=11,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, "n_epochs": 1}}},
    )
    assert job.status == "queued" and job.method and job.method.type == "dpo"
    assert job.method.dpo and job.method.dpo.hyperparameters and job.method.dpo.hyperparameters.beta == 0.1
    assert job.method.dpo.hyperparameters.n_epochs == 1

    job = wait_final(client, job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model and job.fine_tuned_model.startswith("ft:tiny-llama:dpo-user:dpo:")
    assert job.trained_tokens and job.trained_tokens > 0
    assert job.hyperparameters.n_epochs == 1 and job.hyperparameters.batch_size == 1  # auto: ceil(0.002 * 6)
    assert job.model_extra and job.model_extra["progress"] == {
        "step": 6,
        "total_steps": 6,
    }  # 6 pairs, batch 1

    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=5)]
    assert events[0] == "The job has successfully completed."
    assert "Loaded 6 preference pairs" in events, events

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and checkpoints[0].step_number == 6
    assert checkpoints[0].metrics.train_loss is not None
    final = checkpoints[0]

    http = prod.client(key)
    names = set(http.get(f"/fine_tuning/jobs/{job.id}/metrics").json()["names"])
    assert names >= DPO_METRICS, DPO_METRICS - names
    assert {"eval/loss", "eval/logp_gap"} <= names  # the preference validation file
    series = http.get(f"/fine_tuning/jobs/{job.id}/metrics/series").json()["series"]
    assert all(0.0 <= v <= 1.0 for v in series["rewards/accuracy"]["value"])

    assert final.model_extra
    tar = http.get(final.model_extra["download_url"].removeprefix("/v1"))
    assert tar.status_code == 200
    model_dir = extract_tar(tar.content, tmp_path)
    AutoModelForCausalLM.from_pretrained(model_dir)
    tuned = load_file(model_dir / "model.safetensors")
    base = load_file(tiny_model_dir / "tiny-llama" / "model.safetensors")
    assert tuned.keys() == base.keys()
    unchanged = [k for k in base if torch.equal(tuned[k], base[k])]
    assert unchanged == [], unchanged
