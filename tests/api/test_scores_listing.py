"""A reward-learning job's demonstration scores through the API: its second result file, and the listing
lowest first with each training line beside its score, a page at a time; clear 404s where there are none.
The scores themselves: tests/trainer/test_demonstration_scores.py."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import make_key
from tests.helpers import chat_jsonl, sft_job_body, upload


def irft_body(training_file: str) -> dict:
    hp = sft_job_body("tiny-llama", training_file, n_epochs=1, batch_size=2)["method"]["sft"][
        "hyperparameters"
    ]
    # the tiny model never stops within 6 tokens: keep its unfinished negatives, so pairs train
    hp = {**hp, "generation": {"max_new_tokens": 6}, "truncated_negatives": "keep"}
    return {
        "model": "tiny-llama",
        "training_file": training_file,
        "method": {"type": "irft", "irft": {"hyperparameters": hp}},
    }


def run(client: TestClient, body: dict) -> dict:
    from worker.runner import run_job

    job = client.post("/fine_tuning/jobs", json=body).json()
    assert run_job(job["id"]) == "succeeded"
    return client.get(f"/fine_tuning/jobs/{job['id']}").json()


@pytest.fixture
def scored(client: TestClient) -> tuple[dict, list[dict]]:
    """A succeeded IRFT job on 8 lines, and those lines."""
    data = chat_jsonl(8)
    train = upload(client, data)
    return run(client, irft_body(train["id"])), [json.loads(line) for line in data.splitlines()]


def test_the_scores_are_a_result_file_and_a_listing_lowest_first(client: TestClient, scored) -> None:
    job, lines = scored
    _csv_id, scores_id = job["result_files"]
    meta = client.get(f"/files/{scores_id}").json()
    assert meta["filename"] == "demonstration_scores.jsonl" and meta["purpose"] == "fine-tune-results"
    stored = [json.loads(x) for x in client.get(f"/files/{scores_id}/content").text.splitlines()]
    assert sorted(r["line"] for r in stored) == list(range(1, 9))

    url = f"/fine_tuning/jobs/{job['id']}/demonstration_scores"
    seen, after = [], None
    while True:  # three pages of at most 3
        page = client.get(url, params={"limit": 3, **({"after": after} if after else {})}).json()
        seen += page["data"]
        after = page["last_id"]
        if not page["has_more"]:
            break
    assert len(seen) == 8 and [s["rank"] for s in seen] == list(range(1, 9))
    assert [s["score"] for s in seen] == sorted(s["score"] for s in seen) == [r["score"] for r in stored]
    for s in seen:
        assert s["object"] == "fine_tuning.job.demonstration_score" and s["id"] == f"line-{s['line']}"
        assert s["kind"] == "implicit_reward" and s["example"] == lines[s["line"] - 1]
        assert s["log_likelihood"] < 0 and s["log_likelihood_per_token"] == pytest.approx(
            s["log_likelihood"] / s["tokens"]
        )

    r = client.get(url, params={"after": "line-99"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "after"
    other = {"Authorization": f"Bearer {make_key('other')}"}
    assert client.get(url, headers=other).status_code == 404


def test_the_listing_survives_a_deleted_training_file_but_not_a_deleted_scores_file(
    client: TestClient, scored
) -> None:
    job, _ = scored
    url = f"/fine_tuning/jobs/{job['id']}/demonstration_scores"
    assert client.delete(f"/files/{job['training_file']}").status_code == 200
    data = client.get(url).json()["data"]
    assert data and all(s["example"] is None for s in data)
    assert client.delete(f"/files/{job['result_files'][1]}").status_code == 200
    r = client.get(url)
    assert r.status_code == 404 and "deleted" in r.json()["error"]["message"], r.text


def test_jobs_without_scores_say_why(client: TestClient) -> None:
    train = upload(client, chat_jsonl(4))
    sft = run(client, sft_job_body("tiny-llama", train["id"], n_epochs=1, batch_size=2))
    assert len(sft["result_files"]) == 1
    r = client.get(f"/fine_tuning/jobs/{sft['id']}/demonstration_scores")
    assert r.status_code == 404 and "it is a sft job" in r.json()["error"]["message"], r.text

    queued = client.post("/fine_tuning/jobs", json=irft_body(train["id"])).json()
    r = client.get(f"/fine_tuning/jobs/{queued['id']}/demonstration_scores")
    assert r.status_code == 404 and "its status is queued" in r.json()["error"]["message"], r.text
    r = client.get("/fine_tuning/jobs/ftjob-nope/demonstration_scores")
    assert r.status_code == 404 and r.json()["error"]["code"] == "fine_tuning_job_not_found"
