"""job worker losses

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 16:00:00.000000

`max_attempts` used to be compared with `attempt` (times a worker took the job). A worker that shuts
down now hands its job over (checkpointed, re-queued), which is another attempt but no loss, so losses
get their own count. Until now every re-claim followed a loss: a queued job has lost all its attempts,
a running one all but the current.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker_losses", sa.Integer(), server_default="0", nullable=False))
    op.execute(
        "UPDATE jobs SET worker_losses = CASE WHEN status = 'queued' THEN attempt "
        "WHEN attempt > 0 THEN attempt - 1 ELSE 0 END"
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("worker_losses")
