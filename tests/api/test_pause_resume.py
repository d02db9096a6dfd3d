"""OpenAI's pause and resume, for every method, on the real app, database, trainer and run_job (the
job runs in a thread, as in a worker): a running job paused mid-run checkpoints at the step it is on,
frees its worker and is `paused`; resumed, it is `queued` again under the same id and continues from
that very step, so its metric series has every step exactly once. Plus the verbs' other cases."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import (
    chat_jsonl,
    preference_jsonl,
    prompts_jsonl,
    reinforcement_job_body,
    sft_job_body,
    upload,
)


@pytest.fixture()
def fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUICE_CANCEL_POLL_INTERVAL_S", "0.1")  # the lease reads the pause flag this often


def _body(method: str, client: TestClient) -> dict[str, Any]:
    if method == "reinforcement":
        train = upload(client, prompts_jsonl(12), "prompts.jsonl")
        hp = {"n_epochs": 4, "batch_size": 2, "checkpoint_interval": 1000, "samples_per_prompt": 2}
        return reinforcement_job_body("tiny-llama", train["id"], **hp)
    if method == "dpo":
        train = upload(client, preference_jsonl(12), "pairs.jsonl")
    else:
        train = upload(client, chat_jsonl(12))
    hp: dict[str, Any] = {"n_epochs": 8, "batch_size": 2, "checkpoint_interval": 1000}
    if method == "irft":
        hp.update(outer_iterations=2, generation={"max_new_tokens": 6})
    if method == "rft":
        hp.update(samples_per_prompt=2, generation={"max_new_tokens": 6}, n_epochs=2)
    body = sft_job_body("tiny-llama", train["id"], **hp)
    if method != "sft":
        body["method"] = {
            "type": method,
            method: {"hyperparameters": body["method"]["sft"]["hyperparameters"]},
        }
    return body


def _run_in_background(job_id: str) -> tuple[threading.Thread, list[str]]:
    from worker.runner import run_job

    out: list[str] = []
    thread = threading.Thread(target=lambda: out.append(run_job(job_id)), daemon=True)
    thread.start()
    return thread, out


def _wait_step(client: TestClient, job_id: str, at_least: int, thread: threading.Thread) -> int:
    deadline = time.monotonic() + 120
    while True:
        step = client.get(f"/fine_tuning/jobs/{job_id}").json()["progress"]["step"] or 0
        if step >= at_least:
            return step
        assert thread.is_alive(), "the job ended before it could be paused"
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize("method", ["sft", "irft", "rft", "dpo", "iql", "reinforcement"])
def test_pause_mid_run_then_resume_continues_at_the_paused_step(
    fast_poll: None, client: TestClient, method: str
) -> None:
    from worker.runner import run_job

    job = client.post("/fine_tuning/jobs", json=_body(method, client)).json()
    thread, status = _run_in_background(job["id"])
    reached = _wait_step(client, job["id"], 2, thread)
    paused = client.post(f"/fine_tuning/jobs/{job['id']}/pause")
    assert paused.status_code == 200 and paused.json()["pause_requested"] is True
    assert client.post(f"/fine_tuning/jobs/{job['id']}/pause").status_code == 200  # idempotent
    thread.join(timeout=120)
    assert status == ["paused"]
    now = client.get(f"/fine_tuning/jobs/{job['id']}").json()
    assert now["status"] == "paused" and now["pause_requested"] is False, now
    ckpts = client.get(f"/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
    steps_stored = {c["step_number"] for c in ckpts}  # RFT lists its reward model's row of the step too
    at = ckpts[0]["step_number"]
    total = now["progress"]["total_steps"]
    assert steps_stored == {at} and reached <= at < total
    assert run_job(job["id"]) == "skipped"  # a paused job's stale message is dropped, not run

    resumed = client.post(f"/fine_tuning/jobs/{job['id']}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    assert run_job(job["id"]) == "succeeded"
    done = client.get(f"/fine_tuning/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and done["id"] == job["id"] and done["attempt"] == 2
    events = [
        e["message"]
        for e in client.get(f"/fine_tuning/jobs/{job['id']}/events", params={"limit": 500}).json()["data"]
    ]
    assert f"Job paused at step {at} (checkpointed); resume it to continue from there." in events
    assert f"Resuming from the checkpoint at step {at}." in events
    loss = "train/loss"
    steps = Counter(
        p["step"]
        for p in client.get(f"/fine_tuning/jobs/{job['id']}/metrics", params={"names": loss}).json()["data"]
    )
    assert sorted(steps) == list(range(1, total + 1)) and set(steps.values()) == {1}


def test_a_queued_job_pauses_at_once_resumes_and_cancels(client: TestClient, train_file: dict) -> None:
    job = client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train_file["id"])).json()
    r = client.post(f"/fine_tuning/jobs/{job['id']}/pause")
    assert r.status_code == 200 and r.json()["status"] == "paused"
    assert client.get("/fine_tuning/jobs", params={"status": "paused"}).json()["data"][0]["id"] == job["id"]
    r = client.post(f"/fine_tuning/jobs/{job['id']}/resume")
    assert r.status_code == 200 and r.json()["status"] == "queued"
    r = client.post(f"/fine_tuning/jobs/{job['id']}/resume")
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_resumable"
    client.post(f"/fine_tuning/jobs/{job['id']}/pause")
    r = client.post(f"/fine_tuning/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = client.post(f"/fine_tuning/jobs/{job['id']}/pause")
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_pausable"
    assert "cancelled" in r.json()["error"]["message"]


def test_pause_and_resume_are_tenant_scoped(client: TestClient, train_file: dict) -> None:
    from tests.api.conftest import make_key

    job = client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train_file["id"])).json()
    other = {"Authorization": f"Bearer {make_key('intruder')}"}
    for verb in ("pause", "resume"):
        r = client.post(f"/fine_tuning/jobs/{job['id']}/{verb}", headers=other)
        assert r.status_code == 404, r.text
    assert client.get(f"/fine_tuning/jobs/{job['id']}").json()["status"] == "queued"


def test_resume_counts_against_the_queued_cap(
    monkeypatch: pytest.MonkeyPatch, client: TestClient, train_file: dict
) -> None:
    from api.core.config import get_settings

    monkeypatch.setenv("JUICE_MAX_QUEUED_JOBS_PER_TENANT", "1")
    get_settings.cache_clear()
    first = client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train_file["id"])).json()
    client.post(f"/fine_tuning/jobs/{first['id']}/pause")  # paused: no longer queued
    assert (
        client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train_file["id"])).status_code == 200
    )
    r = client.post(f"/fine_tuning/jobs/{first['id']}/resume")  # would make two queued
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_queued_jobs", r.text
    assert client.get(f"/fine_tuning/jobs/{first['id']}").json()["status"] == "paused"
