"""Juice extension: the fine-tuning methods and their hyperparameters, for clients that build forms."""

from __future__ import annotations

from fastapi import APIRouter, Security

from api.deps import CallerDep
from api.schemas.errors import AUTHENTICATED, bearer_auth, error_responses
from api.schemas.methods import MethodList
from api.services.methods import list_methods

router = APIRouter(prefix="/fine_tuning", tags=["fine-tuning"], dependencies=[Security(bearer_auth)])


@router.get("/methods", response_model=MethodList, responses=error_responses(*AUTHENTICATED))
def read_methods(_caller: CallerDep) -> MethodList:
    """List the fine-tuning methods, each with every hyperparameter's type, default and bounds."""
    return list_methods()
