"""Live metric streams that cannot starve the server: one poller per API process for every followed job.

Each `GET .../metrics/stream` used to poll the database itself every `metrics_poll_interval_s` and, in
its dependencies, hold a pooled session for the stream's whole life: about 16 open streams (SQLite's
pool of 5 + 10) left the next request blocking in pool checkout on the event loop, and the whole API
froze for every tenant. Here a stream holds no session and never touches the database on the event
loop. `LiveMetrics` keeps the followed jobs and, while any are followed, runs ONE task that, each
interval, reads (in a worker thread, with a short-lived session) the statuses of those jobs and their
new metric rows in two queries, whatever the number of streams, and fans them out to every stream's
queue.

Cursors are per job, not global: seq is one sequence over all jobs, and job B's row 105 can commit
before job A's row 104, so a global cursor could skip 104. A job's rows come from one writer (its
worker) in order, so per job, seq order is commit order. A stream that joins a job already followed
reads its own backlog (after_seq up to now) once, then takes the shared feed, dropping what it has.

A stream whose client does not read fills its queue (bounded); it is then closed, and the client's
EventSource reconnects with Last-Event-ID and resumes where it stopped: one slow client costs the
server a bounded amount of memory. Streams per tenant are capped (`max_streams_per_tenant`, per API
process) with a 429.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from sqlalchemy import select

from api.db.session import get_sessionmaker
from api.db.tables import Job, JobMetric, JobStatus
from api.errors import TooManyRequests
from api.services.monitoring import MetricPoint

log = logging.getLogger(__name__)

QUEUE_LIMIT = 2000  # updates a stream may fall behind before it is closed (its client resumes)
BATCH_ROWS = 5000  # rows one poll reads at most; a bigger backlog is read in the next polls


@dataclass
class Update:
    """What the poller hands a stream: new points of its job (seq order) and the job's status."""

    points: list[dict[str, Any]]
    status: str  # "" when unknown (a backlog, a keep-alive, a poll that read a full batch)
    final: bool = False  # the job is over and every one of its points has been passed on


