"""Request handling on the real app + SQLite: auth, uploads, job validation, errors, pagination."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.helpers import chat_jsonl, preference_jsonl, sft_job_body, upload


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
        ({"method": {"type": "dpo"}}, 400, "invalid_value", "method.type"),
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


def test_preference_file_is_validation_only(client: TestClient) -> None:
    pref = upload(client, preference_jsonl(3))
    assert pref["format"] == "preference"
    r = client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", pref["id"]))
    assert r.status_code == 400 and error_of(r)["param"] == "training_file"


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
