"""The job status graph, written once: every status a job can have and every move between it and the next.

    (new job) ----------------> queued                  POST /v1/fine_tuning/jobs inserts at INITIAL
    queued  --claim-----------> running                 worker.lifecycle.claim
    queued  --cancel----------> cancelled               api.services.jobs.cancel_job (no worker holds it)
    running --reclaim---------> running                 claim, when the holder's heartbeat went stale
    running --requeue---------> queued                  lifecycle.sweep: stale heartbeat, resume later;
                                                        lifecycle.hand_over: worker shutdown, checkpointed
    running --finish----------> succeeded               lifecycle.finish: the trainer completed
    running --finish/give up--> failed                  lifecycle.fail; or sweep after max_attempts losses
    running --finish/cancel---> cancelled               finish after the trainer stopped on the flag; or
                                                        sweep of a stale job whose cancel flag is set
    queued  --pause-----------> paused                  api.services.jobs.pause_job (no worker holds it)
    running --pause-----------> paused                  lifecycle.pause: checkpointed on the pause flag; or
                                                        sweep of a stale job whose pause flag is set
    paused  --resume----------> queued                  api.services.jobs.resume_job
    paused  --cancel----------> cancelled               api.services.jobs.cancel_job

A running job is never cancelled or paused by the API directly: the API sets `cancel_requested` or
`pause_requested` and the worker that holds the job (or, if it died, the sweeper) makes the move. Final
statuses have no way out; `paused` is not final (OpenAI's `resume` takes it back to `queued`).

There is no `validating_files` status (OpenAI has one): Juice validates every line of a file at upload,
before any job can name it, so a job could never be in it.

Every status write in api/ and worker/ is either the insert of a new job (the column default, INITIAL) or
an UPDATE built by `api.db.transitions.transition`, a compare-and-set guarded by the source status;
tests/api/test_job_status.py scans the source for writes that bypass it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

FinalStatus = Literal["succeeded", "failed", "cancelled"]


class JobStatus:
    QUEUED: Final = "queued"
    RUNNING: Final = "running"
    SUCCEEDED: Final = "succeeded"
    FAILED: Final = "failed"
    CANCELLED: Final = "cancelled"
    PAUSED: Final = "paused"
    INITIAL: Final = QUEUED
    ALL: Final = (QUEUED, RUNNING, PAUSED, SUCCEEDED, FAILED, CANCELLED)
    FINAL: Final[tuple[FinalStatus, ...]] = (SUCCEEDED, FAILED, CANCELLED)


@dataclass(frozen=True)
class Transition:
    source: str
    target: str
    why: str


TRANSITIONS: Final = (
    Transition(JobStatus.QUEUED, JobStatus.RUNNING, "claim: a worker takes the job"),
    Transition(JobStatus.QUEUED, JobStatus.CANCELLED, "cancel: the API cancels a job no worker holds"),
    Transition(JobStatus.RUNNING, JobStatus.RUNNING, "reclaim: a worker takes over a stale holder's job"),
    Transition(JobStatus.RUNNING, JobStatus.QUEUED, "requeue: the sweeper hands back a stale job"),
    Transition(JobStatus.RUNNING, JobStatus.SUCCEEDED, "finish: training completed"),
    Transition(JobStatus.RUNNING, JobStatus.FAILED, "finish: training raised; sweep: worker lost too often"),
    Transition(JobStatus.RUNNING, JobStatus.CANCELLED, "finish: stopped on the cancel flag"),
    Transition(JobStatus.QUEUED, JobStatus.PAUSED, "pause: the API pauses a job no worker holds"),
    Transition(JobStatus.RUNNING, JobStatus.PAUSED, "pause: checkpointed on the pause flag"),
    Transition(JobStatus.PAUSED, JobStatus.QUEUED, "resume: the API re-queues a paused job"),
    Transition(JobStatus.PAUSED, JobStatus.CANCELLED, "cancel: the API cancels a paused job"),
)
EDGES: Final = frozenset((t.source, t.target) for t in TRANSITIONS)


def check_transition(source: str, target: str) -> None:
    """Raise ValueError unless `source -> target` is an edge of the graph."""
    if (source, target) not in EDGES:
        raise ValueError(f"a job cannot move from status {source!r} to {target!r}")
