"""checkpoint kinds

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 12:53:10.766578
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), server_default="model", nullable=False))
        batch_op.drop_constraint(batch_op.f("uq_checkpoints_job_step"), type_="unique")
        batch_op.create_unique_constraint("uq_checkpoints_job_step_kind", ["job_id", "step", "kind"])


def downgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_constraint("uq_checkpoints_job_step_kind", type_="unique")
        batch_op.create_unique_constraint(batch_op.f("uq_checkpoints_job_step"), ["job_id", "step"])
        batch_op.drop_column("kind")
