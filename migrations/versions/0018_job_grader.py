"""job grader

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 19:50:00.000000

A job's `grader` (OpenAI's grader shapes, graders/schemas.py): the reward of a `reinforcement` job, as
the request gave it under method.reinforcement.grader. NULL for every earlier job and for the other
methods.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("grader", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("grader")
