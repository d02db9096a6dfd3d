"""stored hyperparameters are exactly the trainer's

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00.000000

Jobs used to store `learning_rate_multiplier` beside the trainer's fields (the worker stripped it again
before training). Now the stored dict is exactly what the trainer takes, and the job object derives the
multiplier from the learning rate, so the key goes: old queued jobs still run. The downgrade puts it
back, recomputed as the old code did (learning rate over the base rate: 2e-4 with LoRA, else 2e-5).

RFT used to store an `n_epochs` (OpenAI's "auto" rule: 1 to 25) that its trainer ignored, making one
pass of the policy step per outer iteration; the trainer now makes n_epochs passes, so old RFT jobs get
`n_epochs: 1`, what they trained (or would have) with. The downgrade leaves it: the old trainer ignores it.
No schema change; rows are rewritten through SQLAlchemy's JSON type, on SQLite and Postgres alike.
"""

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The base rates as of this revision (api/schemas/hyperparameters.py), frozen here on purpose.
BASE_LR_LORA = 2e-4
BASE_LR_FULL = 2e-5

jobs = sa.table(
    "jobs",
    sa.column("id", sa.String),
    sa.column("method_type", sa.String),
    sa.column("hyperparameters", sa.JSON),
)


def _rows() -> Iterator[tuple[str, str, dict[str, Any]]]:
    query = sa.select(jobs.c.id, jobs.c.method_type, jobs.c.hyperparameters)
    for job_id, method, hp in op.get_bind().execute(query).all():
        if isinstance(hp, dict):
            yield job_id, method, hp


def _store(job_id: str, hp: dict[str, Any]) -> None:
    op.get_bind().execute(jobs.update().where(jobs.c.id == job_id).values(hyperparameters=hp))


def upgrade() -> None:
    for job_id, method, hp in _rows():
        new = {k: v for k, v in hp.items() if k != "learning_rate_multiplier"}
        if method == "rft":
            new["n_epochs"] = 1
        if new != hp:
            _store(job_id, new)


def downgrade() -> None:
    for job_id, _, hp in _rows():
        lr = hp.get("learning_rate")
        if "learning_rate_multiplier" in hp or not isinstance(lr, int | float):
            continue
        lora = hp.get("lora")
        base = BASE_LR_LORA if isinstance(lora, dict) and lora.get("enabled") else BASE_LR_FULL
        _store(job_id, {**hp, "learning_rate_multiplier": lr / base})
