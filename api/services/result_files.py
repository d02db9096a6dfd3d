"""The result files attached to a succeeded job (`job.result_files`): OpenAI's CSV of the job's
per-step metrics and, for a reward-learning job, its demonstration scores (`attach_scores_file`). Both
have purpose `fine-tune-results` and are downloadable through `GET /v1/files/{id}/content` by the job's
tenant only.

Columns: `step`, then OpenAI's four (train_loss, train_accuracy, valid_loss,
valid_mean_token_accuracy, from Juice's train/loss, train/token_accuracy, eval/loss,
eval/token_accuracy), then every other series the method logged under its own name (train/lr,
rewards/margin, eval/logp_gap, ...), sorted. One row per step that logged anything; a cell is empty
where that step did not log that series (validation runs every eval_interval steps; IRFT and DPO have
no token accuracy)."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db.tables import File, Job, JobMetric, new_id
from api.storage import ArtifactStore
from trainer.spec import scores

log = logging.getLogger(__name__)

PURPOSE = "fine-tune-results"
SCORES_NAME = scores.FILE
OPENAI_COLUMNS = (
    ("train_loss", "train/loss"),
    ("train_accuracy", "train/token_accuracy"),
    ("valid_loss", "eval/loss"),
    ("valid_mean_token_accuracy", "eval/token_accuracy"),
)


def result_csv(rows: Iterable[tuple[int, dict[str, float]]]) -> tuple[bytes, int]:
    """(CSV bytes, data rows) of metric rows (step, values), in step order."""
    by_step: dict[int, dict[str, float]] = {}
    for step, values in rows:
        by_step.setdefault(step, {}).update(values)
    named = {series for _, series in OPENAI_COLUMNS}
    extra = sorted({name for values in by_step.values() for name in values} - named)
    columns = [series for _, series in OPENAI_COLUMNS] + extra
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", *(name for name, _ in OPENAI_COLUMNS), *extra])
    for step in sorted(by_step):
        values = by_step[step]
        writer.writerow([step, *(repr(float(values[c])) if c in values else "" for c in columns)])
    return out.getvalue().encode(), len(by_step)


def attach_result_file(session: Session, store: ArtifactStore, job_id: str) -> File | None:
    """Write the job's result CSV to the store and add its file row, owned by the job's tenant, as
    the job's result file (the caller commits, in the same transaction as the success, so a client
    that sees `succeeded` also sees the file). The key is the job's own, so a retried attempt
    overwrites rather than orphans a blob.

    Best effort on the store only: the job did succeed and its metrics stay readable through the
    API, so a store that refuses the CSV logs a warning and leaves the job without a result file.
    Database errors propagate, because they fail the caller's transaction anyway."""
    job = session.scalar(select(Job).where(Job.id == job_id))
    assert job is not None
    metrics = session.execute(
        select(JobMetric.step, JobMetric.values)
        .where(JobMetric.job_id == job_id)
        .order_by(JobMetric.step, JobMetric.seq)
    )
    data, steps = result_csv((step, values) for step, values in metrics)
    row = _store_file(session, store, job, f"files/{job_id}-results.csv", data, "step_metrics.csv", steps)
    if row is not None:
        job.result_file_id = row.id
    return row


def attach_scores_file(session: Session, store: ArtifactStore, job_id: str, path: Path) -> File | None:
    """The job's demonstration scores (trainer/demonstration_scores.py, one JSON line per training line,
    lowest score first) as its second result file, as `attach_result_file` attaches the CSV: in the
    success's transaction, best effort on the store."""
    job = session.scalar(select(Job).where(Job.id == job_id))
    assert job is not None
    data = path.read_bytes()
    lines = data.count(b"\n")
    row = _store_file(session, store, job, f"files/{job_id}-{SCORES_NAME}", data, SCORES_NAME, lines)
    if row is not None:
        job.scores_file_id = row.id
    return row


def _store_file(
    session: Session, store: ArtifactStore, job: Job, key: str, data: bytes, filename: str, count: int
) -> File | None:
    """Put `data` at `key` through a temp blob and add its file row (purpose fine-tune-results, the job's
    tenant); None, with a warning, when the store refuses it."""
    tmp = None
    try:
        tmp, out = store.open_temp_writer(key)
        with out:
            out.write(data)
        store.commit_temp(tmp, key)
    except Exception:  # any store backend's error: the success must not be undone or retried
        log.warning("job %s: its result file %s could not be stored", job.id, filename, exc_info=True)
        if tmp is not None:
            try:
                store.discard(tmp)
            except Exception:  # best effort: a leftover temp blob is never read
                log.warning("job %s: temp blob %s not removed", job.id, tmp, exc_info=True)
        return None
    row = File(
        id=new_id("file-"),
        tenant_id=job.tenant_id,
        filename=filename,
        purpose=PURPOSE,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        storage_path=key,
        format=filename.rsplit(".", 1)[-1],
        example_count=count,
        status="processed",
    )
    session.add(row)
    return row
