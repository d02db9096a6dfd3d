"""The real app served by uvicorn on a local port, for tests whose subject is the HTTP layer itself.

FastAPI's TestClient calls the app in-process and never encodes a response header the way a server
does: a non-Latin-1 or NUL byte in a header, which uvicorn turns into a 500 or a dropped connection,
passes through it unnoticed. These tests go through a real socket instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from tests.conftest import free_port


def inference_app() -> FastAPI:
    """`juice inference`'s app, configured by the environment (its port: JUICE_INFERENCE_PORT)."""
    from inference.server import create_app

    return create_app()


@contextmanager
def live_server(app: FastAPI | None = None) -> Iterator[str]:
    """Serve a fresh API app (configured by the environment, as `app_env` leaves it), or `app` on the
    inference port; yields its base URL."""
    from api.core.config import get_settings
    from api.main import create_app

    port = free_port() if app is None else get_settings().inference_port
    app = app or create_app()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)  # off the main thread: no signal handlers
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def live_client(key: str) -> Iterator[httpx.Client]:
    """An httpx client of a live server's /v1 API, authenticated with `key`."""
    with (
        live_server() as url,
        httpx.Client(base_url=f"{url}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30) as client,
    ):
        yield client
