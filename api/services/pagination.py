"""Cursor pagination shared by every list: newest first, `after` = the last id of the previous page."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from api.errors import NotFound


def paginate(
    session: Session,
    model: Any,
    *,
    scope: ColumnElement[bool],
    filters: Sequence[ColumnElement[bool]] = (),
    after: str | None,
    limit: int,
    kind: str,
    ascending: bool = False,
) -> tuple[list[Any], bool]:
    """Rows of `model` in `scope` matching `filters`, ordered by seq (desc unless `ascending`), those after
    cursor `after`, and has_more.

    `scope` is every row the caller may see at all (its tenant's, or one of its jobs'). The cursor is
    looked up within it, so another tenant's id is "not found" exactly as a made-up one is: the cursor
    reveals nothing of what exists elsewhere. `filters` (status, purpose, ...) only narrow the page; a
    cursor row that no longer matches them (a job that finished since) is still a valid position.
    """
    query = select(model).where(scope, *filters)
    if after is not None:
        after_seq = session.scalar(select(model.seq).where(scope, model.id == after))
        if after_seq is None:
            raise NotFound(kind, after, param="after")
        query = query.where(model.seq > after_seq if ascending else model.seq < after_seq)
    query = query.order_by(model.seq.asc() if ascending else model.seq.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    return rows[:limit], len(rows) > limit
