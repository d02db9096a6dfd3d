"""job result file

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 17:00:00.000000

A succeeded job gets OpenAI's result file: a CSV of its per-step metrics (api/services/result_files.py),
a file row of purpose `fine-tune-results` whose id the job keeps. Jobs that succeeded before have none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result_file_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("result_file_id")
