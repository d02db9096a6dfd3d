"""A job's metric series in one read, downsampled for charts (the dashboard's first paint).

The metrics table holds one row per `log_metrics` call: (seq, step, {name: value}, created_at). A chart
wants the transpose: one column-wise series per name, ordered by step, at most a few thousand points.
A 100k-step job must come back well under a second on SQLite, so the read avoids per-row Python work
wherever it can:

- one Core select run on the driver's cursor (no ORM objects, no Row objects, no type processors);
- the JSON column is decoded by a single `json.loads` over all rows joined into one array: one C-level
  parse instead of 100k calls, each with its Python wrapper and SQLAlchemy's type processor
  (~0.18 s against ~0.5 s for 100k rows of 5 values);
- timestamps are parsed only for the points that survive downsampling (LTTB on (step, value)).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session

from api.db.fetch import fetch_columns
from api.db.tables import JobMetric
from api.schemas.jobs import MetricSeries
from api.services.downsample import lttb


class RawSeries(NamedTuple):
    """One series in step order, one point per step; `rows` points back into the query's rows."""

    steps: list[int]
    values: list[float]
    rows: list[int]


def collect(
    steps: Sequence[int], points: Sequence[dict[str, float]], names: frozenset[str] | None = None
) -> dict[str, RawSeries]:
    """Transpose metric rows, given sorted by (step, seq), into one series per name.

    A step logged twice (a resumed job replaying steps) keeps the value of its latest row. Non-finite
    values are dropped: a chart cannot draw them and JSON cannot carry them. `names` keeps only those.

    Built column by column with comprehensions and C-level checks (`None in`, `sum`, `set`) rather than
    one Python loop over every value: the common dense, finite, one-row-per-step series costs one pass.
    """
    n = len(points)
    every_step_once = len(set(steps)) == n
    out: dict[str, RawSeries] = {}
    for name in sorted(names if names is not None else set().union(*points)):
        column = [p.get(name) for p in points]
        ys: list[float]
        if None in column:  # logged on some rows only (eval metrics), or a null value
            rows = [i for i, y in enumerate(column) if y is not None]
            xs = [steps[i] for i in rows]
            ys = [y for y in column if y is not None]
        else:
            rows, xs, ys = list(range(n)), list(steps), column  # type: ignore[assignment]  # no None: checked above
        total = sum(ys)
        if total - total != 0:  # NaN or ±inf somewhere (or an overflowing sum): keep the finite values
            keep = [j for j, y in enumerate(ys) if y - y == 0]  # NaN and ±inf give NaN here, finite 0
            xs, ys, rows = [xs[j] for j in keep], [ys[j] for j in keep], [rows[j] for j in keep]
        if not every_step_once and len(set(xs)) < len(xs):
            # Rows arrive by (step, seq): the last of each run of equal steps is the latest value.
            keep = [j for j in range(len(xs) - 1) if xs[j] != xs[j + 1]] + [len(xs) - 1]
            xs, ys, rows = [xs[j] for j in keep], [ys[j] for j in keep], [rows[j] for j in keep]
        if xs:
            out[name] = RawSeries(xs, ys, rows)
    return out


def downsample(raw: RawSeries, max_points: int) -> RawSeries:
    """At most `max_points` of the series, chosen by LTTB; the series itself when it is short enough."""
    if len(raw.steps) <= max_points:
        return raw
    keep = lttb(raw.steps, raw.values, max_points)
    return RawSeries([raw.steps[i] for i in keep], [raw.values[i] for i in keep], [raw.rows[i] for i in keep])


def unix_seconds(stored: str | datetime) -> float:
    """A created_at as the driver returns it (naive UTC: ISO text from SQLite, datetime from psycopg)."""
    when = datetime.fromisoformat(stored) if isinstance(stored, str) else stored
    return (when.replace(tzinfo=UTC) if when.tzinfo is None else when).timestamp()


def read_series(
    session: Session, job_id: str, *, names: frozenset[str] | None, max_points: int
) -> tuple[int, dict[str, MetricSeries]]:
    """(last_seq, series by name): every series of the job, each at most `max_points` long.

    `last_seq` is the highest seq of all the job's metric rows this read saw (whatever `names` keeps),
    0 if none: a live follower that streams from it misses no row and repeats none.
    """
    seqs, steps, texts, stamps = fetch_columns(
        session,
        (
            # values as text on every database (psycopg would otherwise parse json per row), created_at as
            # stored: naive UTC, ISO text on SQLite, a datetime from psycopg; parsed only for kept points.
            select(JobMetric.seq, JobMetric.step, cast(JobMetric.values, Text), JobMetric.created_at)
            .where(JobMetric.job_id == job_id)
            .order_by(JobMetric.step, JobMetric.seq)  # served by ix_job_metrics_job_step (job_id, step)
        ),
    )
    if not seqs:
        return 0, {}
    points = json.loads("[" + ",".join(texts) + "]")
    shown = {
        name: (downsample(raw, max_points), len(raw.steps))
        for name, raw in collect(steps, points, names).items()
    }
    # Series logged together share rows: parse each kept row's timestamp once.
    times = {row: unix_seconds(stamps[row]) for kept, _ in shown.values() for row in kept.rows}
    series = {
        name: MetricSeries(
            step=kept.steps,
            time=[times[r] for r in kept.rows],
            value=kept.values,
            total_points=total,
            downsampled=len(kept.steps) < total,
        )
        for name, (kept, total) in shown.items()
    }
    return max(seqs), series
