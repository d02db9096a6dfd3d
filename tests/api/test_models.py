"""GET /v1/models: the base models jobs can name, plus the caller's fine-tuned models (OpenAI's shape)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.core.config import Settings
from tests.api.conftest import make_key
from tests.helpers import sft_job_body


def error_of(r) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def succeed(job_id: str, fine_tuned_model: str) -> int:
    """Mark a job succeeded as the worker would; returns its finished_at in unix seconds."""
    from sqlalchemy import select

    from api.db.base import utcnow
    from api.db.session import session_scope
    from api.db.tables import Job, JobStatus

    with session_scope() as s:
        job = s.scalars(select(Job).where(Job.id == job_id)).one()
        job.status, job.fine_tuned_model, job.finished_at = JobStatus.SUCCEEDED, fine_tuned_model, utcnow()
        s.flush()
        return int(job.finished_at.timestamp())


def test_list_has_the_base_models(client: TestClient, tiny_model_dir: Path) -> None:
    r = client.get("/models")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"object", "data"} and body["object"] == "list"
    assert body["data"] == [
        {
            "id": "tiny-llama",
            "object": "model",
            "owned_by": "juice",
            "created": int((tiny_model_dir / "tiny-llama").stat().st_mtime),
        }
    ]
    assert client.get("/models/tiny-llama").json() == body["data"][0]


def test_fine_tuned_models_are_the_tenants_own(client: TestClient, train_file: dict) -> None:
    ids = [
        client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train_file["id"])).json()["id"]
        for _ in range(3)
    ]
    name = "ft:tiny-llama:acme:test:0123abcd"
    finished = succeed(ids[0], name)
    # A model id with '/' (a fine-tuned hub or path base) is one path parameter.
    slashed = "ft:org/base-model:acme::89abcdef"
    succeed(ids[1], slashed)
    client.post(f"/fine_tuning/jobs/{ids[2]}/cancel")  # not succeeded: not a model

    data = client.get("/models").json()["data"]
    assert [m["id"] for m in data] == ["tiny-llama", slashed, name]  # base models, then newest first
    assert data[2] == {"id": name, "object": "model", "created": finished, "owned_by": "acme"}
    assert client.get(f"/models/{name}").json() == data[2]
    assert client.get(f"/models/{slashed}").json()["id"] == slashed

    other = {"Authorization": f"Bearer {make_key('globex')}"}
    assert [m["id"] for m in client.get("/models", headers=other).json()["data"]] == ["tiny-llama"]
    r = client.get(f"/models/{name}", headers=other)
    assert r.status_code == 404 and error_of(r)["param"] == "model"


def test_unknown_model_is_404_in_the_error_envelope(client: TestClient) -> None:
    r = client.get("/models/no-such-model")
    err = error_of(r)
    assert r.status_code == 404 and (err["code"], err["param"]) == ("model_not_found", "model")
    assert client.get("/models", headers={"Authorization": ""}).status_code == 401


def make_model(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return path


def test_local_models_are_exactly_the_names_jobs_accept(tmp_path: Path) -> None:
    from api.services.models import list_local_models, resolve_model

    first, second = tmp_path / "a", tmp_path / "b"
    make_model(first / "zeta")
    make_model(first / "alpha")
    make_model(second / "alpha")  # shadowed: the name "alpha" resolves to the first root's folder
    make_model(second / "beta")
    make_model(first / ".hidden")  # a leading dot makes a job read the name as a path: not offered
    (first / "not-a-model").mkdir()
    (first / "stray.json").write_text("{}")
    settings = Settings(home=tmp_path / "home", model_roots=f"{first}:{second}:{tmp_path / 'missing'}")

    models = list_local_models(settings)
    assert [(m.id, m.path) for m in models] == [
        ("alpha", first / "alpha"),
        ("beta", second / "beta"),
        ("zeta", first / "zeta"),
    ]
    for m in models:
        assert resolve_model(m.id, settings) == str(m.path)
        assert m.created == int(m.path.stat().st_mtime)


def test_cli_lists_the_same_models(app_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from juice.cli import main

    assert main(["models", "list"]) == 0
    assert capsys.readouterr().out.split() == ["tiny-llama"]


def test_an_alias_is_listed_trained_and_named_like_an_openai_model(
    client: TestClient, train_file: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JUICE_MODEL_ALIASES: code that names OpenAI's model runs unchanged on the local model it maps to."""
    from api.core.config import get_settings
    from worker.runner import run_job

    monkeypatch.setenv("JUICE_MODEL_ALIASES", "gpt-4o-mini-2024-07-18=tiny-llama, bad=gpt-4o-mini-2024-07-18")
    get_settings.cache_clear()
    models = {m["id"]: m for m in client.get("/models").json()["data"]}
    assert models["gpt-4o-mini-2024-07-18"]["created"] == models["tiny-llama"]["created"]
    assert "bad" not in models  # an alias of an alias is refused, so it is not offered either
    r = client.post(
        "/fine_tuning/jobs", json=sft_job_body("gpt-4o-mini-2024-07-18", train_file["id"], n_epochs=1)
    )
    assert r.status_code == 200, r.text
    assert run_job(r.json()["id"]) == "succeeded"
    job = client.get(f"/fine_tuning/jobs/{r.json()['id']}").json()
    assert job["model"] == "gpt-4o-mini-2024-07-18"
    assert job["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:acme:test:")
    bad = client.post("/fine_tuning/jobs", json=sft_job_body("bad", train_file["id"]))
    assert bad.status_code == 400 and error_of(bad)["param"] == "model"
    get_settings.cache_clear()
