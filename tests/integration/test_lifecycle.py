"""The job state machine on real Postgres: compare-and-set claims, heartbeats, the sweeper."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.core.config import Settings
from api.db.base import utcnow
from api.db.session import make_engine
from api.db.tables import Job, JobEvent, JobStatus, Tenant
from worker import lifecycle

pytestmark = pytest.mark.integration

SETTINGS = Settings(stale_after_s=30, requeue_after_s=60, max_attempts=2)


@pytest.fixture()
def sessions(pg_url: str) -> sessionmaker[Session]:
    engine = make_engine(pg_url)
    return sessionmaker(bind=engine, expire_on_commit=False)


@pytest.fixture()
def job_id(sessions: sessionmaker[Session]) -> str:
    with sessions() as s:
        tenant = Tenant(name=f"lifecycle-{utcnow().timestamp()}")
        s.add(tenant)
        s.flush()
        job = Job(
            tenant_id=tenant.id,
            model="m",
            training_file="file-x",
            method_type="sft",
            hyperparameters={},
            seed=1,
            enqueued_at=utcnow(),
        )
        s.add(job)
        s.commit()
        return job.id


def test_only_one_of_many_concurrent_claims_wins(sessions: sessionmaker[Session], job_id: str) -> None:
    barrier = threading.Barrier(8)
    winners: list[str] = []

    def attempt(n: int) -> None:
        with sessions() as s:
            barrier.wait()
            if lifecycle.claim(s, job_id, f"w{n}", SETTINGS) is not None:
                winners.append(f"w{n}")

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    with sessions() as s:
        job = s.scalar(select(Job).where(Job.id == job_id))
        assert job.status == JobStatus.RUNNING and job.worker == winners[0] and job.attempt == 1


def test_live_holder_blocks_claim_and_stale_holder_does_not(
    sessions: sessionmaker[Session], job_id: str
) -> None:
    with sessions() as s:
        assert lifecycle.claim(s, job_id, "a", SETTINGS)
        assert lifecycle.claim(s, job_id, "b", SETTINGS) is None  # a's heartbeat is fresh
        assert lifecycle.heartbeat(s, job_id, "a") == (True, False, False)
        s.execute(
            Job.__table__.update()
            .where(Job.id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=31))
        )
        s.commit()
        assert lifecycle.claim(s, job_id, "b", SETTINGS) is not None  # a went stale: b takes over
        assert lifecycle.heartbeat(s, job_id, "a") == (False, False, False)  # a learns it lost the lease
        assert not lifecycle.finish(s, job_id, "a", JobStatus.SUCCEEDED, event="late")
        assert lifecycle.finish(s, job_id, "b", JobStatus.SUCCEEDED, event="done")
        assert lifecycle.claim(s, job_id, "c", SETTINGS) is None  # finished jobs are never claimed


def test_cancel_flag_reaches_heartbeat_and_blocks_claims(
    sessions: sessionmaker[Session], job_id: str
) -> None:
    with sessions() as s:
        assert lifecycle.claim(s, job_id, "a", SETTINGS)
        s.execute(Job.__table__.update().where(Job.id == job_id).values(cancel_requested=True))
        s.commit()
        assert lifecycle.heartbeat(s, job_id, "a") == (True, True, False)


def test_sweeper_requeues_stale_then_gives_up(sessions: sessionmaker[Session], job_id: str) -> None:
    def go_stale(s: Session) -> None:
        s.execute(
            Job.__table__.update()
            .where(Job.id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=60))
        )
        s.commit()

    with sessions() as s:
        lifecycle.claim(s, job_id, "a", SETTINGS)
        go_stale(s)
        enqueue, lost = lifecycle.sweep(s, SETTINGS)
        assert job_id in enqueue and job_id not in lost
        job = s.scalar(select(Job).where(Job.id == job_id))
        assert job.status == JobStatus.QUEUED and job.worker is None
        assert lifecycle.claim(s, job_id, "b", SETTINGS).attempt == 2
        go_stale(s)
        enqueue, lost = lifecycle.sweep(s, SETTINGS)
        assert job_id in lost
        s.expire_all()
        job = s.scalar(select(Job).where(Job.id == job_id))
        assert job.status == JobStatus.FAILED and job.error_code == "worker_lost"
        messages = list(s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)))
        assert any("re-queued" in m for m in messages) and any("giving up" in m for m in messages)


def test_hand_overs_are_not_worker_losses(sessions: sessionmaker[Session], job_id: str) -> None:
    """Three workers shut down mid-job (rolling deploys) and then one is lost: with max_attempts 2 the
    job is re-queued, not failed; only a second loss gives up."""
    with sessions() as s:
        for n in range(3):
            assert lifecycle.claim(s, job_id, f"w{n}", SETTINGS)
            assert lifecycle.hand_over(s, job_id, f"w{n}", step=10 * (n + 1))
            assert not lifecycle.hand_over(s, job_id, f"w{n}", step=99)  # no longer ours
        assert lifecycle.claim(s, job_id, "lost", SETTINGS).attempt == 4
        s.execute(
            Job.__table__.update()
            .where(Job.id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=60))
        )
        s.commit()
        enqueue, lost = lifecycle.sweep(s, SETTINGS)
        assert job_id in enqueue and job_id not in lost
        s.expire_all()
        job = s.scalar(select(Job).where(Job.id == job_id))
        assert job.status == JobStatus.QUEUED and job.worker_losses == 1 and job.attempt == 4
        messages = list(s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)))
        assert sum("is shutting down: the job was checkpointed" in m for m in messages) == 3


def test_a_worker_lost_while_pausing_leaves_the_job_paused(
    sessions: sessionmaker[Session], job_id: str
) -> None:
    with sessions() as s:
        assert lifecycle.claim(s, job_id, "a", SETTINGS)
        s.execute(
            Job.__table__.update()
            .where(Job.id == job_id)
            .values(pause_requested=True, heartbeat_at=utcnow() - timedelta(seconds=60))
        )
        s.commit()
        enqueue, lost = lifecycle.sweep(s, SETTINGS)
        assert job_id not in enqueue and job_id not in lost
        s.expire_all()
        job = s.scalar(select(Job).where(Job.id == job_id))
        assert job.status == JobStatus.PAUSED and job.worker is None and not job.pause_requested
        assert lifecycle.claim(s, job_id, "b", SETTINGS) is None  # paused: no worker takes it


def test_a_job_cancelled_while_it_held_is_neither_paused_nor_handed_over(
    sessions: sessionmaker[Session], job_id: str
) -> None:
    with sessions() as s:
        assert lifecycle.claim(s, job_id, "a", SETTINGS)
        s.execute(
            Job.__table__.update().where(Job.id == job_id).values(pause_requested=True, cancel_requested=True)
        )
        s.commit()
        assert not lifecycle.pause(s, job_id, "a", step=5)
        assert not lifecycle.hand_over(s, job_id, "a", step=5)
        assert lifecycle.finish(
            s, job_id, "a", JobStatus.CANCELLED, event="Job cancelled."
        )  # what runner does


def test_a_direct_takeover_of_a_stale_job_counts_a_loss(sessions: sessionmaker[Session], job_id: str) -> None:
    with sessions() as s:
        assert lifecycle.claim(s, job_id, "a", SETTINGS)
        s.execute(
            Job.__table__.update()
            .where(Job.id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=60))
        )
        s.commit()
        assert lifecycle.claim(s, job_id, "b", SETTINGS).worker_losses == 1


def test_sweeper_reenqueues_forgotten_queued_jobs(sessions: sessionmaker[Session], job_id: str) -> None:
    with sessions() as s:
        enqueue, _ = lifecycle.sweep(s, SETTINGS)
        assert job_id not in enqueue  # freshly enqueued: leave it to the broker
        s.execute(
            Job.__table__.update()
            .where(Job.id == job_id)
            .values(enqueued_at=utcnow() - timedelta(seconds=61))
        )
        s.commit()
        enqueue, _ = lifecycle.sweep(s, SETTINGS)
        assert job_id in enqueue
        enqueue, _ = lifecycle.sweep(s, SETTINGS)
        assert job_id not in enqueue  # enqueued_at was bumped


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING, "validating_files", "paused"])
def test_finish_refuses_a_status_that_is_not_final(
    sessions: sessionmaker[Session], job_id: str, status: str
) -> None:
    with sessions() as s:
        assert lifecycle.claim(s, job_id, "a", SETTINGS)
        events = s.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id))
        with pytest.raises(ValueError, match="final status"):
            lifecycle.finish(s, job_id, "a", status, event="never")  # type: ignore[arg-type]  # a wrong status on purpose
        s.rollback()
        job = s.scalar(select(Job).where(Job.id == job_id))
        assert job.status == JobStatus.RUNNING and job.worker == "a" and job.finished_at is None
        after = s.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id))
        assert after == events


def test_sweeper_cancels_a_stale_job_whose_cancel_was_requested(
    sessions: sessionmaker[Session], job_id: str
) -> None:
    with sessions() as s:
        assert lifecycle.claim(s, job_id, "a", SETTINGS)
        s.execute(
            Job.__table__.update()
            .where(Job.id == job_id)
            .values(cancel_requested=True, heartbeat_at=utcnow() - timedelta(seconds=60))
        )
        s.commit()
        enqueue, lost = lifecycle.sweep(s, SETTINGS)
        assert job_id not in enqueue and job_id not in lost
        s.expire_all()
        job = s.scalar(select(Job).where(Job.id == job_id))
        assert job.status == JobStatus.CANCELLED and job.finished_at is not None
        assert lifecycle.claim(s, job_id, "b", SETTINGS) is None
        assert not lifecycle.finish(s, job_id, "a", JobStatus.SUCCEEDED, event="late")


def test_cancel_of_a_job_that_finishes_meanwhile_is_a_conflict(
    sessions: sessionmaker[Session], job_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.errors import Conflict
    from api.services import jobs as svc

    with sessions() as s:
        assert lifecycle.claim(s, job_id, "a", SETTINGS)
    real_get_job = svc.get_job

    def read_then_finish(session: Session, tenant_id: int, jid: str) -> Job:
        job = real_get_job(session, tenant_id, jid)  # the API sees it running...
        with sessions() as other:  # ...and the worker finishes it before the API's UPDATE
            assert lifecycle.finish(other, jid, "a", JobStatus.SUCCEEDED, event="done")
        return job

    monkeypatch.setattr(svc, "get_job", read_then_finish)
    with sessions() as s:
        tenant_id = s.scalar(select(Job.tenant_id).where(Job.id == job_id))
        assert tenant_id is not None
        with pytest.raises(Conflict, match="succeeded"):
            svc.cancel_job(s, tenant_id, job_id)
        messages = list(s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)))
        assert not any("Cancellation requested" in m for m in messages)
        job = s.scalar(select(Job).where(Job.id == job_id))
        assert job.status == JobStatus.SUCCEEDED and not job.cancel_requested
