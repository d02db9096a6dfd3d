"""Chart-ready metric series of a job (Juice extension): every series at once, downsampled server-side.

A dashboard paints this snapshot, then follows `/metrics/stream?after_seq={last_seq}` for live points.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Security

from api.deps import CallerDep, SessionDep
from api.schemas.errors import AUTHENTICATED, bearer_auth, error_responses
from api.schemas.jobs import MetricSeriesPage
from api.services import jobs as svc
from api.services import metric_series

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"], dependencies=[Security(bearer_auth)])


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
