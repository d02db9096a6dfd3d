"""An artifact store that is full (ENOSPC) when the final checkpoint goes up: the job fails with
`storage_full` instead of "succeeding" without its tuned model, and the same worker process goes on
to run the next job. The store is the one thing faked here (a full disk cannot be made on demand
without privileges); the job, the database, the trainer and run_job are real."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers import sft_job_body


class FullStore:
    """The real store, except that every upload fails as a full disk does."""

    def __init__(self, real) -> None:
        self.real = real

    def put_dir(self, local_dir: Path, key: str, last: str | None = None) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str):
        return getattr(self.real, name)


def test_a_full_store_fails_the_job_with_storage_full_and_the_worker_serves_on(
    client: TestClient, train_file: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.storage import get_store
    from worker import runner

    real = get_store()
    monkeypatch.setattr(runner, "get_store", lambda: FullStore(real))
    body = sft_job_body("tiny-llama", train_file["id"], n_epochs=1, batch_size=5)
    first = client.post("/fine_tuning/jobs", json=body).json()
    assert runner.run_job(first["id"]) == "failed"
    job = client.get(f"/fine_tuning/jobs/{first['id']}").json()
    assert job["status"] == "failed" and job["fine_tuned_model"] is None
    assert job["error"]["code"] == "storage_full", job["error"]
    assert "final checkpoint" in job["error"]["message"] and "full" in job["error"]["message"]
    assert client.get(f"/fine_tuning/jobs/{first['id']}/checkpoints").json()["data"] == []

    monkeypatch.setattr(runner, "get_store", lambda: real)  # space again: the next job runs normally
    second = client.post("/fine_tuning/jobs", json=body).json()
    assert runner.run_job(second["id"]) == "succeeded"
    assert client.get(f"/fine_tuning/jobs/{second['id']}/checkpoints").json()["data"]
