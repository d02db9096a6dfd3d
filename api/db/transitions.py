"""Job status writes: every status change is a compare-and-set UPDATE built here, checked against the
status graph (`api.db.status`) before it reaches the database."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Update, update

from api.db.status import check_transition
from api.db.tables import Job


def transition(source: str | Iterable[str], target: str) -> Update:
    """`UPDATE jobs SET status = target WHERE status IN (source...)`, after checking every edge.

    The caller narrows it with `.where(...)` (at least the job id) and adds other columns with
    `.values(...)`; the status guard makes it a compare-and-set, so the caller must look at the row
    count (`api.db.session.rows_matched`) to learn whether it won."""
    sources = (source,) if isinstance(source, str) else tuple(dict.fromkeys(source))
    if not sources:
        raise ValueError("a transition needs at least one source status")
    for s in sources:
        check_transition(s, target)
    guard = Job.status == sources[0] if len(sources) == 1 else Job.status.in_(sources)
    return update(Job).where(guard).values(status=target)
