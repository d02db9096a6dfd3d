"""OpenAI's result file: a succeeded job lists one file in `result_files`, a CSV of its per-step
metrics with OpenAI's columns first and the method's own series after, downloadable by its tenant
only, refused as a training or validation file."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient

from api.services.result_files import result_csv
from tests.api.conftest import make_key
from tests.helpers import chat_jsonl, sft_job_body, upload


def test_csv_columns_rows_and_empty_cells() -> None:
    rows = [
        (1, {"train/loss": 2.5, "train/token_accuracy": 0.25, "train/lr": 1e-3}),
        (2, {"train/loss": 2.0, "train/token_accuracy": 0.5, "train/lr": 5e-4}),
        (2, {"eval/loss": 2.2, "eval/token_accuracy": 0.4, "eval/logp_gap": 1.5}),  # the eval row of step 2
    ]
    data, steps = result_csv(rows)
    table = list(csv.reader(io.StringIO(data.decode())))
    assert table[0] == [
        "step",
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
        "eval/logp_gap",
        "train/lr",
    ]
    assert table[1] == ["1", "2.5", "0.25", "", "", "", "0.001"]
    assert table[2] == ["2", "2.0", "0.5", "2.2", "0.4", "1.5", "0.0005"]
    assert steps == 2 and len(table) == 3


def _run(client: TestClient, body: dict) -> dict:
    from worker.runner import run_job

    job = client.post("/fine_tuning/jobs", json=body).json()
    assert run_job(job["id"]) == "succeeded"
    return client.get(f"/fine_tuning/jobs/{job['id']}").json()


@pytest.mark.parametrize("method", ["sft", "irft"])
def test_a_succeeded_job_has_a_result_csv_of_its_metrics(client: TestClient, method: str) -> None:
    train = upload(client, chat_jsonl(8))
    body = sft_job_body("tiny-llama", train["id"], n_epochs=2, batch_size=2)
    if method == "irft":
        hp = body["method"]["sft"]["hyperparameters"]
        body["method"] = {
            "type": "irft",
            # the tiny model never stops within 6 tokens: keep its unfinished negatives, so pairs train
            "irft": {
                "hyperparameters": {**hp, "generation": {"max_new_tokens": 6}, "truncated_negatives": "keep"}
            },
        }
    job = _run(client, body)
    # a reward-learning job also has its demonstration scores (tests/api/test_scores_listing.py)
    assert len(job["result_files"]) == (2 if method == "irft" else 1)
    meta = client.get(f"/files/{job['result_files'][0]}").json()
    assert meta["purpose"] == "fine-tune-results" and meta["filename"] == "step_metrics.csv"
    r = client.get(f"/files/{meta['id']}/content")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert int(r.headers["content-length"]) == meta["bytes"] == len(r.content)
    table = list(csv.DictReader(io.StringIO(r.text)))
    losses = client.get(f"/fine_tuning/jobs/{job['id']}/metrics", params={"names": "train/loss"}).json()[
        "data"
    ]
    assert [int(row["step"]) for row in table] == [p["step"] for p in losses] == list(range(1, 9))
    assert [float(row["train_loss"]) for row in table] == pytest.approx(
        [p["values"]["train/loss"] for p in losses]
    )
    if method == "irft":  # IRFT's own series ride along; it has no token accuracy
        assert all(row["rewards/margin"] != "" for row in table) and all(
            row["train_accuracy"] == "" for row in table
        )
    else:
        assert all(0 <= float(row["train_accuracy"]) <= 1 for row in table)

    other = {"Authorization": f"Bearer {make_key('other')}"}
    assert client.get(f"/files/{meta['id']}/content", headers=other).status_code == 404
    for field in ("training_file", "validation_file"):
        bad = sft_job_body("tiny-llama", train["id"])
        bad[field] = meta["id"]
        r = client.post("/fine_tuning/jobs", json=bad)
        assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
        assert r.json()["error"]["code"] == "invalid_file_purpose"
    assert client.delete(f"/files/{meta['id']}").status_code == 200
    assert client.get(f"/fine_tuning/jobs/{job['id']}").json()["result_files"] == job["result_files"][1:]


def test_a_store_that_refuses_the_csv_leaves_the_success_without_a_result_file(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CSV is best effort: the job still succeeds, with its model, and no dangling file row."""
    from api.storage import get_store

    store_class = type(get_store())
    real = store_class.open_temp_writer

    def refuse_results(self, key):  # type: ignore[no-untyped-def]
        if key.endswith("-results.csv"):
            raise OSError("No space left on device")
        return real(self, key)

    monkeypatch.setattr(store_class, "open_temp_writer", refuse_results)
    train = upload(client, chat_jsonl(4))
    job = _run(client, sft_job_body("tiny-llama", train["id"], n_epochs=1, batch_size=2))
    assert job["status"] == "succeeded" and job["fine_tuned_model"] and job["result_files"] == []
    listed = client.get("/files", params={"purpose": "fine-tune-results"}).json()["data"]
    assert listed == []


def test_a_database_error_while_recording_the_success_redoes_all_of_it(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status, its events and the result file commit together: a connection lost mid-write rolls
    all of it back and the retry records it once, with the file (not a success without one)."""
    from sqlalchemy.exc import OperationalError

    import worker.runner as runner

    real = runner.result_files.attach_result_file
    calls = []

    def flaky(session, store, job_id):  # type: ignore[no-untyped-def]
        calls.append(job_id)
        if len(calls) == 1:
            raise OperationalError("INSERT INTO files", {}, Exception("server closed the connection"))
        return real(session, store, job_id)

    monkeypatch.setattr(runner.result_files, "attach_result_file", flaky)
    train = upload(client, chat_jsonl(4))
    job = _run(client, sft_job_body("tiny-llama", train["id"], n_epochs=1, batch_size=2))
    assert len(calls) == 2 and job["status"] == "succeeded" and len(job["result_files"]) == 1
    events = client.get(f"/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
    messages = [e["message"] for e in events]
    assert messages.count("The job has successfully completed.") == 1
    assert sum(m.startswith("New fine-tuned model created") for m in messages) == 1
