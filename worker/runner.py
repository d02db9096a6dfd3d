"""run_job(job_id): claim -> fetch data and newest checkpoint -> trainer.run(config, sink) -> finish.

The trainer is imported lazily inside the task, so the Celery parent process never initialises torch
(forked children then start clean) and `juice worker --help` stays fast; only its torch-free
`trainer.spec` (hyperparameter classes, step plan) is imported at module level.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.orm import Session

from api.core.config import Settings, get_settings
from api.db.session import session_scope
from api.db.tables import Checkpoint, File, Job, JobMetric, JobStatus, Tenant
from api.errors import ApiError
from api.method_names import canonical_method
from api.queue import enqueue_job
from api.services import result_files
from api.services.jobs import fine_tuned_model_base
from api.services.models import FINE_TUNED_PREFIX, fine_tuned_checkpoint, fine_tuned_source, resolve_model
from api.storage import ArtifactStore, get_store
from trainer.spec import plan
from trainer.spec.hyperparameters import HYPERPARAMETERS, error_message
from worker import lifecycle
from worker.processes import train_in_processes
from worker.sinks import Lease, ServiceSink
from worker.tracking import CLOSE_TIMEOUT_S, HELD_CLOSE_TIMEOUT_S, Trackers, trackers_for

log = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def total_steps(job: Job, examples: int) -> int:
    """Optimiser steps the job will take (its progress total), by the trainers' own arithmetic."""
    method = canonical_method(job.method_type)
    model = HYPERPARAMETERS[method]
    try:
        hp = model.model_validate(job.hyperparameters)
    except ValidationError as exc:  # a stored job the trainer would refuse too: say which field
        message = error_message(exc, model, "hyperparameters")
        raise ApiError(message, code="invalid_hyperparameters", param="hyperparameters") from None
    return plan.total_steps(method, hp, examples, processes(job))


def processes(job: Job) -> int:
    """The training processes the job asked for (`resources.processes`; one when it did not)."""
    return int((job.resources or {}).get("processes", 1))


def build_train_config(
    job: Job,
    settings: Settings,
    *,
    training_file: Path,
    validation_file: Path | None,
    output_dir: Path,
    resume_from: Path | None,
    model_dir: Path | None = None,
) -> dict[str, Any]:
    """The trainer's config for this job: resolved model paths, local data files, stored hyperparameters.
    `model_dir`: the base model already fetched (a fine-tuned model the job starts from)."""
    hp = dict(job.hyperparameters)  # stored exactly as the trainer takes them (api resolve())
    # Resolved again here, in the process that loads them, right before it does: a local model becomes an
    # absolute path under a model root, and a hub id that now names a folder in this worker's working
    # directory (where from_pretrained would look first) fails the job instead of loading that folder.
    if hp.get("reward_model"):
        hp["reward_model"] = resolve_model(hp["reward_model"], settings, param="hyperparameters.reward_model")
    model_path = str(model_dir) if model_dir else resolve_model(job.model, settings)
    return {
        "model": model_path,
        "training_file": str(training_file),
        "validation_file": str(validation_file) if validation_file else None,
        "output_dir": str(output_dir),
        "method": canonical_method(job.method_type),
        "seed": job.seed,
        "hyperparameters": hp,
        "resume_from": str(resume_from) if resume_from else None,
        "grader": job.grader,
        # python graders run on the interpreter the operator provided for the sandbox's unprivileged user
        "grader_python": settings.grader_interpreter if job.grader else None,
    }


def classify_failure(exc: BaseException) -> tuple[str, str | None]:
    """(error code, param) for the job's error object: user faults name the field they came from."""
    from trainer.errors import InputError  # only on the failure path: importing trainer loads torch

    if isinstance(exc, ApiError | InputError):
        return exc.code, exc.param
    if is_out_of_memory(exc):
        return "oom", None
    if isinstance(exc, CheckpointNotStoredError):
        return ("storage_full" if exc.disk_full else "storage_error"), None
    return "internal_error", None


class CheckpointNotStoredError(RuntimeError):
    """The run finished but the checkpoint that is the tuned model (its final one, or the one
    select_checkpoint chose) could not be uploaded."""

    def __init__(self, step: int, cause: BaseException, *, selected: bool = False) -> None:
        self.disk_full = isinstance(cause, OSError) and cause.errno == errno.ENOSPC
        where = "the artifact store is full" if self.disk_full else f"the artifact store failed: {cause}"
        which = "the checkpoint select_checkpoint chose" if selected else "its final checkpoint"
        super().__init__(
            f"Training finished, but {which} (step {step}), the tuned model, could not be stored: {where}."
        )


