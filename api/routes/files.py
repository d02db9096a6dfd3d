from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, Security, UploadFile
from fastapi import File as FilePart  # api.db.tables.File is the row
from fastapi.responses import StreamingResponse

from api.db.tables import File
from api.deps import CallerDep, SessionDep
from api.downloads import content_disposition
from api.schemas.common import ListPage
from api.schemas.errors import AUTHENTICATED, bearer_auth, binary_response, error_responses
from api.schemas.files import UPLOAD_ENCODING, UPLOAD_FILE_DESCRIPTION, FileDeleted, FileObject
from api.services import files as svc
from api.services.files import ACCEPTED_PURPOSES
from api.services.pagination import paginate
from api.storage import get_store


class JsonlResponse(StreamingResponse):
    media_type = "application/jsonl"


router = APIRouter(prefix="/files", tags=["files"], dependencies=[Security(bearer_auth)])


@router.post(
    "",
    response_model=FileObject,
    responses=error_responses(*AUTHENTICATED, 400, 413),
    openapi_extra={"requestBody": {"content": {"multipart/form-data": {"encoding": UPLOAD_ENCODING}}}},
)
def create_file(
    session: SessionDep,
    caller: CallerDep,
    file: Annotated[UploadFile, FilePart(description=UPLOAD_FILE_DESCRIPTION)],
    purpose: Annotated[str, Form(json_schema_extra={"enum": list(ACCEPTED_PURPOSES)})],
) -> FileObject:
    """Upload a JSONL file; every line is validated before the file is kept."""
    row = svc.create_file(
        session,
        get_store(),
        tenant_id=caller.tenant_id,
        filename=file.filename or "",  # no name at all is refused with the rest (services/files.py)
        purpose=purpose,
        stream=file.file,
    )
    return FileObject.of(row)


@router.get("", response_model=ListPage[FileObject], responses=error_responses(*AUTHENTICATED, 400, 404))
def read_files(
    session: SessionDep,
    caller: CallerDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
) -> ListPage[FileObject]:
    """List files."""
    rows, has_more = paginate(
        session,
        File,
        scope=File.tenant_id == caller.tenant_id,
        filters=[File.purpose == purpose] if purpose else [],
        after=after,
        limit=limit,
        kind="file",
        ascending=order == "asc",
    )
    data = [FileObject.of(r) for r in rows]
    return ListPage(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get("/{file_id}", response_model=FileObject, responses=error_responses(*AUTHENTICATED, 404))
def read_file(session: SessionDep, caller: CallerDep, file_id: str) -> FileObject:
    """Retrieve a file object."""
    return FileObject.of(svc.get_file(session, caller.tenant_id, file_id))


@router.delete("/{file_id}", response_model=FileDeleted, responses=error_responses(*AUTHENTICATED, 404, 409))
def delete_file(session: SessionDep, caller: CallerDep, file_id: str) -> FileDeleted:
    """Delete a file (refused while an unfinished job uses it)."""
    svc.delete_file(session, get_store(), caller.tenant_id, file_id)
    return FileDeleted(id=file_id, deleted=True)


@router.get(
    "/{file_id}/content",
    response_class=JsonlResponse,
    responses={
        **binary_response(
            "The file's bytes: an upload as it was sent; a job's result file (CSV).",
            JsonlResponse.media_type,
            "text/csv",
        ),
        **error_responses(*AUTHENTICATED, 404, json_route=False),
    },
)
def read_file_content(session: SessionDep, caller: CallerDep, file_id: str) -> JsonlResponse:
    """Download a file's bytes."""
    row = svc.get_file(session, caller.tenant_id, file_id)
    return JsonlResponse(
        get_store().iter_bytes(row.storage_path),
        media_type="text/csv" if row.format == "csv" else JsonlResponse.media_type,
        headers={
            "Content-Length": str(row.bytes),
            "Content-Disposition": content_disposition(row.filename),
        },
    )