@dataclass(eq=False)
class Subscription:
    """One stream's place in the hub, taken eagerly (so the cap answers 429 before the response
    starts) and released by `close`, which the route also runs as the response's background task: a
    client gone before the stream's first chunk never starts `updates`, whose `finally` would not run."""

    hub: LiveMetrics
    job_id: str
    tenant_id: int
    after_seq: int
    catch_up_to: int | None  # the feed's cursor when this joined, if it was ahead of after_seq
    queue: asyncio.Queue[Update | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    closed: bool = False

    async def updates(self, idle_s: float = 15.0) -> AsyncIterator[Update]:
        """Updates of the job after `after_seq` until it is final (the last update carries that status),
        it is gone, or this stream fell too far behind (it just ends; the client resumes). An empty
        update (no points, no status) comes after every `idle_s` without news, for keep-alives."""
        last, status = self.after_seq, ""
        try:
            if self.catch_up_to is not None:
                backlog = await anyio.to_thread.run_sync(
                    self.hub.backlog, self.job_id, self.after_seq, self.catch_up_to
                )
                if backlog:
                    last = backlog[-1]["seq"]
                    yield Update(backlog, status="")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + idle_s
            while True:
                try:
                    update = await asyncio.wait_for(self.queue.get(), max(deadline - loop.time(), 0))
                except TimeoutError:
                    yield Update([], status="")
                    deadline = loop.time() + idle_s
                    continue
                if update is None:  # overflowed, or the job is gone
                    return
                fresh = [p for p in update.points if p["seq"] > last]
                if fresh:
                    last = fresh[-1]["seq"]
                # Final once a poll saw the job final and brought none of its rows (read_updates).
                final = update.status in JobStatus.FINAL and not update.points
                if fresh or update.status != status or final:  # else: the poller's idle tick
                    status = update.status
                    yield Update(fresh, status, final=final)
                    deadline = loop.time() + idle_s
                if final:
                    return
        finally:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub._leave(self)


def read_updates(
    cursors: dict[str, int], limit: int = BATCH_ROWS
) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """One poll, in a worker thread: new rows of each job after its cursor, and every job's status.

    Status is read BEFORE the rows: a job seen final here has committed all its metrics, so the rows
    read next include every last one of them, and a stream can end once a poll brings none."""
    jobs = list(cursors)
    with get_sessionmaker()() as session:
        statuses = dict(session.execute(select(Job.id, Job.status).where(Job.id.in_(jobs))).tuples().all())
        low = min(cursors.values(), default=0)
        rows = session.scalars(
            select(JobMetric)
            .where(JobMetric.job_id.in_(jobs), JobMetric.seq > low)
            .order_by(JobMetric.seq)
            .limit(limit)
        )
        points: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            if row.seq > cursors[row.job_id]:
                points[row.job_id].append(MetricPoint.of(row).model_dump())
    return dict(points), statuses


def read_backlog(job_id: str, after_seq: int, upto_seq: int) -> list[dict]:
    """A joining stream's own catch-up, in a worker thread: the job's rows in (after_seq, upto_seq]."""
    with get_sessionmaker()() as session:
        rows = session.scalars(
            select(JobMetric)
            .where(JobMetric.job_id == job_id, JobMetric.seq > after_seq, JobMetric.seq <= upto_seq)
            .order_by(JobMetric.seq)
        )
        return [MetricPoint.of(r).model_dump() for r in rows]


class LiveMetrics:
    """The per-process hub: `open` a Subscription per stream; the poller runs while anyone follows."""

    def __init__(
        self,
        *,
        interval_s: float,
        max_per_tenant: int,
        read: Callable[[dict[str, int]], tuple[dict[str, list[dict]], dict[str, str]]] = read_updates,
        backlog: Callable[[str, int, int], list[dict]] = read_backlog,
    ) -> None:
        self.interval_s, self.max_per_tenant = interval_s, max_per_tenant
        self._read, self.backlog = read, backlog
        self._followers: dict[str, list[Subscription]] = defaultdict(list)
        self._cursors: dict[str, int] = {}  # job -> last seq the feed delivered
        self._per_tenant: dict[int, int] = defaultdict(int)
        self._task: asyncio.Task[None] | None = None
        self.polls = 0  # for tests and curiosity: DB polls done, whatever the number of streams

    def streams_of(self, tenant_id: int) -> int:
        return self._per_tenant[tenant_id]

    def open(self, tenant_id: int, job_id: str, after_seq: int) -> Subscription:
        """Take a stream's place (TooManyRequests at the tenant's cap) and start the poller if idle."""
        if self._per_tenant[tenant_id] >= self.max_per_tenant:
            raise TooManyRequests(
                f"This organization already has {self.max_per_tenant} open metric streams on this "
                "server (JUICE_MAX_STREAMS_PER_TENANT); close one, or read /metrics/series instead.",
                code="too_many_streams",
                retry_after_s=5,
            )
        catch_up_to = self._cursors.get(job_id)
        if catch_up_to is None:
            self._cursors[job_id] = after_seq  # the first follower: the feed starts at its cursor
        elif catch_up_to <= after_seq:
            catch_up_to = None  # the feed is not ahead of it: nothing to catch up
        sub = Subscription(self, job_id, tenant_id, after_seq, catch_up_to)
        self._followers[job_id].append(sub)
        self._per_tenant[tenant_id] += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll_forever())
        return sub

    def _leave(self, sub: Subscription) -> None:
        followers = self._followers.get(sub.job_id, [])
        if sub in followers:
            followers.remove(sub)
            self._per_tenant[sub.tenant_id] -= 1
        if not followers:
            self._followers.pop(sub.job_id, None)
            self._cursors.pop(sub.job_id, None)

    async def _poll_forever(self) -> None:
        failing = False
        while self._followers:
            cursors = dict(self._cursors)
            try:
                points, statuses = await anyio.to_thread.run_sync(self._read, cursors)
            except Exception as exc:  # the database is away: the streams wait, they do not die
                if not failing:
                    log.warning("live metrics: polling the database failed (%s); retrying", exc)
                failing = True
                await asyncio.sleep(self.interval_s)
                continue
            if failing:
                log.warning("live metrics: polling the database works again")
            failing = False
            self.polls += 1
            full = sum(len(p) for p in points.values()) >= BATCH_ROWS
            for job_id, followers in list(self._followers.items()):
                if job_id not in cursors:
                    continue  # followed since this poll began: the next poll reads it
                if job_id not in statuses:  # the job is gone (deleted): end its streams
                    for sub in list(followers):
                        self._end(sub)
                    continue
                new = points.get(job_id, [])
                if new:
                    self._cursors[job_id] = max(self._cursors.get(job_id, 0), new[-1]["seq"])
                # A final status is only passed on with every row read: a full batch may have cut the
                # job's last rows off, and a stream ends on a final status that comes with no rows.
                update = Update(new, "" if full else statuses[job_id])
                for sub in list(followers):
                    try:
                        sub.queue.put_nowait(update)
                    except asyncio.QueueFull:
                        self._end(sub)
            if not full:
                await asyncio.sleep(self.interval_s)

    @staticmethod
    def _end(sub: Subscription) -> None:
        # Drop what it has not read, leave one end marker (its `updates` returns on it) and free its
        # place now: the feed stops filling its queue.
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)
        sub.close()
