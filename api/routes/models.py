"""OpenAI's models endpoints: the base models jobs can start from and the tenant's fine-tuned models."""

from __future__ import annotations

from fastapi import APIRouter, Security

from api.core.config import get_settings
from api.deps import CallerDep, SessionDep
from api.schemas.errors import AUTHENTICATED, bearer_auth, error_responses
from api.schemas.models import ModelDeleted, ModelList, ModelObject
from api.services import models as svc

router = APIRouter(prefix="/models", tags=["models"], dependencies=[Security(bearer_auth)])


@router.get("", response_model=ModelList, responses=error_responses(*AUTHENTICATED))
def read_models(session: SessionDep, caller: CallerDep) -> ModelList:
    """List the base models available to jobs and the caller's fine-tuned models."""
    return ModelList(data=svc.list_models(session, get_settings(), caller.tenant_id, caller.tenant_name))


# `:path` because ids may contain '/' (a fine-tuned model of a hub or path base, e.g. "ft:org/name:...").
@router.get("/{model:path}", response_model=ModelObject, responses=error_responses(*AUTHENTICATED, 404))
def read_model(session: SessionDep, caller: CallerDep, model: str) -> ModelObject:
    """Retrieve one model of the list."""
    return svc.get_model(session, get_settings(), caller.tenant_id, caller.tenant_name, model)


@router.delete(
    "/{model:path}", response_model=ModelDeleted, responses=error_responses(*AUTHENTICATED, 403, 404)
)
def remove_model(session: SessionDep, caller: CallerDep, model: str) -> ModelDeleted:
    """Delete one of the caller's fine-tuned models: it is no longer listed, served or trainable from.
    The job that made it keeps its record and checkpoints."""
    svc.delete_model(session, get_settings(), caller.tenant_id, model)
    return ModelDeleted(id=model)
