"""The artifact store runs out of space, for real, twice: the store is a tmpfs mounted with a few
kilobytes, so writing a checkpoint fails with ENOSPC from the kernel. Each job fails with
error.code "storage_full" (no hang, no half-listed checkpoint); once the store has room again the same
worker trains the next job. (tests/api/test_storage_full.py covers the same path in-process.)"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Deployment, isolated_deployment
from tests.helpers import chat_jsonl, sft_job_body, upload, wait_status

pytestmark = pytest.mark.integration


@pytest.fixture()
def tiny_store(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "store"
    mount.mkdir()
    # 32 KiB: room for the uploaded training files, not for a checkpoint (its weights alone are ~130 KB)
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {out.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture()
def isolated(tmp_path: Path, tiny_store: Path, tiny_model_dir: Path) -> Iterator[Deployment]:
    with isolated_deployment(
        tmp_path / "home", f"file://{tiny_store}", tiny_model_dir, 1, "store-full"
    ) as dep:
        yield dep


def test_a_full_store_fails_jobs_as_storage_full_and_the_worker_serves_on(
    isolated: Deployment, tiny_store: Path
) -> None:
    dep = isolated
    client = dep.client(dep.new_key("disk"))
    worker = dep.start_worker(sweeper=True)
    train = upload(client, chat_jsonl(8))
    body = sft_job_body("tiny-llama", train["id"], n_epochs=1, batch_size=4, checkpoint_interval=1)
    for _ in range(2):
        job = client.post("/fine_tuning/jobs", json=body).json()
        done = wait_status(client, job["id"], {"succeeded", "failed", "cancelled"}, timeout=180)
        assert done["status"] == "failed", done
        assert done["error"]["code"] == "storage_full", done["error"]
        assert "full" in done["error"]["message"]
        assert client.get(f"/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"] == []
        events = client.get(f"/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
        assert any("could not be stored" in e["message"] for e in events)
        assert worker.proc.poll() is None
    subprocess.run(["mount", "-o", "remount,size=16m", str(tiny_store)], check=True)
    job = client.post("/fine_tuning/jobs", json=body).json()
    done = wait_status(client, job["id"], {"succeeded", "failed", "cancelled"}, timeout=180)
    assert done["status"] == "succeeded", done
    assert client.get(f"/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
    assert worker.proc.poll() is None and len(dep.workers) == 1
