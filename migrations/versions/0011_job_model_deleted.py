"""job model deleted

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 19:40:00.000000

OpenAI's `DELETE /v1/models/{model}` for a fine-tuned model: the job keeps its name and checkpoints,
the name stops being a model (not listed, not served, not a base for new jobs) from this time on.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from api.db.base import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_deleted_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("model_deleted_at")
