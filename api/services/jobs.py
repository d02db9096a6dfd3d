"""Job lifecycle on the API side: create (commit, then enqueue), read, list, cancel, pause, resume."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.core.config import Settings, get_settings
from api.db.base import utcnow
from api.db.session import rows_matched
from api.db.tables import File, Job, JobEvent, JobStatus
from api.db.transitions import transition
from api.errors import Conflict, InvalidRequest, NotFound, TooManyRequests
from api.method_names import METHODS, TRAINING_FORMATS, training_formats
from api.queue import enqueue_job
from api.schemas.hyperparameters import SFTHyperparameters
from api.schemas.jobs import JobCreate
from api.services import webhooks
from api.services.files import get_file
from api.services.graders import check_runnable
from api.services.hyperparameters import ResolveError, resolve
from api.services.limits import check_queued_cap
from api.services.models import FINE_TUNED_PREFIX, fine_tuned_source, original_base, resolve_model

# What a file of each format holds, for the message that refuses it.
_FORMAT_NAMES = {
    "chat": "demonstrations",
    "prompt_completion": "demonstrations",
    "preference": "preference pairs",
    "reinforcement": "prompts for a grader",
}


def _request_hash(body: JobCreate) -> str:
    # Fields added later are left out when unset, so a request retried across a deploy keeps its hash.
    unset_later = {"resources"} if body.resources is None else set()
    data = body.model_dump(mode="json", exclude=unset_later)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _hyperparameters(body: JobCreate) -> SFTHyperparameters:
    hp = body.method.hyperparameters if body.method else SFTHyperparameters()
    if body.hyperparameters is not None:  # OpenAI's deprecated top-level block
        if body.method is not None:
            raise InvalidRequest(
                "Give hyperparameters inside method, not also at the top level.",
                code="invalid_value",
                param="hyperparameters",
            )
        legacy = body.hyperparameters.model_dump(exclude_none=True)
        try:
            hp = SFTHyperparameters.model_validate(legacy)
        except ValidationError as exc:  # described as the method block's errors are: bounds and all
            err = ResolveError(exc, SFTHyperparameters)
            raise InvalidRequest(
                err.message("hyperparameters"), code="invalid_value", param=f"hyperparameters.{err.field}"
            ) from None
    return hp


def _check_purpose(file: File, param: str) -> None:
    """Only uploads (purpose fine-tune) train: a job's result CSV is not a dataset."""
    if file.purpose != "fine-tune":
        raise InvalidRequest(
            f"{param} '{file.id}' has purpose '{file.purpose}'; a job trains on files uploaded with "
            "purpose 'fine-tune'.",
            code="invalid_file_purpose",
            param=param,
        )


def _check_training_format(method_type: str, file_format: str | None, param: str = "training_file") -> None:
    """The training file must be of a format the method trains on (api/method_names.py TRAINING_FORMATS);
    so must a reinforcement job's validation file (`param`), whose prompts are graded."""
    wanted = training_formats(method_type)
    if file_format in wanted:
        return
    fmt = file_format or "unknown"
    others = [m for m in METHODS if fmt in TRAINING_FORMATS[m]]
    hint = f" Methods that train on {fmt} files: {', '.join(others)}." if others else ""
    validation = (
        " Any format is accepted as validation_file."
        if param == "training_file" and method_type != "reinforcement"
        else ""
    )
    raise InvalidRequest(
        f"{param} has format '{fmt}' ({_FORMAT_NAMES.get(fmt, 'unknown contents')}), but "
        f"method '{method_type}' trains on {_FORMAT_NAMES[wanted[0]]} ({' or '.join(wanted)} files).{hint}"
        f"{validation}",
        code="invalid_training_file" if param == "training_file" else "invalid_validation_file",
        param=param,
    )


def _check_selection_has_data(hp: SFTHyperparameters, validation_file: str | None, where: str) -> None:
    """best_eval_loss picks the checkpoint by its loss on the validation file: without one there is
    nothing to pick by, and the job would fail in the worker (or hand back the last checkpoint while
    claiming otherwise) after waiting in the queue; refused here instead."""
    if hp.select_checkpoint == "best_eval_loss" and not validation_file:
        raise InvalidRequest(
            f"{where}.select_checkpoint: 'best_eval_loss' chooses the checkpoint with the lowest loss on "
            "the validation file, and this job has none; give validation_file, or select_checkpoint 'last'.",
            code="invalid_value",
            param=f"{where}.select_checkpoint",
        )


def _check_grader(body: JobCreate, method_type: str, hp: SFTHyperparameters, where: str) -> None:
    """What a request with a grader needs beyond its shapes: a grader this server can run; for another
    method than reinforcement (whose training prompts it grades), a validation file to grade answers to;
    for reinforcement, no reasoning effort to set."""
    assert body.method is not None and body.method.grader is not None
    param = f"method.{method_type}.grader"
    check_runnable(body.method.grader, get_settings(), param=param)
    if method_type != "reinforcement" and not body.validation_file:
        raise InvalidRequest(
            f"{param}: a grader scores the model's answers to the validation file's prompts at each "
            "evaluation, and this job has no validation_file; give one.",
            code="invalid_value",
            param=param,
        )
    effort = getattr(hp, "reasoning_effort", "default")
    if effort != "default":
        raise InvalidRequest(
            f"{where}.reasoning_effort: '{effort}' sets a reasoning model's effort, and '{body.model}' has "
            "no reasoning mode; leave it out (or 'default').",
            code="invalid_value",
            param=f"{where}.reasoning_effort",
        )


