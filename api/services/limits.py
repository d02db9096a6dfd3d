"""Per-tenant job limits, counted in the database so they hold across API replicas and workers.

    max_queued_jobs_per_tenant   checked by the API when a job is created: over it, 429 and no row
    max_running_jobs_per_tenant  checked by a worker when it claims a job (worker.lifecycle.claim)

Both counts are read under `lock_tenant`, in the transaction that then inserts the job or claims it, so
two requests (or two workers) of one tenant cannot both see room for one more and both take it.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api.core.config import Settings
from api.db.status import JobStatus
from api.db.tables import Job, Tenant
from api.errors import TooManyRequests

# What a client over the queued cap is told to wait: a place frees only when one of its jobs starts,
# which takes at least a claim; a minute is the shortest wait worth a retry (the openai SDK honours it).
QUEUED_CAP_RETRY_AFTER_S = 60


def lock_tenant(session: Session, tenant_id: int) -> None:
    """Serialise this tenant's limit checks until the transaction ends.

    A no-op UPDATE of the tenant row: on PostgreSQL it takes that row's lock (other tenants are not
    blocked); on SQLite it takes the database write lock, and as the transaction's first write it also
    starts the transaction there, so the counts read next are current. One statement for both."""
    session.execute(update(Tenant).where(Tenant.id == tenant_id).values(name=Tenant.name))


def count_jobs(session: Session, tenant_id: int, status: str) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id, Job.status == status)
        )
        or 0
    )


def check_queued_cap(session: Session, tenant_id: int, settings: Settings) -> None:
    """Lock the tenant and raise 429 if it already has max_queued_jobs_per_tenant queued jobs.

    Call inside the transaction that inserts the job, before the insert; the caller rolls back on the
    raise (nothing is written)."""
    cap = settings.max_queued_jobs_per_tenant
    if cap <= 0:
        return
    lock_tenant(session, tenant_id)
    queued = count_jobs(session, tenant_id, JobStatus.QUEUED)
    if queued >= cap:
        raise TooManyRequests(
            f"This organization already has {queued} queued fine-tuning jobs, the most allowed"
            f" (max_queued_jobs_per_tenant = {cap}). Wait for some to start, or cancel some, then retry.",
            code="too_many_queued_jobs",
            retry_after_s=QUEUED_CAP_RETRY_AFTER_S,
        )
