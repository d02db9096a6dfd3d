"""Out of memory in the trainer, for real, twice: a worker whose address space is capped (a smaller
machine) gets jobs whose model cannot be fully fine-tuned in it; each fails with error.code "oom" and a message naming the
settings to lower, and the same worker goes on to train the next job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Deployment, isolated_deployment
from tests.helpers import chat_jsonl, sft_job_body, upload, wait_status

pytestmark = pytest.mark.integration

# The worker's parent and its pool child with torch loaded stay near 1.2 GB of address space. "wide-llama"
# has 150M parameters (a 147,456-token vocabulary, untied, hidden 512, one block): 0.6 GB of float32
# weights load under the cap, but full fine-tuning also needs their gradients and two AdamW moments
# (another 1.8 GB), so the allocator refuses the first step, whatever the host's RAM. (Activations
# cannot be the trigger any more: micro-batches are packed into forwards of at most 4,096 tokens.)
ADDRESS_SPACE = 3 * 2**30
WIDE_VOCAB = 147_456


def _wide_model(path: Path) -> Path:
    from trainer.testing import make_llama_dir

    shape = {"hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 1, "num_attention_heads": 8}
    return make_llama_dir(
        path, vocab_size=WIDE_VOCAB, max_position_embeddings=512, tie_word_embeddings=False, **shape
    )[0]


@pytest.fixture()
def isolated(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Deployment]:
    roots = tmp_path / "models"
    roots.mkdir()
    (roots / "tiny-llama").symlink_to(tiny_model_dir / "tiny-llama")
    _wide_model(roots / "wide-llama")
    with isolated_deployment(
        tmp_path / "home", f"file://{tmp_path / 'store'}", roots, 1, "out-of-memory"
    ) as dep:
        yield dep


def test_out_of_memory_fails_the_job_as_oom_and_the_worker_serves_on(isolated: Deployment) -> None:
    dep = isolated
    client = dep.client(dep.new_key("big-models"))
    worker = dep.start_worker(sweeper=True, address_space=ADDRESS_SPACE)
    data = upload(client, chat_jsonl(4))
    for _ in range(2):
        job = client.post("/fine_tuning/jobs", json=sft_job_body("wide-llama", data["id"], n_epochs=1)).json()
        done = wait_status(client, job["id"], {"succeeded", "failed", "cancelled"}, timeout=240)
        assert done["status"] == "failed", done
        assert done["error"]["code"] == "oom", done["error"]
        assert "ran out of memory" in done["error"]["message"]
        assert "enable LoRA" in done["error"]["message"]
        assert worker.proc.poll() is None  # the worker process is still up
    job = client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", data["id"])).json()
    done = wait_status(client, job["id"], {"succeeded", "failed", "cancelled"}, timeout=240)
    assert done["status"] == "succeeded", done
    assert worker.proc.poll() is None and len(dep.workers) == 1