def create_job(session: Session, *, tenant_id: int, body: JobCreate, idempotency_key: str | None) -> Job:
    req_hash = _request_hash(body)
    if idempotency_key:
        existing = session.scalar(
            select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == idempotency_key)
        )
        if existing is not None:
            return _replay(existing, req_hash)

    method_type = body.method.type if body.method else "supervised"
    training = get_file(session, tenant_id, body.training_file, param="training_file")
    _check_purpose(training, "training_file")
    _check_training_format(method_type, training.format)
    if body.validation_file:
        validation = get_file(session, tenant_id, body.validation_file, param="validation_file")
        _check_purpose(validation, "validation_file")
        if method_type == "reinforcement":  # graded on its prompts: they must be the training file's kind
            _check_training_format(method_type, validation.format, param="validation_file")
        elif validation.format == "reinforcement":
            raise InvalidRequest(
                f"validation_file '{validation.id}' holds prompts without answers (reinforcement lines), "
                f"which method '{method_type}' cannot score; give demonstrations or preference pairs (with "
                f"method.{method_type}.grader, their prompts are also answered and graded).",
                code="invalid_validation_file",
                param="validation_file",
            )
    if body.model.startswith(FINE_TUNED_PREFIX):  # continue from an earlier job's tuned model
        fine_tuned_source(session, tenant_id, body.model)
    else:
        resolve_model(body.model, get_settings())
    hp = _hyperparameters(body)
    where = f"method.{method_type}.hyperparameters" if body.method else "hyperparameters"
    grader = body.method.grader if body.method else None
    if grader is not None:
        _check_grader(body, method_type, hp, where)
    reward_model = getattr(hp, "reward_model", None)
    if reward_model:
        resolve_model(reward_model, get_settings(), param="method.rft.hyperparameters.reward_model")
    _check_selection_has_data(hp, body.validation_file, where)

    try:
        hyperparameters = resolve(hp, training.example_count)
    except ResolveError as exc:
        raise InvalidRequest(exc.message(where), code="invalid_value", param=f"{where}.{exc.field}") from exc
    integrations = _integrations(body, get_settings())
    resources = _resources(body, get_settings())
    try:  # counted under the tenant's lock, in the transaction that inserts: no two requests both fit
        check_queued_cap(session, tenant_id, get_settings())
    except TooManyRequests:
        session.rollback()
        raise
    job = Job(
        tenant_id=tenant_id,
        model=body.model,
        training_file=training.id,
        validation_file=body.validation_file,
        method_type=method_type,
        hyperparameters=hyperparameters,
        seed=body.seed if body.seed is not None else random.randrange(2**31),
        suffix=body.suffix,
        metadata_=body.metadata,  # status: the column default, JobStatus.INITIAL
        integrations=integrations,
        resources=resources,
        grader=grader.model_dump(mode="json", exclude_none=True) if grader is not None else None,
        idempotency_key=idempotency_key,
        request_hash=req_hash,
        enqueued_at=utcnow(),
    )
    session.add(job)
    try:
        session.flush()
    except IntegrityError:  # a concurrent request with the same Idempotency-Key won the insert
        session.rollback()
        existing = session.scalar(
            select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == idempotency_key)
        )
        if existing is None:
            raise
        return _replay(existing, req_hash)
    session.add(
        JobEvent(
            job_id=job.id,
            message=f"Created fine-tuning job: {job.id}",
            data={"method": method_type, "model": body.model},
        )
    )
    session.commit()
    enqueue_job(job.id)  # after commit: the worker must find the row it is told about
    return job


def _replay(existing: Job, req_hash: str) -> Job:
    if existing.request_hash != req_hash:
        raise Conflict(
            "This Idempotency-Key was already used with a different request body.",
            code="idempotency_key_reused",
            param="Idempotency-Key",
        )
    return existing


def get_job(session: Session, tenant_id: int, job_id: str) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))
    if job is None:
        raise NotFound("fine_tuning_job", job_id, param="fine_tuning_job_id")
    return job


def cancel_job(session: Session, tenant_id: int, job_id: str) -> Job:
    """A queued or paused job is cancelled at once; a running one is flagged and its worker stops
    within seconds."""
    job = get_job(session, tenant_id, job_id)
    if job.status not in JobStatus.FINAL:
        if rows_matched(
            session,
            transition((JobStatus.QUEUED, JobStatus.PAUSED), JobStatus.CANCELLED)
            .where(Job.id == job_id)
            .values(cancel_requested=True, finished_at=utcnow()),
        ):
            message = (
                "Job cancelled before it started." if job.status == JobStatus.QUEUED else "Job cancelled."
            )
            webhooks.notify(session, job_id, JobStatus.CANCELLED)
        elif rows_matched(
            session,
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
            .values(cancel_requested=True),
        ):
            message = "Cancellation requested; stopping at the next step."
        else:  # it reached a final status between the read and the updates
            session.refresh(job)
            message = ""
        if message:
            session.add(JobEvent(job_id=job_id, message=message))
            session.commit()
            session.refresh(job)
            return job
    raise Conflict(
        f"Job '{job_id}' has already finished with status '{job.status}'.", code="job_not_cancellable"
    )


