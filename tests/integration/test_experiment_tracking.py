"""A job's `integrations`: its metrics reach a real `mlflow server` on loopback and an offline W&B run,
value for value what Juice itself recorded; a tracker that is down costs a warning event, not the job;
an integration the server has no tracker for is refused at create."""

from __future__ import annotations

import glob
import io
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import ARTIFACTS, Deployment, free_port, isolated_deployment
from tests.helpers import FINAL_STATUSES, chat_jsonl, sft_job_body, wait_status

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = open(ARTIFACTS / "mlflow-server.log", "wb")  # noqa: SIM115  # closed below
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)),
            *("--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"),
            *("--default-artifact-root", str(root / "artifacts"), "--workers", "1"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (ARTIFACTS / "mlflow-server.log").read_text()[-3000:]
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "mlflow server did not start"
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(30)
    log.close()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, mlflow_url: str
) -> Iterator[Deployment]:
    home = tmp_path_factory.mktemp("tracking-home")
    with isolated_deployment(
        home,
        f"file://{home / 'store'}",
        tiny_model_dir,
        1,
        "tracking",
        JUICE_MLFLOW_TRACKING_URI=mlflow_url,
        JUICE_WANDB_MODE="offline",
        JUICE_WANDB_DIR=str(home / "wandb"),
        WANDB_SILENT="true",
    ) as dep:
        dep.start_worker(sweeper=True)
        yield dep


def _juice_series(client: httpx.Client, job_id: str, name: str) -> dict[int, float]:
    data = client.get(f"/fine_tuning/jobs/{job_id}/metrics", params={"names": name, "limit": 1000}).json()[
        "data"
    ]
    return {p["step"]: p["values"][name] for p in data if name in p["values"]}


def _wandb_history(run_file: str) -> list[dict[str, str]]:
    """The history rows of an offline W&B run file: LevelDB-log blocks of wandb Record protos after a
    7-byte header (':W&B', magic, version)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf, rows = Path(run_file).read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if (left := 32768 - pos % 32768) < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):  # FULL or LAST: one whole record
            record = pb.Record()
            record.ParseFromString(buf)
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): i.value_json for i in record.history.item})
    return rows


def test_metrics_reach_mlflow_and_wandb(deployment: Deployment, mlflow_url: str) -> None:
    from mlflow.tracking import MlflowClient

    key = deployment.new_key("tracked")
    client = deployment.client(key)
    sdk = openai.OpenAI(base_url=f"{deployment.url}/v1", api_key=key, max_retries=0)
    train = sdk.files.create(file=("t.jsonl", io.BytesIO(chat_jsonl(8))), purpose="fine-tune")
    integrations = [
        {
            "type": "mlflow",
            "mlflow": {"experiment_name": "juice-tests", "run_name": "first", "tags": {"team": "a"}},
        },
        {"type": "wandb", "wandb": {"project": "juice-tests", "tags": ["t1"]}},
    ]
    created = sdk.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=train.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}},
        integrations=integrations,  # type: ignore[list-item]  # the SDK's type names wandb only
    )
    assert [i.model_dump(exclude_none=True) for i in created.integrations or []] == integrations
    job = wait_status(client, created.id, FINAL_STATUSES)
    assert job["status"] == "succeeded", job["error"]
    losses = _juice_series(client, job["id"], "train/loss")
    assert len(losses) == 4  # 8 examples / batch 4, 2 epochs

    mlflow = MlflowClient(tracking_uri=mlflow_url)
    experiment = mlflow.get_experiment_by_name("tracked/juice-tests")  # under the tenant's name
    runs = mlflow.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`juice.job_id` = '{job['id']}'"
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "first" and run.data.tags["team"] == "a"
    assert run.data.tags.get("mlflow.user") != "x"  # MLflow's own tags are not the tenant's to set
    assert run.data.params["method"] == job["method"]["type"] and run.data.params["batch_size"] == "4"
    history = {m.step: m.value for m in mlflow.get_metric_history(run.info.run_id, "train/loss")}
    assert history == pytest.approx(losses)

    runs_dir = Path(deployment.env["JUICE_WANDB_DIR"]) / "wandb"
    files = glob.glob(str(runs_dir / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1, files
    rows = [row for row in _wandb_history(files[0]) if "train/loss" in row]
    assert {int(row["_step"]): float(row["train/loss"]) for row in rows} == pytest.approx(losses)


def test_a_tracker_that_is_down_costs_a_warning_not_the_job(deployment: Deployment) -> None:
    """The worker's MLflow server does not answer: the job still succeeds and says why nothing was logged."""
    dead = f"http://127.0.0.1:{free_port()}"
    deployment.workers[0].stop()
    deployment.workers.clear()
    worker = deployment.start_worker(sweeper=True, JUICE_MLFLOW_TRACKING_URI=dead)
    try:
        client = deployment.client(deployment.new_key("tracked-down"))
        train = client.post(
            "/files", files={"file": ("t.jsonl", chat_jsonl(4))}, data={"purpose": "fine-tune"}
        ).json()
        body = sft_job_body("tiny-llama", train["id"], n_epochs=1, batch_size=4)
        body["integrations"] = [{"type": "mlflow", "mlflow": {"experiment_name": "never"}}]
        job = wait_status(client, client.post("/fine_tuning/jobs", json=body).json()["id"], FINAL_STATUSES)
        assert job["status"] == "succeeded", job["error"]
        events = client.get(f"/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
        warnings = [e["message"] for e in events if e["level"] == "warn"]
        assert any("mlflow integration stopped logging" in m for m in warnings), warnings
    finally:
        worker.stop()
        deployment.workers.clear()
        deployment.start_worker(sweeper=True)


def test_a_paused_and_resumed_job_is_one_run(deployment: Deployment, mlflow_url: str) -> None:
    """Pause leaves the MLflow run open (RUNNING); the resumed attempt finds it by its job tag and logs on,
    so the job is one run whose loss history has every step once."""
    from mlflow.tracking import MlflowClient

    client = deployment.client(deployment.new_key("tracked-pause"))
    train = client.post(
        "/files", files={"file": ("t.jsonl", chat_jsonl(16))}, data={"purpose": "fine-tune"}
    ).json()
    body = sft_job_body("tiny-llama", train["id"], n_epochs=10, batch_size=2)
    body["integrations"] = [{"type": "mlflow", "mlflow": {"experiment_name": "juice-pause"}}]
    job = client.post("/fine_tuning/jobs", json=body).json()
    deadline = time.monotonic() + 120
    while (client.get(f"/fine_tuning/jobs/{job['id']}").json()["progress"]["step"] or 0) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.post(f"/fine_tuning/jobs/{job['id']}/pause").status_code == 200
    while client.get(f"/fine_tuning/jobs/{job['id']}").json()["status"] != "paused":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    mlflow = MlflowClient(tracking_uri=mlflow_url)
    experiment = mlflow.get_experiment_by_name("tracked-pause/juice-pause").experiment_id
    (run,) = mlflow.search_runs([experiment])
    assert run.info.status == "RUNNING"
    assert client.post(f"/fine_tuning/jobs/{job['id']}/resume").status_code == 200
    done = wait_status(client, job["id"], FINAL_STATUSES)
    assert done["status"] == "succeeded", done["error"]
    (run,) = mlflow.search_runs([experiment])
    assert run.info.status == "FINISHED" and run.data.tags["juice.job_id"] == job["id"]
    steps = [m.step for m in mlflow.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(1, 81))  # 16 examples / batch 2 x 10 epochs, each step once
