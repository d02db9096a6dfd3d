"""The job object's `latest_metrics`, written by the worker's real ServiceSink into the app's SQLite."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers import sft_job_body


@pytest.fixture()
def job_id(client: TestClient, train_file: dict) -> str:
    r = client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train_file["id"]))
    assert r.status_code == 200, r.text
    assert r.json()["latest_metrics"] is None  # nothing logged yet
    return r.json()["id"]


def new_sink(job_id: str):
    """A sink as one worker attempt builds it (its lease thread is not started: no heartbeats needed)."""
    from api.core.config import get_settings
    from api.storage import get_store
    from worker.sinks import Lease, ServiceSink

    scratch = Path(tempfile.mkdtemp(prefix="sink-"))
    return ServiceSink(job_id, Lease(job_id, "test-worker", get_settings()), get_store(), scratch)


def test_latest_value_of_each_series_is_on_the_job(client: TestClient, job_id: str) -> None:
    sink = new_sink(job_id)
    sink.log_metrics(1, {"train/loss": 3.0, "train/lr": 1e-4})
    sink.log_metrics(2, {"train/loss": 2.5, "train/lr": 2e-4})
    sink.log_metrics(2, {"eval/loss": 2.7})
    sink.log_metrics(3, {"train/loss": math.nan, "train/lr": 3e-4})  # a NaN never replaces a value
    job = client.get(f"/fine_tuning/jobs/{job_id}").json()
    assert job["latest_metrics"] == {"train/loss": 2.5, "train/lr": 3e-4, "eval/loss": 2.7}
    assert job["progress"]["step"] == 3
    listed = client.get("/fine_tuning/jobs").json()["data"][0]
    assert listed["latest_metrics"] == job["latest_metrics"]


def test_a_resumed_attempt_keeps_series_it_has_not_logged_again(client: TestClient, job_id: str) -> None:
    first = new_sink(job_id)
    first.log_metrics(4, {"train/loss": 2.0})
    first.log_metrics(4, {"eval/loss": 2.2})
    second = new_sink(job_id)  # the next attempt, seeded from the job row
    second.log_metrics(5, {"train/loss": 1.5})
    job = client.get(f"/fine_tuning/jobs/{job_id}").json()
    assert job["latest_metrics"] == {"train/loss": 1.5, "eval/loss": 2.2}


def test_metric_seqs_are_never_reused_after_a_resume_deletes_rows(client: TestClient, job_id: str) -> None:
    """A live follower resumes after the last seq it saw; SQLite must not hand a replayed step an old seq."""
    from sqlalchemy import delete

    from api.db.session import session_scope
    from api.db.tables import JobMetric

    sink = new_sink(job_id)
    for step in (1, 2, 3):
        sink.log_metrics(step, {"train/loss": 3.0 - step})
    seen = client.get(f"/fine_tuning/jobs/{job_id}/metrics").json()["next_after_seq"]
    with session_scope() as s:  # what a resume from the step-1 checkpoint does (worker/runner.py)
        s.execute(delete(JobMetric).where(JobMetric.job_id == job_id, JobMetric.step > 1))
    new_sink(job_id).log_metrics(2, {"train/loss": 0.5})
    page = client.get(f"/fine_tuning/jobs/{job_id}/metrics", params={"after_seq": seen}).json()
    assert [(p["step"], p["values"]["train/loss"]) for p in page["data"]] == [(2, 0.5)]


def test_the_trainers_own_step_count_becomes_the_progress_total(client: TestClient, job_id: str) -> None:
    """The worker's estimate counts uploaded rows; the trainer's "Training for N steps" event counts the
    examples it kept, and that total replaces the estimate."""
    sink = new_sink(job_id)
    sink.log_event("Training for 7 steps (7 per epoch)", data={"total_steps": 7, "steps_per_epoch": 7})
    assert client.get(f"/fine_tuning/jobs/{job_id}").json()["progress"]["total_steps"] == 7
    sink.log_event("Loaded 3 examples", data={"total_steps": "not a count"})  # only an int counts
    assert client.get(f"/fine_tuning/jobs/{job_id}").json()["progress"]["total_steps"] == 7
