"""The `reinforcement` method at the API (no worker): OpenAI's request shape through the official SDK,
the file format its prompts upload as, what is stored and echoed, and the 400s that name the field."""

from __future__ import annotations

import json

import openai
import pytest
from fastapi.testclient import TestClient

from tests.api.test_requests import error_of
from tests.helpers import FUZZY_GRADER, chat_jsonl, prompts_jsonl, reinforcement_job_body, upload


def _sdk(client: TestClient) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=client.headers["Authorization"].removeprefix("Bearer "),
        base_url="http://testserver/v1",
        http_client=client,  # a TestClient is an httpx.Client over the app
        max_retries=0,
    )


def test_prompt_lines_upload_as_the_reinforcement_format(client: TestClient) -> None:
    prompts = upload(client, prompts_jsonl(6))
    assert prompts["format"] == "reinforcement"
    # a chat line in a prompts file, and a chat file whose line lacks its reply, say which line and why
    mixed = prompts_jsonl(2) + chat_jsonl(1)
    r = client.post("/files", files={"file": ("m.jsonl", mixed)}, data={"purpose": "fine-tune"})
    assert r.status_code == 400 and "line 3" in r.text and "reinforcement format" in r.text, r.text
    unanswered = chat_jsonl(1) + json.dumps({"messages": [{"role": "user", "content": "Hi"}]}).encode()
    r = client.post("/files", files={"file": ("c.jsonl", unanswered)}, data={"purpose": "fine-tune"})
    assert r.status_code == 400 and "line 2: messages has no assistant message" in r.text, r.text
    # only a reinforcement line may carry keys of its own: a chat line's unknown key is still refused
    typo = json.dumps({"messages": json.loads(chat_jsonl(1))["messages"], "weight": 1}).encode()
    r = client.post("/files", files={"file": ("t.jsonl", typo)}, data={"purpose": "fine-tune"})
    assert r.status_code == 400 and "unrecognized top-level key" in r.text, r.text


def test_the_sdk_creates_a_reinforcement_job_and_reads_it_back(client: TestClient) -> None:
    sdk = _sdk(client)
    prompts = upload(client, prompts_jsonl(6))
    job = sdk.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=prompts["id"],
        validation_file=upload(client, prompts_jsonl(3), "valid.jsonl")["id"],
        method={
            "type": "reinforcement",
            "reinforcement": {
                "grader": FUZZY_GRADER,
                "hyperparameters": {
                    "n_epochs": "auto",
                    "batch_size": 2,
                    "learning_rate_multiplier": 2.0,
                    "eval_interval": "auto",
                    "eval_samples": 2,
                    "compute_multiplier": 1.5,
                    "reasoning_effort": "default",
                },
            },
        },
    )
    assert job.method.type == "reinforcement" and job.method.reinforcement is not None
    assert job.method.reinforcement.grader.type == "text_similarity"
    hp = job.method.reinforcement.hyperparameters
    assert (hp.n_epochs, hp.batch_size, hp.eval_samples, hp.compute_multiplier) == (1, 2, 2, 1.5)
    assert job.hyperparameters.learning_rate_multiplier == 2.0
    stored = client.get(f"/fine_tuning/jobs/{job.id}").json()["method"]["reinforcement"]
    assert stored["grader"] == FUZZY_GRADER and stored["hyperparameters"]["eval_interval"] == 0


@pytest.mark.parametrize(
    ("change", "param", "says"),
    [
        (lambda b: b["method"].pop("reinforcement"), "method", "needs its grader"),
        (
            lambda b: b["method"]["reinforcement"]["hyperparameters"].update(reasoning_effort="high"),
            "method.reinforcement.hyperparameters.reasoning_effort",
            "has no reasoning mode",
        ),
        (
            lambda b: b["method"]["reinforcement"].update(
                grader={
                    "type": "score_model",
                    "name": "j",
                    "model": "m",
                    "input": [{"role": "user", "content": "x"}],
                }
            ),
            "method.reinforcement.grader",
            "judge model",
        ),
        (
            lambda b: b["method"]["reinforcement"]["grader"].update(reference="{{ secrets.key }}"),
            "method.reinforcement.grader",
            "must start with sample. or item.",
        ),
    ],
)
def test_refusals_name_the_field(client: TestClient, change, param: str, says: str) -> None:
    body = reinforcement_job_body("tiny-llama", upload(client, prompts_jsonl(4))["id"])
    change(body)
    r = client.post("/fine_tuning/jobs", json=body)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["param"].startswith(param) and says in err["message"], err
    assert client.get("/fine_tuning/jobs").json()["data"] == []  # nothing half-written


def test_files_of_the_wrong_kind_are_refused_both_ways(client: TestClient) -> None:
    chat = upload(client, chat_jsonl(4))
    prompts = upload(client, prompts_jsonl(4), "p.jsonl")
    r = client.post("/fine_tuning/jobs", json=reinforcement_job_body("tiny-llama", chat["id"]))
    err = error_of(r)
    assert (err["code"], err["param"]) == ("invalid_training_file", "training_file")
    assert "trains on prompts for a grader" in err["message"], err
    body = {**reinforcement_job_body("tiny-llama", prompts["id"]), "validation_file": chat["id"]}
    err = error_of(client.post("/fine_tuning/jobs", json=body))
    assert (err["code"], err["param"]) == ("invalid_validation_file", "validation_file"), err
    sft = {"model": "tiny-llama", "training_file": prompts["id"], "method": {"type": "supervised"}}
    err = error_of(client.post("/fine_tuning/jobs", json=sft))
    assert (err["code"], err["param"]) == ("invalid_training_file", "training_file")
    assert "reinforcement" in err["message"]  # which method does train on it


def test_the_methods_listing_describes_reinforcement(client: TestClient) -> None:
    methods = {m["id"]: m for m in client.get("/fine_tuning/methods").json()["data"]}
    spec = {h["name"]: h for h in methods["reinforcement"]["hyperparameters"]}
    assert methods["reinforcement"]["training_file_formats"] == ["reinforcement"]
    assert spec["compute_multiplier"]["auto"] and spec["eval_samples"]["auto"]
    assert spec["reasoning_effort"]["enum"] == ["default", "low", "medium", "high"]
    assert spec["generation.max_new_tokens"]["default"] == 256


def test_any_method_may_grade_its_validation_file(client: TestClient) -> None:
    """A grader on another method's block (Juice) grades the validation prompts' answers: it needs a
    validation file of demonstrations or pairs, and is stored and echoed like reinforcement's."""
    train, valid = upload(client, chat_jsonl(6)), upload(client, chat_jsonl(3), "v.jsonl")
    method = {
        "type": "supervised",
        "supervised": {"grader": FUZZY_GRADER, "hyperparameters": {"n_epochs": 1}},
    }
    r = client.post(
        "/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": train["id"], "method": method}
    )
    err = error_of(r)
    assert (err["param"], err["code"]) == ("method.supervised.grader", "invalid_value")
    assert "no validation_file" in err["message"]
    prompts = upload(client, prompts_jsonl(3), "p.jsonl")
    body = {
        "model": "tiny-llama",
        "training_file": train["id"],
        "validation_file": prompts["id"],
        "method": method,
    }
    err = error_of(client.post("/fine_tuning/jobs", json=body))
    assert (err["param"], err["code"]) == ("validation_file", "invalid_validation_file"), err
    body["validation_file"] = valid["id"]
    r = client.post("/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["method"]["supervised"]["grader"] == FUZZY_GRADER
