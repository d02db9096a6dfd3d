"""Juice extension: signed download links, so a browser can fetch a checkpoint by plain navigation."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Security

from api.core.config import get_settings
from api.core.security import server_secret
from api.deps import CallerDep, SessionDep
from api.schemas.checkpoint_links import CheckpointLink, CheckpointLinkCreate
from api.schemas.errors import AUTHENTICATED, bearer_auth, error_responses
from api.services import checkpoint_links as svc

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"], dependencies=[Security(bearer_auth)])


@router.post(
    "/{job_id}/checkpoints/{checkpoint_id}/link",
    response_model=CheckpointLink,
    responses=error_responses(*AUTHENTICATED, 400, 404),
)
def create_checkpoint_link(
    request: Request,
    session: SessionDep,
    caller: CallerDep,
    job_id: str,
    checkpoint_id: str,
    body: CheckpointLinkCreate | None = None,
) -> CheckpointLink:
    """Create a short-lived link that downloads the checkpoint without an Authorization header."""
    body = body or CheckpointLinkCreate()
    # Taken from the content route itself, so the link follows that route wherever it is mounted.
    content_path = request.app.url_path_for("download_checkpoint", job_id=job_id, checkpoint_id=checkpoint_id)
    return svc.create_link(
        session,
        secret=server_secret(get_settings()),
        tenant_id=caller.tenant_id,
        key_id=caller.key_id,
        key_hash=caller.key_hash,
        job_id=job_id,
        checkpoint_id=checkpoint_id,
        content_path=str(content_path),
        expires_in=body.expires_in,
        now=int(time.time()),
    )
