"""Request handling on the real app + SQLite: auth, uploads, job validation, errors, pagination."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.helpers import QA, chat_jsonl, preference_jsonl, sft_job_body, upload


def error_of(r) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_missing_and_wrong_key_get_401(client: TestClient) -> None:
    r = client.get("/files", headers={"Authorization": ""})
    assert r.status_code == 401 and error_of(r)["code"] == "missing_api_key"
    r = client.get("/files", headers={"Authorization": "Bearer sk-juice-nope"})
    assert r.status_code == 401 and error_of(r)["code"] == "invalid_api_key"


def test_upload_returns_file_object_and_content_round_trips(client: TestClient) -> None:
    data = chat_jsonl(5)
    f = upload(client, data)
    assert f["object"] == "file" and f["id"].startswith("file-") and f["bytes"] == len(data)
    assert f["purpose"] == "fine-tune" and f["status"] == "processed"
    assert f["format"] == "chat" and f["examples"] == 5
    assert client.get(f"/files/{f['id']}").json() == f
    assert client.get(f"/files/{f['id']}/content").content == data


def test_bad_file_names_the_line_and_keeps_nothing(client: TestClient, app_env) -> None:
    lines = chat_jsonl(3).decode().splitlines()
    lines[1] = json.dumps({"messages": [{"role": "bot", "content": "hi"}]})
    r = client.post(
        "/files", files={"file": ("bad.jsonl", "\n".join(lines).encode())}, data={"purpose": "fine-tune"}
    )
    err = error_of(r)
    assert r.status_code == 400 and err["param"] == "file" and "line 2" in err["message"]
    assert err["code"] == "unrecognized_role"
    assert client.get("/files").json()["data"] == []
    store = app_env / "artifacts" / "files"
    assert not store.exists() or list(store.iterdir()) == []


@pytest.mark.parametrize(
    ("purpose", "name", "code", "param"),
    [
        ("batch", "a.jsonl", "invalid_purpose", "purpose"),
        ("fine-tune", "a.csv", "invalid_file_format", "file"),
    ],
)
def test_upload_rejects_purpose_and_extension(
    client: TestClient, purpose: str, name: str, code: str, param: str
) -> None:
    r = client.post("/files", files={"file": (name, chat_jsonl(2))}, data={"purpose": purpose})
    assert r.status_code == 400 and error_of(r)["code"] == code and error_of(r)["param"] == param


def test_file_list_pagination_and_delete(client: TestClient) -> None:
    ids = [upload(client, chat_jsonl(2), f"f{i}.jsonl")["id"] for i in range(5)]
    page = client.get("/files", params={"limit": 2}).json()
    assert [f["id"] for f in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    assert page["first_id"] == ids[4] and page["last_id"] == ids[3]
    page2 = client.get("/files", params={"limit": 2, "after": page["last_id"]}).json()
    assert [f["id"] for f in page2["data"]] == ids[::-1][2:4]
    asc = client.get("/files", params={"order": "asc"}).json()
    assert [f["id"] for f in asc["data"]] == ids
    assert client.delete(f"/files/{ids[0]}").json() == {"id": ids[0], "object": "file", "deleted": True}
    assert client.get(f"/files/{ids[0]}").status_code == 404


def test_create_job_resolves_auto_hyperparameters(client: TestClient, train_file: dict) -> None:
    r = client.post(
        "/fine_tuning/jobs",
        json={"model": "tiny-llama", "training_file": train_file["id"], "method": {"type": "supervised"}},
    )
    job = r.json()
    assert r.status_code == 200, job
    assert job["status"] == "queued" and job["id"].startswith("ftjob-")
    hp = job["method"]["supervised"]["hyperparameters"]
    assert hp["n_epochs"] == 10  # OpenAI's rule: 10 examples * 3 < 100 -> min(25, 100 // 10)
    assert hp["batch_size"] == 1 and hp["learning_rate"] == pytest.approx(2e-5)
    assert job["hyperparameters"] == {"n_epochs": 10, "batch_size": 1, "learning_rate_multiplier": 1.0}
    assert isinstance(job["seed"], int) and job["error"] is None and job["result_files"] == []
    events = client.get(f"/fine_tuning/jobs/{job['id']}/events").json()["data"]
    assert events[0]["message"] == f"Created fine-tuning job: {job['id']}"


def test_legacy_top_level_hyperparameters(client: TestClient, train_file: dict) -> None:
    r = client.post(
        "/fine_tuning/jobs",
        json={
            "model": "tiny-llama",
            "training_file": train_file["id"],
            "hyperparameters": {"n_epochs": 2, "learning_rate_multiplier": 2},
        },
    )
    hp = r.json()["method"]["supervised"]["hyperparameters"]
    assert hp["n_epochs"] == 2 and hp["learning_rate"] == pytest.approx(4e-5)
    assert (
        "learning_rate_multiplier" not in hp
        and r.json()["hyperparameters"]["learning_rate_multiplier"] == 2.0
    )
    r = client.post(
        "/fine_tuning/jobs",
        json={"model": "tiny-llama", "training_file": train_file["id"], "hyperparameters": {"n_epochs": 0}},
    )
    assert r.status_code == 400 and error_of(r)["param"] == "hyperparameters.n_epochs"


@pytest.mark.parametrize(
    ("hyper", "param"),
    [
        ({"n_epochs": 0}, "method.sft.hyperparameters.n_epochs"),
        ({"n_epochs": 51}, "method.sft.hyperparameters.n_epochs"),
        ({"batch_size": "big"}, "method.sft.hyperparameters.batch_size"),
        ({"learning_rate": -1}, "method.sft.hyperparameters.learning_rate"),
        ({"lr_scheduler_type": "exp"}, "method.sft.hyperparameters.lr_scheduler_type"),
        ({"warmup_ratio": 1.5}, "method.sft.hyperparameters.warmup_ratio"),
        ({"lora": {"r": 0}}, "method.sft.hyperparameters.lora.r"),
        ({"lora": {"dropout": 1.0}}, "method.sft.hyperparameters.lora.dropout"),
        ({"max_seq_len": 4}, "method.sft.hyperparameters.max_seq_len"),
        ({"max_seq_len": 15}, "method.sft.hyperparameters.max_seq_len"),
        ({"n_epochs": True}, "method.sft.hyperparameters.n_epochs"),
        ({"max_grad_norm": -1}, "method.sft.hyperparameters.max_grad_norm"),
        ({"generation": {"max_new_tokens": 8}}, "method.sft.hyperparameters.generation"),  # IRFT/RFT only
        ({"learning_rate_multiplier": 0}, "method.sft.hyperparameters.learning_rate_multiplier"),
        ({"no_such_knob": 1}, "method.sft.hyperparameters.no_such_knob"),
        ({"learning_rate": 1e-4, "learning_rate_multiplier": 2}, "method.sft.hyperparameters"),
    ],
)
def test_invalid_hyperparameters_name_the_param(
    client: TestClient, train_file: dict, hyper: dict, param: str
) -> None:
    r = client.post(
        "/fine_tuning/jobs",
        json={
            "model": "tiny-llama",
            "training_file": train_file["id"],
            "method": {"type": "sft", "sft": {"hyperparameters": hyper}},
        },
    )
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == param


@pytest.mark.parametrize(
    ("patch", "status", "code", "param"),
    [
        ({"model": "/etc"}, 400, "model_not_allowed", "model"),
        ({"model": "../../etc/passwd"}, 400, "model_not_allowed", "model"),
        ({"model": "no such model!"}, 400, "model_not_found", "model"),
        ({"training_file": "file-missing"}, 404, "file_not_found", "training_file"),
        ({"validation_file": "file-missing"}, 404, "file_not_found", "validation_file"),
        ({"method": {"type": "ppo"}}, 400, "invalid_value", "method.type"),
        ({"method": {"type": "reinforcement"}}, 400, "invalid_value", "method"),  # its block holds the grader
        ({"suffix": "x" * 65}, 400, "invalid_value", "suffix"),
        ({"seed": -1}, 400, "invalid_value", "seed"),
        ({"metadata": {str(i): "v" for i in range(17)}}, 400, "invalid_value", "metadata"),
    ],
)
def test_invalid_job_requests(
    client: TestClient, train_file: dict, patch: dict, status: int, code: str, param: str
) -> None:
    body = {"model": "tiny-llama", "training_file": train_file["id"], **patch}
    r = client.post("/fine_tuning/jobs", json=body)
    assert r.status_code == status, r.text
    err = error_of(r)
    assert (err["code"], err["param"]) == (code, param)


@pytest.mark.parametrize("method_type", ["sft", "supervised", "irft", "rft", "iql"])
def test_demonstration_methods_refuse_a_preference_training_file(
    client: TestClient, method_type: str
) -> None:
    pref = upload(client, preference_jsonl(3))
    assert pref["format"] == "preference"
    r = client.post(
        "/fine_tuning/jobs",
        json={"model": "tiny-llama", "training_file": pref["id"], "method": {"type": method_type}},
    )
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert (err["code"], err["param"]) == ("invalid_training_file", "training_file")
    assert "'preference'" in err["message"] and f"method '{method_type}'" in err["message"]
    assert "dpo" in err["message"]  # which method does train on it
    legacy = client.post("/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": pref["id"]})
    assert legacy.status_code == 400 and error_of(legacy)["param"] == "training_file"  # no method: supervised


def test_a_preference_file_is_still_any_methods_validation_file(client: TestClient, train_file: dict) -> None:
    pref = upload(client, preference_jsonl(3))
    body = {**sft_job_body("tiny-llama", train_file["id"]), "validation_file": pref["id"]}
    assert client.post("/fine_tuning/jobs", json=body).status_code == 200


def dpo_body(training_file: str, hp: dict | None = None, **extra) -> dict:
    method: dict = {"type": "dpo"}
    if hp is not None:
        method["dpo"] = {"hyperparameters": hp}
    return {"model": "tiny-llama", "training_file": training_file, "method": method, **extra}


@pytest.mark.parametrize(
    ("hp", "beta"),
    [
        (None, 0.1),  # no block at all
        ({"beta": "auto"}, 0.1),  # OpenAI's auto: the trainer's default
        ({"beta": 0.5, "n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 3}, 0.5),
        ({"beta": "0.25", "loss_type": "hinge", "max_prompt_len": 64}, 0.25),
    ],
)
def test_dpo_jobs_are_accepted_on_a_preference_file(client: TestClient, hp: dict | None, beta: float) -> None:
    pref = upload(client, preference_jsonl(5))
    r = client.post("/fine_tuning/jobs", json=dpo_body(pref["id"], hp))
    job = r.json()
    assert r.status_code == 200, job
    assert job["method"]["type"] == "dpo" and set(job["method"]) == {"type", "dpo"}
    stored = job["method"]["dpo"]["hyperparameters"]
    assert stored["beta"] == beta and "learning_rate_multiplier" not in stored
    assert stored["loss_type"] == (hp or {}).get("loss_type", "sigmoid")
    given = hp or {}
    epochs = given.get("n_epochs", 20)  # auto: OpenAI's rule on 5 pairs, min(25, 100 // 5)
    multiplier = float(given.get("learning_rate_multiplier", 1))
    assert job["hyperparameters"] == {
        "n_epochs": epochs,
        "batch_size": given.get("batch_size", 1),
        "learning_rate_multiplier": multiplier,
    }
    assert stored["learning_rate"] == pytest.approx(2e-5 * multiplier)
    listed = client.get("/fine_tuning/jobs", params={"method": "dpo"}).json()["data"]
    assert [j["id"] for j in listed][:1] == [job["id"]]
    events = client.get(f"/fine_tuning/jobs/{job['id']}/events").json()["data"]
    assert events[-1]["data"]["method"] == "dpo"


@pytest.mark.parametrize(
    ("hp", "param"),
    [
        ({"beta": 0}, "method.dpo.hyperparameters.beta"),
        ({"beta": -0.1}, "method.dpo.hyperparameters.beta"),
        ({"beta": "high"}, "method.dpo.hyperparameters.beta"),
        ({"beta": True}, "method.dpo.hyperparameters.beta"),
        ({"loss_type": "ipo"}, "method.dpo.hyperparameters.loss_type"),
        ({"n_epochs": 0}, "method.dpo.hyperparameters.n_epochs"),
        ({"max_prompt_len": 0}, "method.dpo.hyperparameters.max_prompt_len"),
        ({"generation": {"max_new_tokens": 8}}, "method.dpo.hyperparameters.generation"),  # nothing sampled
        ({"outer_iterations": 2}, "method.dpo.hyperparameters.outer_iterations"),
    ],
)
def test_invalid_dpo_hyperparameters_name_the_param(client: TestClient, hp: dict, param: str) -> None:
    pref = upload(client, preference_jsonl(3))
    r = client.post("/fine_tuning/jobs", json=dpo_body(pref["id"], hp))
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert (err["code"], err["param"]) == ("invalid_value", param)


def test_dpo_block_must_match_the_type(client: TestClient) -> None:
    pref = upload(client, preference_jsonl(3))
    body = {"model": "tiny-llama", "training_file": pref["id"]}
    for method in ({"type": "sft", "dpo": {}}, {"type": "dpo", "sft": {}}):
        r = client.post("/fine_tuning/jobs", json={**body, "method": method})
        assert r.status_code == 400 and error_of(r)["param"] == "method", method


@pytest.mark.parametrize("data", ["chat", "prompt_completion"])
def test_dpo_refuses_a_demonstration_training_file(client: TestClient, data: str) -> None:
    lines = (
        chat_jsonl(4)
        if data == "chat"
        else b"".join(json.dumps({"prompt": q, "completion": a}).encode() + b"\n" for q, a in QA[:4])
    )
    demo = upload(client, lines)
    assert demo["format"] == data
    r = client.post("/fine_tuning/jobs", json=dpo_body(demo["id"], {"beta": 0.1}))
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert (err["code"], err["param"]) == ("invalid_training_file", "training_file")
    assert (
        f"'{data}'" in err["message"] and "method 'dpo'" in err["message"] and "preference" in err["message"]
    )
    # A demonstration file is fine as DPO's validation file (eval/loss on it).
    pref = upload(client, preference_jsonl(3))
    ok = client.post(
        "/fine_tuning/jobs", json=dpo_body(pref["id"], {"beta": 0.1}, validation_file=demo["id"])
    )
    assert ok.status_code == 200, ok.text


def test_dpo_total_steps_count_the_pairs(client: TestClient) -> None:
    """The worker's progress total: plan.total_steps("dpo", ...) of the file's row count, one row a pair."""
    from api.db.tables import Job
    from trainer.spec import plan
    from trainer.spec.hyperparameters import DPOHyperparameters
    from worker.runner import total_steps

    pref = upload(client, preference_jsonl(5))
    assert pref["examples"] == 5
    r = client.post("/fine_tuning/jobs", json=dpo_body(pref["id"], {"n_epochs": 3, "batch_size": 2}))
    stored = r.json()["method"]["dpo"]["hyperparameters"]
    job = Job(model="tiny-llama", method_type="dpo", hyperparameters=stored, seed=1)
    hp = DPOHyperparameters.model_validate(stored)
    assert total_steps(job, pref["examples"]) == plan.total_steps("dpo", hp, 5) == 3 * 3  # ceil(5 / 2) * 3


def test_model_path_inside_root_is_accepted(client: TestClient, train_file: dict, tiny_model_dir) -> None:
    r = client.post(
        "/fine_tuning/jobs", json=sft_job_body(str(tiny_model_dir / "tiny-llama"), train_file["id"])
    )
    assert r.status_code == 200, r.text


def test_cancel_queued_job_is_immediate(client: TestClient, train_file: dict) -> None:
    job = client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train_file["id"])).json()
    r = client.post(f"/fine_tuning/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["finished_at"]
    assert client.post(f"/fine_tuning/jobs/{job['id']}/cancel").status_code == 409


def test_file_in_use_cannot_be_deleted(client: TestClient, train_file: dict) -> None:
    client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train_file["id"]))
    r = client.delete(f"/files/{train_file['id']}")
    assert r.status_code == 409 and error_of(r)["code"] == "file_in_use"


def test_job_list_filters_and_pages(client: TestClient, train_file: dict) -> None:
    ids = [
        client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train_file["id"])).json()["id"]
        for _ in range(3)
    ]
    client.post(f"/fine_tuning/jobs/{ids[0]}/cancel")
    page = client.get("/fine_tuning/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["data"]] == [ids[2], ids[1]] and page["has_more"]
    assert [
        j["id"] for j in client.get("/fine_tuning/jobs", params={"status": "cancelled"}).json()["data"]
    ] == [ids[0]]
    assert len(client.get("/fine_tuning/jobs", params={"method": "sft"}).json()["data"]) == 3
    r = client.get("/fine_tuning/jobs", params={"after": "ftjob-nope"})
    assert r.status_code == 404 and error_of(r)["param"] == "after"


def test_unknown_route_uses_error_envelope(client: TestClient) -> None:
    r = client.get("/nothing-here")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"


@pytest.mark.parametrize(
    "method",
    [
        {
            "type": "irft",
            "irft": {
                "hyperparameters": {
                    "beta": 0.1,
                    "outer_iterations": 3,
                    "n_epochs": 1,
                    "generation": {"max_new_tokens": 16, "temperature": 0},
                }
            },
        },
        {"type": "irft"},
        {
            "type": "rft",
            "rft": {
                "hyperparameters": {"samples_per_prompt": 4, "reward_model": "tiny-llama", "n_epochs": 1}
            },
        },
        {"type": "rft"},
    ],
)
def test_reward_learning_methods_are_accepted(client: TestClient, train_file: dict, method: dict) -> None:
    r = client.post(
        "/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": train_file["id"], "method": method}
    )
    job = r.json()
    assert r.status_code == 200, job
    hp = job["method"][method["type"]]["hyperparameters"]
    assert job["method"]["type"] == method["type"] and hp["n_epochs"] != "auto"
    assert hp["outer_iterations"] >= 1 and "generation" in hp and hp["beta"] > 0
    assert (
        client.get("/fine_tuning/jobs", params={"method": method["type"]}).json()["data"][0]["id"]
        == job["id"]
    )


@pytest.mark.parametrize(
    ("method", "param"),
    [
        ({"type": "irft", "irft": {"hyperparameters": {"beta": 0}}}, "method.irft.hyperparameters.beta"),
        (
            {"type": "irft", "irft": {"hyperparameters": {"loss_type": "ipo"}}},
            "method.irft.hyperparameters.loss_type",
        ),
        (
            {"type": "irft", "irft": {"hyperparameters": {"schedule": "weekly"}}},
            "method.irft.hyperparameters.schedule",
        ),
        (
            {"type": "irft", "irft": {"hyperparameters": {"generation": {"top_p": 0}}}},
            "method.irft.hyperparameters.generation.top_p",
        ),
        (
            {"type": "rft", "rft": {"hyperparameters": {"samples_per_prompt": 1}}},
            "method.rft.hyperparameters.samples_per_prompt",
        ),
        (
            {"type": "rft", "rft": {"hyperparameters": {"reward_model": "../../etc"}}},
            "method.rft.hyperparameters.reward_model",
        ),
        ({"type": "sft", "sft": {"hyperparameters": {"beta": 0.1}}}, "method.sft.hyperparameters.beta"),
        ({"type": "irft", "rft": {}}, "method"),
    ],
)
def test_invalid_reward_learning_configs(
    client: TestClient, train_file: dict, method: dict, param: str
) -> None:
    r = client.post(
        "/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": train_file["id"], "method": method}
    )
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == param
