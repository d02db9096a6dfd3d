"""The images' health checks, run as the containers would run them, against real processes: the API's
(/readyz) and the worker's (a Celery ping of the node `juice worker` names) pass against the `prod`
deployment and fail where nothing answers."""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Deployment, free_port

pytestmark = pytest.mark.integration
DOCKER = Path(__file__).resolve().parents[2] / "docker"


def _health_command(dockerfile: str) -> str:
    text = re.sub(r"\\\n", " ", (DOCKER / dockerfile).read_text())
    line = next(line for line in text.splitlines() if line.startswith("HEALTHCHECK"))
    return line.split(" CMD ", 1)[1].removesuffix(" || exit 1").strip()


def _run(command: list[str], env: dict[str, str]) -> int:
    return subprocess.run(command, env=env, capture_output=True, timeout=60).returncode


def test_the_api_images_health_check(prod: Deployment) -> None:
    command = shlex.split(_health_command("api.Dockerfile"))
    assert command[0] == "python"
    live = [sys.executable, *command[1:-1], command[-1].replace("8000", str(prod.port))]
    assert _run(live, prod.env) == 0
    dead = [sys.executable, *command[1:-1], command[-1].replace("8000", str(free_port()))]
    assert _run(dead, prod.env) != 0


def test_the_worker_images_health_check(prod: Deployment) -> None:
    command = shlex.split(_health_command("worker.Dockerfile"))
    assert command[:3] == ["celery", "-A", "worker.celery_app"]
    deadline = time.monotonic() + 90
    while " ready." not in prod.workers[0].output():  # a worker still starting answers no ping, rightly
        assert time.monotonic() < deadline, prod.workers[0].output()[-2000:]
        time.sleep(0.5)
    worker = prod.workers[0].proc.pid  # PID 1 in the container, hence the image's "-1"
    node = (
        command[command.index("-d") + 1]
        .replace("${HOSTNAME}", socket.gethostname())
        .replace("-1", f"-{worker}")
    )
    celery = str(Path(sys.executable).with_name("celery"))
    argv = [celery, *command[1 : command.index("-d") + 1], node, *command[command.index("-d") + 2 :]]
    assert _run(argv, prod.env) == 0
    argv[argv.index(node)] = node + "0"  # a node nobody runs: no reply
    assert _run(argv, prod.env) != 0
