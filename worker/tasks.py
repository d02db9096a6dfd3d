"""Celery tasks: thin wrappers; the work is in worker.runner."""

from __future__ import annotations

from api.queue import RUN_JOB_TASK
from worker import runner
from worker.celery_app import app


@app.task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> str:
    return runner.run_job(job_id)
