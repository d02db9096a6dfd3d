"""job resources

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 03:10:00.000000

A job's `resources` ({"processes": N}): the training processes (one per GPU) the worker starts for it
under torch.distributed.run. NULL, as every earlier job has, means one process.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resources", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("resources")
