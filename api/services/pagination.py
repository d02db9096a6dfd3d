"""Cursor pagination shared by every list: newest first, `after` = the last id of the previous page."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from api.errors import NotFound

M = TypeVar("M")


def paginate(
    session: Session,
    query: Select[Any],
    model: Any,
    *,
    after: str | None,
    limit: int,
    kind: str,
    ascending: bool = False,
) -> tuple[list[Any], bool]:
    """Rows of `query` ordered by seq (desc unless `ascending`), those after cursor `after`, and has_more."""
    if after is not None:
        after_seq = session.scalar(select(model.seq).where(model.id == after))
        if after_seq is None:
            raise NotFound(kind, after, param="after")
        query = query.where(model.seq > after_seq if ascending else model.seq < after_seq)
    query = query.order_by(model.seq.asc() if ascending else model.seq.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    return rows[:limit], len(rows) > limit
