"""`juice inference` over a real socket (uvicorn): concurrent streams take turns on the one decoding
thread, a client that leaves mid-stream frees its place at once, a full server answers 503, and a
chat template that refuses the messages is a 400 naming them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import clear_caches
from tests.api.live import inference_app, live_server
from tests.conftest import free_port

ASK = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture()
def server(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, dict]]:
    monkeypatch.setenv("JUICE_HOME", str(tmp_path / "home"))
    (tmp_path / "extra").mkdir()  # a second model root, for models a test builds
    monkeypatch.setenv("JUICE_MODEL_ROOTS", f"{tiny_model_dir}:{tmp_path / 'extra'}")
    monkeypatch.setenv("JUICE_INFERENCE_PORT", str(free_port()))
    monkeypatch.setenv("JUICE_INFERENCE_MAX_PENDING", "3")
    clear_caches()
    from api.core.config import get_settings
    from api.core.security import inference_token

    headers = {
        "Authorization": f"Bearer {inference_token(get_settings())}",
        "X-Juice-Model-Source": json.dumps({"path": str(tiny_model_dir / "tiny-llama")}),
    }
    with live_server(inference_app()) as url:
        yield url, headers
    clear_caches()


def _stream_text(url: str, headers: dict, max_tokens: int, leave_after: int | None = None) -> str:
    body = {
        "model": "tiny-llama",
        "messages": ASK,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    text = ""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=120) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["cache-control"] == "no-cache"
        for n, line in enumerate(r.iter_lines()):
            if leave_after is not None and n >= leave_after:
                return text  # the client goes away mid-reply
            if line.startswith("data: {"):
                chunk = json.loads(line.removeprefix("data: "))
                text += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
    return text


def _in_flight(url: str) -> int:
    return httpx.get(f"{url}/healthz", timeout=10).json()["in_flight"]


def test_concurrent_streams_all_finish_and_a_leaver_frees_its_place(server: tuple[str, dict]) -> None:
    url, headers = server
    alone = _stream_text(url, headers, 24)
    results: dict[int, str] = {}

    def run(i: int) -> None:
        results[i] = _stream_text(url, headers, 24, leave_after=2 if i == 0 else None)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(not t.is_alive() for t in threads)
    assert results[1] == results[2] == alone  # greedy: taking turns changes no reply
    assert _stream_text(url, headers, 24) == alone  # and nothing is left holding the decoder
    assert _in_flight(url) == 0


def test_a_full_server_says_503_with_retry_after(tmp_path: Path) -> None:
    """At the cap of replies in flight the next one is refused at once (the streams above show that a
    finished or abandoned reply gives its place back: in_flight returns to 0)."""
    from api.core.config import Settings
    from api.errors import ServiceUnavailable
    from inference.server import Engine

    engine = Engine(Settings(home=tmp_path, inference_max_pending=2))
    engine.admit()
    engine.admit()
    with pytest.raises(ServiceUnavailable) as busy:
        engine.admit()
    assert busy.value.code == "inference_busy" and busy.value.status_code == 503
    assert busy.value.extra_headers["Retry-After"]
    engine.release()
    engine.admit()  # a place came free


def test_a_template_that_refuses_the_messages_is_a_400(
    server: tuple[str, dict], tmp_path: Path, tiny_model_dir: Path
) -> None:
    import shutil

    url, headers = server
    strict = tmp_path / "extra" / "strict"
    shutil.copytree(tiny_model_dir / "tiny-llama", strict)
    config = json.loads((strict / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system turns') }}{% endif %}x"
    )
    (strict / "tokenizer_config.json").write_text(json.dumps(config))
    for name in ("chat_template.jinja", "chat_template.json"):
        (strict / name).unlink(missing_ok=True)
    refused = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "strict", "messages": [{"role": "system", "content": "be brief"}, *ASK]},
        headers={**headers, "X-Juice-Model-Source": json.dumps({"path": str(strict)})},
        timeout=60,
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "messages" and "no system turns" in error["message"]


def test_the_compose_health_check_passes_against_a_live_server(server: tuple[str, dict]) -> None:
    """docker-compose.yml's health check of the inference service, run as the container would run it."""
    import subprocess
    import sys

    import yaml

    url, _ = server
    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
    command = compose["services"]["inference"]["healthcheck"]["test"]
    assert command[:2] == ["CMD", "python"]
    port = url.rsplit(":", 1)[1]
    live = [sys.executable, *command[2:-1], command[-1].replace("8001", port)]
    assert subprocess.run(live, capture_output=True, timeout=60).returncode == 0
    dead = [sys.executable, *command[2:-1], command[-1].replace("8001", str(free_port()))]
    assert subprocess.run(dead, capture_output=True, timeout=60).returncode != 0
