"""Uploads: stream to the artifact store while validating every line; keep nothing of a bad file."""

from __future__ import annotations

import hashlib
import logging
import re
from typing import BinaryIO, NoReturn

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api.core.config import get_settings
from api.db.tables import File, Job, JobStatus, new_id
from api.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from api.storage import CHUNK, ArtifactStore
from api.validation import FileValidationError, JsonlValidator

log = logging.getLogger(__name__)

ACCEPTED_PURPOSES = ("fine-tune",)

# Most filesystems' limit on one name, so a file can be saved under the name it is served with.
MAX_FILENAME_BYTES = 255
# C0 controls (NUL, tab, CR, LF, ...), DEL and C1 controls: never part of a real file's name, and a name
# is echoed in file objects, error messages and download headers, where they break or forge things.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _check_filename(filename: str) -> None:
    def refuse(why: str) -> NoReturn:
        raise InvalidRequest(f"Invalid file name: {why}.", code="invalid_filename", param="file")

    if not filename:
        refuse("the upload has no file name")
    if len(filename.encode("utf-8", "surrogatepass")) > MAX_FILENAME_BYTES:
        refuse(f"longer than {MAX_FILENAME_BYTES} bytes (UTF-8)")
    if control := _CONTROL.search(filename):
        refuse(
            f"it contains the control character U+{ord(control.group()):04X} at position {control.start()}"
        )


def create_file(
    session: Session, store: ArtifactStore, *, tenant_id: int, filename: str, purpose: str, stream: BinaryIO
) -> File:
    if purpose not in ACCEPTED_PURPOSES:
        raise InvalidRequest(
            f"purpose must be one of {', '.join(ACCEPTED_PURPOSES)}, got '{purpose}'.",
            code="invalid_purpose",
            param="purpose",
        )
    _check_filename(filename)
    if not filename.endswith(".jsonl"):
        raise InvalidRequest(
            f"Only .jsonl files are accepted for fine-tuning, got '{filename}'.",
            code="invalid_file_format",
            param="file",
        )
    limit = get_settings().max_upload_bytes
    file_id = new_id("file-")
    key = f"files/{file_id}.jsonl"
    validator = JsonlValidator()
    digest = hashlib.sha256()
    size = 0
    tmp_key, out = store.open_temp_writer(key)
    try:
        with out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(
                        f"File exceeds the {limit} byte limit.", code="file_too_large", param="file"
                    )
                validator.feed(chunk)
                digest.update(chunk)
                out.write(chunk)
        report = validator.finish()
        store.commit_temp(tmp_key, key)
    except FileValidationError as exc:
        store.discard(tmp_key)
        where = f"line {exc.line}: " if exc.line else ""
        raise InvalidRequest(
            f"Invalid file '{filename}': {where}{exc.reason}", code=exc.code, param="file"
        ) from exc
    except BaseException:
        store.discard(tmp_key)
        raise
    row = File(
        id=file_id,
        tenant_id=tenant_id,
        filename=filename,
        purpose=purpose,
        bytes=size,
        sha256=digest.hexdigest(),
        storage_path=key,
        format=report.format.value,
        example_count=report.examples,
        status="processed",
    )
    session.add(row)
    try:
        session.commit()
    except BaseException:
        session.rollback()
        store.discard(key)
        raise
    return row


def get_file(session: Session, tenant_id: int, file_id: str, *, param: str | None = None) -> File:
    row = session.scalar(select(File).where(File.id == file_id, File.tenant_id == tenant_id))
    if row is None:
        raise NotFound("file", file_id, param=param)
    return row


def delete_file(session: Session, store: ArtifactStore, tenant_id: int, file_id: str) -> None:
    row = get_file(session, tenant_id, file_id)
    in_use = session.scalar(
        select(Job.id)
        .where(
            Job.tenant_id == tenant_id,
            (Job.training_file == file_id) | (Job.validation_file == file_id),
            Job.status.not_in(JobStatus.FINAL),
        )
        .limit(1)
    )
    if in_use:
        raise Conflict(
            f"File '{file_id}' is used by job '{in_use}', which has not finished.",
            code="file_in_use",
            param="file_id",
        )
    # A job's result file may be deleted like any file; the job then lists none.
    session.execute(update(Job).where(Job.result_file_id == file_id).values(result_file_id=None))
    session.execute(update(Job).where(Job.scores_file_id == file_id).values(scores_file_id=None))
    session.delete(row)
    session.commit()
    store.discard(row.storage_path)
