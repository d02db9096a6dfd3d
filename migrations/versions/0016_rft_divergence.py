"""RFT's `divergence` field: nothing to upgrade; the downgrade takes it out of stored jobs

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 14:00:00.000000

A stored RFT job without `divergence` trains with "bt", the behaviour it had before the field existed,
so the upgrade writes nothing. The downgrade removes the key from every job, because the older trainer
refuses keys it does not know; a job that asked for "js" or "reverse_kl" then trains with Bradley-Terry,
the only reward step the older trainer has.

No schema change; rows are rewritten through SQLAlchemy's JSON type, on SQLite and Postgres alike.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("hyperparameters", sa.JSON))


def upgrade() -> None:
    pass


def downgrade() -> None:
    bind = op.get_bind()
    for job_id, hp in bind.execute(sa.select(jobs.c.id, jobs.c.hyperparameters)).all():
        if isinstance(hp, dict) and "divergence" in hp:
            old = {k: v for k, v in hp.items() if k != "divergence"}
            bind.execute(jobs.update().where(jobs.c.id == job_id).values(hyperparameters=old))
