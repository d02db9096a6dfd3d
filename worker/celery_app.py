"""The worker's Celery app: the API's app (same broker settings) plus the task module.

Start with `juice worker` or `celery -A worker.celery_app worker -Q juice.jobs --concurrency 1`.
"""

from __future__ import annotations

from celery.signals import worker_process_init

from api.db.session import get_engine
from api.queue import get_celery

app = get_celery()
app.conf.include = ["worker.tasks"]


@worker_process_init.connect
def _fresh_db_connections(**_: object) -> None:
    # A forked child must not share the parent's pooled connections (the sweeper thread's).
    get_engine().dispose(close=False)
