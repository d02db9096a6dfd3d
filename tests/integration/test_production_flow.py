"""The whole service on Postgres + Redis + an fsspec store, over real HTTP, with a real worker process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import Deployment
from tests.helpers import chat_jsonl, extract_tar, preference_jsonl, sft_job_body, upload, wait_status

pytestmark = pytest.mark.integration

METRICS = {
    "train/loss",
    "train/lr",
    "train/grad_norm",
    "train/tokens_per_s",
    "train/token_accuracy",
    "eval/loss",
    "eval/token_accuracy",
}


@pytest.fixture(scope="module")
def tenant(prod: Deployment) -> httpx.Client:
    return prod.client(prod.new_key("acme"))


@pytest.fixture(scope="module")
def finished_job(prod: Deployment, tenant: httpx.Client) -> dict:
    train = upload(tenant, chat_jsonl(12))
    val = upload(tenant, preference_jsonl(4), "val.jsonl")
    body = sft_job_body("tiny-llama", train["id"], checkpoint_interval=3)
    body["validation_file"] = val["id"]
    r = tenant.post("/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "queued" and job["object"] == "fine_tuning.job"
    return wait_status(tenant, job["id"], {"succeeded", "failed", "cancelled"})


def test_job_trains_to_succeeded(finished_job: dict) -> None:
    assert finished_job["status"] == "succeeded", finished_job
    assert finished_job["error"] is None
    assert finished_job["fine_tuned_model"].startswith("ft:tiny-llama:acme:test:")
    assert finished_job["trained_tokens"] > 0
    assert finished_job["finished_at"] >= finished_job["created_at"]
    assert finished_job["hyperparameters"] == {
        "n_epochs": 2,
        "batch_size": 4,
        "learning_rate_multiplier": pytest.approx(1e-3 / 2e-5),
    }


def test_metrics_series_are_recorded(tenant: httpx.Client, finished_job: dict) -> None:
    page = tenant.get(f"/fine_tuning/jobs/{finished_job['id']}/metrics").json()
    assert set(page["names"]) >= METRICS, page["names"]
    train_steps = [p["step"] for p in page["data"] if "train/loss" in p["values"]]
    assert train_steps == list(range(1, 7))  # 12 examples / batch 4 = 3 steps x 2 epochs
    assert all(p["values"]["train/loss"] > 0 for p in page["data"] if "train/loss" in p["values"])
    only_loss = tenant.get(
        f"/fine_tuning/jobs/{finished_job['id']}/metrics", params={"names": "train/loss"}
    ).json()
    assert only_loss["names"] == ["train/loss"] and len(only_loss["data"]) == 6


def test_latest_metrics_and_series_on_postgres(tenant: httpx.Client, finished_job: dict) -> None:
    url = f"/fine_tuning/jobs/{finished_job['id']}/metrics"
    losses = tenant.get(url, params={"names": "train/loss"}).json()["data"]
    assert finished_job["latest_metrics"]["train/loss"] == losses[-1]["values"]["train/loss"]
    series = tenant.get(f"{url}/series").json()
    assert series["last_seq"] == tenant.get(url).json()["data"][-1]["seq"]
    assert series["series"]["train/loss"]["step"] == [p["step"] for p in losses]
    assert series["series"]["train/loss"]["value"][-1] == finished_job["latest_metrics"]["train/loss"]


def test_events_page_newest_first(tenant: httpx.Client, finished_job: dict) -> None:
    url = f"/fine_tuning/jobs/{finished_job['id']}/events"
    everything = tenant.get(url, params={"limit": 100}).json()["data"]
    messages = [e["message"] for e in everything]
    assert messages[0] == "The job has successfully completed."
    assert messages[-1].startswith("Created fine-tuning job")
    assert any(m.startswith("Checkpoint saved at step") for m in messages)
    # cursor pagination walks the same sequence two at a time
    walked, after = [], None
    while True:
        page = tenant.get(url, params={"limit": 2, **({"after": after} if after else {})}).json()
        walked += page["data"]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert [e["id"] for e in walked] == [e["id"] for e in everything]


def test_checkpoint_download_loads_with_transformers(
    tenant: httpx.Client, finished_job: dict, tmp_path: Path
) -> None:
    page = tenant.get(f"/fine_tuning/jobs/{finished_job['id']}/checkpoints").json()
    steps = [c["step_number"] for c in page["data"]]
    assert steps == [6, 3], steps  # newest first; interval 3, final step 6
    final = page["data"][0]
    assert final["fine_tuned_model_checkpoint"] == f"{finished_job['fine_tuned_model']}:ckpt-step-6"
    assert "train_loss" in final["metrics"]
    r = tenant.get(final["download_url"].removeprefix("/v1"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    assert int(r.headers["content-length"]) == len(r.content)
    model_dir = extract_tar(r.content, tmp_path)
    names = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "juice_training_config.json"} <= names, (
        names
    )
    assert json.loads((model_dir / "juice_training_config.json").read_text())["seed"] == 7
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Name a colour."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_sse_stream_replays_metrics_and_ends(
    prod: Deployment, tenant: httpx.Client, finished_job: dict
) -> None:
    events: list[tuple[str, str]] = []
    with tenant.stream("GET", f"/fine_tuning/jobs/{finished_job['id']}/metrics/stream") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                events.append((kind, line[6:]))
                if kind == "end":
                    break
    kinds = [k for k, _ in events]
    assert kinds[-1] == "end" and json.loads(events[-1][1]) == {"status": "succeeded"}
    metric_steps = [json.loads(d)["step"] for k, d in events if k == "metric"]
    assert len(metric_steps) >= 6 and metric_steps == sorted(metric_steps)


def test_cancel_running_job(prod: Deployment, tenant: httpx.Client) -> None:
    train = upload(tenant, chat_jsonl(24))
    r = tenant.post(
        "/fine_tuning/jobs", json=sft_job_body("tiny-llama", train["id"], n_epochs=50, batch_size=1)
    )
    job_id = r.json()["id"]
    wait_status(tenant, job_id, {"running"}, timeout=120)
    deadline = time.monotonic() + 60  # wait for training proper to begin
    while not tenant.get(f"/fine_tuning/jobs/{job_id}/metrics", params={"limit": 1}).json()["data"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    t0 = time.monotonic()
    r = tenant.post(f"/fine_tuning/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    job = wait_status(tenant, job_id, {"cancelled", "succeeded", "failed"}, timeout=30)
    assert job["status"] == "cancelled"
    assert time.monotonic() - t0 < 15
    again = tenant.post(f"/fine_tuning/jobs/{job_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_not_cancellable"
    assert again.headers["x-should-retry"] == "false"


def test_tenant_isolation(prod: Deployment, tenant: httpx.Client, finished_job: dict) -> None:
    other = prod.client(prod.new_key("globex"))
    job_id = finished_job["id"]
    ckpt = tenant.get(f"/fine_tuning/jobs/{job_id}/checkpoints").json()["data"][0]
    for path in (
        f"/fine_tuning/jobs/{job_id}",
        f"/fine_tuning/jobs/{job_id}/events",
        f"/fine_tuning/jobs/{job_id}/checkpoints",
        f"/fine_tuning/jobs/{job_id}/metrics",
        ckpt["download_url"].removeprefix("/v1"),
        f"/files/{finished_job['training_file']}",
        f"/files/{finished_job['training_file']}/content",
    ):
        r = other.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert r.json()["error"]["type"] == "invalid_request_error"
    assert other.post(f"/fine_tuning/jobs/{job_id}/cancel").status_code == 404
    assert other.get("/fine_tuning/jobs").json()["data"] == []
    assert job_id not in [f["id"] for f in other.get("/files").json()["data"]]
    # another tenant's file cannot be trained on
    r = other.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", finished_job["training_file"]))
    assert r.status_code == 404 and r.json()["error"]["param"] == "training_file"


def test_idempotency_key(prod: Deployment, tenant: httpx.Client) -> None:
    train = upload(tenant, chat_jsonl(4))
    body = sft_job_body("tiny-llama", train["id"], n_epochs=1)
    first = tenant.post("/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "abc-1"})
    second = tenant.post("/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "abc-1"})
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    body["seed"] = 8
    third = tenant.post("/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "abc-1"})
    assert third.status_code == 409 and third.json()["error"]["code"] == "idempotency_key_reused"
    wait_status(tenant, first.json()["id"], {"succeeded"})


def test_unreachable_hub_model_fails_with_model_error(tenant: httpx.Client) -> None:
    train = upload(tenant, chat_jsonl(4))
    r = tenant.post("/fine_tuning/jobs", json=sft_job_body("nobody/no-such-model", train["id"], n_epochs=1))
    job = wait_status(tenant, r.json()["id"], {"failed", "succeeded"})
    assert job["status"] == "failed"
    assert job["error"]["code"] == "model_not_found" and job["error"]["param"] == "model"


def test_sse_follows_a_live_job(tenant: httpx.Client) -> None:
    train = upload(tenant, chat_jsonl(8))
    job = tenant.post(
        "/fine_tuning/jobs", json=sft_job_body("tiny-llama", train["id"], n_epochs=4, batch_size=2)
    ).json()
    statuses, steps = [], []
    with tenant.stream("GET", f"/fine_tuning/jobs/{job['id']}/metrics/stream") as r:
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "status":
                statuses.append(json.loads(line[6:])["status"])
            elif line.startswith("data: ") and kind == "metric":
                point = json.loads(line[6:])
                if "train/loss" in point["values"]:
                    steps.append(point["step"])
            elif line.startswith("data: ") and kind == "end":
                break
    assert statuses[0] in ("queued", "running") and "running" in statuses
    assert statuses[-1] == "succeeded"
    assert steps == list(range(1, 17))  # 8 examples / batch 2 x 4 epochs, each step once, in order
