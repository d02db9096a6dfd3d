"""docker-compose.yml, the Dockerfiles and .env.example, checked without a Docker engine (none runs
here): the services and their order, non-root images with health checks, the torch pin the install
step uses, and every variable compose demands documented in .env.example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _dockerfile(name: str) -> list[str]:
    """Instructions of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "docker" / name).read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_compose_services_start_in_order_after_a_one_shot_migration() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"db", "redis", "migrate", "api", "worker", "inference"}
    assert services["migrate"]["command"] == ["juice", "db", "upgrade"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("api", "worker", "inference"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["restart"] == "unless-stopped"
    for name, service in services.items():
        if "build" in service:
            assert (REPO / service["build"]["dockerfile"]).is_file(), name
    # the API forwards chat completions to the inference service, on the port it listens on
    inference = services["inference"]
    assert inference["command"][:2] == ["juice", "inference"]
    port = inference["command"][inference["command"].index("--port") + 1]
    assert COMPOSE["x-juice-env"]["JUICE_INFERENCE_URL"] == f"http://inference:{port}"
    assert f"127.0.0.1:{port}/healthz" in " ".join(inference["healthcheck"]["test"])
    # the worker checkpoints and re-queues its job on SIGTERM; give it the time to
    assert services["worker"]["stop_grace_period"] == "5m"


def test_compose_file_follows_the_compose_specification() -> None:
    """The schema `docker compose config` checks against (compose-spec.json, vendored by check-jsonschema)."""
    tool = Path(sys.executable).with_name("check-jsonschema")
    out = subprocess.run(
        [str(tool), "--builtin-schema", "vendor.compose-spec", str(REPO / "docker-compose.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    broken = REPO / "test-artifacts" / "compose-broken.yml"
    broken.parent.mkdir(exist_ok=True)
    broken.write_text(
        (REPO / "docker-compose.yml").read_text().replace("restart: unless-stopped", "restart: [1]", 1)
    )
    refused = subprocess.run(
        [str(tool), "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0  # the check does catch a malformed file


def test_every_variable_compose_requires_is_in_env_example() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", (REPO / "docker-compose.yml").read_text()))
    documented = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert required == documented == {"POSTGRES_PASSWORD", "JUICE_SECRET_KEY"}


def test_images_run_as_a_non_root_user_with_a_health_check() -> None:
    for name in ("api.Dockerfile", "worker.Dockerfile"):
        lines = _dockerfile(name)
        verbs = [line.split()[0] for line in lines]
        assert "HEALTHCHECK" in verbs and verbs[-1] == "CMD", name
        users = [line.split()[1] for line in lines if line.startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), name
        assert verbs.index("USER") < verbs.index("CMD")


def test_the_worker_image_pins_the_install_steps_torch_from_pypi() -> None:
    setup = (REPO / "scripts" / "setup.sh").read_text()
    pin = re.search(r"torch==([\d.]+)", setup)
    assert pin is not None
    torch_lines = [
        line for line in _dockerfile("worker.Dockerfile") if "torch" in line and "pip install" in line
    ]
    assert torch_lines == [f"RUN pip install torch=={pin.group(1)}"]  # PyPI's build: CUDA 13.0, no index
    assert not any("torch" in line for line in _dockerfile("api.Dockerfile"))  # the API never trains


def test_the_api_images_packages_are_declared_dependencies() -> None:
    declared = {
        re.split(r"[<>=\[ ]", dep, maxsplit=1)[0].lower()
        for dep in re.findall(
            r'^\s*"([^"]+)",', (REPO / "pyproject.toml").read_text().split("[project.optional")[0], re.M
        )
    }
    install = next(
        line for line in _dockerfile("api.Dockerfile") if line.startswith("RUN pip install --no-deps")
    )
    wanted = {
        re.split(r"[<>=\[]", p.strip('"'), maxsplit=1)[0].lower()
        for p in re.findall(r'"[^"]+"|\b[a-z0-9]+fs\b', install)
    }
    assert wanted - {"s3fs", "gcsfs"} <= declared, wanted - declared


def test_the_worker_health_check_names_the_node_juice_worker_starts() -> None:
    from juice.cli import worker_argv

    argv = worker_argv(1, "info")
    assert argv[argv.index("-n") + 1] == f"juice@%h-{os.getpid()}"  # PID 1 in the container
    health = next(line for line in _dockerfile("worker.Dockerfile") if line.startswith("HEALTHCHECK"))
    assert '-d "juice@${HOSTNAME}-1"' in health
