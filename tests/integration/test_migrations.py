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
    migrate.upgrade(url, "0005")  # later revisions rewrite these rows again (0014)
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


def check_0014_round_trip(url: str) -> None:
    """0014 writes the pre-issue-23 behaviour into jobs stored before it (so a queued or paused IRFT/RFT/DPO
    job does not switch to the new defaults), and each rewritten job still validates as the trainer's
    config with exactly that behaviour; the downgrade strips every key the old trainer would refuse."""
    from trainer.config import TrainConfig

    migrate.upgrade(url, "0013")
    old_irft = {"n_epochs": 1, "beta": 0.1, "generation": {"max_new_tokens": 40, "temperature": 0.0}}
    _insert_jobs(
        url,
        {
            "ftjob-irft": old_irft,
            "ftjob-irft-bare": {"n_epochs": 1},  # stored before every field was written out
            "ftjob-rft": {"beta": 0.05, "generation": {"temperature": 0.7}},
            "ftjob-dpo": {"beta": 0.1},
            "ftjob-sft": {"n_epochs": 2},
        },
        methods={"ftjob-irft": "irft", "ftjob-irft-bare": "irft", "ftjob-rft": "rft", "ftjob-dpo": "dpo"},
    )
    migrate.upgrade(url, "0014")
    stored = _stored(url)
    assert stored["ftjob-irft"] == {
        **old_irft,
        "nll_weight": 0.0,
        "samples_per_prompt": 1,
        "truncated_negatives": "keep",
        "generation": {"max_new_tokens": 40, "temperature": 0.0},  # what it gave stays
    }
    assert stored["ftjob-irft-bare"]["generation"] == {"temperature": 0.0, "max_new_tokens": 128}
    assert stored["ftjob-rft"] == {
        "beta": 0.05,
        "nll_weight": 0.0,
        "missing_eos_penalty": 0.0,
        "reward_normalization": False,
        "whiten_advantages": False,
        "kl_target": None,
        "kl_horizon": 10,
        "generation": {"temperature": 0.7, "max_new_tokens": 128},
    }
    assert stored["ftjob-dpo"] == {"beta": 0.1, "nll_weight": 0.0}
    assert stored["ftjob-sft"] == {"n_epochs": 2}
    methods = {"ftjob-irft": "irft", "ftjob-irft-bare": "irft", "ftjob-rft": "rft", "ftjob-dpo": "dpo"}
    for job_id, method in methods.items():
        hp = TrainConfig(
            model="m", training_file="t", output_dir="o", method=method, hyperparameters=stored[job_id]
        )
        assert hp.hyperparameters.nll_weight == 0.0
    bare = TrainConfig(
        model="m", training_file="t", output_dir="o", method="irft", hyperparameters=stored["ftjob-irft-bare"]
    )
    assert (
        bare.hyperparameters.generation.temperature == 0.0
        and bare.hyperparameters.truncated_negatives == "keep"
    )

    # a job submitted after the upgrade, then a downgrade: nothing the old trainer would refuse
    _insert_jobs_after = {
        "nll_weight": 1.0,
        "select_checkpoint": "last",
        "generation": {"max_new_tokens": "auto"},
    }
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            table = sa.table("jobs", sa.column("id"), sa.column("hyperparameters", sa.JSON))
            conn.execute(
                table.update().where(table.c.id == "ftjob-dpo").values(hyperparameters=_insert_jobs_after)
            )
    finally:
        engine.dispose()
    migrate.downgrade(url, "0013")
    back = _stored(url)
    assert back["ftjob-dpo"] == {"generation": {"max_new_tokens": 128}}
    assert back["ftjob-irft"] == old_irft
    assert back["ftjob-sft"] == {"n_epochs": 2}
    migrate.upgrade(url)
    migrate.check(url)


def test_0014_keeps_old_jobs_behaviour_sqlite(tmp_path) -> None:
    check_0014_round_trip(f"sqlite:///{tmp_path / 'j.db'}")


def test_0014_keeps_old_jobs_behaviour_postgres() -> None:
    with fresh_pg_database(migrated=False) as url:
        check_0014_round_trip(url)


def check_0015_round_trip(url: str) -> None:
    """0015 writes select_checkpoint "last" into IRFT/RFT jobs stored without it (they asked for the final
    checkpoint; "auto" is the new default), leaves every other job alone, and the downgrade turns "auto"
    into what it meant for that job: best_eval_loss with a validation file, last without."""
    migrate.upgrade(url, "0014")
    _insert_jobs(
        url,
        {
            "ftjob-irft-old": {"n_epochs": 1},
            "ftjob-rft-old": {"beta": 0.05},
            "ftjob-irft-best": {"select_checkpoint": "best_eval_loss"},
            "ftjob-sft": {"n_epochs": 2},
            "ftjob-dpo": {"beta": 0.1},
        },
        methods={
            "ftjob-irft-old": "irft",
            "ftjob-rft-old": "rft",
            "ftjob-irft-best": "irft",
            "ftjob-dpo": "dpo",
        },
    )
    before = _stored(url)
    migrate.upgrade(url)
    stored = _stored(url)
    assert stored["ftjob-irft-old"] == {**before["ftjob-irft-old"], "select_checkpoint": "last"}
    assert stored["ftjob-rft-old"] == {**before["ftjob-rft-old"], "select_checkpoint": "last"}
    for untouched in ("ftjob-irft-best", "ftjob-sft", "ftjob-dpo"):
        assert stored[untouched] == before[untouched]

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            table = sa.table(
                "jobs", sa.column("id"), sa.column("validation_file"), sa.column("hyperparameters", sa.JSON)
            )
            for job_id, validation_file in (("ftjob-irft-old", "file-v"), ("ftjob-rft-old", None)):
                conn.execute(
                    table.update()
                    .where(table.c.id == job_id)
                    .values(hyperparameters={"select_checkpoint": "auto"}, validation_file=validation_file)
                )
    finally:
        engine.dispose()
    migrate.downgrade(url, "0014")
    back = _stored(url)
    assert back["ftjob-irft-old"] == {"select_checkpoint": "best_eval_loss"}
    assert back["ftjob-rft-old"] == {"select_checkpoint": "last"}
    assert back["ftjob-irft-best"] == {"select_checkpoint": "best_eval_loss"}
    migrate.upgrade(url)
    migrate.check(url)


def test_0015_select_checkpoint_auto_sqlite(tmp_path) -> None:
    check_0015_round_trip(f"sqlite:///{tmp_path / 'j.db'}")


def test_0015_select_checkpoint_auto_postgres() -> None:
    with fresh_pg_database(migrated=False) as url:
        check_0015_round_trip(url)


def test_0016_downgrade_takes_divergence_out(tmp_path) -> None:
    """The older trainer refuses unknown keys: the downgrade removes RFT's `divergence`, nothing else."""
    url = f"sqlite:///{tmp_path / 'j.db'}"
    migrate.upgrade(url, "0015")
    _insert_jobs(url, {"ftjob-rft": {"beta": 0.05}}, methods={"ftjob-rft": "rft"})
    migrate.upgrade(url)
    assert _stored(url)["ftjob-rft"] == {"beta": 0.05}  # 0016 writes nothing
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            table = sa.table("jobs", sa.column("id"), sa.column("hyperparameters", sa.JSON))
            conn.execute(
                table.update()
                .where(table.c.id == "ftjob-rft")
                .values(hyperparameters={"beta": 0.05, "divergence": "js"})
            )
    finally:
        engine.dispose()
    migrate.downgrade(url, "0015")
    assert _stored(url)["ftjob-rft"] == {"beta": 0.05}
