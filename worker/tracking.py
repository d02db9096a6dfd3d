"""Experiment trackers: a job's metrics also go to MLflow or W&B, as its `integrations` ask.

The trainer never waits on a tracker: `Trackers` is a thread with a bounded queue between the
training loop and the network. A tracker that fails (server down, bad credentials) is switched off
for the rest of the attempt and its failure becomes one warning event on the job; the job's own
metrics in Juice are never affected, so a tracker can cost a chart, never a training run.

One job is one tracker run across all its attempts (pause/resume, a lost worker): MLflow's run is
found again by its `juice.job_id` tag, W&B's by an id derived from the job id (`resume="allow"`).
A held job (paused, handed over) leaves its run open; the final status closes it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import httpx

from api.core.config import Settings
from api.db.tables import Job

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000  # metric rows waiting for a slow tracker; beyond this the newest are dropped
CLOSE_TIMEOUT_S = 30.0  # a job's end waits at most this for its trackers' runs to close
HELD_CLOSE_TIMEOUT_S = 5.0  # a hand-over at shutdown, whose grace period is short
# Juice's final job status -> MLflow's run status (None: the run stays open for the next attempt)
MLFLOW_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


class Tracker(Protocol):
    name: str

    def start(self) -> None: ...
    def log(self, step: int, values: dict[str, float]) -> None: ...
    def finish(self, status: str | None) -> None: ...
    def abandon(self) -> None: ...


def run_params(job: Job) -> dict[str, str]:
    """What identifies the run: the job's model, data, method and its hyperparameters, flattened."""
    params = {
        "juice.job_id": job.id,
        "model": job.model,
        "method": job.method_type,
        "training_file": job.training_file,
        "validation_file": job.validation_file or "",
        "seed": str(job.seed),
    }

    def flatten(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                flatten(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            params[prefix] = str(value)

    flatten("", job.hyperparameters)
    return params


class MlflowTracker:
    """MLflow's REST API (api/2.0/mlflow), so the worker needs no MLflow package."""

    name = "mlflow"

    def __init__(self, job: Job, block: dict[str, Any], tracking_uri: str, tenant_name: str) -> None:
        self.job, self.block = job, block
        # Tenants share the operator's tracking server: each writes under its own name, never another's.
        self.experiment_name = f"{tenant_name}/{block['experiment_name']}"
        auth: tuple[str, str] | None = None
        headers = {}
        if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
            headers["Authorization"] = f"Bearer {token}"
        elif (user := os.environ.get("MLFLOW_TRACKING_USERNAME")) is not None:
            auth = (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
        self.http = httpx.Client(
            base_url=f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/", headers=headers, auth=auth, timeout=15
        )
        self.run_id = ""

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        r = self.http.request(method, path, **kwargs)
        if r.status_code >= 400:
            raise RuntimeError(f"MLflow {path}: HTTP {r.status_code}: {r.text[:300]}")
        return dict(r.json())

    def _experiment_id(self) -> str:
        name = self.experiment_name
        r = self.http.get("experiments/get-by-name", params={"experiment_name": name})
        if r.status_code == 200:
            return str(r.json()["experiment"]["experiment_id"])
        try:
            return str(self._call("POST", "experiments/create", json={"name": name})["experiment_id"])
        except RuntimeError:  # created meanwhile by another job
            return str(
                self._call("GET", "experiments/get-by-name", params={"experiment_name": name})["experiment"][
                    "experiment_id"
                ]
            )

    def start(self) -> None:
        experiment = self._experiment_id()
        found = self._call(
            "POST",
            "runs/search",
            json={
                "experiment_ids": [experiment],
                "filter": f"tags.`juice.job_id` = '{self.job.id}'",
                "max_results": 1,
            },
        ).get("runs", [])
        if found:
            self.run_id = found[0]["info"]["run_id"]
            self._call("POST", "runs/update", json={"run_id": self.run_id, "status": "RUNNING"})
            return
        # MLflow's own tags (mlflow.*) and Juice's are not the tenant's to set
        own = {
            k: v for k, v in (self.block.get("tags") or {}).items() if not k.startswith(("mlflow.", "juice."))
        }
        tags = {**own, "juice.job_id": self.job.id}
        run = self._call(
            "POST",
            "runs/create",
            json={
                "experiment_id": experiment,
                "run_name": self.block.get("run_name") or self.job.id,
                "start_time": int(time.time() * 1000),
                "tags": [{"key": k, "value": v} for k, v in tags.items()],
            },
        )
        self.run_id = run["run"]["info"]["run_id"]
        params = [{"key": k, "value": v[:6000]} for k, v in run_params(self.job).items()]
        for i in range(0, len(params), 100):  # MLflow's limit per log-batch
            self._call("POST", "runs/log-batch", json={"run_id": self.run_id, "params": params[i : i + 100]})

    def log(self, step: int, values: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        metrics = [{"key": k, "value": v, "timestamp": now, "step": step} for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self._call(
                "POST", "runs/log-batch", json={"run_id": self.run_id, "metrics": metrics[i : i + 1000]}
            )

    def finish(self, status: str | None) -> None:
        if status in MLFLOW_STATUS:
            self._call(
                "POST",
                "runs/update",
                json={
                    "run_id": self.run_id,
                    "status": MLFLOW_STATUS[status],
                    "end_time": int(time.time() * 1000),
                },
            )
        self.http.close()

    def abandon(self) -> None:
        self.http.close()


def wandb_run_id(job_id: str) -> str:
    """W&B run ids are short and plain: the job id's hex part."""
    return re.sub(r"[^a-z0-9]", "", job_id.removeprefix("ftjob-").lower())[:32]


class WandbTracker:
    """W&B through its own package, in the server's mode (offline: files under wandb_dir)."""

    name = "wandb"

    def __init__(self, job: Job, block: dict[str, Any], settings: Settings) -> None:
        self.job, self.block, self.settings = job, block, settings
        self.run: Any = None

    def start(self) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise RuntimeError(
                "the wandb package is not installed on this worker (pip install wandb)"
            ) from exc
        folder = Path(self.settings.wandb_dir or self.settings.home / "wandb")
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            mode="offline" if self.settings.wandb_mode == "offline" else "online",
            dir=str(folder),
            project=self.block["project"],
            entity=self.block.get("entity"),
            name=self.block.get("name") or self.job.id,
            tags=self.block.get("tags"),
            id=wandb_run_id(self.job.id),
            resume="allow",
            config=run_params(self.job),
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def finish(self, status: str | None) -> None:
        self.run.finish(exit_code=0 if status in (None, "succeeded") else 1)

    def abandon(self) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1)


def trackers_for(job: Job, settings: Settings, tenant_name: str) -> list[Tracker]:
    made: list[Tracker] = []
    for integration in job.integrations or []:
        kind = integration["type"]
        if kind == "mlflow" and settings.mlflow_tracking_uri:
            made.append(MlflowTracker(job, integration["mlflow"], settings.mlflow_tracking_uri, tenant_name))
        elif kind == "wandb" and settings.wandb_mode:
            made.append(WandbTracker(job, integration["wandb"], settings))
        else:
            log.warning("job %s: integration %s is not set up on this worker; skipped", job.id, kind)
    return made


class Trackers(threading.Thread):
    """Feeds every tracker from one queue; `warnings` collects what the job's events should say."""

    def __init__(self, trackers: list[Tracker]) -> None:
        super().__init__(name="juice-trackers", daemon=True)
        self.trackers = trackers
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue(QUEUE_SIZE)
        self.warnings: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.dropped = 0
        self.closed = False
        self.drain_until = math.inf  # set by close(): queued rows left after it are dropped

    def log(self, step: int, values: dict[str, float]) -> None:
        finite = {k: v for k, v in values.items() if math.isfinite(v)}
        if not self.trackers or not finite:
            return
        try:
            self.inbox.put_nowait(("log", (step, finite)))
        except queue.Full:
            self.dropped += 1

    def close(self, status: str | None, timeout_s: float = CLOSE_TIMEOUT_S) -> list[str]:
        """End the runs with the job's final status (None: held, the run stays open), within `timeout_s`:
        queued rows are sent until half of it is gone, the rest dropped (and counted) so that `finish`
        always goes out. Returns the warnings the job's events should still get. Only the first call
        does anything."""
        if self.closed:
            return []
        self.closed = True
        self.drain_until = time.monotonic() + timeout_s / 2
        self.inbox.put(("finish", status))
        self.join(timeout_s)
        if self.is_alive():
            log.warning("experiment trackers did not finish within %.0f s", timeout_s)
        warnings = []
        while not self.warnings.empty():
            warnings.append(self.warnings.get())
        return warnings

    def _disable(self, tracker: Tracker, exc: Exception) -> None:
        log.warning("tracker %s failed; switched off for this attempt", tracker.name, exc_info=True)
        self.warnings.put(f"The {tracker.name} integration stopped logging: {exc}")
        self.trackers = [t for t in self.trackers if t is not tracker]
        with contextlib.suppress(Exception):  # its connections; the run itself is past saving
            tracker.abandon()

    def _each(self, action: str, *args: Any) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, action)(*args)
            except Exception as exc:  # any tracker failure: that tracker only, never the job
                self._disable(tracker, exc)

    def run(self) -> None:
        self._each("start")
        while True:
            kind, payload = self.inbox.get()
            if kind == "finish":
                if self.dropped:
                    self.warnings.put(
                        f"{self.dropped} metric rows were not sent to the trackers (queue full)"
                    )
                self._each("finish", payload)
                return
            if time.monotonic() > self.drain_until:
                self.dropped += 1
                continue
            self._each("log", *payload)