# How each allocator words running out: CUDA's OutOfMemoryError ("CUDA out of memory"), torch's CPU
# allocator ("DefaultCPUAllocator: can't allocate memory: you tried to allocate ..."), MPS, and
# Python's own MemoryError, whose message is usually empty.
_OOM_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """The job ran out of (GPU or host) memory: the settings (batch, sequence length) are too big for
    the machine, which the user can act on; the worker process itself goes on serving."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return any(words in str(exc).lower() for words in _OOM_WORDS)


class OutOfMemoryJobError(RuntimeError):
    """The job's error when training ran out of memory: what happened and what the user can change."""


def out_of_memory_advice(exc: BaseException) -> OutOfMemoryJobError:
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    err = OutOfMemoryJobError(
        f"Training ran out of memory ({detail}). Lower hyperparameters.batch_size (raise "
        "gradient_accumulation_steps to keep the effective batch) or max_seq_len, or enable LoRA."
    )
    err.__cause__ = exc  # the traceback event keeps the allocator's own frames
    return err


def _fetch_inputs(
    session: Any, store: ArtifactStore, job: Job, workdir: Path
) -> tuple[Path, Path | None, int]:
    def fetch(file_id: str, param: str) -> File:
        row = session.scalar(select(File).where(File.id == file_id, File.tenant_id == job.tenant_id))
        if row is None:
            raise ApiError(f"{param} '{file_id}' no longer exists.", code="file_not_found", param=param)
        store.get_file(row.storage_path, workdir / "data" / f"{param}.jsonl")
        return row

    train = fetch(job.training_file, "training_file")
    val_path = None
    if job.validation_file:
        fetch(job.validation_file, "validation_file")
        val_path = workdir / "data" / "validation_file.jsonl"
    return workdir / "data" / "training_file.jsonl", val_path, train.example_count


def _fetch_fine_tuned_base(session: Any, store: ArtifactStore, job: Job, workdir: Path) -> Path | None:
    """For a job whose model is a fine-tuned one (`ft:...`, the tenant's own): the checkpoint that is
    that model (models.fine_tuned_checkpoint), downloaded. Its `model/` folder is a plain Hugging Face
    model, LoRA already merged, so the new job trains it as it would any base model. None for any other
    model name."""
    if not job.model.startswith(FINE_TUNED_PREFIX):
        return None
    ckpt = fine_tuned_checkpoint(session, store, fine_tuned_source(session, job.tenant_id, job.model))
    local = workdir / "base_model"
    if local.exists():
        shutil.rmtree(local)
    store.get_dir(f"{ckpt.storage_path}/model", local)
    return local


def _fetch_resume_point(
    session: Any, store: ArtifactStore, job_id: str, workdir: Path
) -> tuple[Path, int] | None:
    """Download the newest stored checkpoint whose manifest is present; drop metrics logged after it."""
    ckpts = session.scalars(
        select(Checkpoint)
        .where(Checkpoint.job_id == job_id, Checkpoint.kind == "model")
        .order_by(Checkpoint.step.desc())
    )
    for ckpt in ckpts:
        if not store.exists(f"{ckpt.storage_path}/manifest.json"):
            continue
        local = workdir / "resume" / Path(ckpt.storage_path).name
        if local.exists():
            shutil.rmtree(local)
        store.get_dir(ckpt.storage_path, local)
        # Steps after the checkpoint are replayed; their old rows would duplicate the series.
        session.execute(delete(JobMetric).where(JobMetric.job_id == job_id, JobMetric.step > ckpt.step))
        return local, ckpt.step
    return None


def run_job(job_id: str, settings: Settings | None = None) -> str:
    """Run one attempt of a job. Returns the final status, or 'skipped' if another worker holds it."""
    settings = settings or get_settings()
    me = worker_name()
    with session_scope() as s:
        job = lifecycle.claim(s, job_id, me, settings)
        if job is None:
            log.info("job %s not claimable (finished, cancelled or held elsewhere); skipping", job_id)
            return "skipped"
        s.expunge(job)
        tenant_name = s.scalar(select(Tenant.name).where(Tenant.id == job.tenant_id)) or ""
    lease = Lease(job_id, me, settings)
    lease.start()
    workdir = settings.work_path / job_id / f"attempt-{job.attempt}"
    store = get_store()
    try:
        with hand_over_on_sigterm(lease):
            status = _train(job, tenant_name, settings, store, lease, workdir)
    finally:
        lease.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        release_tenant_place(job.tenant_id, settings)
    return status


