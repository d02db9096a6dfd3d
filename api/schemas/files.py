from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from api.db.tables import File
from api.schemas.common import unix


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
