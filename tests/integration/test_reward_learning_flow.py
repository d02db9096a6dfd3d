"""IRFT (T=1 i.e. SPIN, and T=2) and RFT through the whole service: real HTTP, real worker, Postgres."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from tests.conftest import Deployment
from tests.helpers import chat_jsonl, extract_tar, preference_jsonl, upload, wait_status

pytestmark = pytest.mark.integration

COMMON = {
    "train/loss",
    "train/lr",
    "train/grad_norm",
    "train/generation_length",
    "train/kl",
    "eval/logp_gap",
    "eval/logp_gap_accuracy",
}
IRFT_METRICS = COMMON | {
    "rewards/real",
    "rewards/generated",
    "rewards/margin",
    "rewards/accuracy",
    "logps/real",
    "logps/generated",
}
RFT_METRICS = COMMON | {
    "reward_model/loss",
    "reward_model/accuracy",
    "rewards/demonstrations",
    "rewards/generations",
    "advantages/mean",
    "advantages/std",
}
GENERATION = {"max_new_tokens": 8, "batch_size": 4}


@pytest.fixture(scope="module")
def client(prod: Deployment) -> httpx.Client:
    return prod.client(prod.new_key("reward-learner"))


def run_job(client: httpx.Client, method: dict) -> dict:
    train = upload(client, chat_jsonl(8))
    val = upload(client, preference_jsonl(4), "val.jsonl")
    r = client.post(
        "/fine_tuning/jobs",
        json={
            "model": "tiny-llama",
            "training_file": train["id"],
            "validation_file": val["id"],
            "seed": 5,
            "method": method,
        },
    )
    assert r.status_code == 200, r.text
    return wait_status(client, r.json()["id"], {"succeeded", "failed", "cancelled"}, timeout=300)


def metric_names(client: httpx.Client, job_id: str) -> set[str]:
    return set(client.get(f"/fine_tuning/jobs/{job_id}/metrics").json()["names"])


def download(client: httpx.Client, ckpt: dict, dest: Path) -> Path:
    r = client.get(ckpt["download_url"].removeprefix("/v1"))
    assert r.status_code == 200
    return extract_tar(r.content, dest)


def assert_every_weight_changed(tuned_dir: Path, base_dir: Path) -> None:
    tuned, base = load_file(tuned_dir / "model.safetensors"), load_file(base_dir / "model.safetensors")
    assert tuned.keys() == base.keys()
    unchanged = [k for k in base if torch.equal(tuned[k], base[k])]
    assert unchanged == [], unchanged


@pytest.mark.parametrize(
    "hp",
    [{"outer_iterations": 1}, {"outer_iterations": 2, "schedule": "stagewise"}],
    ids=["spin_T1", "irft_T2"],
)
def test_irft_job(client: httpx.Client, tiny_model_dir: Path, tmp_path: Path, hp: dict) -> None:
    job = run_job(
        client,
        {
            "type": "irft",
            "irft": {
                "hyperparameters": {
                    "n_epochs": 2,
                    "batch_size": 2,
                    "learning_rate": 1e-3,
                    "max_seq_len": 128,
                    "generation": GENERATION,
                    # the tiny model never stops within 8 tokens: train on its unfinished negatives
                    "truncated_negatives": "keep",
                    **hp,
                }
            },
        },
    )
    assert job["status"] == "succeeded", job
    names = metric_names(client, job["id"])
    assert names >= IRFT_METRICS, IRFT_METRICS - names
    events = [
        e["message"]
        for e in client.get(f"/fine_tuning/jobs/{job['id']}/events", params={"limit": 200}).json()["data"]
    ]
    assert sum("Outer iteration" in m for m in events) == hp["outer_iterations"], events
    final = client.get(f"/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"][0]
    model_dir = download(client, final, tmp_path)
    assert_every_weight_changed(model_dir, tiny_model_dir / "tiny-llama")
    AutoModelForCausalLM.from_pretrained(model_dir)


def test_rft_job(client: httpx.Client, tiny_model_dir: Path, tmp_path: Path) -> None:
    job = run_job(
        client,
        {
            "type": "rft",
            "rft": {
                "hyperparameters": {
                    "n_epochs": 1,
                    "batch_size": 2,
                    "learning_rate": 1e-3,
                    "max_seq_len": 128,
                    "samples_per_prompt": 2,
                    "reward_learning_rate": 1e-3,
                    "generation": {**GENERATION, "temperature": 1.0},
                }
            },
        },
    )
    assert job["status"] == "succeeded", job
    names = metric_names(client, job["id"])
    assert names >= RFT_METRICS, RFT_METRICS - names
    ckpts = client.get(f"/fine_tuning/jobs/{job['id']}/checkpoints", params={"limit": 100}).json()["data"]
    kinds = {c["kind"] for c in ckpts}
    assert kinds == {"model", "reward_model"}
    policy = next(c for c in ckpts if c["kind"] == "model")
    reward = next(
        c for c in ckpts if c["kind"] == "reward_model" and c["step_number"] == policy["step_number"]
    )
    assert reward["fine_tuned_model_checkpoint"].endswith(":reward-model")
    model_dir = download(client, policy, tmp_path / "policy")
    assert_every_weight_changed(model_dir, tiny_model_dir / "tiny-llama")
    rm_dir = download(client, reward, tmp_path / "rm")
    rm = AutoModelForSequenceClassification.from_pretrained(rm_dir)
    assert rm.config.num_labels == 1
    with torch.no_grad():
        score = rm(torch.tensor([[1, 5, 6, 3]])).logits
    assert score.shape == (1, 1) and torch.isfinite(score).all()


def test_reinforcement_job_through_the_sdk_and_a_cancel(prod: Deployment, tiny_model_dir: Path) -> None:
    """OpenAI's reinforcement method with nothing but base_url changed: files, the job with its grader,
    the graded series on the metrics API, the tuned model's checkpoint; then a second job cancelled."""
    import openai

    from tests.helpers import FUZZY_GRADER, prompts_jsonl, sdk_wait_finished

    sdk = openai.OpenAI(base_url=f"{prod.url}/v1", api_key=prod.new_key("rl-user"), max_retries=0)
    train = sdk.files.create(file=("prompts.jsonl", prompts_jsonl(8)), purpose="fine-tune")
    valid = sdk.files.create(file=("valid.jsonl", prompts_jsonl(4)), purpose="fine-tune")
    hp = {"n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 5.0, "eval_interval": 2}
    method = {
        "type": "reinforcement",
        "reinforcement": {
            "grader": FUZZY_GRADER,
            "hyperparameters": {**hp, "samples_per_prompt": 2, "generation": {"max_new_tokens": 6}},
        },
    }
    job = sdk.fine_tuning.jobs.create(
        model="tiny-llama", training_file=train.id, validation_file=valid.id, method=method, seed=3
    )
    done = sdk_wait_finished(sdk, job.id, timeout=300)
    assert done.status == "succeeded", done
    assert done.fine_tuned_model and done.method.reinforcement.grader.type == "text_similarity"
    client = prod.client(sdk.api_key)
    names = metric_names(client, job.id)
    wanted = {
        "train/reward",
        "train/pass_rate",
        "train/kl",
        "train/grader_seconds",
        "eval/reward",
        "eval/pass_rate",
    }
    assert names >= wanted, wanted - names
    evals = client.get(f"/fine_tuning/jobs/{job.id}/metrics", params={"names": "eval/reward"}).json()["data"]
    assert [p["step"] for p in evals] == [0, 2, 4, 6, 8]  # the starting model, then every 2 steps
    checkpoints = sdk.fine_tuning.jobs.checkpoints.list(job.id)
    assert [c.step_number for c in checkpoints.data] == [8, 4]

    second = sdk.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=train.id,
        method={**method, "reinforcement": {**method["reinforcement"], "hyperparameters": {"n_epochs": 50}}},
    )
    deadline = time.monotonic() + 120
    while (sdk.fine_tuning.jobs.retrieve(second.id).status != "running") and time.monotonic() < deadline:
        time.sleep(0.2)
    sdk.fine_tuning.jobs.cancel(second.id)
    assert sdk_wait_finished(sdk, second.id, timeout=120).status == "cancelled"
