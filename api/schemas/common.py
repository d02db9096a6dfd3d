from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


def unix(ts: datetime | None) -> int | None:
    return None if ts is None else int(ts.timestamp())


class ListPage(BaseModel, Generic[T]):
    """OpenAI's cursor page: the SDK asks for the next page with after=data[-1].id."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