@contextlib.contextmanager
def hand_over_on_sigterm(lease: Lease) -> Iterator[None]:
    """While the attempt runs, SIGTERM (the worker shutting down: `docker stop`, a rolling deploy, the
    Celery parent passing its own on, worker.celery_app) asks the trainer to checkpoint the step it is
    on and stop, and the job is handed over instead of lost. Without this, the pool child's SIGTERM
    raises SystemExit mid-step and the steps since the last checkpoint are redone elsewhere after the
    heartbeat goes stale. A SIGKILL still lands where it lands; the sweeper covers that."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        log.warning("SIGTERM: job %s checkpoints its current step and is handed over", lease.job_id)
        lease.hold_requested.set()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        # Not re-raised: the task returns normally, so its message is acknowledged (a re-raise would
        # make the pool report a lost worker and re-deliver it), and the child ends after its one task
        # (worker_max_tasks_per_child) while the shutting-down parent exits.
        signal.signal(signal.SIGTERM, previous)


def release_tenant_place(tenant_id: int, settings: Settings) -> list[str]:
    """This attempt ended: send the tenant's parked jobs that fit in the place it leaves (at once,
    not at the next sweep). Never raises: if the database or broker is away the sweeper does it."""
    try:
        with session_scope() as s:
            released = lifecycle.release_parked(s, tenant_id, settings)
        for job_id in released:
            enqueue_job(job_id)
        return released
    except Exception:
        log.warning(
            "could not release the parked jobs of tenant %s; the sweeper will", tenant_id, exc_info=True
        )
        return []


def _train(
    job: Job, tenant_name: str, settings: Settings, store: ArtifactStore, lease: Lease, workdir: Path
) -> str:
    trackers = Trackers(trackers_for(job, settings, tenant_name))
    trackers.start()
    try:
        return _train_and_record(job, tenant_name, settings, store, lease, workdir, trackers)
    finally:
        trackers.close(None, timeout_s=HELD_CLOSE_TIMEOUT_S)  # still open (a shutdown): the run stays open


def _train_and_record(
    job: Job,
    tenant_name: str,
    settings: Settings,
    store: ArtifactStore,
    lease: Lease,
    workdir: Path,
    trackers: Trackers,
) -> str:
    me = lease.worker
    sink: ServiceSink | None = None
    try:
        with session_scope() as s:
            train_path, val_path, examples = _fetch_inputs(s, store, job, workdir)
            resume = _fetch_resume_point(s, store, job.id, workdir)
            base_dir = _fetch_fine_tuned_base(s, store, job, workdir)
            total = total_steps(job, examples)
            s.execute(update(Job).where(Job.id == job.id).values(total_steps=total))
            if resume:
                lifecycle.add_event(
                    s, job.id, f"Resuming from the checkpoint at step {resume[1]}.", data={"step": resume[1]}
                )
        config_dict = build_train_config(
            job,
            settings,
            training_file=train_path,
            validation_file=val_path,
            output_dir=workdir / "output",
            resume_from=resume[0] if resume else None,
            model_dir=base_dir,
        )
        import trainer  # lazy: torch loads only in the process that trains

        config = trainer.TrainConfig.from_dict(config_dict)
        sink = ServiceSink(job.id, lease, store, workdir, trackers)
        if processes(job) > 1:  # DDP: one process per GPU, supervised (worker/processes.py)
            result = train_in_processes(config_dict, sink, processes(job), workdir / "channel")
        else:
            result = trainer.run(config, sink)
        # The checkpoint that is the tuned model: the one the trainer selected, else the final one.
        # Without it the job did not do what it claims (the final one alone is not that model).
        selected = result.selected_step is not None
        model_step = result.selected_step if selected else result.global_step
        if result.status == "completed" and model_step in sink.failed_uploads:
            raise CheckpointNotStoredError(model_step, sink.failed_uploads[model_step], selected=selected)
    except Exception as exc:
        # A shutdown (SystemExit, KeyboardInterrupt) is not caught: the job stays running, its heartbeat
        # stops, and the sweeper re-queues it to resume from its newest checkpoint.
        code, param = classify_failure(exc)
        warnings = trackers.close(JobStatus.FAILED)
        if sink is not None:
            for warning in warnings:
                sink.log_event(warning, level="warning")
            sink.drain(settings.db_outage_grace_s)
        error = out_of_memory_advice(exc) if code == "oom" else exc  # named: the lambda runs below
        until_db_answers(lambda s: lifecycle.fail(s, job.id, me, error, code, param), settings)
        log.exception("job %s failed", job.id)
        return JobStatus.FAILED
    # The trackers' runs end before the job's status does, so whoever sees the status (a webhook, a
    # poll) finds the run closed too. Held: the run stays open for the attempt that resumes it, and the
    # hand-over must not wait long (a shutdown's grace period is short).
    status = TRACKER_STATUS.get(result.status)
    for warning in trackers.close(status, timeout_s=CLOSE_TIMEOUT_S if status else HELD_CLOSE_TIMEOUT_S):
        sink.log_event(warning, level="warning")
    if not sink.drain(settings.db_outage_grace_s):
        # Still no database: give the job up (it stays running, its heartbeat stops with this attempt,
        # and the sweeper re-queues it to resume from its newest listed checkpoint).
        raise DatabaseUnavailableError(f"job {job.id}: the database stayed unreachable; left to the sweeper")
    return until_db_answers(lambda s: _record_end(s, job, tenant_name, me, lease, result), settings)


# the trainer's outcome -> the job status it ends in, for the trackers (worker/tracking.py)
TRACKER_STATUS = {"completed": JobStatus.SUCCEEDED, "stopped": JobStatus.CANCELLED}


def _record_end(s: Session, job: Job, tenant_name: str, me: str, lease: Lease, result: Any) -> str:
    if lease.lost.is_set():
        return "lost"
    if result.status == "held":  # checkpointed at global_step: for a pause, or for this worker's shutdown
        if lifecycle.pause(s, job.id, me, result.global_step):
            return JobStatus.PAUSED
        if lifecycle.hand_over(s, job.id, me, result.global_step):
            enqueue_job(job.id)  # if the broker is away the sweeper re-sends it
            return JobStatus.QUEUED
        # Neither: the job was cancelled while it checkpointed (both refuse a cancelled job), so it
        # ends cancelled below rather than parked with a cancel flag no claim would ever take.
    if result.status == "completed":
        name = fine_tuned_model_base(job, tenant_name)
        done = lifecycle.finish(
            s,
            job.id,
            me,
            JobStatus.SUCCEEDED,
            event=f"New fine-tuned model created: {name}",
            fine_tuned_model=name,
            # NULL unless the trainer chose a checkpoint: a "last" job's model stays its newest one
            selected_step=result.selected_step,
            trained_tokens=result.trained_tokens,
            current_step=result.global_step,
            commit=False,  # the status, its events, webhook and result file commit as one
        )
        if not done:  # no longer ours (the sweeper took it back): the success is not this attempt's
            s.rollback()
            return "lost"
        lifecycle.add_event(s, job.id, "The job has successfully completed.")
        # In the success's own transaction: a client that sees `succeeded` also sees result_files,
        # and a database error here rolls back the success too, so until_db_answers redoes all of it.
        result_files.attach_result_file(s, get_store(), job.id)
        if result.demonstration_scores is not None:
            result_files.attach_scores_file(s, get_store(), job.id, Path(result.demonstration_scores))
        return JobStatus.SUCCEEDED
    lifecycle.finish(
        s,
        job.id,
        me,
        JobStatus.CANCELLED,
        event="Job cancelled.",
        trained_tokens=result.trained_tokens,
        current_step=result.global_step,
    )
    return JobStatus.CANCELLED


class DatabaseUnavailableError(RuntimeError):
    """The database stayed away longer than db_outage_grace_s at the end of an attempt."""


T = TypeVar("T")


def until_db_answers(
    write: Callable[[Session], T], settings: Settings, sleep: Callable[[float], None] = time.sleep
) -> T:
    """`write` in one transaction, retried while the database is unreachable (connection errors and
    pool timeouts only: any other error is a bug and raises at once), for up to db_outage_grace_s."""
    deadline = time.monotonic() + settings.db_outage_grace_s
    while True:
        try:
            with session_scope() as s:
                return write(s)
        except (DBAPIError, SATimeoutError) as exc:
            if isinstance(exc, DBAPIError) and not isinstance(exc, (OperationalError, InterfaceError)):
                raise
            if time.monotonic() >= deadline:
                raise
            log.warning("database unreachable (%s); retrying", exc)
            sleep(2.0)
