"""OpenAI's fine-tuning job lifecycle: create, list, retrieve, cancel, pause, resume, and a job's events.

A job's checkpoints are api/routes/checkpoints.py's, its metrics api/routes/metrics.py's (same prefix).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Security

from api.db.tables import Job
from api.deps import CallerDep, SessionDep
from api.method_names import names_of
from api.schemas.common import ListPage
from api.schemas.errors import AUTHENTICATED, bearer_auth, error_responses
from api.schemas.jobs import FineTuningJob, JobCreate, JobEventObject
from api.services import jobs as svc
from api.services import monitoring
from api.services.pagination import paginate

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"], dependencies=[Security(bearer_auth)])


def _public(job: Job, caller: CallerDep) -> FineTuningJob:
    return FineTuningJob.of(job, organization_id=caller.tenant_name)


@router.post("", response_model=FineTuningJob, responses=error_responses(*AUTHENTICATED, 400, 404, 409))
def create_job(
    session: SessionDep,
    caller: CallerDep,
    body: JobCreate,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> FineTuningJob:
    """Create a fine-tuning job."""
    job = svc.create_job(session, tenant_id=caller.tenant_id, body=body, idempotency_key=idempotency_key)
    return _public(job, caller)


@router.get("", response_model=ListPage[FineTuningJob], responses=error_responses(*AUTHENTICATED, 400, 404))
def read_jobs(
    session: SessionDep,
    caller: CallerDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    status: str | None = None,
    method: str | None = None,
) -> ListPage[FineTuningJob]:
    """List fine-tuning jobs, newest first."""
    filters = []
    if status:
        filters.append(Job.status == status)
    if method:
        filters.append(Job.method_type.in_(names_of(method)))  # `sft` also finds `supervised` jobs
    rows, has_more = paginate(
        session,
        Job,
        scope=Job.tenant_id == caller.tenant_id,
        filters=filters,
        after=after,
        limit=limit,
        kind="fine_tuning_job",
    )
    return ListPage(data=[_public(j, caller) for j in rows], has_more=has_more)


@router.get("/{job_id}", response_model=FineTuningJob, responses=error_responses(*AUTHENTICATED, 404))
def read_job(session: SessionDep, caller: CallerDep, job_id: str) -> FineTuningJob:
    """Retrieve a fine-tuning job."""
    return _public(svc.get_job(session, caller.tenant_id, job_id), caller)


@router.post(
    "/{job_id}/cancel", response_model=FineTuningJob, responses=error_responses(*AUTHENTICATED, 404, 409)
)
def cancel_job(session: SessionDep, caller: CallerDep, job_id: str) -> FineTuningJob:
    """Cancel a job: at once if queued, within seconds if running."""
    return _public(svc.cancel_job(session, caller.tenant_id, job_id), caller)


@router.post(
    "/{job_id}/pause", response_model=FineTuningJob, responses=error_responses(*AUTHENTICATED, 404, 409)
)
def pause_job(session: SessionDep, caller: CallerDep, job_id: str) -> FineTuningJob:
    """Pause a job: at once if queued; if running, it checkpoints at the next step and frees its worker."""
    return _public(svc.pause_job(session, caller.tenant_id, job_id), caller)


@router.post(
    "/{job_id}/resume", response_model=FineTuningJob, responses=error_responses(*AUTHENTICATED, 404, 409)
)
def resume_job(session: SessionDep, caller: CallerDep, job_id: str) -> FineTuningJob:
    """Resume a paused job: it is queued again and continues from the checkpoint it paused at."""
    return _public(svc.resume_job(session, caller.tenant_id, job_id), caller)


@router.get(
    "/{job_id}/events",
    response_model=ListPage[JobEventObject],
    responses=error_responses(*AUTHENTICATED, 400, 404),
)
def read_events(
    session: SessionDep,
    caller: CallerDep,
    job_id: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> ListPage[JobEventObject]:
    """List a job's events, newest first."""
    svc.get_job(session, caller.tenant_id, job_id)
    rows, has_more = monitoring.list_events(session, job_id, after=after, limit=limit)
    return ListPage(data=[JobEventObject.of(e) for e in rows], has_more=has_more)
