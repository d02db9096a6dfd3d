"""Job request/response schemas: OpenAI's `fine_tuning.job` objects plus Juice's method types."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    TypeAdapter,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from api.db.tables import Checkpoint, Job, JobEvent, JobMetric, JobStatus
from api.method_names import METHOD_TYPES, canonical_method, names_of
from api.schemas.common import unix
from api.schemas.hyperparameters import (
    HYPERPARAMETERS,
    DPOHyperparameters,
    IQLHyperparameters,
    IRFTHyperparameters,
    ReinforcementHyperparameters,
    RFTHyperparameters,
    SFTHyperparameters,
    learning_rate_multiplier,
)
from graders.schemas import Grader


class _GradedBlock(BaseModel):
    """A method block: its hyperparameters, and optionally a grader for the validation file (Juice): each
    evaluation then also answers the validation prompts and grades the answers (eval/reward, ...;
    docs/methods.md §11.3), `{{item.reference}}` being each line's own answer."""

    model_config = ConfigDict(extra="forbid")
    grader: Grader | None = None


class SFTMethodBlock(_GradedBlock):
    hyperparameters: SFTHyperparameters = Field(default_factory=SFTHyperparameters)


class IRFTMethodBlock(_GradedBlock):
    hyperparameters: IRFTHyperparameters = Field(default_factory=IRFTHyperparameters)


class RFTMethodBlock(_GradedBlock):
    hyperparameters: RFTHyperparameters = Field(default_factory=RFTHyperparameters)


class DPOMethodBlock(_GradedBlock):
    hyperparameters: DPOHyperparameters = Field(default_factory=DPOHyperparameters)


class IQLMethodBlock(_GradedBlock):
    hyperparameters: IQLHyperparameters = Field(default_factory=IQLHyperparameters)


class ReinforcementMethodBlock(_GradedBlock):
    """OpenAI's `method.reinforcement`: the grader whose reward trains the policy (required), and the
    hyperparameters."""

    grader: Grader
    hyperparameters: ReinforcementHyperparameters = Field(default_factory=ReinforcementHyperparameters)


class MethodIn(BaseModel):
    """`{"type": T, T: {"hyperparameters": {...}}}`; `supervised` is OpenAI's name for `sft`. One block
    field per accepted method type (checked below), each holding that method's request model."""

    model_config = ConfigDict(extra="forbid")
    type: Literal[METHOD_TYPES]  # type: ignore[valid-type]  # a tuple built from the alias table; pydantic expands it
    sft: SFTMethodBlock | None = None
    supervised: SFTMethodBlock | None = None
    irft: IRFTMethodBlock | None = None
    rft: RFTMethodBlock | None = None
    dpo: DPOMethodBlock | None = None
    iql: IQLMethodBlock | None = None
    reinforcement: ReinforcementMethodBlock | None = None

    @model_validator(mode="after")
    def _block_matches_type(self) -> MethodIn:
        allowed = names_of(self.type)
        for name in METHOD_TYPES:
            if getattr(self, name) is not None and name not in allowed:
                raise ValueError(f"method.{name} given, but method.type is '{self.type}'")
        if sum(getattr(self, name) is not None for name in allowed) > 1:
            raise ValueError(
                f"give the hyperparameters block once, under one of {', '.join(f'method.{n}' for n in allowed)}"
            )
        if self.type == "reinforcement" and self.reinforcement is None:
            raise ValueError("method.reinforcement is required: the reinforcement method needs its grader")
        return self

    @property
    def given_block(self) -> Any | None:
        """The one block given for this method type (under its name or an alias), or None."""
        return next((b for n in names_of(self.type) if (b := getattr(self, n)) is not None), None)

    @property
    def grader(self) -> Any | None:
        """The block's grader (a graders.schemas model): the reinforcement method's reward, another
        method's graded evaluation; None when the request gives none."""
        block = self.given_block
        return block.grader if block is not None else None

    @property
    def canonical_type(self) -> str:
        return canonical_method(self.type)

    @property
    def hyperparameters(self) -> SFTHyperparameters:
        block = self.given_block
        return block.hyperparameters if block is not None else HYPERPARAMETERS[self.canonical_type]()


