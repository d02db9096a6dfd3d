"""The trainer's Sink, backed by the service: metrics/events rows, checkpoint upload, cancel and lease.

Bookkeeping never kills training and never loses a row: metrics, events and checkpoint rows wait
through a database outage in the sink's outbox (worker/outbox.py) and are written when it is back. A
failed checkpoint upload is reported as an error event; training goes on and the next checkpoint
tries again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api.core.config import Settings
from api.db.session import session_scope
from api.db.tables import Checkpoint, Job, JobMetric
from api.storage import ArtifactStore
from worker import lifecycle
from worker.outbox import Outbox
from worker.tracking import Trackers

log = logging.getLogger(__name__)


def checkpoint_key(job_id: str, step: int) -> str:
    return f"jobs/{job_id}/checkpoints/step_{step:08d}"


class Lease(threading.Thread):
    """Beats the job's heartbeat and watches cancel_requested from a background thread. `hold_requested`
    is set by the attempt's SIGTERM handler (worker.runner): the worker is shutting down."""

    def __init__(self, job_id: str, worker: str, settings: Settings) -> None:
        super().__init__(name=f"lease-{job_id}", daemon=True)
        self.job_id, self.worker, self.settings = job_id, worker, settings
        self.cancel_requested = threading.Event()
        self.hold_requested = threading.Event()
        self.lost = threading.Event()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(
            min(self.settings.cancel_poll_interval_s, self.settings.heartbeat_interval_s)
        ):
            try:
                with session_scope() as s:
                    held, cancel, pause = lifecycle.heartbeat(s, self.job_id, self.worker)
            except Exception:  # database blip: keep training, try again next beat
                log.warning("heartbeat for %s failed", self.job_id, exc_info=True)
                continue
            if cancel:
                self.cancel_requested.set()
            if pause:  # checkpoint at the next step and stop; runner._record_end parks the job
                self.hold_requested.set()
            if not held:
                self.lost.set()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def merge_latest(latest: dict[str, float], values: dict[str, float]) -> dict[str, float]:
    """`latest` updated with one log call's finite values (a new dict).

    Non-finite values are left out: the previous finite value stays the "latest", and Postgres' json
    type rejects NaN/Infinity, which would fail the progress UPDATE along with it.
    """
    return {**latest, **{k: v for k, v in values.items() if math.isfinite(v)}}


