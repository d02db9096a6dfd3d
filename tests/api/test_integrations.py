"""`integrations` at job creation: OpenAI's W&B block and Juice's MLflow block are stored and shown
back; one this server has no tracker for, or a malformed one, is a 400 naming the field, writing nothing."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import clear_caches


def _jobs(client: TestClient) -> int:
    return len(client.get("/fine_tuning/jobs").json()["data"])


@pytest.mark.parametrize(
    ("integration", "setting"),
    [
        ({"type": "wandb", "wandb": {"project": "p"}}, "JUICE_WANDB_MODE"),
        ({"type": "mlflow", "mlflow": {"experiment_name": "e"}}, "JUICE_MLFLOW_TRACKING_URI"),
    ],
)
def test_an_integration_the_server_has_no_tracker_for_is_refused(
    client: TestClient, train_file: dict, integration: dict, setting: str
) -> None:
    body = {"model": "tiny-llama", "training_file": train_file["id"], "integrations": [integration]}
    r = client.post("/fine_tuning/jobs", json=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "integration_not_configured" and error["param"] == "integrations.0.type"
    assert setting in error["message"]
    assert _jobs(client) == 0


@pytest.mark.parametrize(
    ("integration", "param"),
    [
        ({"type": "wandb"}, "integrations.0"),
        ({"type": "wandb", "mlflow": {"experiment_name": "e"}}, "integrations.0"),
        ({"type": "comet", "comet": {}}, "integrations.0.type"),
        ({"type": "wandb", "wandb": {"project": ""}}, "integrations.0.wandb.project"),
        ({"type": "wandb", "wandb": {"project": "p", "api_key": "x"}}, "integrations.0.wandb.api_key"),
    ],
)
def test_a_malformed_integration_is_refused(
    client: TestClient, train_file: dict, integration: dict, param: str
) -> None:
    body = {"model": "tiny-llama", "training_file": train_file["id"], "integrations": [integration]}
    r = client.post("/fine_tuning/jobs", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert _jobs(client) == 0


def test_configured_integrations_are_kept(
    client: TestClient, train_file: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUICE_MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("JUICE_WANDB_MODE", "offline")
    from api.core.config import get_settings

    get_settings.cache_clear()
    integrations = [
        {"type": "wandb", "wandb": {"project": "p", "name": "run-1", "tags": ["a", "b"]}},
        {"type": "mlflow", "mlflow": {"experiment_name": "e", "tags": {"team": "x"}}},
    ]
    body = {"model": "tiny-llama", "training_file": train_file["id"], "integrations": integrations}
    r = client.post("/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["integrations"] == integrations
    assert client.get(f"/fine_tuning/jobs/{r.json()['id']}").json()["integrations"] == integrations
    clear_caches()
