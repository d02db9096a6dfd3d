"""A job may start from the tenant's own fine-tuned model (`model: "ft:..."`, as on OpenAI): the worker
trains from that job's final checkpoint (LoRA merged), and the new model is named after the original
base. Another tenant's fine-tuned model, or one that never existed, is refused at create with
`param: "model"`."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import make_key
from tests.helpers import chat_jsonl, sft_job_body, upload


def _run(client: TestClient, body: dict) -> dict:
    from worker.runner import run_job

    r = client.post("/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    assert run_job(r.json()["id"]) == "succeeded"
    return client.get(f"/fine_tuning/jobs/{r.json()['id']}").json()


def _first_loss(client: TestClient, job: dict) -> float:
    data = client.get(f"/fine_tuning/jobs/{job['id']}/metrics", params={"names": "train/loss"}).json()["data"]
    return data[0]["values"]["train/loss"]


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True])
def test_a_job_continues_from_a_fine_tuned_model(client: TestClient, lora: bool) -> None:
    train = upload(client, chat_jsonl(8))
    hp = {"n_epochs": 4, "batch_size": 4, "learning_rate": 3e-3}
    if lora:
        hp["lora"] = {"enabled": True, "r": 4, "alpha": 8}
    first = _run(client, sft_job_body("tiny-llama", train["id"], **hp))
    name = first["fine_tuned_model"]
    assert name.startswith("ft:tiny-llama:acme:")

    second = _run(client, sft_job_body(name, train["id"], **hp))
    assert second["model"] == name
    assert second["fine_tuned_model"].startswith("ft:tiny-llama:acme:")  # the original base, not ft:ft:...
    # It starts where the first ended: its first loss is the first job's last, not the base model's.
    last = client.get(f"/fine_tuning/jobs/{first['id']}/metrics", params={"names": "train/loss"}).json()
    assert _first_loss(client, second) < _first_loss(client, first)
    assert _first_loss(client, second) == pytest.approx(last["data"][-1]["values"]["train/loss"], rel=0.35)
    # and a third from the second
    third = _run(client, sft_job_body(second["fine_tuned_model"], train["id"], **hp))
    assert _first_loss(client, third) < _first_loss(client, second)


def test_another_tenants_or_an_unknown_fine_tuned_model_is_refused(client: TestClient) -> None:
    train = upload(client, chat_jsonl(4))
    mine = _run(client, sft_job_body("tiny-llama", train["id"], n_epochs=1))["fine_tuned_model"]
    other = {"Authorization": f"Bearer {make_key('rival')}"}
    their_train = client.post(
        "/files", headers=other, files={"file": ("t.jsonl", chat_jsonl(4))}, data={"purpose": "fine-tune"}
    ).json()
    for name, headers in ((mine, other), ("ft:tiny-llama:acme::deadbeef", {})):
        body = sft_job_body(name, their_train["id"] if headers else train["id"])
        r = client.post("/fine_tuning/jobs", json=body, headers=headers)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "model" and r.json()["error"]["code"] == "model_not_found"
