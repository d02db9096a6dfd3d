"""job_metrics seqs are never reused on SQLite

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 16:30:00.000000

Live followers (SSE, the dashboard) resume after the last `seq` they saw. A resumed job deletes its
metric rows after the checkpoint and logs those steps again; SQLite's plain rowid would hand the new rows
the deleted seqs, which a follower has already passed. AUTOINCREMENT makes SQLite never reuse a rowid,
as Postgres identities never do. Postgres is untouched.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _recreate(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # Batch mode copies the rows into a new table (sqlite_sequence starts at the highest copied seq)
    # and rebuilds the indexes.
    with op.batch_alter_table(
        "job_metrics", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def upgrade() -> None:
    _recreate(True)


def downgrade() -> None:
    _recreate(False)
