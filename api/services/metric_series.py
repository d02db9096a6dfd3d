"""A job's metric series in one read, downsampled for charts (the dashboard's first paint).

The metrics table holds one row per `log_metrics` call: (seq, step, {name: value}, created_at). A chart
wants the transpose, one column-wise series per name, ordered by step, at most a few thousand points.
This module reads the rows with a single Core select (no ORM objects: ~100k rows must take well under a
second) and builds every series in one pass; downsampling is LTTB on (step, value).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db.models import JobMetric
from api.schemas.jobs import MetricSeries
from api.services.downsample import lttb

MetricRow = tuple[int, int, dict[str, float], datetime]  # seq, step, values, created_at


@dataclass
class RawSeries:
    """One series in step order, one point per step, before downsampling."""

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)


def collect(rows: Iterable[MetricRow], names: frozenset[str] | None = None) -> tuple[int, dict[str, RawSeries]]:
    """Transpose metric rows sorted by (step, seq) into series; returns (highest seq seen, series).

    A step logged twice (a resumed job replaying steps) keeps the value of its latest row; non-finite
    values are dropped (JSON cannot carry them and a chart cannot draw them). `names` keeps only those
    series, but the highest seq still counts every row: it is the cursor a live follower resumes from.
    """
    last_seq = 0
    out: dict[str, RawSeries] = {}
    for seq, step, values, created_at in rows:
        if seq > last_seq:
            last_seq = seq
        for name, value in values.items():
            if names is not None and name not in names:
                continue
            if value is None or value - value != 0:  # NaN and ±inf give NaN here; finite values give 0
                continue
            series = out.get(name)
            if series is None:
                series = out[name] = RawSeries()
            steps = series.steps
            if steps and steps[-1] == step:  # rows arrive by (step, seq): the later row wins
                series.values[-1] = float(value)
                series.times[-1] = created_at
            else:
                steps.append(step)
                series.values.append(float(value))
                series.times.append(created_at)
    return last_seq, out


def shrink(raw: RawSeries, max_points: int) -> MetricSeries:
    """The series as the API returns it, LTTB-downsampled to at most `max_points`."""
    total = len(raw.steps)
    if total <= max_points:
        steps, values, times = raw.steps, raw.values, raw.times
    else:
        keep = lttb(raw.steps, raw.values, max_points)
        steps = [raw.steps[i] for i in keep]
        values = [raw.values[i] for i in keep]
        times = [raw.times[i] for i in keep]
    # Timestamps are converted only for the kept points: most of a long series is dropped.
    return MetricSeries(step=steps, time=[t.timestamp() for t in times], value=values, total_points=total,
                        downsampled=len(steps) < total)


def read_series(session: Session, job_id: str, *, names: frozenset[str] | None,
                max_points: int) -> tuple[int, dict[str, MetricSeries]]:
    """(last metrics seq, series by name) for a job, each series at most `max_points` long."""
    rows = session.execute(
        select(JobMetric.seq, JobMetric.step, JobMetric.values, JobMetric.created_at)
        .where(JobMetric.job_id == job_id)
        .order_by(JobMetric.step, JobMetric.seq)  # served by ix_job_metrics_job_step (job_id, step)
    )
    last_seq, raw = collect(rows.tuples(), names)
    return last_seq, {name: shrink(raw[name], max_points) for name in sorted(raw)}
