"""A job's model is a folder under a model root or a real hub id, nothing else (issue 10, finding 3).

transformers' from_pretrained reads a hub id as a folder relative to the working directory when one of
that name exists there, so a hub-shaped name must never reach it while such a folder exists: not when
the job is created, and not in the worker, which checks again right before it loads the model.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import make_key
from tests.api.live import live_client
from tests.helpers import chat_jsonl, sft_job_body, upload


def error_of(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def job_count() -> int:
    from sqlalchemy import func, select

    from api.db.session import session_scope
    from api.db.tables import Job

    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(Job)) or 0


@pytest.fixture()
def live(app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id that slipped through must not go to the network
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # the process's working directory: where from_pretrained looks first
    with live_client(make_key("acme")) as client:
        yield client


@pytest.fixture()
def train_file(live: httpx.Client) -> str:
    return upload(live, chat_jsonl(4))["id"]


@pytest.mark.parametrize(
    "name",
    [
        "tiny-llama\n",  # `$` matched before a trailing newline
        "x/..",  # a '..' component
        "x/config.json",  # a file, not a repository
        "org/model.safetensors",
        "org/weights.GGUF",
        "a--b",  # the Hub forbids "--" and ".."
        "a..b/c",
        "x/",
        "org//name",
        "a/b/c",  # at most one '/' in a hub id
        "-leading-dash",
        "trailing.",
        "café",  # ASCII only
        " tiny-llama",
        "tiny\x00llama",
        "x" * 97,
    ],
)
def test_malformed_names_are_refused_at_create(live: httpx.Client, train_file: str, name: str) -> None:
    r = live.post("/fine_tuning/jobs", json=sft_job_body(name, train_file))
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert (err["param"], err["code"]) == ("model", "model_not_found"), err
    assert job_count() == 0


@pytest.mark.parametrize(
    "name",
    [
        "gpt2",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "meta-llama/Llama-3.1-8B",
        "EleutherAI/gpt-neo-1.3B",
        "microsoft/phi-1_5",
    ],
)
def test_real_hub_ids_are_accepted(live: httpx.Client, train_file: str, name: str) -> None:
    r = live.post("/fine_tuning/jobs", json=sft_job_body(name, train_file))
    assert r.status_code == 200, r.text
    assert r.json()["model"] == name


def plant_model(folder: Path, tiny_model_dir: Path) -> None:
    """A real, loadable model at `folder`: what the probe found trained."""
    shutil.copytree(tiny_model_dir / "tiny-llama", folder)


@pytest.mark.parametrize("name", ["escaped-model", "org/secret-model"])
def test_a_hub_id_naming_a_folder_in_the_working_directory_is_refused_at_create(
    live: httpx.Client, train_file: str, tiny_model_dir: Path, name: str
) -> None:
    plant_model(Path.cwd() / name, tiny_model_dir)
    r = live.post("/fine_tuning/jobs", json=sft_job_body(name, train_file))
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert (err["param"], err["code"]) == ("model", "model_not_allowed")
    assert "working directory" in err["message"]
    rft = {"type": "rft", "rft": {"hyperparameters": {"reward_model": name}}}
    r = live.post(
        "/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": train_file, "method": rft}
    )
    assert r.status_code == 400 and error_of(r)["param"] == "method.rft.hyperparameters.reward_model"
    assert job_count() == 0


def test_the_worker_does_not_train_a_folder_that_appeared_in_its_working_directory(
    live: httpx.Client, train_file: str, tiny_model_dir: Path
) -> None:
    """Accepted as a hub id while no such folder existed; the folder appears before a worker runs it.
    The worker resolves the name again and fails the job naming `model`; nothing is trained."""
    from api.db.session import session_scope
    from api.db.tables import Checkpoint, JobMetric
    from worker.runner import run_job

    job = live.post("/fine_tuning/jobs", json=sft_job_body("escaped-model", train_file, n_epochs=1)).json()
    assert job["status"] == "queued", job
    plant_model(Path.cwd() / "escaped-model", tiny_model_dir)

    assert run_job(job["id"]) == "failed"
    failed = live.get(f"/fine_tuning/jobs/{job['id']}").json()
    assert failed["status"] == "failed"
    assert (failed["error"]["code"], failed["error"]["param"]) == ("model_not_allowed", "model")
    with session_scope() as s:
        assert s.query(JobMetric).filter_by(job_id=job["id"]).count() == 0
        assert s.query(Checkpoint).filter_by(job_id=job["id"]).count() == 0


def test_local_names_resolve_to_absolute_folders_under_the_roots(
    app_env: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root's folder wins over a same-named one in the working directory, and is passed on as an
    absolute path, so where the worker runs never changes what it loads."""
    from api.core.config import get_settings
    from api.services.models import resolve_model

    monkeypatch.chdir(tmp_path)
    plant_model(tmp_path / "tiny-llama", tiny_model_dir)
    resolved = resolve_model("tiny-llama", get_settings())
    assert resolved == str(tiny_model_dir.resolve() / "tiny-llama") and Path(resolved).is_absolute()
    assert resolve_model("no-such-folder", get_settings()) == "no-such-folder"  # a hub id, left as it is
