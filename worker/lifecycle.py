"""Every job status change the worker makes, each a compare-and-set UPDATE on an edge of the status
graph (api.db.status).

The jobs table is the source of truth; a redelivered or duplicated task message is harmless because
only one claim can win: `queued -> running`, or `running -> running` when the holder's heartbeat is stale.
"""

from __future__ import annotations

import logging
import traceback
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from api.core.config import Settings
from api.db.base import utcnow
from api.db.models import Job, JobEvent
from api.db.session import rows_matched
from api.db.status import FinalStatus, JobStatus, transition

log = logging.getLogger(__name__)


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type_: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    session.add(JobEvent(job_id=job_id, message=message, level=level, type=type_, data=data))


def claim(session: Session, job_id: str, worker: str, settings: Settings) -> Job | None:
    """Take the job if it is queued, or running under a holder whose heartbeat went stale."""
    now = utcnow()
    stale = now - timedelta(seconds=settings.stale_after_s)
    won = rows_matched(
        session,
        transition((JobStatus.QUEUED, JobStatus.RUNNING), JobStatus.RUNNING)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(False),
            or_(Job.status == JobStatus.QUEUED, Job.heartbeat_at < stale),  # running: only a stale holder
        )
        .values(
            worker=worker,
            heartbeat_at=now,
            attempt=Job.attempt + 1,
            started_at=func.coalesce(Job.started_at, now),
        ),
    )
    if not won:
        session.rollback()
        return None
    job = session.scalar(select(Job).where(Job.id == job_id))
    assert job is not None
    add_event(
        session,
        job_id,
        f"Fine-tuning job started (attempt {job.attempt}) on {worker}.",
        data={"attempt": job.attempt, "worker": worker},
    )
    session.commit()
    return job


def heartbeat(session: Session, job_id: str, worker: str) -> tuple[bool, bool]:
    """Beat; returns (still_ours, cancel_requested). Losing the lease means another worker took over."""
    held = rows_matched(
        session,
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == JobStatus.RUNNING)
        .values(heartbeat_at=utcnow()),
    )
    cancel = bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))
    session.commit()
    return bool(held), cancel


def finish(
    session: Session,
    job_id: str,
    worker: str,
    status: FinalStatus,
    *,
    event: str,
    level: str = "info",
    error: tuple[str, str, str | None] | None = None,
    **values: Any,
) -> bool:
    """Move our running job to a final status; False if we no longer hold it.

    Raises ValueError for a status that is not final: a running job leaves `running` only by finishing
    here, or through the sweeper (`sweep`)."""
    if status not in JobStatus.FINAL:
        raise ValueError(f"finish() needs a final status ({', '.join(JobStatus.FINAL)}), not {status!r}")
    err = {"error_code": error[0], "error_message": error[1], "error_param": error[2]} if error else {}
    done = rows_matched(
        session,
        transition(JobStatus.RUNNING, status)
        .where(Job.id == job_id, Job.worker == worker)
        .values(finished_at=utcnow(), **err, **values),
    )
    if done:
        add_event(session, job_id, event, level=level)
    session.commit()
    return bool(done)


def fail(
    session: Session, job_id: str, worker: str, exc: BaseException, code: str, param: str | None
) -> bool:
    tb = "".join(traceback.format_exception(exc))[-4000:]
    add_event(session, job_id, "Traceback of the failure", level="error", data={"traceback": tb})
    return finish(
        session,
        job_id,
        worker,
        JobStatus.FAILED,
        level="error",
        event=f"Fine-tuning job failed: {exc}",
        error=(code, str(exc)[:2000], param),
    )


def sweep(session: Session, settings: Settings) -> tuple[list[str], list[str]]:
    """Find work no live worker holds. Returns (job ids to enqueue, job ids failed as worker_lost).

    A running job with a stale heartbeat goes back to queued (its newest checkpoint resumes it);
    a queued job untouched for `requeue_after_s` is enqueued again in case the broker lost it."""
    now = utcnow()
    to_enqueue: list[str] = []
    lost: list[str] = []
    # Plain rows, not ORM objects: a long-lived session's identity map could hold an old heartbeat_at.
    stale = session.execute(
        select(Job.id, Job.attempt, Job.worker, Job.heartbeat_at, Job.cancel_requested).where(
            Job.status == JobStatus.RUNNING,
            Job.heartbeat_at < now - timedelta(seconds=settings.stale_after_s),
        )
    )
    for job in stale.all():
        target: str
        values: dict[str, Any]
        if job.cancel_requested:
            target, values = JobStatus.CANCELLED, {"finished_at": now}
            message = "Worker lost while cancelling; job cancelled."
        elif job.attempt >= settings.max_attempts:
            target = JobStatus.FAILED
            values = {
                "finished_at": now,
                "error_code": "worker_lost",
                "error_message": f"The worker was lost {job.attempt} times.",
                "error_param": None,
            }
            message = f"Worker lost {job.attempt} times; giving up."
        else:
            target, values = JobStatus.QUEUED, {"worker": None, "enqueued_at": now}
            message = (
                f"Worker {job.worker} stopped beating; job re-queued to resume from its last checkpoint."
            )
        # Guarded by the heartbeat we read: a worker that beat in between keeps its job.
        moved = rows_matched(
            session,
            transition(JobStatus.RUNNING, target)
            .where(Job.id == job.id, Job.heartbeat_at == job.heartbeat_at)
            .values(**values),
        )
        if moved:
            add_event(session, job.id, message, level="warn", data={"attempt": job.attempt})
            if target == JobStatus.QUEUED:
                to_enqueue.append(job.id)
            elif target == JobStatus.FAILED:
                lost.append(job.id)
    waiting = session.scalars(
        select(Job.id).where(
            Job.status == JobStatus.QUEUED,
            Job.enqueued_at < now - timedelta(seconds=settings.requeue_after_s),
        )
    )
    for job_id in list(waiting):
        # Still queued: a job claimed since the select needs no second message.
        if rows_matched(
            session,
            update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED).values(enqueued_at=now),
        ):
            to_enqueue.append(job_id)
    session.commit()
    return to_enqueue, lost
