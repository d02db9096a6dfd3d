"""Which base models a job may name (a folder under an allow-listed root, or a Hugging Face hub id),
and the models a tenant can see (`GET /v1/models`): the local base models plus its fine-tuned ones."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from api.core.config import Settings
from api.db.base import utcnow
from api.db.tables import Checkpoint, Job, JobStatus
from api.errors import Forbidden, InvalidRequest, NotFound
from api.schemas.common import unix
from api.schemas.models import ModelObject
from api.storage import ArtifactStore

# A hub id as the Hub itself accepts one (huggingface_hub's validate_repo_id): "name" or "namespace/name",
# each part ASCII letters, digits and "._-", at most 96 characters, starting with a letter or digit and
# ending with a letter, digit or "_"; "--" and ".." nowhere. Matched in full: `$` alone would let a
# trailing newline through ("tiny-llama\n").
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
HUB_ID = re.compile(rf"{_HUB_PART}(?:/{_HUB_PART})?")
# A name ending like a file a model folder holds ("org/config.json", "x/model.safetensors") is a path
# mistaken for a model, not a repository: refused at once, not sent to the Hub to fail at training time.
# Real repositories end in a name, version or size ("Qwen2.5-0.5B", "phi-1.5"), not in one of these.
FILE_SUFFIXES = frozenset(
    {
        *(".json", ".jsonl", ".yaml", ".yml", ".txt", ".md", ".py", ".git"),
        *(".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".npz", ".pkl"),
        *(".gguf", ".ggml", ".model", ".tar", ".gz", ".zip"),
    }
)


def is_hub_id(name: str) -> bool:
    """Whether `name` is a well-formed Hugging Face hub id (see HUB_ID and FILE_SUFFIXES)."""
    return (
        HUB_ID.fullmatch(name) is not None
        and "--" not in name
        and ".." not in name
        and PurePosixPath(name).suffix.lower() not in FILE_SUFFIXES
    )


def _is_model_dir(path: Path) -> bool:
    try:
        return (path / "config.json").is_file()
    except OSError:  # a name too long for the file system (ENAMETOOLONG) names no folder
        return False


def resolve_model(name: str, settings: Settings, param: str = "model") -> str:
    """Return a local model directory (an absolute path, str) or a hub id; raise InvalidRequest(param).

    A name that looks like a path must lie inside a root after normalising '..' away; symlinks inside a
    root are followed, since only the operator can place them there. A bare name is looked up under
    each root first, then accepted as a hub id if it is a well-formed one (`is_hub_id`).

    Nothing else is ever loaded: transformers' from_pretrained reads a hub id as a folder relative to
    the working directory when one of that name exists there, so a hub id that names a path in this
    process's working directory is refused. The worker resolves the name again right before training
    (worker/runner.py), so the check guards its own working directory, not just the API's.
    """
    if (target := settings.model_alias_map.get(name)) is not None:
        if target in settings.model_alias_map:  # one level only: an alias of an alias is a mistake
            raise InvalidRequest(
                f"Model alias {name!r} names another alias.", code="model_not_found", param=param
            )
        return resolve_model(target, settings, param)
    roots = settings.model_root_paths
    if name.startswith(("/", ".", "~")):
        path = Path(os.path.normpath(Path(name).expanduser().absolute()))
        if not any(path == r or path.is_relative_to(r) for r in roots):
            raise InvalidRequest(
                f"Model path {name!r} is not inside an allowed model root (JUICE_MODEL_ROOTS).",
                code="model_not_allowed",
                param=param,
            )
        if not _is_model_dir(path):
            raise InvalidRequest(
                f"Model path {name!r} is not a Hugging Face model directory (no config.json).",
                code="model_not_found",
                param=param,
            )
        return str(path)
    if not set(name.split("/")) & {"", ".", ".."}:  # "x/", "x//y", "x/.." name no folder of their own
        for root in roots:
            candidate = Path(os.path.normpath(root / name))
            if candidate.is_relative_to(root) and _is_model_dir(candidate):
                return str(candidate)
    if settings.allow_hub_models and is_hub_id(name):
        if os.path.lexists(name):
            raise InvalidRequest(
                f"Model {name!r} is a hub id that also names a path in the server's working directory; "
                "refused, so that a local folder can never be loaded in the hub model's place. "
                "Local models belong under a model root (JUICE_MODEL_ROOTS).",
                code="model_not_allowed",
                param=param,
            )
        return name
    raise InvalidRequest(
        f"Model {name!r} was not found under the model roots and is not a hub id.",
        code="model_not_found",
        param=param,
    )


# owned_by of the local base models: the operator put them there, not a tenant.
BASE_MODEL_OWNER = "juice"


@dataclass(frozen=True)
class LocalModel:
    id: str  # the bare folder name: exactly what a job's `model` field accepts
    path: Path
    created: int  # folder mtime, unix seconds


def _names_this_folder(name: str, path: Path, settings: Settings) -> bool:
    """Whether a job naming `name` gets `path`: false for a folder shadowed by a same-named one in an
    earlier root, or a name that would be read as a path ('.x', '~x'). Asks resolve_model itself, so the
    list can never offer a name that jobs resolve differently."""
    try:
        return resolve_model(name, settings) == str(path)
    except InvalidRequest:
        return False


def list_local_models(settings: Settings) -> list[LocalModel]:
    """Every Hugging Face model folder (one with config.json) directly under an allow-listed root,
    sorted by name. Hub ids are accepted by jobs too but are not listed: nothing local names them."""
    models: list[LocalModel] = []
    for root in settings.model_root_paths:
        if not root.is_dir():
            continue
        for path in root.iterdir():
            if not _is_model_dir(path) or not _names_this_folder(path.name, path, settings):
                continue
            try:
                created = int(path.stat().st_mtime)
            except OSError:  # removed while listing
                continue
            models.append(LocalModel(id=path.name, path=path, created=created))
    by_path = {str(m.path): m for m in models}
    for alias in settings.model_alias_map:  # an alias of a listed model is listed beside it
        try:
            target = by_path.get(resolve_model(alias, settings))
        except InvalidRequest:
            continue
        if target is not None and alias not in {m.id for m in models}:
            models.append(LocalModel(id=alias, path=target.path, created=target.created))
    return sorted(models, key=lambda m: m.id)


def _fine_tuned_query(tenant_id: int) -> Select[Job]:
    return select(Job).where(
        Job.tenant_id == tenant_id,
        Job.status == JobStatus.SUCCEEDED,
        Job.fine_tuned_model.is_not(None),
        Job.model_deleted_at.is_(None),
    )


FINE_TUNED_PREFIX = "ft:"


def fine_tuned_source(session: Session, tenant_id: int, name: str, param: str = "model") -> Job:
    """The tenant's succeeded job whose fine-tuned model is `name` (a job may start from it, as on
    OpenAI); another tenant's name is not found, exactly like a name that never existed."""
    job = session.scalars(
        _fine_tuned_query(tenant_id).where(Job.fine_tuned_model == name).order_by(Job.seq.desc()).limit(1)
    ).first()
    if job is None:
        raise InvalidRequest(
            f"Model {name!r} is not a fine-tuned model of this organization (GET /v1/models lists them).",
            code="model_not_found",
            param=param,
        )
    return job


