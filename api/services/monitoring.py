"""Reads for watching a job: events, metrics (with a seq cursor for live followers), checkpoints."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db.tables import Checkpoint, JobEvent, JobMetric
from api.errors import NotFound
from api.schemas.jobs import MetricPoint
from api.services.pagination import paginate


def list_events(
    session: Session, job_id: str, *, after: str | None, limit: int
) -> tuple[list[JobEvent], bool]:
    # Scoped to the job (which the route has checked is the caller's): another job's event id, the
    # caller's own or not, is not a position in this list.
    return paginate(
        session, JobEvent, scope=JobEvent.job_id == job_id, after=after, limit=limit, kind="event"
    )


def list_checkpoints(
    session: Session, job_id: str, *, after: str | None, limit: int, kind: str | None = None
) -> tuple[list[Checkpoint], bool]:
    return paginate(
        session,
        Checkpoint,
        scope=Checkpoint.job_id == job_id,
        filters=[Checkpoint.kind == kind] if kind else [],
        after=after,
        limit=limit,
        kind="checkpoint",
    )


def get_checkpoint(session: Session, job_id: str, checkpoint_id: str) -> Checkpoint:
    row = session.scalar(
        select(Checkpoint).where(Checkpoint.id == checkpoint_id, Checkpoint.job_id == job_id)
    )
    if row is None:
        raise NotFound("checkpoint", checkpoint_id, param="checkpoint_id")
    return row


def read_metrics(
    session: Session, job_id: str, *, after_seq: int, limit: int, names: set[str] | None = None
) -> tuple[list[MetricPoint], bool, int]:
    """Metric rows in insertion order after `after_seq`; `names` keeps only those series.

    Returns (points, has_more, cursor): pass `cursor` as the next `after_seq`."""
    rows = list(
        session.scalars(
            select(JobMetric)
            .where(JobMetric.job_id == job_id, JobMetric.seq > after_seq)
            .order_by(JobMetric.seq)
            .limit(limit + 1)
        )
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    cursor = rows[-1].seq if rows else after_seq
    points = [MetricPoint.of(r) for r in rows]
    if names:
        for p in points:
            p.values = {k: v for k, v in p.values.items() if k in names}
        points = [p for p in points if p.values]
    return points, has_more, cursor
