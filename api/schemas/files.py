from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from api.db.tables import File
from api.schemas.common import unix

# What an upload's `file` part must be, said where OpenAPI can say it: a multipart part's own headers go
# in the body's `encoding` (the filename is in the part's Content-Disposition, out of any JSON schema's
# reach); what its bytes must hold, only words can (api/validation checks every line).
UPLOAD_FILE_DESCRIPTION = (
    "The training data: JSONL, one example per line, every line in the same format (chat,"
    " prompt_completion or preference: docs/api.md, Training files), validated before the file is kept."
    " Its name (the part's Content-Disposition filename) must end in `.jsonl`, be at most 255 bytes"
    " of UTF-8 and hold no control character; anything else is a 400 naming `file`."
)
UPLOAD_ENCODING: dict[str, Any] = {
    "file": {
        "headers": {
            "Content-Disposition": {
                "description": "The part's filename ends in `.jsonl` (other uploads are a 400"
                " `invalid_file_format`), at most 255 bytes, no control characters.",
                "required": True,
                "schema": {
                    "type": "string",
                    "pattern": r'filename="[^"\x00-\x1f\x7f-\x9f]*\.jsonl"',
                },
                "example": 'form-data; name="file"; filename="train.jsonl"',
            }
        },
    }
}


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    status_details: str | None = None
    expires_at: int | None = None
    # Juice additions: what validation found.
    format: str | None = None
    examples: int | None = None

    @classmethod
    def of(cls, f: File) -> FileObject:
        return cls(
            id=f.id,
            bytes=f.bytes,
            created_at=unix(f.created_at) or 0,
            filename=f.filename,
            purpose=f.purpose,
            status=f.status,
            status_details=f.status_details,
            format=f.format,
            examples=f.example_count,
        )


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool
