"""OpenAI's grader endpoints: run a grader on one model sample, and validate a grader, so that
`client.fine_tuning.alpha.graders.run` and `.validate` work unmodified. A python grader runs in the
sandbox (graders/sandbox.py), in a process of its own."""

from __future__ import annotations

from fastapi import APIRouter, Security

from api.core.config import get_settings
from api.deps import CallerDep
from api.schemas.errors import AUTHENTICATED, bearer_auth, error_responses
from api.schemas.graders import (
    GraderRunRequest,
    GraderRunResponse,
    GraderValidateRequest,
    GraderValidateResponse,
)
from api.services import graders as svc

router = APIRouter(
    prefix="/fine_tuning/alpha/graders", tags=["graders"], dependencies=[Security(bearer_auth)]
)


@router.post("/run", response_model=GraderRunResponse, responses=error_responses(*AUTHENTICATED, 400))
def run_grader(_caller: CallerDep, body: GraderRunRequest) -> GraderRunResponse:
    """Grade one model sample (with its dataset item): the reward, each sub-grader's, and the errors."""
    return GraderRunResponse.model_validate(
        svc.grade(body.grader, body.model_sample, body.item, get_settings())
    )


@router.post(
    "/validate", response_model=GraderValidateResponse, responses=error_responses(*AUTHENTICATED, 400)
)
def validate_grader(_caller: CallerDep, body: GraderValidateRequest) -> GraderValidateResponse:
    """Check a grader as a job would: its shape, templates and formula, and that this server can run it."""
    svc.check_runnable(body.grader, get_settings())
    return GraderValidateResponse(grader=body.grader)
