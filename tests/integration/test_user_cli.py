"""`juice files` and `juice jobs` as a user runs them: real subprocesses against the real API and worker,
talking to it over HTTP with nothing but JUICE_API_URL and JUICE_API_KEY (or the key file)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, Deployment, free_port
from tests.helpers import chat_jsonl, wait_status

pytestmark = pytest.mark.integration


def cli_env(prod: Deployment, key: str | None, home: Path) -> dict[str, str]:
    """A user's shell: none of the deployment's JUICE_* settings, no forced colours, a home of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUICE_", "FORCE_COLOR", "TTY_"))}
    env.update({"JUICE_API_URL": f"{prod.url}/v1", "JUICE_HOME": str(home), "PYTHONUNBUFFERED": "1"})
    if key is not None:
        env["JUICE_API_KEY"] = key
    return env


def juice(
    args: list[str], env: dict[str, str], cwd: Path = REPO, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "juice.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    return out.stdout


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    """A failed command: exit 1, no traceback, one `juice: ...` line on stderr; that line."""
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("juice: "), out.stderr
    return lines[0]


def test_upload_create_watch_list_download(prod: Deployment, tmp_path: Path) -> None:
    key = prod.new_key("cli-user")
    env = cli_env(prod, key, tmp_path / "home")
    api = prod.client(key)

    train = tmp_path / "train.jsonl"
    train.write_bytes(chat_jsonl(8))
    file_id = ok(juice(["files", "upload", str(train)], env)).strip()
    assert re.fullmatch(r"file-\S+", file_id)
    stored = api.get(f"/files/{file_id}").json()
    assert (stored["filename"], stored["purpose"], stored["bytes"]) == (
        "train.jsonl",
        "fine-tune",
        len(chat_jsonl(8)),
    )

    # a bad line: the API's message, naming the line, and nothing kept
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(chat_jsonl(1) + b'{"messages": [oops\n')
    files_before = len(api.get("/files").json()["data"])
    out = juice(["files", "upload", str(bad)], env)
    line = one_error_line(out)
    assert "line 2" in line and "bad.jsonl" in line and "HTTP 400" in line
    assert out.stdout == ""
    assert len(api.get("/files").json()["data"]) == files_before

    # create from a local path (uploaded first), with nested hyperparameters, and watch it to the end
    hp = ["n_epochs=2", "batch_size=4", "learning_rate_multiplier=50", "lora.enabled=false", "lora.r=8"]
    create = ["jobs", "create", "--model", "tiny-llama", "--training-file", str(train), "--suffix", "cli"]
    out = juice([*create, "--seed", "3", "--hp", *hp, "--watch"], env)
    stdout = ok(out)
    assert re.search(r"uploaded .*train\.jsonl as file-", out.stderr)
    job_id = re.search(r"^created (ftjob-\S+)$", stdout, re.M).group(1)  # type: ignore[union-attr]
    job = api.get(f"/fine_tuning/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    hp = job["method"]["supervised"]["hyperparameters"]
    assert (hp["n_epochs"], hp["batch_size"], hp["lora"]["enabled"], hp["lora"]["r"]) == (2, 4, False, 8)
    assert job["seed"] == 3 and job["training_file"] != file_id  # the path was uploaded anew
    # plain lines (stdout is a pipe): status changes, per-step losses, the job's events, the final line
    assert "status: succeeded" in stdout
    assert re.search(r"^step [1-4]/4  train loss \d+\.\d{4}", stdout, re.M), stdout
    assert "The job has successfully completed." in stdout
    final = stdout.strip().splitlines()[-1]
    assert final.startswith(f"{job_id} succeeded  fine-tuned model: {job['fine_tuned_model']}")
    assert job["fine_tuned_model"].startswith("ft:tiny-llama:cli-user:cli:")
    assert f"train loss {job['latest_metrics']['train/loss']:.4f}" in final

    # watching a finished job: its events and the same final line at once
    again = ok(juice(["jobs", "watch", job_id], env))
    assert again.strip().splitlines()[-1] == final and "The job has successfully completed." in again

    listing = ok(juice(["jobs", "list", "--limit", "5"], env))
    row = next(line for line in listing.splitlines() if job_id in line)
    assert (
        "tiny-llama" in row and "supervised" in row and "succeeded" in row and job["fine_tuned_model"] in row
    )

    # download: the final checkpoint, unpacked without the tar's top folder
    dest = tmp_path / "model"
    said = ok(juice(["jobs", "download", job_id, "-o", str(dest)], env))
    assert str(dest) in said and "ckpt-step-4" in said
    names = sorted(p.name for p in dest.iterdir())
    assert "config.json" in names and any(n.endswith(".safetensors") for n in names), names
    assert json.loads((dest / "config.json").read_text())["model_type"] == "llama"
    assert not any(n.startswith(".juice-download") for n in names)
    weights = next(p for p in dest.iterdir() if p.suffix == ".safetensors")
    # refuses a non-empty folder, leaves it untouched; --force overwrites
    refused = juice(["jobs", "download", job_id, "-o", str(dest)], env)
    assert "not empty" in one_error_line(refused) and "--force" in refused.stderr
    assert sorted(p.name for p in dest.iterdir()) == names
    weights.write_bytes(b"stale")
    ok(juice(["jobs", "download", job_id, "-o", str(dest), "--force"], env))
    assert weights.stat().st_size > 1000

    # a named checkpoint, into the default folder (<job>-step-N in the working directory)
    ckpts = api.get(f"/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
    oldest = ckpts[-1]
    ok(juice(["jobs", "download", job_id, "--checkpoint", oldest["id"]], env, cwd=tmp_path))
    assert (tmp_path / f"{job_id}-step-{oldest['step_number']}" / "config.json").is_file()
    missing = juice(
        ["jobs", "download", job_id, "--checkpoint", "ftckpt-nope", "-o", str(tmp_path / "x")], env
    )
    assert "no checkpoint ftckpt-nope" in one_error_line(missing)
    assert not (tmp_path / "x").exists()

    # a finished job cannot be cancelled: the API's 409, as one line
    assert "HTTP 409" in one_error_line(juice(["jobs", "cancel", job_id], env))


def test_pause_resume_cancel_and_watch(prod: Deployment, tmp_path: Path) -> None:
    key = prod.new_key("cli-pauser")
    env = cli_env(prod, key, tmp_path / "home")
    api = prod.client(key)
    train = tmp_path / "train.jsonl"
    train.write_bytes(chat_jsonl(16))
    file_id = ok(juice(["files", "upload", str(train)], env)).strip()
    # 16 examples, batch 2, 50 epochs: 400 steps, long enough to pause and cancel mid-run (80 steps of
    # the tiny model ran out in about a second once batches were packed)
    job_id = ok(
        juice(
            [
                "jobs",
                "create",
                "--model",
                "tiny-llama",
                "--training-file",
                file_id,
                "--hp",
                "n_epochs=50",
                "batch_size=2",
            ],
            env,
        )
    ).strip()
    assert job_id.startswith("ftjob-") and "\n" not in job_id

    watcher = subprocess.Popen(
        [sys.executable, "-m", "juice.cli", "jobs", "watch", job_id],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while ((api.get(f"/fine_tuning/jobs/{job_id}").json()["progress"] or {}).get("step") or 0) < 2:
            assert time.monotonic() < deadline and watcher.poll() is None
            time.sleep(0.2)
        said = ok(juice(["jobs", "pause", job_id], env)).strip()
        assert said in (
            f"{job_id}: paused",
            f"{job_id}: running (pause requested: it checkpoints at the next step and stops)",
        )
        stdout, stderr = watcher.communicate(timeout=120)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, stdout + stderr
    # the watcher saw it train, then stopped with the pause and says how to go on
    assert re.search(r"^step \d+/400  train loss \d+\.\d{4}", stdout, re.M), stdout
    assert "status: paused" in stdout
    at = api.get(f"/fine_tuning/jobs/{job_id}/checkpoints").json()["data"][0]["step_number"]
    assert (
        stdout.strip().splitlines()[-1]
        == f"{job_id} paused at step {at}; `juice jobs resume {job_id}` continues it"
    )

    assert (
        ok(juice(["jobs", "resume", job_id], env)).strip()
        == f"{job_id}: queued (it continues from its checkpoint)"
    )
    deadline = time.monotonic() + 180
    while (job := api.get(f"/fine_tuning/jobs/{job_id}").json())["status"] != "running" or (
        job["progress"]["step"] or 0
    ) <= at:
        assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
        time.sleep(0.2)
    said = ok(juice(["jobs", "cancel", job_id], env)).strip()
    assert said in (
        f"{job_id}: cancelled",
        f"{job_id}: running (cancellation requested: it stops at the next step)",
    )

    out = juice(["jobs", "watch", job_id], env)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{job_id} cancelled" in out.stdout and f"job {job_id} cancelled" in out.stderr
    assert wait_status(api, job_id, {"cancelled"})["status"] == "cancelled"
    messages = [
        e["message"]
        for e in api.get(f"/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    ]
    assert f"Resuming from the checkpoint at step {at}." in messages
    assert (
        f"Resuming from the checkpoint at step {at}." in out.stdout
    )  # the event history, as watch prints it


def test_errors_are_one_clear_line(prod: Deployment, tmp_path: Path) -> None:
    key = prod.new_key("cli-errors")
    home = tmp_path / "home"
    env = cli_env(prod, key, home)

    wrong = one_error_line(juice(["jobs", "list"], {**env, "JUICE_API_KEY": "sk-juice-not-a-key"}))
    assert "Incorrect API key provided." in wrong and "HTTP 401" in wrong and "JUICE_API_KEY" in wrong

    url = f"http://127.0.0.1:{free_port()}/v1"
    down = one_error_line(juice(["jobs", "list"], {**env, "JUICE_API_URL": url}))
    assert f"{url} did not answer" in down and "juice up" in down
    # the option beats the variable
    assert f"{url} did not answer" in one_error_line(juice(["jobs", "list", "--api-url", url], env))

    # no key anywhere: says where it looked; the embedded install's key file is the fallback
    no_key = {k: v for k, v in env.items() if k != "JUICE_API_KEY"}
    assert str(home / "api_key") in one_error_line(juice(["jobs", "list"], no_key))
    home.mkdir()
    (home / "api_key").write_text(key + "\n")
    train = tmp_path / "train.jsonl"
    train.write_bytes(chat_jsonl(4))
    file_id = ok(juice(["files", "upload", str(train)], no_key)).strip()
    assert prod.client(key).get(f"/files/{file_id}").status_code == 200  # uploaded as the key file's tenant

    missing = one_error_line(juice(["jobs", "watch", "ftjob-nope"], env))
    assert "ftjob-nope" in missing and "HTTP 404" in missing
    bad_hp = juice(
        ["jobs", "create", "--model", "tiny-llama", "--training-file", "file-x", "--hp", "n_epochs"], env
    )
    assert "expected KEY=VALUE" in one_error_line(bad_hp)
    no_file = juice(
        ["jobs", "create", "--model", "tiny-llama", "--training-file", str(tmp_path / "nope.jsonl")], env
    )
    assert "neither a local file nor a file id" in one_error_line(no_file)

    # the API's own validation, naming the field
    refused = juice(
        ["jobs", "create", "--model", "tiny-llama", "--training-file", file_id, "--hp", "n_epochs=0"], env
    )
    assert "method.supervised.hyperparameters.n_epochs" in one_error_line(refused)
    assert prod.client(key).get("/fine_tuning/jobs").json()["data"] == []  # nothing was created
