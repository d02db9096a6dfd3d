"""job integrations

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 19:10:00.000000

A job's `integrations` (OpenAI's field): the experiment trackers its metrics are logged to as it trains
(worker/tracking.py), MLflow and W&B. Jobs created before have none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("integrations", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("integrations")
