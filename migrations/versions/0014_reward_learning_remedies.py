"""jobs stored before issue 23's remedies keep the behaviour they were submitted with

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 10:00:00.000000

Issue 23 gave IRFT, RFT and DPO new hyperparameters whose defaults change what a job trains: IRFT's
likelihood anchor (`nll_weight` 1.0), sampled negatives (`generation.temperature` 1.0), screened
unfinished negatives (`truncated_negatives: drop`) and `generation.max_new_tokens: auto`; RFT's reward
normalisation, advantage whitening, adaptive KL (`kl_target` 6), missing-EOS penalty and `max_new_tokens:
auto`. A job stored before them (queued, paused, or resumed after a worker loss) must not switch to them
halfway, nor at its start: its request was made against the old behaviour. So every stored job of those
methods gets the old values of the keys it lacks, written out; the stored dict stays exactly what the
trainer takes. (One fix cannot be turned off and is not: RFT's reward model now scores every sequence
with an EOS at its end.)

The downgrade removes every key the old trainer does not know (it refuses unknown keys), from every job,
so a downgraded service can still run the jobs submitted after the upgrade, with the old behaviour.
No schema change; rows are rewritten through SQLAlchemy's JSON type, on SQLite and Postgres alike.
"""

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The behaviour before this revision, frozen here on purpose (trainer/spec/hyperparameters.py at 76ae7bb).
OLD = {
    "irft": {"nll_weight": 0.0, "samples_per_prompt": 1, "truncated_negatives": "keep"},
    "rft": {
        "nll_weight": 0.0,
        "missing_eos_penalty": 0.0,
        "reward_normalization": False,
        "whiten_advantages": False,
        "kl_target": None,
        "kl_horizon": 10,
    },
    "dpo": {"nll_weight": 0.0},
}
OLD_GENERATION = {
    "irft": {"temperature": 0.0, "max_new_tokens": 128},  # greedy, as GenerationSettings' class default
    "rft": {"temperature": 1.0, "max_new_tokens": 128},
}
NEW_KEYS = {key for keys in OLD.values() for key in keys} | {"select_checkpoint"}

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
        new = {**OLD.get(method, {}), **hp}
        if method in OLD_GENERATION:
            generation = hp.get("generation") if isinstance(hp.get("generation"), dict) else {}
            new["generation"] = {**OLD_GENERATION[method], **generation}
        if new != hp:
            _store(job_id, new)


def downgrade() -> None:
    for job_id, _, hp in _rows():
        old = {k: v for k, v in hp.items() if k not in NEW_KEYS}
        generation = old.get("generation")
        if isinstance(generation, dict) and generation.get("max_new_tokens") == "auto":
            old["generation"] = {**generation, "max_new_tokens": 128}  # the old trainer takes numbers only
        if old != hp:
            _store(job_id, old)
