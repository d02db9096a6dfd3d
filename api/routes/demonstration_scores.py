"""A reward-learning job's demonstration scores (Juice extension): its training lines scored by the reward
it learned, lowest first, each with the line itself, so that the suspect lines of a noisy dataset are
read first. The same scores are the job's second result file (`result_files`) for download."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Security

from api.deps import CallerDep, SessionDep
from api.schemas.common import ListPage
from api.schemas.errors import AUTHENTICATED, bearer_auth, error_responses
from api.schemas.jobs import DemonstrationScoreObject
from api.services import demonstration_scores
from api.services import jobs as svc
from api.storage import get_store

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"], dependencies=[Security(bearer_auth)])


@router.get(
    "/{job_id}/demonstration_scores",
    response_model=ListPage[DemonstrationScoreObject],
    responses=error_responses(*AUTHENTICATED, 400, 404),
)
def read_demonstration_scores(
    session: SessionDep,
    caller: CallerDep,
    job_id: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ListPage[DemonstrationScoreObject]:
    """List a succeeded reward-learning job's training lines by their score, lowest first."""
    job = svc.get_job(session, caller.tenant_id, job_id)
    rows, has_more = demonstration_scores.page(session, get_store(), job, after=after, limit=limit)
    data = [DemonstrationScoreObject(**r) for r in rows]
    return ListPage(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )
