"""`juice up` on the embedded default: SQLite, filesystem broker, local artifacts, one worker."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from transformers import AutoModelForCausalLM

from tests.conftest import ARTIFACTS, JuiceProcess, fast_env, free_port, wait_http
from tests.helpers import chat_jsonl, extract_tar, sft_job_body, upload, wait_status

pytestmark = pytest.mark.integration


@pytest.fixture()
def juice_up(tmp_path: Path, tiny_model_dir: Path):
    home = tmp_path / "juice-home"
    port = free_port()
    env = fast_env(home)
    proc = JuiceProcess(["up", "--port", str(port)], env, ARTIFACTS / "logs" / "embedded" / "up.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=90)
        # the tiny model goes into the default model root, as `juice models import-gguf` would put one
        (home / "models" / "tiny").symlink_to(tiny_model_dir / "tiny-llama")
        yield home, port, proc
    finally:
        proc.stop()


def test_juice_up_runs_a_job_end_to_end(juice_up, tmp_path: Path) -> None:
    home, port, proc = juice_up
    deadline = time.monotonic() + 10
    while not (m := re.search(r"API key:\s+(sk-juice-\S+)", proc.output())):
        assert time.monotonic() < deadline, proc.output()
        time.sleep(0.1)
    assert f"http://127.0.0.1:{port}/v1" in proc.output()
    key = m.group(1)
    assert (home / "api_key").read_text().strip() == key
    assert (home / "api_key").stat().st_mode & 0o077 == 0

    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60
    )
    train = upload(client, chat_jsonl(8))
    job = client.post("/fine_tuning/jobs", json=sft_job_body("tiny", train["id"])).json()
    job = wait_status(client, job["id"], {"succeeded", "failed", "cancelled"})
    assert job["status"] == "succeeded", job

    # all state lives under $JUICE_HOME: the SQLite file, the broker folder, the artifacts
    with sqlite3.connect(home / "juice.db") as db:
        assert db.execute("select status from jobs where id = ?", (job["id"],)).fetchone() == ("succeeded",)
    assert (home / "broker" / "queue").is_dir()
    assert list((home / "artifacts" / "jobs" / job["id"] / "checkpoints").iterdir())

    ckpt = client.get(f"/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"][0]
    tar = client.get(ckpt["download_url"].removeprefix("/v1")).content
    model = AutoModelForCausalLM.from_pretrained(extract_tar(tar, tmp_path / "dl"))
    assert sum(p.numel() for p in model.parameters()) > 0

    # `juice up` serves the tuned model too: its inference server answers chat completions
    ask = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 4, "temperature": 0}
    reply = client.post("/chat/completions", json={**ask, "model": job["fine_tuned_model"]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_sigterm_stops_api_and_worker(juice_up) -> None:
    _, _, proc = juice_up
    proc.proc.send_signal(signal.SIGTERM)  # the `juice up` process only, as a service manager would
    proc.proc.wait(timeout=45)
    deadline = time.monotonic() + 45
    while True:  # its worker (same process group) must go too, not linger as an orphan
        try:
            os.killpg(proc.proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "worker outlived `juice up`"
        time.sleep(0.2)


def test_juice_up_refuses_a_taken_inference_port(tmp_path: Path) -> None:
    """A second `juice up` on one machine must not start without its inference server (chat completions
    would reach the first one's, which refuses its token): it says which port and how to move it, exit 1,
    before it writes any state."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        home = tmp_path / "juice-home"
        env = fast_env(home, JUICE_INFERENCE_PORT=str(taken))
        out = subprocess.run(
            [sys.executable, "-m", "juice.cli", "up", "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"127.0.0.1:{taken} is in use" in out.stderr
    assert "JUICE_INFERENCE_PORT" in out.stderr
    assert not (home / "juice.db").exists()
