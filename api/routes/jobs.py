from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Security
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from api.core.config import get_settings
from api.db.tables import Job
from api.deps import CallerDep, CheckpointDownloadCallerDep, SessionDep, StreamCallerDep
from api.downloads import content_disposition
from api.method_names import names_of
from api.schemas.common import ListPage
from api.schemas.errors import AUTHENTICATED, bearer_auth, binary_response, error_responses
from api.schemas.jobs import CheckpointObject, FineTuningJob, JobCreate, JobEventObject, MetricsPage
from api.services import jobs as svc
from api.services import monitoring
from api.services.live_metrics import LiveMetrics, Subscription
from api.services.pagination import paginate
from api.services.tarstream import iter_tar, tar_size
from api.storage import get_store

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"], dependencies=[Security(bearer_auth)])


class TarResponse(StreamingResponse):
    media_type = "application/x-tar"


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


METRIC_EVENT_SCHEMA = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["metric", "status", "end"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}


# seq is a BIGINT: a larger cursor names no row, and the database driver refuses to bind it (a 500).
MAX_SEQ = 2**63 - 1


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


@router.get(
    "/{job_id}/checkpoints",
    response_model=ListPage[CheckpointObject],
    responses=error_responses(*AUTHENTICATED, 400, 404),
)
def read_checkpoints(
    session: SessionDep,
    caller: CallerDep,
    job_id: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    kind: Literal["model", "reward_model"] | None = None,
) -> ListPage[CheckpointObject]:
    """List a job's checkpoints, newest first (optionally one kind)."""
    job = svc.get_job(session, caller.tenant_id, job_id)
    rows, has_more = monitoring.list_checkpoints(session, job_id, after=after, limit=limit, kind=kind)
    base = svc.fine_tuned_model_base(job, caller.tenant_name)
    data = [CheckpointObject.of(c, base) for c in rows]
    return ListPage(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get(
    "/{job_id}/checkpoints/{checkpoint_id}/content",
    response_class=TarResponse,
    responses={
        **binary_response("A tar of the checkpoint's Hugging Face folder.", TarResponse.media_type),
        **error_responses(*AUTHENTICATED, 400, 403, 404, json_route=False),
    },
    # The Bearer key, or none at all: a signed link's key, expires and signature (POST .../link). FastAPI
    # appends this list to the router's [{"bearer": []}].
    openapi_extra={"security": [{}]},
)
def download_checkpoint(
    session: SessionDep, caller: CheckpointDownloadCallerDep, job_id: str, checkpoint_id: str
) -> TarResponse:
    """Download a checkpoint (the model, or RFT's reward model) as a tar of a Hugging Face folder.

    Authenticated by the Bearer key or by a signed link from POST .../link (for browser downloads)."""
    svc.get_job(session, caller.tenant_id, job_id)
    ckpt = monitoring.get_checkpoint(session, job_id, checkpoint_id)
    store = get_store()
    prefix = f"{ckpt.storage_path}/{ckpt.kind}"  # the checkpoint folder's subfolder of that kind
    files = store.list_files(prefix)
    top = f"{job_id}-step-{ckpt.step}" + ("" if ckpt.kind == "model" else f"-{ckpt.kind.replace('_', '-')}")
    return TarResponse(
        iter_tar(store, prefix, files, top),
        headers={
            "Content-Length": str(tar_size(files, top)),
            "Content-Disposition": content_disposition(f"{top}.tar"),
        },
    )


@router.get(
    "/{job_id}/metrics", response_model=MetricsPage, responses=error_responses(*AUTHENTICATED, 400, 404)
)
def read_metrics(
    session: SessionDep,
    caller: CallerDep,
    job_id: str,
    after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=100000)] = 10000,
    names: Annotated[str | None, Query(description="Comma-separated series names")] = None,
) -> MetricsPage:
    """Read a job's metric series in step order (Juice extension)."""
    svc.get_job(session, caller.tenant_id, job_id)
    wanted = {n for n in names.split(",") if n} if names else None
    points, has_more, cursor = monitoring.read_metrics(
        session, job_id, after_seq=after_seq, limit=limit, names=wanted
    )
    series = sorted({k for p in points for k in p.values})
    return MetricsPage(job_id=job_id, names=series, data=points, has_more=has_more, next_after_seq=cursor)


@router.get(
    "/{job_id}/metrics/stream",
    response_class=EventStreamResponse,
    responses={
        200: {
            "description": "Server-Sent Events: a `metric` per point (its `id` is the point's seq), "
            "`status` on each change, `end` when the job finished.",
            # OpenAPI 3.1: an event stream's `schema` describes each event
            "content": {EventStreamResponse.media_type: {"schema": METRIC_EVENT_SCHEMA}},
        },
        # 429 also at the organization's cap of open streams (JUICE_MAX_STREAMS_PER_TENANT)
        **error_responses(*AUTHENTICATED, 400, 404, json_route=False),
    },
)
async def stream_metrics(
    request: Request,
    caller: StreamCallerDep,
    job_id: str,
    after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> EventStreamResponse:
    """Follow a job's metrics live as Server-Sent Events; ends when the job finishes.

    The stream holds no database session: the caller and the job were checked in a worker thread
    before it starts, and one poller per API process feeds every stream (api/services/live_metrics.py)."""
    if last_event_id and last_event_id.isdigit() and int(last_event_id) <= MAX_SEQ:
        after_seq = int(last_event_id)  # EventSource reconnects resume where they left off
    subscription = live_metrics(request).open(caller.tenant_id, job_id, after_seq)
    return EventStreamResponse(
        _metric_events(subscription),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(subscription.close),  # also when the client left before the first chunk
    )


def live_metrics(request: Request) -> LiveMetrics:
    """The app's hub, made on first use in the app's event loop."""
    hub = getattr(request.app.state, "live_metrics", None)
    if hub is None:
        settings = get_settings()
        hub = LiveMetrics(
            interval_s=settings.metrics_poll_interval_s, max_per_tenant=settings.max_streams_per_tenant
        )
        request.app.state.live_metrics = hub
    return hub


async def _metric_events(subscription: Subscription) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    last_status = None
    async for update in subscription.updates(idle_s=15):
        if not update.points and not update.status:
            yield ": keep-alive\n\n"  # a quiet stream: a comment line keeps proxies from closing it
        for p in update.points:
            yield f"id: {p['seq']}\nevent: metric\ndata: {json.dumps(p)}\n\n"
        if update.status and update.status != last_status:
            yield f"event: status\ndata: {json.dumps({'status': update.status})}\n\n"
            last_status = update.status
        if update.final:
            yield f"event: end\ndata: {json.dumps({'status': update.status})}\n\n"
            return
