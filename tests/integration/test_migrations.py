"""Migrations are the only way the schema changes: they apply, reverse, and match the models."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from api.db import migrate
from tests.conftest import PG_ADMIN

pytestmark = pytest.mark.integration


def test_alembic_check_postgres(pg_url: str) -> None:
    migrate.check(pg_url)  # raises when models and migrations disagree


def test_upgrade_downgrade_upgrade_postgres() -> None:
    name = f"juice_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    try:
        migrate.upgrade(url)
        migrate.downgrade(url)
        migrate.upgrade(url)
        migrate.check(url)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_sqlite_upgrade_and_check(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'j.db'}"
    migrate.upgrade(url)
    migrate.check(url)
    migrate.downgrade(url)
