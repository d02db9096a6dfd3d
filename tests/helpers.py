"""Test data and polling helpers shared by the integration tests."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx

QA = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is two plus two?", "Two plus two is four."),
    ("Name a colour.", "Blue."),
    ("Translate to French: cat.", "Chat."),
    ("Hello there!", "I am fine, thank you."),
    ("Name a number.", "Seven."),
]


def chat_jsonl(n: int = 12) -> bytes:
    lines = []
    for i in range(n):
        q, a = QA[i % len(QA)]
        lines.append(
            json.dumps(
                {
                    "messages": [
                        {"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": q},
                        {"role": "assistant", "content": a},
                    ]
                }
            )
        )
    return ("\n".join(lines) + "\n").encode()


def preference_jsonl(n: int = 4) -> bytes:
    lines = [json.dumps({"prompt": q, "chosen": a, "rejected": "I do not know."}) for q, a in QA[:n]]
    return ("\n".join(lines) + "\n").encode()


def prompts_jsonl(n: int = 12) -> bytes:
    """OpenAI's reinforcement lines: a user prompt and the key its grader reads (`item.answer`)."""
    lines = [
        json.dumps({"messages": [{"role": "user", "content": q}], "answer": a.rstrip(".").split()[-1]})
        for q, a in (QA[i % len(QA)] for i in range(n))
    ]
    return ("\n".join(lines) + "\n").encode()


# The reinforcement tests' grader: how close the answer is to the item's word (never all-equal rewards
# on a tiny random model, so every step has something to learn)
FUZZY_GRADER = {
    "type": "text_similarity",
    "name": "close",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "evaluation_metric": "fuzzy_match",
    "pass_threshold": 0.5,
}


def reinforcement_job_body(model: str, training_file: str, **hp: Any) -> dict[str, Any]:
    hyper = {"n_epochs": 2, "batch_size": 2, "learning_rate": 1e-3, "max_seq_len": 128, **hp}
    hyper.setdefault("generation", {"max_new_tokens": 6})
    return {
        "model": model,
        "training_file": training_file,
        "seed": 7,
        "suffix": "test",
        "method": {
            "type": "reinforcement",
            "reinforcement": {"grader": dict(FUZZY_GRADER), "hyperparameters": hyper},
        },
    }


def upload(client: httpx.Client, data: bytes, name: str = "train.jsonl") -> dict[str, Any]:
    r = client.post(
        "/files", files={"file": (name, data, "application/jsonl")}, data={"purpose": "fine-tune"}
    )
    assert r.status_code == 200, r.text
    return r.json()


def sft_job_body(model: str, training_file: str, **hp: Any) -> dict[str, Any]:
    hyper = {"n_epochs": 2, "batch_size": 4, "learning_rate": 1e-3, "max_seq_len": 128, **hp}
    return {
        "model": model,
        "training_file": training_file,
        "seed": 7,
        "suffix": "test",
        "method": {"type": "sft", "sft": {"hyperparameters": hyper}},
    }


FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


def wait_status(client: httpx.Client, job_id: str, wanted: set[str], timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/fine_tuning/jobs/{job_id}").json()
        if job["status"] in wanted:
            return job
        time.sleep(0.5)
    events = client.get(f"/fine_tuning/jobs/{job_id}/events", params={"limit": 50}).json()
    raise AssertionError(f"job stuck in {job.get('status')}: {json.dumps(events)[:3000]}")


def sdk_wait_finished(client: Any, job_id: str, timeout: float = 240) -> Any:
    """The job, through the `openai` SDK, once it has ended (succeeded, failed or cancelled)."""
    deadline = time.monotonic() + timeout
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status not in FINAL_STATUSES:
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    return job


def extract_tar(data: bytes, dest: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    (top,) = list(dest.iterdir())
    return top


def run_async(coro: Any) -> Any:
    """`asyncio.run(coro)` in a thread of its own: a test may run while another test's event loop is
    still running in the main thread (Playwright's sync API leaves one there), and asyncio.run refuses
    to start inside a running loop."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
