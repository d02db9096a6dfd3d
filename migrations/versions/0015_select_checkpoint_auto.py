"""IRFT and RFT jobs stored before select_checkpoint "auto" became their default keep "last"

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 13:00:00.000000

IRFT's and RFT's `select_checkpoint` default became "auto" (best_eval_loss when the job has a validation
file, else last). A job of theirs stored without the key (submitted before select_checkpoint existed)
was asked for the final checkpoint, so it gets "last" written out, as 0014 did for the other new keys;
a job that has the key keeps it. The downgrade turns "auto" into what it meant for that job (the old
trainer knows only last and best_eval_loss), so a downgraded service trains it the same way.

No schema change; rows are rewritten through SQLAlchemy's JSON type, on SQLite and Postgres alike.
"""

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

METHODS = ("irft", "rft")  # the methods whose default changed (SFT and DPO keep "last")

jobs = sa.table(
    "jobs",
    sa.column("id", sa.String),
    sa.column("method_type", sa.String),
    sa.column("validation_file", sa.String),
    sa.column("hyperparameters", sa.JSON),
)


def _rows() -> Iterator[tuple[str, str, str | None, dict[str, Any]]]:
    query = sa.select(jobs.c.id, jobs.c.method_type, jobs.c.validation_file, jobs.c.hyperparameters)
    for job_id, method, validation_file, hp in op.get_bind().execute(query).all():
        if isinstance(hp, dict):
            yield job_id, method, validation_file, hp


def _store(job_id: str, hp: dict[str, Any]) -> None:
    op.get_bind().execute(jobs.update().where(jobs.c.id == job_id).values(hyperparameters=hp))


def upgrade() -> None:
    for job_id, method, _, hp in _rows():
        if method in METHODS and "select_checkpoint" not in hp:
            _store(job_id, {**hp, "select_checkpoint": "last"})


def downgrade() -> None:
    for job_id, _, validation_file, hp in _rows():
        if hp.get("select_checkpoint") == "auto":
            _store(job_id, {**hp, "select_checkpoint": "best_eval_loss" if validation_file else "last"})