assert set(MethodIn.model_fields) == {"type", *METHOD_TYPES}, "a hyperparameters block per method type"


class LegacyHyperparameters(BaseModel):
    """OpenAI's deprecated top-level `hyperparameters` (supervised only). Loosely typed here: the values
    are validated (bounds included) by the SFT request model they are handed to (services/jobs.py)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    n_epochs: Literal["auto"] | int | None = None
    batch_size: Literal["auto"] | int | None = None
    learning_rate_multiplier: Literal["auto"] | float | None = None


class WandbIntegrationIn(BaseModel):
    """OpenAI's W&B block. The server's W&B mode (JUICE_WANDB_MODE: offline or online) decides where runs go."""

    model_config = ConfigDict(extra="forbid")
    project: str = Field(min_length=1, max_length=128)
    name: str | None = Field(None, max_length=128)
    entity: str | None = Field(None, max_length=128)
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(None, max_length=50)


class MlflowIntegrationIn(BaseModel):
    """Juice's MLflow block: the experiment and run on the server's tracking server (JUICE_MLFLOW_TRACKING_URI)."""

    model_config = ConfigDict(extra="forbid")
    experiment_name: str = Field(min_length=1, max_length=256)
    run_name: str | None = Field(None, max_length=256)
    tags: (
        dict[Annotated[str, Field(min_length=1, max_length=250)], Annotated[str, Field(max_length=5000)]]
        | None
    ) = Field(None, max_length=50)


class WandbIntegration(BaseModel):
    """`{"type": "wandb", "wandb": {...}}`: what the OpenAPI document says a W&B entry is (see IntegrationIn)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["wandb"]
    wandb: WandbIntegrationIn
    mlflow: None = None


class MlflowIntegration(BaseModel):
    """`{"type": "mlflow", "mlflow": {...}}`: what the OpenAPI document says an MLflow entry is."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["mlflow"]
    mlflow: MlflowIntegrationIn
    wandb: None = None


# The schema of one `integrations` entry: a union discriminated by `type`, each branch carrying its block.
_INTEGRATION_SCHEMA = TypeAdapter(
    Annotated[WandbIntegration | MlflowIntegration, Field(discriminator="type")]
)


class IntegrationIn(BaseModel):
    """One experiment tracker a job's metrics go to: `{"type": "wandb", "wandb": {...}}` as on OpenAI,
    or `{"type": "mlflow", "mlflow": {...}}`.

    Validated as one model with a cross-field rule, so that a mismatched entry is refused with the
    param `integrations.<i>` and the message below (what clients and tests read); documented as the
    equivalent discriminated union (WandbIntegration | MlflowIntegration on `type`), so the schema
    itself says which block an entry of each type carries."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["wandb", "mlflow"]
    wandb: WandbIntegrationIn | None = None
    mlflow: MlflowIntegrationIn | None = None

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(_INTEGRATION_SCHEMA.core_schema)
        schema["description"] = (
            "One experiment tracker a job's metrics go to; `type` names the block it carries. A type this"
            " server has no tracker for (its operator sets JUICE_WANDB_MODE or JUICE_MLFLOW_TRACKING_URI)"
            " is a 400 `integration_not_configured`."
        )
        return schema

    @model_validator(mode="after")
    def _block_of_its_type(self) -> IntegrationIn:
        other = "mlflow" if self.type == "wandb" else "wandb"
        if getattr(self, self.type) is None:
            raise ValueError(f"an integration of type {self.type!r} needs its {self.type!r} block")
        if getattr(self, other) is not None:
            raise ValueError(f"an integration of type {self.type!r} takes no {other!r} block")
        return self


class ResourcesIn(BaseModel):
    """What one job trains on (a Juice addition; the `openai` SDK sends it with extra_body)."""

    model_config = ConfigDict(extra="forbid")
    # Training processes, one per GPU (DDP under torch.distributed.run); batch_size is per process.
    processes: int = Field(1, ge=1)


MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=512)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    method: MethodIn | None = None
    hyperparameters: LegacyHyperparameters | None = None
    seed: int | None = Field(None, ge=0, le=2147483647)
    suffix: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    # OpenAI's limits, in the document: at most 16 pairs, keys up to 64 characters, values up to 512
    metadata: dict[MetadataKey, MetadataValue] | None = Field(None, max_length=16)
    integrations: list[IntegrationIn] | None = Field(None, max_length=4)
    resources: ResourcesIn | None = None


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str] = []
    seed: int
    status: str
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any]
    suffix: str | None = None
    # Juice additions
    started_at: int | None = None
    cancel_requested: bool = False
    pause_requested: bool = False
    attempt: int = 0
    progress: dict[str, int | None] | None = None
    latest_metrics: dict[str, float] | None = None  # newest value of each series, e.g. the final loss
    resources: dict[str, int] = {"processes": 1}
    # The step of the checkpoint that is `fine_tuned_model` when select_checkpoint chose one
    # ("best_eval_loss"); null: the final checkpoint is.
    selected_step: int | None = None

    @classmethod
    def of(cls, job: Job, organization_id: str) -> FineTuningJob:
        hp = job.hyperparameters
        error = (
            JobError(code=job.error_code, message=job.error_message or "", param=job.error_param)
            if job.error_code
            else None
        )
        return cls(
            id=job.id,
            created_at=unix(job.created_at) or 0,
            error=error,
            fine_tuned_model=job.fine_tuned_model,
            finished_at=unix(job.finished_at),
            # OpenAI's three; the multiplier is derived from the stored learning rate and the base rate
            hyperparameters={
                "n_epochs": hp.get("n_epochs"),
                "batch_size": hp.get("batch_size"),
                "learning_rate_multiplier": learning_rate_multiplier(hp),
            },
            model=job.model,
            organization_id=organization_id,
            seed=job.seed,
            status=job.status,
            trained_tokens=job.trained_tokens,
            training_file=job.training_file,
            result_files=[f for f in (job.result_file_id, job.scores_file_id) if f],
            validation_file=job.validation_file,
            metadata=job.metadata_,
            integrations=job.integrations or [],
            method=_method(job),
            suffix=job.suffix,
            started_at=unix(job.started_at),
            cancel_requested=job.cancel_requested,
            pause_requested=job.pause_requested,
            attempt=job.attempt,
            estimated_finish=_estimated_finish(job),
            progress={"step": job.current_step, "total_steps": job.total_steps},
            latest_metrics=job.latest_metrics,
            resources=job.resources or {"processes": 1},
            selected_step=job.selected_step,
        )


def _method(job: Job) -> dict[str, Any]:
    """The method block as stored: the resolved hyperparameters, and a reinforcement job's grader."""
    block: dict[str, Any] = {"hyperparameters": job.hyperparameters}
    if job.grader is not None:
        block["grader"] = job.grader
    return {"type": job.method_type, job.method_type: block}


def _estimated_finish(job: Job) -> int | None:
    """Linear extrapolation from the steps done so far; None until the first step is in."""
    if job.status != JobStatus.RUNNING or not job.started_at or not job.current_step or not job.total_steps:
        return None
    if job.heartbeat_at is None:
        return None
    elapsed = (job.heartbeat_at - job.started_at).total_seconds()
    per_step = elapsed / max(job.current_step, 1)
    return int(job.heartbeat_at.timestamp() + per_step * max(job.total_steps - job.current_step, 0))