def pause_job(session: Session, tenant_id: int, job_id: str) -> Job:
    """OpenAI's pause. A queued job is paused at once; a running one is flagged, and its worker
    checkpoints at the next step boundary, frees itself and moves the job to `paused` (seconds).
    Pausing a paused job (or one whose pause is pending) changes nothing."""
    job = get_job(session, tenant_id, job_id)
    if job.status in JobStatus.FINAL or job.cancel_requested:
        why = "is being cancelled" if job.status not in JobStatus.FINAL else f"has already {job.status}"
        raise Conflict(f"Job '{job_id}' {why}; it cannot be paused.", code="job_not_pausable")
    if job.status == JobStatus.PAUSED or job.pause_requested:
        return job
    if rows_matched(
        session,
        transition(JobStatus.QUEUED, JobStatus.PAUSED).where(Job.id == job_id),
    ):
        message = "Job paused before it started."
        webhooks.notify(session, job_id, JobStatus.PAUSED)
    elif rows_matched(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.cancel_requested.is_(False))
        .values(pause_requested=True),
    ):
        message = "Pause requested; the job checkpoints at the next step and stops."
    else:  # it moved between the read and the updates: answer from where it is now
        session.rollback()
        return pause_job(session, tenant_id, job_id)
    session.add(JobEvent(job_id=job_id, message=message))
    session.commit()
    session.refresh(job)
    return job


def resume_job(session: Session, tenant_id: int, job_id: str) -> Job:
    """OpenAI's resume: a paused job goes back to `queued` (and to the broker) with the same id, and
    continues from the checkpoint it paused at, with the same data position and RNG. A running job
    whose pause is still pending just keeps running."""
    job = get_job(session, tenant_id, job_id)
    if job.status == JobStatus.PAUSED:
        try:  # back in the queue, it counts against the tenant's queued cap like a new job
            check_queued_cap(session, tenant_id, get_settings())
        except TooManyRequests:
            session.rollback()
            raise
        if rows_matched(
            session,
            transition(JobStatus.PAUSED, JobStatus.QUEUED)
            .where(Job.id == job_id)
            .values(pause_requested=False, enqueued_at=utcnow()),
        ):
            session.add(
                JobEvent(job_id=job_id, message="Job resumed; it continues from its newest checkpoint.")
            )
            session.commit()
            enqueue_job(job_id)  # after the commit, as create does; the sweeper re-sends a lost one
            session.refresh(job)
            return job
    elif rows_matched(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.pause_requested.is_(True))
        .values(pause_requested=False),
    ):
        session.add(JobEvent(job_id=job_id, message="Pause withdrawn; the job keeps running."))
        session.commit()
        session.refresh(job)
        return job
    session.refresh(job)
    raise Conflict(
        f"Job '{job_id}' is {job.status}, not paused; only a paused job can be resumed.",
        code="job_not_resumable",
    )


def _integrations(body: JobCreate, settings: Settings) -> list[dict[str, Any]] | None:
    """The request's trackers as stored; one this server has no tracker for is refused, naming it."""
    if not body.integrations:
        return None
    configured = {"mlflow": bool(settings.mlflow_tracking_uri), "wandb": bool(settings.wandb_mode)}
    setting = {"mlflow": "JUICE_MLFLOW_TRACKING_URI", "wandb": "JUICE_WANDB_MODE"}
    for i, integration in enumerate(body.integrations):
        if not configured[integration.type]:
            raise InvalidRequest(
                f"The {integration.type} integration is not set up on this server (its operator sets "
                f"{setting[integration.type]}); remove it or ask for it.",
                code="integration_not_configured",
                param=f"integrations.{i}.type",
            )
    return [i.model_dump(exclude_none=True) for i in body.integrations]


def _resources(body: JobCreate, settings: Settings) -> dict[str, int] | None:
    """The request's resources as stored (None: one process); more processes than a worker gives a job
    are refused, naming the limit."""
    if body.resources is None:
        return None
    processes = body.resources.processes
    if processes > settings.max_processes_per_job:
        raise InvalidRequest(
            f"resources.processes: expected at most {settings.max_processes_per_job} (the training "
            f"processes this server's workers give one job, JUICE_MAX_PROCESSES_PER_JOB), got {processes}",
            code="invalid_value",
            param="resources.processes",
        )
    return {"processes": processes}


def fine_tuned_model_base(job: Job, tenant_name: str) -> str:
    base = original_base(job.model)
    return f"{FINE_TUNED_PREFIX}{base}:{tenant_name}:{job.suffix or ''}:{job.id.removeprefix('ftjob-')[:8]}"
