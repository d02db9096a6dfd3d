"""`resources` at job creation (a Juice addition): the training processes a job runs on. A valid request
is stored and shown back; zero, a non-integer, an unknown key or more than the server gives one job is a
4xx naming the field, writing nothing."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import clear_caches


def _jobs(client: TestClient) -> int:
    return len(client.get("/fine_tuning/jobs").json()["data"])


def test_processes_are_stored_and_shown_back(client: TestClient, train_file: dict) -> None:
    body = {"model": "tiny-llama", "training_file": train_file["id"], "method": {"type": "irft"}}
    r = client.post("/fine_tuning/jobs", json={**body, "resources": {"processes": 2}})
    assert r.status_code == 200, r.text
    assert r.json()["resources"] == {"processes": 2}
    assert client.get(f"/fine_tuning/jobs/{r.json()['id']}").json()["resources"] == {"processes": 2}
    plain = client.post("/fine_tuning/jobs", json=body).json()
    assert plain["resources"] == {"processes": 1}


@pytest.mark.parametrize(
    ("resources", "param"),
    [
        ({"processes": 0}, "resources.processes"),
        ({"processes": "two"}, "resources.processes"),
        ({"processes": 2, "gpus": 2}, "resources.gpus"),
    ],
)
def test_malformed_resources_are_refused(
    client: TestClient, train_file: dict, resources: dict, param: str
) -> None:
    body = {"model": "tiny-llama", "training_file": train_file["id"], "resources": resources}
    r = client.post("/fine_tuning/jobs", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert _jobs(client) == 0


def test_more_processes_than_the_server_gives_a_job_are_refused(
    client: TestClient, train_file: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUICE_MAX_PROCESSES_PER_JOB", "4")
    from api.core.config import get_settings

    get_settings.cache_clear()
    body = {"model": "tiny-llama", "training_file": train_file["id"], "resources": {"processes": 5}}
    r = client.post("/fine_tuning/jobs", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "resources.processes" and "at most 4" in error["message"]
    assert _jobs(client) == 0
    clear_caches()
