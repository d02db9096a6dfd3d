"""Out of memory in the trainer, for real, twice: a worker whose address space is capped (a smaller
machine) gets jobs whose batch cannot fit; each fails with error.code "oom" and a message naming the
settings to lower, and the same worker goes on to train the next job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Deployment, isolated_deployment
from tests.helpers import chat_jsonl, sft_job_body, upload, wait_status

pytestmark = pytest.mark.integration

# The worker's parent, its pool child with torch loaded and a small job stay near 1.2 GB of address
# space; one step on 256 rows of 2,048 tokens needs more than 3 GB (logits, their log-softmax and
# gradients), so the allocator refuses it, whatever the host's RAM.
ADDRESS_SPACE = 3 * 2**30


@pytest.fixture()
def isolated(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Deployment]:
    with isolated_deployment(
        tmp_path / "home", f"file://{tmp_path / 'store'}", tiny_model_dir, 10, "out-of-memory"
    ) as dep:
        yield dep


def _long_rows(n: int, words: int) -> bytes:
    text = " ".join(f"word{i}" for i in range(words))
    row = {"messages": [{"role": "user", "content": "Count."}, {"role": "assistant", "content": text}]}
    return ("\n".join(json.dumps(row) for _ in range(n)) + "\n").encode()


@pytest.mark.xfail(
    reason="since 2026-12-01 the trainer splits a micro-batch into packs of at most 4,096 tokens "
    "(trainer/packing.py) and computes logits on labelled positions only, so this batch no longer "
    "runs out of memory under the 3 GB cap; the test needs a workload that still does (issue 12 note)",
    strict=False,
)
def test_out_of_memory_fails_the_job_as_oom_and_the_worker_serves_on(isolated: Deployment) -> None:
    dep = isolated
    client = dep.client(dep.new_key("big-batches"))
    worker = dep.start_worker(sweeper=True, address_space=ADDRESS_SPACE)
    big = upload(client, _long_rows(256, 500), "big.jsonl")
    for _ in range(2):
        body = sft_job_body("tiny-llama", big["id"], n_epochs=1, batch_size=256, max_seq_len=2048)
        job = client.post("/fine_tuning/jobs", json=body).json()
        done = wait_status(client, job["id"], {"succeeded", "failed", "cancelled"}, timeout=240)
        assert done["status"] == "failed", done
        assert done["error"]["code"] == "oom", done["error"]
        assert "ran out of memory" in done["error"]["message"]
        assert "batch_size" in done["error"]["message"]
        assert worker.proc.poll() is None  # the worker process is still up
    small = upload(client, chat_jsonl(8))
    job = client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", small["id"])).json()
    done = wait_status(client, job["id"], {"succeeded", "failed", "cancelled"}, timeout=240)
    assert done["status"] == "succeeded", done
    assert worker.proc.poll() is None and len(dep.workers) == 1
