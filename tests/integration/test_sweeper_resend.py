"""The sweeper and the running cap against a real broker (Redis) and a real database (Postgres).

The rule under test (worker.lifecycle.sweep): the sweeper re-sends only the messages the broker's own
count says are missing, so N queued jobs never hold more than N waiting messages, however many sweeps
run while no worker takes them; lost messages (the queue emptied, or one message gone) are re-sent,
one per job. A real worker then drops the stale message of a cancelled job without running it, and
parks (drops, job left queued) the messages of a tenant already at its running cap."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.api.conftest import clear_caches, make_key
from tests.conftest import (
    ARTIFACTS,
    TEST_SECRET_KEY,
    JuiceProcess,
    fast_env,
    fresh_pg_database,
    fresh_redis_db,
)
from tests.helpers import chat_jsonl, sft_job_body, upload

pytestmark = pytest.mark.integration

QUEUE = "juice.jobs"
REDIS_DB = 2  # fresh_redis_db's slot (a database of this test process's own)


def broker_depth(r: redis.Redis) -> int:
    """Messages waiting in the jobs queue: kombu keeps them in Redis lists named after the queue."""
    return sum(int(r.llen(k)) for k in r.scan_iter(f"{QUEUE}*") if r.type(k) == b"list")


@pytest.fixture()
def deployment(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dict[str, str], redis.Redis]]:
    """This process configured as an API and sweeper on its own Postgres database and Redis db."""
    with fresh_pg_database() as pg, fresh_redis_db(REDIS_DB) as rd:
        env = fast_env(
            tmp_path / "home",
            JUICE_DATABASE_URL=pg,
            JUICE_BROKER_URL=rd,
            JUICE_STORAGE_URL=f"file://{tmp_path / 'store'}",
            JUICE_MODEL_ROOTS=str(tiny_model_dir),
            JUICE_SECRET_KEY=TEST_SECRET_KEY,
            JUICE_REQUEUE_AFTER_S="0",  # every queued job counts as "untouched": the worst case
            JUICE_STALE_AFTER_S="600",
            JUICE_RATE_LIMIT_PER_S="0",
            JUICE_MAX_RUNNING_JOBS_PER_TENANT="1",
        )
        for name, value in env.items():
            if name.startswith("JUICE_"):
                monkeypatch.setenv(name, value)
        clear_caches()
        client = redis.Redis.from_url(rd)
        try:
            yield env, client
        finally:
            client.close()
            clear_caches()


def _job(job_id: str):  # a detached Job row
    from api.db.session import session_scope
    from api.db.tables import Job

    with session_scope() as s:
        return s.scalar(select(Job).where(Job.id == job_id))


def test_sweeps_never_pile_up_messages_and_workers_drop_what_cannot_run(
    deployment: tuple[dict[str, str], redis.Redis], tmp_path: Path
) -> None:
    from api.core.config import get_settings
    from api.db.session import session_scope
    from api.db.tables import JobEvent, JobStatus
    from api.main import create_app
    from worker import lifecycle
    from worker.sweeper import sweep_once

    env, r = deployment
    settings = get_settings()
    n = 6
    with TestClient(create_app(), base_url="http://testserver/v1") as c:
        c.headers["Authorization"] = f"Bearer {make_key('acme')}"
        train = upload(c, chat_jsonl(4))
        ids = [
            c.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train["id"])).json()["id"]
            for _ in range(n)
        ]
        assert broker_depth(r) == n

        # No worker: a backlog, not a loss. Sweep after sweep adds nothing (the old sweeper added N each).
        for _ in range(4):
            assert sweep_once(settings) == ([], [])
            assert broker_depth(r) == n

        # The broker lost everything (a Redis restart without persistence): one message per job again.
        r.delete(QUEUE)
        assert broker_depth(r) == 0
        enqueued, _ = sweep_once(settings)
        assert sorted(enqueued) == sorted(ids)
        assert broker_depth(r) == n
        assert sweep_once(settings) == ([], [])
        assert broker_depth(r) == n

        # One message lost among others: exactly one is re-sent.
        r.rpop(QUEUE)  # kombu pushes left and pops right: this is the oldest message
        enqueued, _ = sweep_once(settings)
        assert len(enqueued) == 1 and broker_depth(r) == n

        # Two jobs cancelled: their messages are stale now, and the sweeper adds nothing beside them.
        for job_id in ids[:2]:
            assert c.post(f"/fine_tuning/jobs/{job_id}/cancel").status_code == 200
        assert sweep_once(settings) == ([], [])
        assert broker_depth(r) == n

    # One acme job runs elsewhere (a fresh heartbeat): acme is at its cap of 1.
    holder = "elsewhere:1"
    with session_scope() as s:
        assert lifecycle.claim(s, ids[2], holder, settings) is not None
    parked = ids[3:]

    worker = JuiceProcess(
        ["worker", "--loglevel", "info"], env, ARTIFACTS / "logs" / "sweeper-resend" / "worker.log"
    )
    try:
        started = time.monotonic()
        while broker_depth(r) and time.monotonic() - started < 120:
            time.sleep(0.2)
        drained_s = time.monotonic() - started
        assert broker_depth(r) == 0, worker.output()[-3000:]
        # Taken off the broker is not yet handled: wait until every parked job has said why (its
        # claim committed), so stopping the worker returns no unacknowledged message to the queue.
        while time.monotonic() - started < 120 and not all(_parked_event_count(j) == 1 for j in parked):
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        worker.stop()
    print(f"worker dropped {n} messages in {drained_s:.1f} s (startup included)")

    for job_id in ids[:2]:  # cancelled: dropped without running
        job = _job(job_id)
        assert (job.status, job.attempt, job.worker, job.started_at) == (JobStatus.CANCELLED, 0, None, None)
    running = _job(ids[2])
    assert (running.status, running.worker, running.attempt) == (JobStatus.RUNNING, holder, 1)
    for job_id in parked:  # at the cap: still queued, no message, told why
        job = _job(job_id)
        assert (job.status, job.attempt, job.enqueued_at) == (JobStatus.QUEUED, 0, None)
        with session_scope() as s:
            events = s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
        assert sum("Waiting for a place" in m for m in events) == 1, events

    # Parked jobs are not re-sent while the tenant is at its cap. (Compared with the depth before the
    # sweep, not with 0: a worker's warm shutdown can hand kombu's Redis transport an unacknowledged
    # message back ("redelivered"), which the next worker drops; what is checked is what sweeps add.)
    before = broker_depth(r)
    assert before <= 1
    assert sweep_once(settings) == ([], [])
    assert broker_depth(r) == before
    # ...and when its running job ends, exactly one (the oldest) is sent for the freed place.
    with session_scope() as s:
        assert lifecycle.finish(s, ids[2], holder, JobStatus.SUCCEEDED, event="done")
    enqueued, _ = sweep_once(settings)
    assert enqueued == [parked[0]]
    assert broker_depth(r) == before + 1
    assert sweep_once(settings) == ([], [])
    assert broker_depth(r) == before + 1


def _parked_event_count(job_id: str) -> int:
    from api.db.session import session_scope
    from api.db.tables import JobEvent

    with session_scope() as s:
        messages = s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
    return sum("Waiting for a place" in m for m in messages)


def test_two_workers_cannot_both_take_a_tenants_last_place(
    deployment: tuple[dict[str, str], redis.Redis],
) -> None:
    """On Postgres the running count is read under the tenant's row lock: of two claims racing for the
    last place, one wins and the other parks its job."""
    import threading

    from sqlalchemy import update

    from api.core.config import get_settings
    from api.db.base import utcnow
    from api.db.session import session_scope
    from api.db.tables import Job, Tenant
    from api.db.transitions import transition
    from worker import lifecycle

    settings = get_settings()  # max_running_jobs_per_tenant = 1
    with session_scope() as s:
        tenant = Tenant(name="racers")
        s.add(tenant)
        s.flush()
        jobs = [
            Job(
                tenant_id=tenant.id,
                model="m",
                training_file="file-x",
                method_type="sft",
                hyperparameters={},
                seed=0,
                enqueued_at=utcnow(),
            )
            for _ in range(2)
        ]
        s.add_all(jobs)
        s.flush()
        ids = [j.id for j in jobs]
    for _ in range(5):
        won: list[bool] = []
        barrier = threading.Barrier(2)

        def take(job_id: str, worker: str, barrier: threading.Barrier, won: list[bool]) -> None:
            barrier.wait()
            with session_scope() as s:
                won.append(lifecycle.claim(s, job_id, worker, settings) is not None)

        threads = [threading.Thread(target=take, args=(j, f"w:{i}", barrier, won)) for i, j in enumerate(ids)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(won) == [False, True]
        # Put both back to queued with a message, for the next round.
        with session_scope() as s:
            s.execute(transition("running", "queued").where(Job.id.in_(ids)).values(worker=None))
            s.execute(update(Job).where(Job.id.in_(ids)).values(enqueued_at=utcnow()))
