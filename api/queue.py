"""The Celery app as both sides see it: the API sends tasks by name, the worker adds the task code.

The broker only says "there is work"; the jobs table is the source of truth (docs/design.md §3).
Every setting for multi-hour tasks lives here so the producer and the consumer can never disagree
(a visibility timeout set in only one place is a known trap: celery#7651, #9339).
"""

from __future__ import annotations

import logging
from functools import lru_cache

from amqp.exceptions import NotFound as AmqpNotFound
from celery import Celery
from kombu.exceptions import ChannelError as KombuChannelError

from api.core.config import Settings, get_settings

log = logging.getLogger(__name__)

RUN_JOB_TASK = "worker.tasks.run_job"


def celery_config(settings: Settings) -> dict[str, object]:
    broker_url = settings.resolved_broker_url
    transport_options: dict[str, object] = {}
    if broker_url.startswith("filesystem"):
        # Embedded default: one folder is the queue; control_folder makes fanout (remote control) work.
        folder = settings.broker_folder
        for sub in ("queue", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport_options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    elif broker_url.startswith(("redis", "rediss")):
        transport_options = {"visibility_timeout": settings.visibility_timeout_s}
    return {
        "broker_url": broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "visibility_timeout": settings.visibility_timeout_s,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": settings.queue_name,
        "task_routes": {RUN_JOB_TASK: {"queue": settings.queue_name}},
        # Long GPU tasks: ack after the run, requeue if the worker process dies, reserve one at a time.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        # A fresh child per job returns all GPU memory to the driver between jobs.
        "worker_max_tasks_per_child": 1,
        "worker_hijack_root_logger": False,
    }


@lru_cache
def get_celery() -> Celery:
    settings = get_settings()
    app = Celery("juice")
    app.conf.update(celery_config(settings))
    return app


def enqueue_job(job_id: str) -> bool:
    """Send run_job by name. Failure is logged, not raised: the sweeper re-enqueues queued jobs."""
    try:
        get_celery().send_task(RUN_JOB_TASK, args=[job_id], queue=get_settings().queue_name)
        return True
    except Exception:  # broker down: the job row is committed, the sweeper will retry
        log.exception("could not enqueue job %s; the sweeper will retry", job_id)
        return False


def ready_messages() -> int | None:
    """Messages waiting in the jobs queue (not those a worker has reserved), or None if the broker
    cannot be asked. A passive declare: it creates nothing, and every transport answers it (Redis
    sums the queue's lists, the filesystem broker counts its files, AMQP reports the ready count);
    a queue that does not exist yet holds nothing."""
    name = get_settings().queue_name
    try:
        with get_celery().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            try:
                return int(conn.default_channel.queue_declare(queue=name, passive=True).message_count)
            except AmqpNotFound:  # never declared
                return 0
            except KombuChannelError as exc:  # virtual transports (Redis: an emptied queue is gone)
                if "NOT_FOUND" in str(exc):
                    return 0
                raise
    except Exception:  # broker down: the caller falls back to not knowing
        log.warning("could not count the messages in queue %s", name, exc_info=True)
        return None
