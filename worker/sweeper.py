"""The sweeper: finds work no live worker holds and hands it back to the queue.

It runs as a thread in the main process of a worker started with `--sweeper`, not as a Celery task:
a task would wait behind the very training jobs it must watch (one slot per GPU), and it would die
with the worker it should be covering for. Several sweepers are harmless: every move is a guarded
UPDATE (worker.lifecycle.sweep).
"""

from __future__ import annotations

import logging
import threading

from api.core.config import Settings
from api.db.base import utcnow
from api.db.session import get_engine, session_scope
from api.queue import enqueue_job, ready_messages
from api.services import webhooks
from worker import lifecycle

log = logging.getLogger(__name__)


def sweep_once(settings: Settings) -> tuple[list[str], list[str]]:
    """One pass: re-queue stale running jobs, release parked ones, re-send lost messages (as many as
    the broker's count says are missing: lifecycle.sweep). Returns (enqueued, lost)."""
    counted_at = utcnow()  # before the count: a message sent after it is not expected in it
    ready = ready_messages()
    broker = None if ready is None else lifecycle.BrokerCount(ready=ready, at=counted_at)
    with session_scope() as s:
        to_enqueue, lost = lifecycle.sweep(s, settings, broker)
    for job_id in to_enqueue:
        enqueue_job(job_id)
    if to_enqueue or lost:
        log.warning("sweeper: re-enqueued %s; failed as worker_lost %s", to_enqueue, lost)
    return to_enqueue, lost


def warm_up(settings: Settings) -> None:
    """One pass of each background job in the worker's parent, before its threads start and before
    Celery forks pool children. The passes make every lazy import (psycopg, the broker transport,
    httpx's internals) here, single-threaded: a child forked while another thread holds an import
    lock inherits it held and deadlocks on its first import of that module (seen: a child stuck in
    `import psycopg` for good). Failures are the threads' to retry."""
    get_engine()
    try:
        sweep_once(settings)
        with session_scope() as s:
            webhooks.deliver_due(s, settings)
    except Exception:
        log.warning("warm-up pass failed; the sweeper retries", exc_info=True)


class WebhookDispatcher(threading.Thread):
    """Sends due webhook deliveries (api.services.webhooks.deliver_due) every
    webhook_poll_interval_s, beside the sweeper: a delivery never waits behind a training job."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="juice-webhooks", daemon=True)
        self.settings = settings
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.settings.webhook_poll_interval_s):
            try:
                with session_scope() as s:
                    while webhooks.deliver_due(s, self.settings):
                        pass
            except Exception:  # database blip: the deliveries stay pending
                log.warning("webhook delivery pass failed", exc_info=True)

    def stop(self) -> None:
        self._stop_event.set()


class Sweeper(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(name="juice-sweeper", daemon=True)
        self.settings = settings
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.settings.sweep_interval_s):
            try:
                sweep_once(self.settings)
            except Exception:  # database or broker blip: try again next period
                log.warning("sweep failed", exc_info=True)

    def stop(self) -> None:
        self._stop_event.set()
