"""Every job status change the worker makes, each a compare-and-set UPDATE on an edge of the status
graph (api.db.status).

The jobs table is the source of truth; a redelivered or duplicated task message is harmless because
only one claim can win: `queued -> running`, or `running -> running` when the holder's heartbeat is stale.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, false, func, or_, select, update
from sqlalchemy.orm import Session

from api.core.config import Settings
from api.db.base import utcnow
from api.db.session import rows_matched
from api.db.status import FinalStatus, JobStatus
from api.db.tables import Job, JobEvent
from api.db.transitions import transition
from api.services import webhooks
from api.services.limits import count_jobs, lock_tenant

log = logging.getLogger(__name__)


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type_: str = "message",
    data: dict[str, Any] | None = None,
    created_at: datetime | None = None,
) -> None:
    """`created_at`: when it happened, if not now (an event held through a database outage)."""
    event = JobEvent(job_id=job_id, message=message, level=level, type=type_, data=data)
    if created_at is not None:
        event.created_at = created_at
    session.add(event)


def claim(session: Session, job_id: str, worker: str, settings: Settings) -> Job | None:
    """Take the job if it is queued, or running under a holder whose heartbeat went stale.

    A queued job of a tenant that already runs `max_running_jobs_per_tenant` jobs is not taken: it is
    *parked* instead (`park`), and the message that brought it is dropped. Why drop, not retry with a
    countdown: a retried message would circle through the broker (or sit in a worker's memory as an
    ETA task) for as long as the tenant stays at its cap, and every pass costs a delivery and a claim;
    a parked job costs nothing until a place frees, and then `release_parked` sends it again: the
    worker whose job ended does so at once (worker.runner), the sweeper every pass as a backstop. The
    drop is quick (one locked count), so the tenant's backlog never stands in front of other tenants'
    messages. Reclaiming a stale running job is not capped: it already holds its place."""
    now = utcnow()
    stale = now - timedelta(seconds=settings.stale_after_s)
    tenant_id = session.scalar(select(Job.tenant_id).where(Job.id == job_id))
    if tenant_id is None:
        session.rollback()
        return None
    cap = settings.max_running_jobs_per_tenant
    at_cap = False
    if cap > 0:
        lock_tenant(session, tenant_id)  # held to the commit: two workers cannot both take the last place
        at_cap = count_jobs(session, tenant_id, JobStatus.RUNNING) >= cap
    queued_ok = false() if at_cap else Job.status == JobStatus.QUEUED
    stale_holder = and_(Job.status == JobStatus.RUNNING, Job.heartbeat_at < stale)
    won = rows_matched(
        session,
        transition((JobStatus.QUEUED, JobStatus.RUNNING), JobStatus.RUNNING)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(False),
            or_(queued_ok, stale_holder),  # a re-queued job keeps its old heartbeat_at: not a holder
        )
        .values(
            worker=worker,
            heartbeat_at=now,
            attempt=Job.attempt + 1,
            # Taking over a stale holder directly (its message came back) is a loss the sweeper missed.
            worker_losses=Job.worker_losses + case((Job.status == JobStatus.RUNNING, 1), else_=0),
            started_at=func.coalesce(Job.started_at, now),
        ),
    )
    if not won:
        if at_cap and park(session, job_id, cap):
            session.commit()
            log.info("job %s waits: its tenant already runs %d jobs", job_id, cap)
        else:
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


def park(session: Session, job_id: str, cap: int) -> bool:
    """Mark a queued job as having no message in the broker (`enqueued_at` NULL): it waits for a place
    among its tenant's running jobs, and `release_parked` sends it when one frees. True if it was
    queued with a message (its waiting event is written once per message, not on every pass)."""
    parked = rows_matched(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED, Job.enqueued_at.is_not(None))
        .values(enqueued_at=None),
    )
    if parked:
        add_event(
            session,
            job_id,
            f"Waiting for a place: this organization already runs {cap} jobs"
            f" (max_running_jobs_per_tenant = {cap}).",
            data={"max_running_jobs_per_tenant": cap},
        )
    return bool(parked)


def release_parked(session: Session, tenant_id: int, settings: Settings) -> list[str]:
    """Parked jobs of the tenant that now fit under its running cap, oldest first, marked as sent
    (`enqueued_at` now); the caller commits, then enqueues the returned ids.

    Places are what the cap leaves after the tenant's running jobs and its queued jobs that already
    have a message (they will take places when delivered). Two releasers at once may send one job too
    many; the claim parks it again, so the cap still holds."""
    cap = settings.max_running_jobs_per_tenant
    parked_q = (
        select(Job.id)
        .where(Job.tenant_id == tenant_id, Job.status == JobStatus.QUEUED, Job.enqueued_at.is_(None))
        .order_by(Job.seq)
    )
    if cap > 0:
        sent = (
            session.scalar(
                select(func.count())
                .select_from(Job)
                .where(
                    Job.tenant_id == tenant_id,
                    or_(
                        Job.status == JobStatus.RUNNING,
                        and_(Job.status == JobStatus.QUEUED, Job.enqueued_at.is_not(None)),
                    ),
                )
            )
            or 0
        )
        if sent >= cap:
            return []
        parked_q = parked_q.limit(cap - sent)
    released: list[str] = []
    now = utcnow()
    for job_id in session.scalars(parked_q).all():
        if rows_matched(
            session,
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED, Job.enqueued_at.is_(None))
            .values(enqueued_at=now),
        ):
            released.append(job_id)
    return released


def heartbeat(session: Session, job_id: str, worker: str) -> tuple[bool, bool, bool]:
    """Beat; returns (still_ours, cancel_requested, pause_requested). Losing the lease means another
    worker took over."""
    held = rows_matched(
        session,
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == JobStatus.RUNNING)
        .values(heartbeat_at=utcnow()),
    )
    flags = session.execute(
        select(Job.cancel_requested, Job.pause_requested).where(Job.id == job_id)
    ).one_or_none()
    session.commit()
    return bool(held), bool(flags and flags[0]), bool(flags and flags[1])


def finish(
    session: Session,
    job_id: str,
    worker: str,
    status: FinalStatus,
    *,
    event: str,
    level: str = "info",
    error: tuple[str, str, str | None] | None = None,
    commit: bool = True,
    **values: Any,
) -> bool:
    """Move our running job to a final status; False if we no longer hold it. commit=False leaves the
    transaction open, for a caller that adds to it what must appear together with the status (a
    success's result file).

    Raises ValueError for a status that is not final: a running job leaves `running` only by finishing
    here, by being handed over (`hand_over`), or through the sweeper (`sweep`)."""
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
        webhooks.notify(session, job_id, status)
    if commit:
        session.commit()
    return bool(done)


def pause(session: Session, job_id: str, worker: str, step: int) -> bool:
    """The trainer checkpointed `step` because the job's pause was requested: park it as `paused`,
    free of any worker, until POST .../resume. False if we no longer hold it or the pause was
    withdrawn meanwhile (then the caller hands it over instead)."""
    moved = rows_matched(
        session,
        transition(JobStatus.RUNNING, JobStatus.PAUSED)
        .where(
            Job.id == job_id,
            Job.worker == worker,
            Job.pause_requested.is_(True),
            Job.cancel_requested.is_(False),  # cancelled meanwhile: the caller finishes it cancelled
        )
        .values(worker=None, pause_requested=False),
    )
    if moved:
        webhooks.notify(session, job_id, JobStatus.PAUSED)
        message = (
            f"Job paused at step {step} (checkpointed); resume it to continue from there."
            if step
            else "Job paused before its first step; resume it to start."
        )
        add_event(session, job_id, message, data={"step": step})
    session.commit()
    return bool(moved)


def hand_over(session: Session, job_id: str, worker: str, step: int) -> bool:
    """Our worker is shutting down and the trainer checkpointed `step`: put the job back in the queue
    (the caller sends its message) for any worker to resume from there. Not a worker loss: nothing
    was lost, so `worker_losses` is untouched. False if we no longer hold the job."""
    moved = rows_matched(
        session,
        transition(JobStatus.RUNNING, JobStatus.QUEUED)
        .where(Job.id == job_id, Job.worker == worker, Job.cancel_requested.is_(False))
        .values(worker=None, enqueued_at=utcnow()),
    )
    if moved:
        add_event(
            session,
            job_id,
            f"Worker {worker} is shutting down: the job was checkpointed at step {step} and re-queued "
            "to resume from there.",
            data={"step": step, "worker": worker},
        )
    session.commit()
    return bool(moved)


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


@dataclass(frozen=True)
class BrokerCount:
    """Messages waiting in the jobs queue (not those workers hold), counted by the broker at `at`."""

    ready: int
    at: datetime


def sweep(
    session: Session, settings: Settings, broker: BrokerCount | None = None
) -> tuple[list[str], list[str]]:
    """Find work no live worker holds. Returns (job ids to enqueue, job ids failed as worker_lost).

    A running job with a stale heartbeat goes back to queued (its newest checkpoint resumes it).
    Parked jobs (`park`) that now fit under their tenant's running cap are released.

    A queued job whose message is older than `requeue_after_s` may have lost it (broker restarted,
    send failed) or may simply be waiting behind busy workers; only the broker can tell, so the
    sweeper asks it (`broker`, api.queue.ready_messages) and re-sends only as many messages as are
    missing: the queued jobs that should have one (sent before the count) minus the messages the
    broker holds, oldest first. A backlog therefore gets no copies at all, however long it waits,
    and the broker never holds more waiting messages than there are queued jobs to run (plus stale
    ones of jobs cancelled or taken since, which workers drop at once). Which job lost its message is
    a guess (the oldest); a wrong guess gives one job a second message, dropped when it arrives, and
    the deficit is seen again once the queue drains. Without a count (`broker` None: the broker could
    not say), every such job is re-sent, at most once per `requeue_after_s`: a lost job must not wait
    forever."""
    now = utcnow()
    to_enqueue: list[str] = []
    lost: list[str] = []
    # Plain rows, not ORM objects: a long-lived session's identity map could hold an old heartbeat_at.
    stale = session.execute(
        select(
            Job.id, Job.worker_losses, Job.worker, Job.heartbeat_at, Job.cancel_requested, Job.pause_requested
        ).where(
            Job.status == JobStatus.RUNNING,
            Job.heartbeat_at < now - timedelta(seconds=settings.stale_after_s),
        )
    )
    for job in stale.all():
        target: str
        values: dict[str, Any]
        losses = job.worker_losses + 1
        if job.cancel_requested:
            target, values = JobStatus.CANCELLED, {"finished_at": now}
            message = "Worker lost while cancelling; job cancelled."
        elif job.pause_requested:
            target, values = JobStatus.PAUSED, {"worker": None, "pause_requested": False}
            message = "Worker lost while pausing; job paused at its newest checkpoint."
        elif losses >= settings.max_attempts:
            target = JobStatus.FAILED
            values = {
                "finished_at": now,
                "worker_losses": losses,
                "error_code": "worker_lost",
                "error_message": f"The worker was lost {losses} times.",
                "error_param": None,
            }
            message = f"Worker lost {losses} times; giving up."
        else:
            target = JobStatus.QUEUED
            values = {"worker": None, "enqueued_at": now, "worker_losses": losses}
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
            add_event(session, job.id, message, level="warn", data={"worker_losses": losses})
            webhooks.notify(session, job.id, target)
            if target == JobStatus.QUEUED:
                to_enqueue.append(job.id)
            elif target == JobStatus.FAILED:
                lost.append(job.id)
    for tenant_id in session.scalars(
        select(Job.tenant_id).where(Job.status == JobStatus.QUEUED, Job.enqueued_at.is_(None)).distinct()
    ).all():
        to_enqueue.extend(release_parked(session, tenant_id, settings))
    waiting_q = (
        select(Job.id)
        .where(
            Job.status == JobStatus.QUEUED,
            Job.enqueued_at < now - timedelta(seconds=settings.requeue_after_s),
        )
        .order_by(Job.enqueued_at, Job.seq)
    )
    if broker is not None:
        expected = (
            session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.status == JobStatus.QUEUED, Job.enqueued_at < broker.at)
            )
            or 0
        )
        waiting_q = waiting_q.limit(max(0, expected - broker.ready))
    waiting = session.scalars(waiting_q)
    for job_id in list(waiting):
        # Still queued: a job claimed since the select needs no second message.
        if rows_matched(
            session,
            update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED).values(enqueued_at=now),
        ):
            to_enqueue.append(job_id)
    session.commit()
    return to_enqueue, lost
