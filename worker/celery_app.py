"""The worker's Celery app: the API's app (same broker settings) plus the task module.

Start with `juice worker` or `celery -A worker.celery_app worker -Q juice.jobs --concurrency 1`.
"""

from __future__ import annotations

from api.queue import get_celery

app = get_celery()
app.conf.include = ["worker.tasks"]