class ServiceSink:
    """Implements trainer.callbacks.Sink for one job attempt. Every database write goes through an
    `Outbox` (worker/outbox.py): in order, held through a database outage (memory, then a spill file
    in `scratch`) and written once the database is back, never dropped. Rows keep the time the
    trainer reported them, not the time they reached the database."""

    def __init__(
        self, job_id: str, lease: Lease, store: ArtifactStore, scratch: Path, trackers: Trackers | None = None
    ) -> None:
        self.job_id, self.lease, self.store = job_id, lease, store
        self.trackers = trackers  # the job's experiment trackers (worker/tracking.py), fed off this thread
        self.last_step = 0
        self.trained_tokens: int | None = None
        self.failed_uploads: dict[int, Exception] = {}  # step -> why its checkpoint was not stored
        self.outbox = Outbox(self._apply, scratch / "outbox.jsonl")
        # Seeded from the row so a resumed attempt keeps the series it has not logged again yet.
        self.latest_metrics = self._stored_latest_metrics()

    def _stored_latest_metrics(self) -> dict[str, float]:
        try:
            with session_scope() as s:
                return dict(s.scalar(select(Job.latest_metrics).where(Job.id == self.job_id)) or {})
        except Exception:  # a database blip costs the earlier attempts' values, never the training
            log.warning("could not read latest metrics of %s", self.job_id, exc_info=True)
            return {}

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in values.items() if v is not None}
        self.last_step = max(self.last_step, step)
        if "train/tokens" in clean:
            self.trained_tokens = int(clean["train/tokens"])
        self.latest_metrics = merge_latest(self.latest_metrics, clean)
        progress: dict[str, Any] = {"current_step": self.last_step, "latest_metrics": self.latest_metrics}
        if self.trained_tokens is not None:
            progress["trained_tokens"] = self.trained_tokens
        self.outbox.submit(
            {"kind": "metrics", "at": time.time(), "step": step, "values": clean, "progress": progress}
        )
        if self.trackers is not None:
            self.trackers.log(step, clean)
            while not self.trackers.warnings.empty():  # a tracker that failed says so on the job
                self.log_event(self.trackers.warnings.get(), level="warning")

    def log_event(self, message: str, level: str = "info", data: dict[str, Any] | None = None) -> None:
        level = {"warning": "warn"}.get(level, level)  # OpenAI's event levels: info | warn | error
        self.outbox.submit(
            {"kind": "event", "at": time.time(), "message": message, "level": level, "data": data}
        )

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        key = checkpoint_key(self.job_id, step)
        # One upload, one row per kind it holds: the policy always, RFT's reward model too.
        kinds = ["model"] + (["reward_model"] if (Path(path) / "reward_model").is_dir() else [])
        try:
            size = self.store.put_dir(Path(path), key, last="manifest.json")
        except Exception as exc:
            log.exception("checkpoint upload for %s step %d failed", self.job_id, step)
            self.failed_uploads[step] = exc  # the runner fails a run whose model checkpoint is missing
            self.log_event(f"Checkpoint at step {step} could not be stored: {exc}", level="error")
            return
        self.failed_uploads.pop(step, None)
        # Stored: its rows are listed (and resumable from) once the database has them.
        self.outbox.submit(
            {
                "kind": "checkpoint",
                "at": time.time(),
                "step": step,
                "kinds": kinds,
                "metrics": metrics,
                "key": key,
                "size": size,
            }
        )

    def drain(self, timeout_s: float) -> bool:
        """Write everything held (the end of the attempt); False if the database stayed away."""
        return self.outbox.drain(timeout_s)

    # --- applying one entry, in one transaction --------------------------------------------------------
    def _apply(self, entry: dict[str, Any]) -> None:
        at = datetime.fromtimestamp(entry["at"], UTC)
        with session_scope() as s:
            if entry["kind"] == "metrics":
                s.add(
                    JobMetric(job_id=self.job_id, step=entry["step"], values=entry["values"], created_at=at)
                )
                s.execute(update(Job).where(Job.id == self.job_id).values(**entry["progress"]))
            elif entry["kind"] == "event":
                self._apply_event(s, entry, at)
            else:
                self._apply_checkpoint(s, entry, at)

    def _apply_event(self, s: Session, entry: dict[str, Any], at: datetime) -> None:
        data = entry["data"]
        if data and isinstance(data.get("total_steps"), int):
            # The trainer's own count, once it has loaded the data (rows dropped for having no
            # trained token are not in it), replaces the worker's estimate from the upload.
            s.execute(update(Job).where(Job.id == self.job_id).values(total_steps=data["total_steps"]))
        lifecycle.add_event(
            s,
            self.job_id,
            entry["message"],
            level=entry["level"],
            type_="metrics" if data and data.get("type") == "metrics" else "message",
            data=data,
            created_at=at,
        )

    def _apply_checkpoint(self, s: Session, entry: dict[str, Any], at: datetime) -> None:
        step, metrics, size = entry["step"], entry["metrics"], entry["size"]
        for kind in entry["kinds"]:
            row = s.scalar(
                select(Checkpoint).where(
                    Checkpoint.job_id == self.job_id, Checkpoint.step == step, Checkpoint.kind == kind
                )
            )
            if row is None:
                s.add(
                    Checkpoint(
                        job_id=self.job_id,
                        step=step,
                        kind=kind,
                        metrics=metrics,
                        storage_path=entry["key"],
                        size_bytes=size,
                        created_at=at,
                    )
                )
            else:  # the same step written again after a resume: the newer upload replaced it
                row.metrics, row.size_bytes = metrics, size
        lifecycle.add_event(
            s,
            self.job_id,
            f"Checkpoint saved at step {step}.",
            data={"step": step, "bytes": size, "kinds": entry["kinds"]},
            created_at=at,
        )

    def should_stop(self) -> bool:
        return self.lease.cancel_requested.is_set() or self.lease.lost.is_set()

    def should_hold(self) -> bool:
        return self.lease.hold_requested.is_set()