class DemonstrationScoreObject(BaseModel):
    """One training line's score by the reward a job learned (Juice extension; docs/methods.md §10)."""

    id: str = Field(description="`line-<n>`: the training line; the page cursor (`after`).")
    object: Literal["fine_tuning.job.demonstration_score"] = "fine_tuning.job.demonstration_score"
    line: int = Field(description="1-based line number in the job's training file.")
    rank: int = Field(description="1 = the lowest score of the job: the least demonstration-like line.")
    score: float = Field(
        description="The line's score by the job's learned reward (`kind`); lower looks less like the rest."
    )
    score_per_token: float = Field(description="`score` over the scored response's tokens.")
    tokens: int = Field(description="Tokens of the scored response (the line's last assistant turn).")
    kind: str = Field(
        description="What the score is: reward_model (RFT), implicit_reward (IRFT/SPIN), "
        "implicit_reward_margin (DPO: chosen minus rejected), implied_reward (IQL)."
    )
    log_likelihood: float = Field(
        description="log π(response | prompt) under the job's final model: on noisy data often the sharper "
        "flag of a wrong line (docs/methods.md §10)."
    )
    log_likelihood_per_token: float = Field(description="`log_likelihood` over the response's tokens.")
    example: dict[str, Any] | None = Field(
        description="The training line itself; null if the file was deleted."
    )


class JobEventObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None = None

    @classmethod
    def of(cls, e: JobEvent) -> JobEventObject:
        return cls(
            id=e.id,
            created_at=unix(e.created_at) or 0,
            level=e.level,
            message=e.message,
            type=e.type,
            data=e.data,
        )


# Juice metric names -> OpenAI's checkpoint metric names.
OPENAI_CHECKPOINT_METRICS = {
    "train/loss": "train_loss",
    "train/token_accuracy": "train_mean_token_accuracy",
    "eval/loss": "valid_loss",
    "eval/token_accuracy": "valid_mean_token_accuracy",
}


class CheckpointObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, float]
    # Juice additions
    kind: str
    size_bytes: int
    download_url: str

    @classmethod
    def of(cls, c: Checkpoint, fine_tuned_model_base: str) -> CheckpointObject:
        metrics = {"step": float(c.step)}
        for ours, theirs in OPENAI_CHECKPOINT_METRICS.items():
            if ours in c.metrics:
                metrics[theirs] = c.metrics[ours]
        metrics.update({k: v for k, v in c.metrics.items() if k not in OPENAI_CHECKPOINT_METRICS})
        suffix = "" if c.kind == "model" else f":{c.kind.replace('_', '-')}"
        return cls(
            id=c.id,
            created_at=unix(c.created_at) or 0,
            kind=c.kind,
            fine_tuned_model_checkpoint=f"{fine_tuned_model_base}:ckpt-step-{c.step}{suffix}",
            fine_tuning_job_id=c.job_id,
            step_number=c.step,
            metrics=metrics,
            size_bytes=c.size_bytes,
            download_url=f"/v1/fine_tuning/jobs/{c.job_id}/checkpoints/{c.id}/content",
        )


class MetricPoint(BaseModel):
    seq: int
    step: int
    created_at: float
    values: dict[str, float]

    @classmethod
    def of(cls, m: JobMetric) -> MetricPoint:
        return cls(seq=m.seq, step=m.step, created_at=m.created_at.timestamp(), values=m.values)


class MetricsPage(BaseModel):
    object: Literal["fine_tuning.job.metrics"] = "fine_tuning.job.metrics"
    job_id: str
    names: list[str]
    data: list[MetricPoint]
    has_more: bool
    next_after_seq: int | None


class MetricSeries(BaseModel):
    """One metric over steps, column-wise (what chart libraries take), possibly downsampled."""

    step: list[int]
    time: list[float]  # unix seconds when each kept point was recorded
    value: list[float]
    total_points: int  # points in the full series, before downsampling
    downsampled: bool


class MetricSeriesPage(BaseModel):
    """Every series of a job at once; follow it live with `/metrics/stream?after_seq={last_seq}`."""

    object: Literal["fine_tuning.job.metric_series"] = "fine_tuning.job.metric_series"
    job_id: str
    last_seq: int  # the highest metrics seq this snapshot read; 0 when the job has no metrics
    series: dict[str, MetricSeries]
