"""Bulk reads that bypass SQLAlchemy's per-row result handling, for the few reads of 100k+ rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session


def fetch_columns(session: Session, query: Select[*tuple[Any, ...]], *, chunk: int = 500) -> list[list[Any]]:
    """Run a Core select on the session's DBAPI connection (same transaction); one list per column.

    Skips SQLAlchemy's Row objects and result processing (about half the cost of fetching 100k rows),
    and transposes `chunk` rows at a time so each row tuple dies young: 100k tuples alive at once get
    promoted to the cyclic GC's old generation and trigger a full collection of the whole heap (~0.1 s).
    Bind parameters go to the driver unprocessed, so give this plain values only (strings, numbers).
    """
    conn = session.connection()
    compiled = query.compile(dialect=conn.dialect)
    params = compiled.construct_params()
    args = tuple(params[k] for k in compiled.positiontup or ()) if compiled.positional else params
    columns: list[list[Any]] = [[] for _ in query.selected_columns]
    cursor = conn.connection.cursor()
    try:
        cursor.execute(compiled.string, args)
        while rows := cursor.fetchmany(chunk):
            for column, values in zip(columns, zip(*rows, strict=True), strict=True):
                column.extend(values)
    finally:
        cursor.close()
    return columns
