"""A worker SIGKILLed while a checkpoint is half uploaded, twice in one job: the half-written folder
is never listed, downloaded or resumed from; the job resumes from the newest complete checkpoint and
succeeds, and every checkpoint it lists downloads whole.

The store is made slow (tests/faults/sitecustomize.py: each file of one chosen checkpoint after the
first takes seconds more to write), so the kill lands mid-upload every time; the kill is real."""

from __future__ import annotations

import io
import signal
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, Deployment, isolated_deployment
from tests.helpers import chat_jsonl, sft_job_body, upload, wait_status

pytestmark = pytest.mark.integration


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture()
def isolated(tmp_path: Path, store: Path, tiny_model_dir: Path) -> Iterator[Deployment]:
    with isolated_deployment(tmp_path / "home", f"file://{store}", tiny_model_dir, 1, "upload-killed") as dep:
        yield dep


def _listed(client, job_id: str) -> list[dict]:
    return client.get(f"/fine_tuning/jobs/{job_id}/checkpoints", params={"limit": 100}).json()["data"]


def test_a_checkpoint_upload_killed_half_way_is_never_used(isolated: Deployment, store: Path) -> None:
    dep = isolated
    client = dep.client(dep.new_key("uploads"))
    train = upload(client, chat_jsonl(16))
    # 8 steps per epoch, 4 epochs = 32 steps, a checkpoint every 4 steps.
    body = sft_job_body("tiny-llama", train["id"], n_epochs=4, batch_size=2, checkpoint_interval=4)
    job = client.post("/fine_tuning/jobs", json=body).json()
    folder = store / "jobs" / job["id"] / "checkpoints"
    slow = {"PYTHONPATH": str(REPO / "tests" / "faults"), "JUICE_TEST_SLOW_UPLOAD_S": "30"}
    for cut in (8, 20):
        name = f"step_{cut:08d}"
        worker = dep.start_worker(sweeper=True, JUICE_TEST_SLOW_UPLOAD=name, **slow)
        partial = folder / name
        deadline = time.monotonic() + 180
        while not (partial.is_dir() and any(partial.rglob("*"))):
            assert time.monotonic() < deadline, f"the upload of {name} never started"
            time.sleep(0.05)
        worker.stop(sig=signal.SIGKILL)
        assert not (partial / "manifest.json").exists()  # half written: some files, no manifest
        listed = [c["step_number"] for c in _listed(client, job["id"])]
        assert cut not in listed and listed and max(listed) == cut - 4, listed
    # The sweeper of the next worker re-queues the job; it resumes from the newest complete checkpoint.
    dep.start_worker(sweeper=True)
    done = wait_status(client, job["id"], {"succeeded", "failed", "cancelled"}, timeout=300)
    assert done["status"] == "succeeded", done
    events = client.get(f"/fine_tuning/jobs/{job['id']}/events", params={"limit": 500}).json()["data"]
    resumed = [e["message"] for e in events if e["message"].startswith("Resuming from the checkpoint")]
    assert sorted(resumed) == [
        "Resuming from the checkpoint at step 16.",
        "Resuming from the checkpoint at step 4.",
    ]
    metrics = client.get(f"/fine_tuning/jobs/{job['id']}/metrics", params={"names": "train/loss"}).json()
    steps = Counter(p["step"] for p in metrics["data"])
    assert sorted(steps) == list(range(1, 33)) and set(steps.values()) == {1}
    listed = _listed(client, job["id"])
    assert [c["step_number"] for c in listed] == list(range(32, 0, -4))
    for ckpt in listed:  # the two steps cut half-way were written again, whole
        r = client.get(f"/fine_tuning/jobs/{job['id']}/checkpoints/{ckpt['id']}/content")
        assert r.status_code == 200, r.text
        with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
            names = {Path(m.name).name: m.size for m in tar.getmembers()}
        assert names.get("model.safetensors", 0) > 0 and "config.json" in names, names
        step_folder = folder / f"step_{ckpt['step_number']:08d}"
        assert (step_folder / "manifest.json").is_file()
        stored = (step_folder / "model" / "model.safetensors").stat().st_size
        assert names["model.safetensors"] == stored
