"""job demonstration scores file

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 16:10:00.000000

A succeeded reward-learning job's `scores_file_id`: the file of its training demonstrations' quality
scores (demonstration_scores.jsonl, purpose fine-tune-results; trainer/demonstration_scores.py), listed in
`result_files` after the metrics CSV. NULL for every earlier job and for SFT jobs, which are not scored.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scores_file_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("scores_file_id")
