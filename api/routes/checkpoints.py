"""A job's checkpoints: list them, download one as a tar, and (Juice extension) create a signed download
link, so a browser can fetch a checkpoint by plain navigation."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Security
from fastapi.responses import StreamingResponse

from api.core.config import get_settings
from api.core.security import server_secret
from api.deps import CallerDep, CheckpointDownloadCallerDep, SessionDep
from api.downloads import content_disposition
from api.schemas.checkpoint_links import CheckpointLink, CheckpointLinkCreate
from api.schemas.common import ListPage
from api.schemas.errors import AUTHENTICATED, bearer_auth, binary_response, error_responses
from api.schemas.jobs import CheckpointObject
from api.services import checkpoint_links, monitoring
from api.services import jobs as svc
from api.services.tarstream import iter_tar, tar_size
from api.storage import get_store

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"], dependencies=[Security(bearer_auth)])


class TarResponse(StreamingResponse):
    media_type = "application/x-tar"


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
    return checkpoint_links.create_link(
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
