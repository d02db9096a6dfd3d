"""The worker's Celery app: the API's app (same broker settings) plus the task module.

Start with `juice worker` or `celery -A worker.celery_app worker -Q juice.jobs --concurrency 1`.
"""

from __future__ import annotations

import logging
import os
import signal

import psutil
from celery.signals import worker_process_init, worker_shutting_down

from api.db.session import get_engine
from api.queue import get_celery

log = logging.getLogger(__name__)

app = get_celery()
app.conf.include = ["worker.tasks"]


@worker_process_init.connect
def _fresh_db_connections(**_: object) -> None:
    # A forked child must not share the parent's pooled connections (the sweeper thread's).
    get_engine().dispose(close=False)


@worker_shutting_down.connect
def _hand_over_running_jobs(**_: object) -> None:
    # Celery's warm shutdown (SIGTERM or SIGINT to this parent, as `docker stop` and service managers
    # send) would wait for a multi-hour job to end, and the orchestrator's SIGKILL would then cost every
    # step since its last checkpoint. Pass SIGTERM on to the pool children instead: one that trains
    # checkpoints its current step and hands the job over (worker.runner.hand_over_on_sigterm), then
    # its task returns and this parent exits; an idle child just exits.
    for child in psutil.Process(os.getpid()).children():
        try:
            os.kill(child.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        else:
            log.info("shutdown: asked pool process %d to hand its job over", child.pid)