def fine_tuned_checkpoint(session: Session, store: ArtifactStore, job: Job) -> Checkpoint:
    """The model checkpoint that is `job`'s fine-tuned model, stored (its manifest is in the store): the
    one at `job.selected_step` when the trainer selected one (select_checkpoint "best_eval_loss"), else
    the newest. The one rule for serving the model and for jobs that start from it.

    Raises NotFound (`model_not_found`, param "model") when that checkpoint is not stored. A selected
    checkpoint that is gone is never replaced by another one: a later checkpoint is the model the
    selection rejected, so serving or training on it would silently hand out something else."""
    model = job.fine_tuned_model or job.id
    stored = select(Checkpoint).where(Checkpoint.job_id == job.id, Checkpoint.kind == "model")
    if job.selected_step is not None:
        ckpt = session.scalars(stored.where(Checkpoint.step == job.selected_step)).first()
        if ckpt is None or not store.exists(f"{ckpt.storage_path}/manifest.json"):
            raise NotFound(
                "model",
                model,
                param="model",
                message=(
                    f"Model {model!r} is the checkpoint at step {job.selected_step} of job {job.id} "
                    "(select_checkpoint best_eval_loss), and that checkpoint is no longer stored."
                ),
            )
        return ckpt
    ckpts = session.scalars(stored.order_by(Checkpoint.step.desc()))
    newest = next((c for c in ckpts if store.exists(f"{c.storage_path}/manifest.json")), None)
    if newest is None:
        raise NotFound(
            "model",
            model,
            param="model",
            message=f"Model {model!r}: the job that trained it ({job.id}) has no stored checkpoint left.",
        )
    return newest


def original_base(name: str) -> str:
    """The base model a name comes from: BASE of a fine-tuned model `ft:BASE:org:suffix:id`, else the
    name itself (so a fine-tune of a fine-tune is named after the original base, as on OpenAI)."""
    parts = name.split(":")
    return parts[1] if name.startswith(FINE_TUNED_PREFIX) and len(parts) >= 5 else name


def _fine_tuned_object(job: Job, tenant_name: str) -> ModelObject:
    return ModelObject(
        id=job.fine_tuned_model or "",
        created=unix(job.finished_at or job.created_at) or 0,
        owned_by=tenant_name,
    )


def _base_object(model: LocalModel) -> ModelObject:
    return ModelObject(id=model.id, created=model.created, owned_by=BASE_MODEL_OWNER)


def list_models(session: Session, settings: Settings, tenant_id: int, tenant_name: str) -> list[ModelObject]:
    """The local base models (by name), then the tenant's fine-tuned models (newest job first)."""
    jobs = session.scalars(_fine_tuned_query(tenant_id).order_by(Job.seq.desc()))
    return [_base_object(m) for m in list_local_models(settings)] + [
        _fine_tuned_object(j, tenant_name) for j in jobs
    ]


def get_model(
    session: Session, settings: Settings, tenant_id: int, tenant_name: str, model_id: str
) -> ModelObject:
    """One model of the list above; anything else (another tenant's model included) is a 404."""
    for local in list_local_models(settings):
        if local.id == model_id:
            return _base_object(local)
    job = session.scalars(
        _fine_tuned_query(tenant_id).where(Job.fine_tuned_model == model_id).order_by(Job.seq.desc()).limit(1)
    ).first()
    if job is None:
        raise NotFound("model", model_id, param="model")
    return _fine_tuned_object(job, tenant_name)


def delete_model(session: Session, settings: Settings, tenant_id: int, model_id: str) -> None:
    """OpenAI's model deletion, for the tenant's own fine-tuned models: every job that produced the name
    stops offering it. A base model is the operator's (403); any other name is a 404."""
    if any(local.id == model_id for local in list_local_models(settings)):
        raise Forbidden(
            f"Model {model_id!r} is a base model of this server; only fine-tuned models can be deleted.",
            code="model_not_deletable",
            param="model",
        )
    jobs = session.scalars(_fine_tuned_query(tenant_id).where(Job.fine_tuned_model == model_id)).all()
    if not jobs:
        raise NotFound("model", model_id, param="model")
    for job in jobs:
        job.model_deleted_at = utcnow()
    session.commit()
