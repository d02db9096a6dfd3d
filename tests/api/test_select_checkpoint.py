"""select_checkpoint on the service side, with the real app, worker (`run_job`), trainer and store:
`best_eval_loss` needs a validation file (400 naming the field, every method); the step the trainer
selects is recorded on the job (`selected_step`); and the fine-tuned model is that step's checkpoint,
not the newest, wherever the name is used: chat (through a real `juice inference` server) and a job
that starts from it. A selected checkpoint that is no longer stored is an error, never another one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import clear_caches, make_key
from tests.api.live import inference_app, live_server
from tests.api.test_fine_tuned_base import _run
from tests.api.test_storage_full import FullStore
from tests.conftest import free_port
from tests.helpers import chat_jsonl, preference_jsonl, sft_job_body, upload

ASK = [{"role": "user", "content": "Name a colour."}]


@pytest.mark.parametrize("method_type", ["sft", "supervised", "irft", "rft", "dpo", "iql"])
def test_best_eval_loss_needs_a_validation_file(client: TestClient, method_type: str) -> None:
    data = preference_jsonl(4) if method_type == "dpo" else chat_jsonl(4)
    train = upload(client, data)
    body = {
        "model": "tiny-llama",
        "training_file": train["id"],
        "method": {
            "type": method_type,
            method_type: {"hyperparameters": {"select_checkpoint": "best_eval_loss"}},
        },
    }
    r = client.post("/fine_tuning/jobs", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == (
        "invalid_value",
        f"method.{method_type}.hyperparameters.select_checkpoint",
    )
    assert "validation_file" in err["message"] and "best_eval_loss" in err["message"]

    validation = upload(client, data, "validation.jsonl")
    ok = client.post("/fine_tuning/jobs", json={**body, "validation_file": validation["id"]})
    assert ok.status_code == 200, ok.text
    job = ok.json()
    assert job["method"][method_type]["hyperparameters"]["select_checkpoint"] == "best_eval_loss"
    assert job["selected_step"] is None  # nothing is selected before the job has run
    # "last" (the default) needs no validation file
    last = {
        **body,
        "method": {"type": method_type, method_type: {"hyperparameters": {"select_checkpoint": "last"}}},
    }
    assert client.post("/fine_tuning/jobs", json=last).status_code == 200


def test_openais_top_level_hyperparameters_cannot_select(client: TestClient, train_file: dict) -> None:
    """The deprecated top-level block is OpenAI's three fields; a selection there is refused by name."""
    body = {
        "model": "tiny-llama",
        "training_file": train_file["id"],
        "hyperparameters": {"select_checkpoint": "best_eval_loss"},
    }
    r = client.post("/fine_tuning/jobs", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "hyperparameters.select_checkpoint"


@pytest.fixture()
def inference(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real `juice inference` server on a free port of this home, which the API forwards chat to."""
    monkeypatch.setenv("JUICE_INFERENCE_PORT", str(free_port()))
    clear_caches()
    with live_server(inference_app()) as url:
        yield url


# Two epochs of 8 examples at batch 4: the job's final step. (A third epoch at this rate lets the loss
# fall back below its early minimum on some CPUs, and the run must end above it.)
FINAL_STEP = 4


def _best_eval_loss_body(client: TestClient) -> dict:
    """A best_eval_loss job whose lowest eval/loss comes mid-run (a constant, too-high learning rate
    makes the loss climb after it), evaluated at every step and checkpointed every second one."""
    train = upload(client, chat_jsonl(8))
    validation = upload(client, chat_jsonl(6), "validation.jsonl")
    hp = {
        "n_epochs": 2,
        "learning_rate": 0.3,
        "lr_scheduler_type": "constant",
        "eval_interval": 1,
        "checkpoint_interval": 2,
        "select_checkpoint": "best_eval_loss",
    }
    return {**sft_job_body("tiny-llama", train["id"], **hp), "validation_file": validation["id"]}


@pytest.fixture()
def selected(client: TestClient) -> tuple[dict, str]:
    """That job, succeeded, and its validation file's id."""
    body = _best_eval_loss_body(client)
    return _run(client, body), body["validation_file"]


def _run_to_end(client: TestClient, body: dict) -> dict:
    from worker.runner import run_job

    r = client.post("/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    run_job(r.json()["id"])
    return client.get(f"/fine_tuning/jobs/{r.json()['id']}").json()


def _eval_losses(client: TestClient, job_id: str) -> dict[int, float]:
    data = client.get(f"/fine_tuning/jobs/{job_id}/metrics", params={"names": "eval/loss"}).json()["data"]
    return {row["step"]: row["values"]["eval/loss"] for row in data}


def _model_checkpoints(client: TestClient, job_id: str) -> dict[int, dict]:
    page = client.get(
        f"/fine_tuning/jobs/{job_id}/checkpoints", params={"kind": "model", "limit": 100}
    ).json()
    return {c["step_number"]: c for c in page["data"]}


def _storage_path(job_id: str, step: int) -> str:
    from sqlalchemy import select

    from api.db.session import session_scope
    from api.db.tables import Checkpoint

    with session_scope() as s:
        return s.scalars(
            select(Checkpoint.storage_path).where(
                Checkpoint.job_id == job_id, Checkpoint.step == step, Checkpoint.kind == "model"
            )
        ).one()


def _greedy(storage_path: str, into: Path) -> str:
    """The reply of the stored checkpoint's model/ folder, decoded greedily in this process."""
    from api.storage import get_store
    from inference.decoding import ChatModel, Sampling

    get_store().get_dir(f"{storage_path}/model", into)
    model = ChatModel(into, device="cpu")
    pieces = model.complete(model.prompt_ids(ASK), Sampling(max_tokens=12, temperature=0.0))
    return "".join(p.text for p in pieces)


def test_the_selected_checkpoint_is_the_model(
    inference: str, client: TestClient, selected: tuple[dict, str], tmp_path: Path
) -> None:
    job, validation = selected
    evals = _eval_losses(client, job["id"])
    best = min(evals, key=lambda step: (evals[step], step))  # the lowest, the earlier on a tie
    final = job["progress"]["step"]
    assert final == FINAL_STEP
    # The run this test needs: its best evaluation is neither the start nor the end.
    assert 0 < best < final, evals
    assert job["selected_step"] == best
    checkpoints = _model_checkpoints(client, job["id"])
    assert {0, best, final} <= set(checkpoints)  # the start, the improvement and the final one stored

    # chat with the fine-tuned model answers with the selected checkpoint's weights, not the newest's
    r = client.post(
        "/chat/completions",
        json={"model": job["fine_tuned_model"], "messages": ASK, "max_tokens": 12, "temperature": 0},
    )
    assert r.status_code == 200, r.text
    served = r.json()["choices"][0]["message"]["content"]
    newest = _greedy(_storage_path(job["id"], final), tmp_path / "final")
    assert served == _greedy(_storage_path(job["id"], best), tmp_path / "best")
    assert served != newest  # the two checkpoints answer differently, so the reply tells them apart

    # a job from the fine-tuned model starts from that checkpoint: its starting model's eval/loss on the
    # same validation file is the selected step's, not the final one's
    train = upload(client, chat_jsonl(4))
    hp = {"n_epochs": 1, "learning_rate": 1e-3, "select_checkpoint": "best_eval_loss"}
    second = _run(
        client, {**sft_job_body(job["fine_tuned_model"], train["id"], **hp), "validation_file": validation}
    )
    start = _eval_losses(client, second["id"])[0]
    assert start == pytest.approx(evals[best], rel=1e-5)
    assert start != pytest.approx(evals[final], rel=1e-3)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_juice_jobs_download_gets_the_selected_checkpoint(
    client: TestClient, selected: tuple[dict, str], tmp_path: Path
) -> None:
    """`juice jobs download JOB` (no --checkpoint) over a live API: the model, the selected checkpoint."""
    from api.storage import get_store
    from juice.cli import build_parser

    job, _ = selected
    dest = tmp_path / "download"
    with live_server() as url:
        argv = ["jobs", "download", job["id"], "-o", str(dest), "--api-url", f"{url}/v1"]
        args = build_parser().parse_args([*argv, "--api-key", make_key("acme")])
        assert args.func(args) == 0
    for step in (job["selected_step"], job["progress"]["step"]):
        get_store().get_dir(f"{_storage_path(job['id'], step)}/model", tmp_path / f"step-{step}")
    assert _files(dest) == _files(tmp_path / f"step-{job['selected_step']}")
    assert _files(dest) != _files(tmp_path / f"step-{job['progress']['step']}")


def test_a_last_job_records_no_selection(client: TestClient) -> None:
    train = upload(client, chat_jsonl(4))
    job = _run(client, sft_job_body("tiny-llama", train["id"], n_epochs=1))
    assert job["status"] == "succeeded" and job["selected_step"] is None


def test_a_selected_checkpoint_no_longer_stored_is_an_error_not_another_model(
    client: TestClient, selected: tuple[dict, str]
) -> None:
    from api.storage import get_store

    job, _ = selected
    step = job["selected_step"]
    get_store().discard(f"{_storage_path(job['id'], step)}/manifest.json")  # the store lost it

    r = client.post("/chat/completions", json={"model": job["fine_tuned_model"], "messages": ASK})
    assert r.status_code == 404, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("model_not_found", "model")
    assert f"step {step}" in err["message"] and "no longer stored" in err["message"]

    train = upload(client, chat_jsonl(4))
    second = _run_to_end(client, sft_job_body(job["fine_tuned_model"], train["id"], n_epochs=1))
    assert second["status"] == "failed"  # not trained from the newest checkpoint instead
    assert (second["error"]["code"], second["error"]["param"]) == ("model_not_found", "model")
    assert f"step {step}" in second["error"]["message"]


class StoresOnlyTheFinalCheckpoint(FullStore):
    """The real store, except that every checkpoint upload but the final step's fails as a full disk."""

    def put_dir(self, local_dir: Path, key: str, last: str | None = None) -> int:
        if key.endswith(f"/step_{FINAL_STEP:08d}"):
            return self.real.put_dir(local_dir, key, last)
        return super().put_dir(local_dir, key, last)


def test_a_selected_checkpoint_that_could_not_be_stored_fails_the_job(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its final checkpoint stored is not enough: that is not the model the job selected."""
    from api.storage import get_store
    from worker import runner

    real = get_store()
    monkeypatch.setattr(runner, "get_store", lambda: StoresOnlyTheFinalCheckpoint(real))
    job = _run_to_end(client, _best_eval_loss_body(client))
    evals = _eval_losses(client, job["id"])
    best = min(evals, key=lambda step: (evals[step], step))
    assert best != FINAL_STEP, evals  # the run this test needs: the selection is not the final one
    assert job["status"] == "failed" and job["fine_tuned_model"] is None and job["selected_step"] is None
    assert job["error"]["code"] == "storage_full", job["error"]
    assert f"the checkpoint select_checkpoint chose (step {best})" in job["error"]["message"]
    assert set(_model_checkpoints(client, job["id"])) == {FINAL_STEP}
