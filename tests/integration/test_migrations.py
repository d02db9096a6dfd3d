"""Migrations are the only way the schema changes: they apply, reverse, and match the models."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest
import sqlalchemy as sa

from api.db import migrate
from tests.conftest import PG_ADMIN, fresh_pg_database

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


def test_sqlite_upgrade_and_check(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    migrate.upgrade(url)
    migrate.check(url)
    migrate.downgrade(url)


OLD_SFT = {"n_epochs": 2, "batch_size": 4, "learning_rate": 1e-3, "learning_rate_multiplier": 50.0}
OLD_LORA = {"learning_rate": 4e-4, "learning_rate_multiplier": 2.0, "lora": {"enabled": True, "r": 8}}


def _insert_jobs(url: str, jobs: dict[str, dict], methods: dict[str, str] | None = None) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            tenant = conn.execute(
                sa.text("INSERT INTO tenants (name, created_at) VALUES ('t', :now) RETURNING id"),
                {"now": datetime.now(UTC).replace(tzinfo=None)},
            ).scalar_one()
            table = sa.table(
                "jobs",
                *(sa.column(c) for c in ("id", "tenant_id", "model", "training_file", "method_type")),
                *(sa.column(c) for c in ("seed", "status", "created_at", "attempt", "cancel_requested")),
                sa.column("hyperparameters", sa.JSON),
            )
            for job_id, hp in jobs.items():
                conn.execute(
                    table.insert().values(
                        id=job_id,
                        tenant_id=tenant,
                        model="m",
                        training_file="file-x",
                        method_type=(methods or {}).get(job_id, "supervised"),
                        hyperparameters=hp,
                        seed=0,
                        status="queued",
                        created_at=datetime.now(UTC).replace(tzinfo=None),
                        attempt=0,
                        cancel_requested=False,
                    )
                )
    finally:
        engine.dispose()


def _stored(url: str) -> dict[str, dict]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            table = sa.table("jobs", sa.column("id"), sa.column("hyperparameters", sa.JSON))
            return {row[0]: row[1] for row in conn.execute(sa.select(table.c.id, table.c.hyperparameters))}
    finally:
        engine.dispose()


def check_0005_round_trip(url: str) -> None:
    """0005 drops learning_rate_multiplier from stored jobs (so they train as they are) and the
    downgrade recomputes it from the learning rate and the base rate."""
    migrate.upgrade(url, "0004")
    old_rft = {"n_epochs": 25, "learning_rate": 2e-5, "learning_rate_multiplier": 1.0, "beta": 0.05}
    _insert_jobs(
        url,
        {"ftjob-old": OLD_SFT, "ftjob-lora": OLD_LORA, "ftjob-plain": {"n_epochs": 1}, "ftjob-rft": old_rft},
        methods={"ftjob-rft": "rft"},
    )
    migrate.upgrade(url)
    assert _stored(url) == {
        "ftjob-old": {"n_epochs": 2, "batch_size": 4, "learning_rate": 1e-3},
        "ftjob-lora": {"learning_rate": 4e-4, "lora": {"enabled": True, "r": 8}},
        "ftjob-plain": {"n_epochs": 1},
        # the old RFT trainer ignored n_epochs and made one pass: the stored job says so now
        "ftjob-rft": {"n_epochs": 1, "learning_rate": 2e-5, "beta": 0.05},
    }
    migrate.downgrade(url, "0004")
    back = _stored(url)
    assert back["ftjob-old"] == {**OLD_SFT, "learning_rate_multiplier": pytest.approx(50.0)}
    assert back["ftjob-lora"] == {**OLD_LORA, "learning_rate_multiplier": pytest.approx(2.0)}
    assert back["ftjob-plain"] == {"n_epochs": 1}


def test_0005_drops_learning_rate_multiplier_sqlite(tmp_path) -> None:
    check_0005_round_trip(f"sqlite:///{tmp_path / 'j.db'}")


def test_0005_drops_learning_rate_multiplier_postgres() -> None:
    name = f"juice_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    try:
        check_0005_round_trip(url)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _columns(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns("jobs")}
    finally:
        engine.dispose()


def check_0013_round_trip(url: str) -> None:
    """0013 adds jobs.selected_step, NULL for every earlier job (their model stays the newest checkpoint);
    the downgrade drops it and keeps the jobs."""
    migrate.upgrade(url, "0012")
    _insert_jobs(url, {"ftjob-before": {"n_epochs": 1}})
    migrate.upgrade(url)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT selected_step FROM jobs")).scalars().all() == [None]
            conn.execute(sa.text("UPDATE jobs SET selected_step = 4 WHERE id = 'ftjob-before'"))
            assert conn.execute(sa.text("SELECT selected_step FROM jobs")).scalar_one() == 4
    finally:
        engine.dispose()
    migrate.downgrade(url, "0012")
    assert "selected_step" not in _columns(url)
    assert set(_stored(url)) == {"ftjob-before"}
    migrate.upgrade(url)
    migrate.check(url)


def test_0013_adds_selected_step_sqlite(tmp_path) -> None:
    check_0013_round_trip(f"sqlite:///{tmp_path / 'j.db'}")


def test_0013_adds_selected_step_postgres() -> None:
    with fresh_pg_database(migrated=False) as url:
        check_0013_round_trip(url)
