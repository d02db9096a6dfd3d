"""A succeeded reward-learning job's demonstration scores (trainer/demonstration_scores.py), listed lowest
first with each training line's own JSON beside it, for the API and the dashboard.

The scores are the job's second result file (api.services.result_files), written once and never changed,
so a parsed copy is kept per file id (a few recent ones). A page's training lines are read by streaming
the training file up to the last line the page needs."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db.status import JobStatus
from api.db.tables import File, Job
from api.errors import NotFound
from api.storage import ArtifactStore
from trainer.spec.scores import KINDS

CACHED_FILES = 4
BOM = b"\xef\xbb\xbf"  # the upload validator ignores one at the start of a file
_cache: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()


def score_id(line: int) -> str:
    """A score's id: its training line, which is also the page cursor (`after`)."""
    return f"line-{line}"


def _missing(job: Job) -> NotFound:
    """Why this job has no scores to list, in words the caller can act on."""
    if job.method_type not in KINDS:
        why = f"it is a {job.method_type} job; only {', '.join(KINDS)} jobs learn a reward to score them by"
    elif job.status != JobStatus.SUCCEEDED:
        why = f"its status is {job.status}; they are attached when it succeeds"
    else:
        why = "its scores file was deleted or could not be stored"
    return NotFound(
        "demonstration_scores",
        job.id,
        param="fine_tuning_job_id",
        message=f"Job '{job.id}' has no demonstration scores: {why}.",
    )


def _rows(store: ArtifactStore, file: File) -> list[dict[str, Any]]:
    rows = _cache.get(file.id)
    if rows is None:
        data = b"".join(store.iter_bytes(file.storage_path))
        rows = [json.loads(line) for line in data.splitlines() if line.strip()]
        _cache[file.id] = rows
        while len(_cache) > CACHED_FILES:
            _cache.popitem(last=False)
    _cache.move_to_end(file.id)
    return rows


def _training_lines(store: ArtifactStore, file: File | None, wanted: set[int]) -> dict[int, Any]:
    """The parsed JSON of the wanted 1-based lines of the training file (none if it was deleted)."""
    found: dict[int, Any] = {}
    if file is None or not wanted:
        return found
    last, lineno, tail = max(wanted), 0, b""
    for chunk in store.iter_bytes(file.storage_path):
        *lines, tail = (tail + chunk).split(b"\n")
        for line in lines:
            lineno += 1
            if lineno in wanted:
                found[lineno] = json.loads(line.removeprefix(BOM) if lineno == 1 else line)
            if lineno >= last:
                return found
    if lineno + 1 in wanted and tail.strip():
        found[lineno + 1] = json.loads(tail.removeprefix(BOM) if lineno == 0 else tail)
    return found


def page(
    session: Session, store: ArtifactStore, job: Job, *, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """The job's scores from the one after `after` (a score id), lowest first, with each line's JSON as
    `example` (None if the training file is gone); and whether more follow."""
    file = session.scalar(select(File).where(File.id == job.scores_file_id)) if job.scores_file_id else None
    if file is None:
        raise _missing(job)
    rows = _rows(store, file)
    start = 0
    if after is not None:
        index = next((i for i, r in enumerate(rows) if score_id(r["line"]) == after), None)
        if index is None:
            raise NotFound("demonstration_score", after, param="after")
        start = index + 1
    chosen = rows[start : start + limit]
    training = session.scalar(
        select(File).where(File.id == job.training_file, File.tenant_id == job.tenant_id)
    )
    examples = _training_lines(store, training, {r["line"] for r in chosen})
    return [{**r, "id": score_id(r["line"]), "example": examples.get(r["line"])} for r in chosen], (
        start + limit < len(rows)
    )
