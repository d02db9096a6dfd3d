"""The live-metrics hub (api/services/live_metrics.py) against a scripted database: one poll feeds
every stream, per-job cursors, catch-up of late joiners, the end only after the last rows, bounded
queues, the per-tenant cap, and streams that ride out a database error."""

from __future__ import annotations

import asyncio

import pytest

from api.errors import TooManyRequests
from api.services.live_metrics import QUEUE_LIMIT, LiveMetrics
from tests.helpers import run_async


class FakeDb:
    """Metric rows per job (seq, step) and statuses; read_updates/read_backlog over them."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict]] = {}
        self.status: dict[str, str] = {}
        self.fail = 0  # the next `fail` polls raise, as with the database away
        self.reads: list[dict[str, int]] = []

    def add(self, job: str, seq: int) -> None:
        self.rows.setdefault(job, []).append({"seq": seq, "step": seq, "values": {"train/loss": 1.0}})

    def read(self, cursors: dict[str, int]) -> tuple[dict[str, list[dict]], dict[str, str]]:
        self.reads.append(dict(cursors))
        if self.fail:
            self.fail -= 1
            raise ConnectionError("database away")
        statuses = {j: self.status[j] for j in cursors if j in self.status}
        points = {j: [r for r in self.rows.get(j, []) if r["seq"] > c] for j, c in cursors.items()}
        return {j: p for j, p in points.items() if p}, statuses

    def backlog(self, job: str, after: int, upto: int) -> list[dict]:
        return [r for r in self.rows.get(job, []) if after < r["seq"] <= upto]


def hub_of(db: FakeDb, **kw) -> LiveMetrics:
    return LiveMetrics(
        interval_s=kw.pop("interval_s", 0.01),
        max_per_tenant=kw.pop("max_per_tenant", 32),
        read=db.read,
        backlog=db.backlog,
    )


async def collect(sub) -> tuple[list[int], list[str]]:
    seqs, statuses = [], []
    async for update in sub.updates(idle_s=5):
        seqs += [p["seq"] for p in update.points]
        if update.status and update.status != (statuses[-1] if statuses else None):
            statuses.append(update.status)
        if update.final:
            statuses.append("END")
    return seqs, statuses


def test_one_poll_feeds_every_stream_and_each_ends_after_the_last_rows() -> None:
    async def main() -> None:
        db = FakeDb()
        db.status = {"a": "running", "b": "running"}
        for seq in (1, 3):
            db.add("a", seq)
        db.add("b", 2)
        hub = hub_of(db)
        subs = [hub.open(1, "a", 0) for _ in range(20)] + [hub.open(2, "b", 0) for _ in range(5)]
        tasks = [asyncio.create_task(collect(s)) for s in subs]
        await asyncio.sleep(0.05)
        db.add("b", 4)  # b commits a row whose seq is above a's last: per-job cursors keep a's 5
        await asyncio.sleep(0.05)
        db.add("a", 5)
        db.status["a"] = db.status["b"] = "succeeded"
        results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        for seqs, statuses in results[:20]:
            assert seqs == [1, 3, 5] and statuses == ["running", "succeeded", "END"]
        for seqs, statuses in results[20:]:
            assert seqs == [2, 4] and statuses[-2:] == ["succeeded", "END"]
        # every poll read both jobs at once: the number of streams does not multiply the queries
        assert all(set(r) <= {"a", "b"} for r in db.reads)
        assert hub.polls == len(db.reads) < 60
        assert hub.streams_of(1) == hub.streams_of(2) == 0  # all released

    run_async(main())


def test_a_late_joiner_catches_up_from_its_own_cursor_without_gaps_or_repeats() -> None:
    async def main() -> None:
        db = FakeDb()
        db.status = {"a": "running"}
        for seq in range(1, 6):
            db.add("a", seq)
        hub = hub_of(db)
        first = asyncio.create_task(collect(hub.open(1, "a", 0)))
        await asyncio.sleep(0.05)  # the feed is now at seq 5
        late = asyncio.create_task(collect(hub.open(1, "a", 2)))  # a reconnect with Last-Event-ID 2
        ahead = asyncio.create_task(collect(hub.open(1, "a", 9)))  # a cursor past the feed
        await asyncio.sleep(0.05)
        db.add("a", 6)
        db.add("a", 10)
        await asyncio.sleep(0.05)
        db.status["a"] = "failed"
        (s1, _), (s2, st2), (s3, _) = await asyncio.wait_for(asyncio.gather(first, late, ahead), 5)
        assert s1 == [1, 2, 3, 4, 5, 6, 10]
        assert s2 == [3, 4, 5, 6, 10] and st2[-2:] == ["failed", "END"]
        assert s3 == [10]

    run_async(main())


def test_streams_ride_out_a_database_outage() -> None:
    async def main() -> None:
        db = FakeDb()
        db.status = {"a": "running"}
        db.fail = 5
        hub = hub_of(db)
        task = asyncio.create_task(collect(hub.open(1, "a", 0)))
        await asyncio.sleep(0.1)
        assert not task.done()  # still open while every poll fails
        db.add("a", 1)
        db.status["a"] = "succeeded"
        seqs, statuses = await asyncio.wait_for(task, 5)
        assert seqs == [1] and statuses[-1] == "END"

    run_async(main())


def test_the_tenant_cap_answers_429_and_a_closed_stream_frees_its_place() -> None:
    async def main() -> None:
        db = FakeDb()
        db.status = {"a": "running"}
        hub = hub_of(db, max_per_tenant=2)
        one, two = hub.open(1, "a", 0), hub.open(1, "a", 0)
        with pytest.raises(TooManyRequests) as exc:
            hub.open(1, "a", 0)
        assert exc.value.status_code == 429 and exc.value.extra_headers["Retry-After"] == "5"
        hub.open(2, "a", 0).close()  # other tenants are not affected
        one.close()
        one.close()  # idempotent: the route's background task and the generator both close
        hub.open(1, "a", 0)
        assert hub.streams_of(1) == 2
        two.close()

    run_async(main())


@pytest.mark.slow
def test_a_stream_that_does_not_read_is_closed_not_buffered_forever() -> None:
    async def main() -> None:
        db = FakeDb()
        db.status = {"a": "running"}
        hub = hub_of(db, interval_s=0.001)
        stuck = hub.open(1, "a", 0)  # never iterated
        seq = 0
        while stuck.queue.qsize() < QUEUE_LIMIT - 1:
            seq += 1
            db.add("a", seq)
            await asyncio.sleep(0.002)
        for _ in range(20):
            seq += 1
            db.add("a", seq)
            await asyncio.sleep(0.002)
        assert stuck.queue.qsize() == 1 and stuck.closed  # emptied and closed when full
        assert [u async for u in stuck.updates()] == []  # it ends at once; its client resumes
        assert hub.streams_of(1) == 0

    run_async(main())


def test_a_job_that_disappears_ends_its_streams() -> None:
    async def main() -> None:
        db = FakeDb()
        db.status = {"a": "running"}
        hub = hub_of(db)
        task = asyncio.create_task(collect(hub.open(1, "a", 0)))
        await asyncio.sleep(0.03)
        del db.status["a"]
        seqs, statuses = await asyncio.wait_for(task, 5)
        assert seqs == [] and "END" not in statuses

    run_async(main())


def test_a_job_first_followed_while_a_poll_is_in_flight_is_not_taken_for_gone() -> None:
    """The poll reads the jobs followed when it began; one followed meanwhile waits for the next."""

    async def main() -> None:
        db = FakeDb()
        db.status = {"a": "running", "b": "running"}
        db.add("b", 1)
        hub = hub_of(db)
        in_flight = asyncio.Event()
        proceed = asyncio.Event()
        read = db.read

        def slow_read(cursors):
            loop.call_soon_threadsafe(in_flight.set)
            asyncio.run_coroutine_threadsafe(proceed.wait(), loop).result()
            return read(cursors)

        loop = asyncio.get_running_loop()
        hub._read = slow_read
        first = asyncio.create_task(collect(hub.open(1, "a", 0)))
        await in_flight.wait()
        late = asyncio.create_task(collect(hub.open(1, "b", 0)))
        proceed.set()
        hub._read = read
        await asyncio.sleep(0.1)
        db.status["a"] = db.status["b"] = "succeeded"
        (_, st1), (s2, st2) = await asyncio.wait_for(asyncio.gather(first, late), 5)
        assert st1[-1] == "END" and s2 == [1] and st2[-1] == "END"

    run_async(main())
