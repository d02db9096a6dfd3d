"""Celery tasks: thin wrappers; the work is in worker.runner and worker.lifecycle."""

from __future__ import annotations

import logging

from api.core.config import get_settings
from api.db.session import session_scope
from api.queue import RUN_JOB_TASK, SWEEP_TASK, enqueue_job
from worker import lifecycle, runner
from worker.celery_app import app

log = logging.getLogger(__name__)


@app.task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> str:
    return runner.run_job(job_id)


@app.task(name=SWEEP_TASK, acks_late=False)
def sweep() -> dict[str, list[str]]:
    with session_scope() as s:
        to_enqueue, lost = lifecycle.sweep(s, get_settings())
    for job_id in to_enqueue:
        enqueue_job(job_id)
    if to_enqueue or lost:
        log.info("sweep: re-enqueued %s, failed as worker_lost %s", to_enqueue, lost)
    return {"enqueued": to_enqueue, "lost": lost}
