"""The worker's writes to the database, in order, surviving a database outage.

A job's metrics, events and checkpoint rows are "entries" (JSON-able dicts) applied one transaction
each, in the order the trainer produced them. When the database is away an entry is not dropped:
it waits in memory, up to MEMORY_LIMIT entries, then in a JSONL spill file in the attempt's scratch
folder, and the pending entries are written, oldest first, once the database answers again; new
entries queue behind them, so the order (and every metric's seq order within the job) is kept.
Retrying is rate-limited (one try per RETRY_EVERY_S), so a dead database costs the training loop a
list append per call, not a connection timeout per call.

Exactly once: an entry leaves the queue only after its transaction committed, and a failed
transaction wrote nothing, so nothing is written twice. (The one window left: a COMMIT that reached
the server but whose reply was lost with the connection. The entry is then retried and written a
second time; Postgres and SQLite give no way to tell, short of a client-side key per row.)
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MEMORY_LIMIT = 10_000  # entries kept in memory before spilling to disk
RETRY_EVERY_S = 2.0

Entry = dict[str, Any]


class Outbox:
    """Ordered, durable-across-outages writes. `apply(entry)` writes one entry in one transaction and
    raises if it could not (the database away); it must write nothing when it raises."""

    def __init__(
        self, apply: Callable[[Entry], None], spill_path: Path, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._apply, self._spill_path, self._clock = apply, spill_path, clock
        self._memory: deque[Entry] = deque()
        self._spilled = 0  # entries in the spill file not yet applied (they come after _memory)
        self._spill_read = 0  # entries of the spill file already moved back to memory
        self._next_try = 0.0
        self._failing_since: float | None = None
        self.written = 0

    @property
    def pending(self) -> int:
        return len(self._memory) + self._spilled

    def submit(self, entry: Entry) -> None:
        """Write `entry` now if nothing is pending and the database answers, else queue it."""
        self._queue(entry)
        self.flush()

    def flush(self, force: bool = False) -> bool:
        """Write pending entries, oldest first, until one fails. True when none is left pending.
        Without `force`, a flush right after a failure is skipped (RETRY_EVERY_S)."""
        if not self.pending:
            return True
        if not force and self._clock() < self._next_try:
            return False
        while self.pending:
            if not self._memory:
                self._refill()
            entry = self._memory[0]
            try:
                self._apply(entry)
            except Exception as exc:
                now = self._clock()
                if self._failing_since is None:
                    self._failing_since = now
                    log.warning(
                        "database write failed (%s); %d entries held until it is back", exc, self.pending
                    )
                self._next_try = now + RETRY_EVERY_S
                return False
            self._memory.popleft()
            self.written += 1
        if self._failing_since is not None:
            log.warning(
                "database is back: held entries written (%.0f s after the first failure)",
                self._clock() - self._failing_since,
            )
            self._failing_since = None
        self._spill_path.unlink(missing_ok=True)
        self._spill_read = 0
        return True

    def drain(self, timeout_s: float, sleep: Callable[[float], None] = time.sleep) -> bool:
        """Flush until nothing is pending or `timeout_s` passed (the end of a run). True if drained."""
        deadline = self._clock() + timeout_s
        while not self.flush(force=True):
            if self._clock() >= deadline:
                return False
            sleep(RETRY_EVERY_S)
        return True

    # --- memory and spill file ----------------------------------------------------------------------
    def _queue(self, entry: Entry) -> None:
        if not self._spilled and len(self._memory) < MEMORY_LIMIT:
            self._memory.append(entry)
            return
        # Memory is full (or older entries are already on disk): append to the file, behind them.
        self._spill_path.parent.mkdir(parents=True, exist_ok=True)
        with self._spill_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        self._spilled += 1

    def _refill(self) -> None:
        """Move the next spilled entries (up to MEMORY_LIMIT) back to memory, in file order."""
        with self._spill_path.open(encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i < self._spill_read:
                    continue
                if len(self._memory) >= MEMORY_LIMIT:
                    break
                self._memory.append(json.loads(line))
                self._spill_read += 1
                self._spilled -= 1
