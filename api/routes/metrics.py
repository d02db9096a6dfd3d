"""A job's metrics (Juice extension): the raw points a page at a time, the live stream of new points
(Server-Sent Events), and chart-ready series, every one at once, downsampled server-side.

A dashboard paints the series snapshot, then follows `/metrics/stream?after_seq={last_seq}` for live points.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Security
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from api.core.config import get_settings
from api.deps import CallerDep, SessionDep, StreamCallerDep
from api.schemas.errors import AUTHENTICATED, bearer_auth, error_responses
from api.schemas.jobs import MetricSeriesPage, MetricsPage
from api.services import jobs as svc
from api.services import metric_series, monitoring
from api.services.live_metrics import LiveMetrics, Subscription

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"], dependencies=[Security(bearer_auth)])


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


@router.get(
    "/{job_id}/metrics/series",
    response_model=MetricSeriesPage,
    responses=error_responses(*AUTHENTICATED, 400, 404),
)
def read_metric_series(
    session: SessionDep,
    caller: CallerDep,
    job_id: str,
    names: Annotated[
        str | None, Query(description="Comma-separated series names; default: every series")
    ] = None,
    max_points: Annotated[
        int, Query(ge=10, le=20000, description="Most points per series (LTTB-downsampled beyond)")
    ] = 2000,
) -> MetricSeriesPage:
    """Read a job's metric series, each ordered by step and downsampled to at most `max_points`."""
    svc.get_job(session, caller.tenant_id, job_id)  # another tenant's job is a 404
    wanted = frozenset(n.strip() for n in names.split(",") if n.strip()) if names else None
    last_seq, series = metric_series.read_series(session, job_id, names=wanted or None, max_points=max_points)
    return MetricSeriesPage(job_id=job_id, last_seq=last_seq, series=series)


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
