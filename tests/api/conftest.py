"""In-process API tests: the real app on a real SQLite database in a temp $JUICE_HOME.

Jobs are enqueued onto the embedded filesystem broker there; no worker consumes them in these tests.
Each test gets its own database file, a copy of one migrated once per session (running the migrations
cost about a second a test).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers import chat_jsonl, upload

CACHES = (
    "api.core.config:get_settings",
    "api.db.session:get_engine",
    "api.db.session:get_sessionmaker",
    "api.storage:get_store",
    "api.queue:get_celery",
)


def clear_caches() -> None:
    import importlib

    for spec in CACHES:
        mod, name = spec.split(":")
        getattr(importlib.import_module(mod), name).cache_clear()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the head migration: what `migrate.upgrade()` leaves in a new $JUICE_HOME."""
    from api.db import migrate

    path = tmp_path_factory.mktemp("migrated") / "juice.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture()
def app_env(
    tmp_path: Path, tiny_model_dir: Path, migrated_sqlite: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    for var in ("JUICE_DATABASE_URL", "JUICE_BROKER_URL", "JUICE_STORAGE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JUICE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JUICE_MODEL_ROOTS", str(tiny_model_dir))
    # These tests fire requests far faster than any client would; the rate limit has its own tests
    # (test_tenant_limits.py), which set it explicitly.
    monkeypatch.setenv("JUICE_RATE_LIMIT_PER_S", "0")
    clear_caches()
    from api.core.config import get_settings

    (tmp_path / "home").mkdir()
    # copyfile, not copy: the file gets the mode a new one would, as the migration would have made it.
    shutil.copyfile(migrated_sqlite, tmp_path / "home" / "juice.db")
    # Read the settings now, as the per-test migration used to: a test that changes the environment
    # after this fixture still needs clear_caches() for it to count.
    get_settings()
    yield tmp_path / "home"
    clear_caches()


def make_key(tenant: str) -> str:
    from api.db.session import session_scope
    from api.services.keys import create_key

    with session_scope() as s:
        return create_key(s, tenant)


@pytest.fixture()
def client(app_env: Path) -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app(), base_url="http://testserver/v1") as c:
        c.headers["Authorization"] = f"Bearer {make_key('acme')}"
        yield c


@pytest.fixture()
def train_file(client: TestClient) -> dict:
    return upload(client, chat_jsonl(10))
