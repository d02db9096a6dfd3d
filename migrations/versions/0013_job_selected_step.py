"""job selected step

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 10:00:00.000000

A succeeded job's `selected_step`: the step of the checkpoint that is its fine-tuned model when the
trainer chose one (select_checkpoint "best_eval_loss"). NULL, as every earlier job has, means the
newest stored checkpoint is the model, which is what those jobs were served and continued from.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("selected_step", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("selected_step")
