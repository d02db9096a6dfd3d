"""The worker's outbox (worker/outbox.py): order kept through an outage, memory then a spill file,
each entry written exactly once, retries rate-limited so a dead database costs the loop nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker import outbox as ob
from worker.outbox import Outbox


class FlakyDb:
    def __init__(self) -> None:
        self.up = True
        self.rows: list[int] = []
        self.tries = 0

    def apply(self, entry: dict) -> None:
        self.tries += 1
        if not self.up:
            raise ConnectionError("database away")
        self.rows.append(entry["n"])


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_entries_wait_through_an_outage_and_are_written_once_in_order(tmp_path: Path) -> None:
    db, clock = FlakyDb(), Clock()
    box = Outbox(db.apply, tmp_path / "outbox.jsonl", clock=clock)
    box.submit({"n": 1})
    db.up = False
    for n in range(2, 50):
        box.submit({"n": n})
    assert db.rows == [1] and box.pending == 48
    assert db.tries == 2  # one failed try, then none until RETRY_EVERY_S has passed
    db.up = True
    box.submit({"n": 50})  # still within the back-off: queued behind the others
    assert db.rows == [1]
    clock.t += ob.RETRY_EVERY_S
    box.submit({"n": 51})
    assert db.rows == list(range(1, 52)) and box.pending == 0 and box.written == 51


def test_beyond_the_memory_limit_entries_spill_to_disk_and_keep_their_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ob, "MEMORY_LIMIT", 5)
    db, clock = FlakyDb(), Clock()
    spill = tmp_path / "outbox.jsonl"
    box = Outbox(db.apply, spill, clock=clock)
    db.up = False
    for n in range(1, 23):
        box.submit({"n": n})
    assert box.pending == 22 and spill.is_file() and len(spill.read_text().splitlines()) == 17
    db.up = True
    assert box.drain(timeout_s=10, sleep=lambda s: None)
    assert db.rows == list(range(1, 23)) and not spill.exists()


def test_a_failure_part_way_through_a_flush_resumes_at_the_failed_entry(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ob, "MEMORY_LIMIT", 3)
    rows: list[int] = []
    budget = {"left": 4}

    def apply(entry: dict) -> None:
        if budget["left"] == 0:
            raise ConnectionError("gone again")
        budget["left"] -= 1
        rows.append(entry["n"])

    clock = Clock()
    box = Outbox(apply, tmp_path / "o.jsonl", clock=clock)
    budget["left"] = 0
    for n in range(1, 10):
        box.submit({"n": n})
    budget["left"] = 4
    clock.t += ob.RETRY_EVERY_S
    assert not box.flush()
    assert rows == [1, 2, 3, 4] and box.pending == 5
    budget["left"] = 100
    assert box.flush(force=True)
    assert rows == list(range(1, 10))


def test_drain_gives_up_after_its_timeout(tmp_path: Path) -> None:
    db, clock = FlakyDb(), Clock()
    box = Outbox(db.apply, tmp_path / "o.jsonl", clock=clock)
    db.up = False
    box.submit({"n": 1})

    def sleep(s: float) -> None:
        clock.t += s

    assert not box.drain(timeout_s=10, sleep=sleep)
    assert box.pending == 1 and clock.t >= 10
