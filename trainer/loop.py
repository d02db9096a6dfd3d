"""The plumbing every method's training loop shares, so that each method file holds only its algorithm.

- `open_run`: the accelerator, the resume checkpoint (verified), the policy and tokenizer loaded for a
  fresh run or from that checkpoint, the dtype checkpoints are written in.
- `iteration_slices`: the examples of each outer iteration, sized as `spec/plan.py` says.
- `restore_position`: where a resumed run continues, refused when the checkpoint's plan differs.
- `due`: the one rule for "log / evaluate / checkpoint now".
- `stop_request`: the sink's cancel or hand-over signal, agreed by every process.
- `optimizer_step`: clip, step, schedule, zero; returns the gradient norm and the learning rate.
- `MetricAccumulator`: what a logged training metric means (the mean since the last log row).
- `save`: a checkpoint written by the main process, reported to the sink.
- `MovementCheck`: "succeeded" must mean the policy moved: warn per period, fail a run that never did.
- `CheckpointSelection`, `validate`, `save_start`: select_checkpoint "best_eval_loss": evaluate (and
  checkpoint) the starting model, checkpoint every evaluation that lowered eval/loss, hand back the best.
- `finish`: the closing event and the RunResult.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer.callbacks import NullSink, Sink
from trainer.checkpointing import checkpoint_dir, load_trainer_state, save_checkpoint, verify_checkpoint
from trainer.config import TrainConfig
from trainer.errors import InputError, ModelLoadError, PolicyDidNotMoveError, TrainingDivergedError
from trainer.evaluation import Validation, evaluate
from trainer.generation import eos_token_ids
from trainer.grading import GradedValidation, load_graded_validation
from trainer.modeling import base_dtype, load_model_and_tokenizer
from trainer.result import RunResult
from trainer.runtime import epoch_order, make_accelerator
from trainer.spec import plan
from trainer.spec.hyperparameters import selects_best


@dataclass
class Run:
    """What every method starts from."""

    config: TrainConfig
    accelerator: Any
    model: Any  # the policy, on the accelerator's device, not yet wrapped by accelerator.prepare
    tokenizer: Any
    resume: Path | None
    save_dtype: torch.dtype  # the base model's dtype: checkpoints are written in it
    report: Sink  # the sink on the main process, a NullSink elsewhere (only rank 0 talks)
    selection: CheckpointSelection
    graded: GradedValidation | None = None  # the job's grader on its validation prompts (grading.py)

    @property
    def hp(self) -> Any:
        return self.config.hyperparameters


def open_run(
    config: TrainConfig,
    sink: Sink,
    *,
    fp16: bool = True,
    resume_check: Callable[[Path], bool] | None = None,
) -> Run:
    """Seed, build the accelerator, verify the resume checkpoint and load the policy.

    `fp16=False` refuses fp16 (a method whose optimiser the accelerator does not own has no loss scaler);
    `resume_check` adds a method's own test of a checkpoint (RFT needs its reward model there).
    """
    from accelerate.utils import set_seed

    if not fp16 and config.mixed_precision == "fp16":
        raise ValueError(f"mixed_precision: {config.method} runs with no or bf16, got 'fp16'")

    accelerator = make_accelerator(config)
    set_seed(config.seed)
    resume = Path(config.resume_from) if config.resume_from else None
    if resume is not None and not (
        verify_checkpoint(resume) and (resume_check is None or resume_check(resume))
    ):
        raise ValueError(
            f"resume_from: expected a complete checkpoint directory of a {config.method} run, got {str(resume)!r}"
        )
    hp = config.hyperparameters
    if hp.select_checkpoint == "best_eval_loss" and not config.validation_file:
        raise InputError(
            "hyperparameters.select_checkpoint",
            "hyperparameters.select_checkpoint: 'best_eval_loss' needs a validation_file (it selects the "
            "checkpoint with the lowest loss on it), got none",
        )
    selection = CheckpointSelection(
        "best_eval_loss" if selects_best(hp.select_checkpoint, bool(config.validation_file)) else "last"
    )
    if resume is not None:
        selection.load_state_dict(load_trainer_state(resume).get("selection", {}))
    try:
        if resume is not None and hp.lora.enabled:
            model, tokenizer = load_model_and_tokenizer(config.model, adapter_dir=resume / "adapter")
        elif resume is not None:
            model, tokenizer = load_model_and_tokenizer(resume / "model")
        else:
            model, tokenizer = load_model_and_tokenizer(config.model, lora=hp.lora)
    except (OSError, ValueError) as exc:  # missing files, no hub access, unknown architecture
        raise ModelLoadError("model", f"cannot load model {config.model!r}: {exc}") from exc
    model.to(accelerator.device)
    report = sink if accelerator.is_main_process else NullSink()
    run = Run(config, accelerator, model, tokenizer, resume, base_dtype(config.model), report, selection)
    run.graded = load_graded_validation(config, tokenizer, report)
    if run.graded is not None and resume is None:  # the starting model's score, once, before any step
        report.log_metrics(0, graded_metrics(run, model))
    return run


def graded_metrics(run: Run, model: Any) -> dict[str, float]:
    """eval/* of the policy on the job's graded validation prompts (every process takes part)."""
    assert run.graded is not None
    net = run.accelerator.unwrap_model(model)
    return run.graded.evaluate(net, run.tokenizer, run.accelerator, eos_token_ids(net, run.tokenizer))


def iteration_slices(method: str, hp: Any, n_examples: int, seed: int) -> list[list[int]]:
    """Example indices of each outer iteration: all of them for SFT and IRFT's "full" schedule, else
    the contiguous slices (`plan.slice_bounds`) of a permutation seeded by `seed`."""
    if not plan.is_stagewise(method, hp):
        return [list(range(n_examples)) for _ in plan.iteration_sizes(method, hp, n_examples)]
    if n_examples < hp.outer_iterations:
        raise InputError(
            "hyperparameters",
            f"hyperparameters.outer_iterations: expected at most {n_examples} (one example per stagewise "
            f"slice), got {hp.outer_iterations}",
        )
    order = epoch_order(n_examples, seed, 0)
    return [order[start:end] for start, end in plan.slice_bounds(n_examples, hp.outer_iterations)]


def restore_position(resume: Path | None, start: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """The loop position to continue from: `start` for a fresh run, else the checkpoint's values of
    `start`'s keys. `plan` holds what must not have changed since the checkpoint (steps per epoch or
    per outer iteration, process count); a difference means the data or batch settings changed."""
    if resume is None:
        return dict(start)
    state = load_trainer_state(resume)
    if any(key not in state for key in (*plan, *start)):
        missing = sorted(key for key in (*plan, *start) if key not in state)
        raise ValueError(
            f"resume_from: the checkpoint was written by an older trainer (no {', '.join(missing)}) and "
            "cannot be continued by this one; start the run again"
        )
    saved = {key: state[key] for key in plan}
    if saved != plan:
        want = ", ".join(f"{key}={value}" for key, value in plan.items())
        got = ", ".join(f"{key}={value}" for key, value in saved.items())
        raise ValueError(
            f"resume_from: expected a checkpoint with {want}, got {got} (data or batch settings changed)"
        )
    return {key: state[key] for key in start}


@dataclass(frozen=True)
class Due:
    """What to do after an optimiser step."""

    log: bool
    evaluate: bool
    checkpoint: bool


def is_due(step: int, interval: int, end_of_period: bool) -> bool:
    """Every `interval` optimiser steps, or at the end of each period when interval is 0."""
    return step % interval == 0 if interval > 0 else end_of_period


def due(hp: Any, step: int, *, end_of_period: bool, last_step: bool) -> Due:
    """The one rule of every method, a period being an epoch (SFT) or an outer iteration (IRFT, RFT):
    log every logging_interval steps and at the end of each period; evaluate every eval_interval and
    checkpoint every checkpoint_interval steps, or at the end of each period when that interval is 0;
    all three after the last step."""
    return Due(
        log=is_due(step, hp.logging_interval, end_of_period) or end_of_period or last_step,
        evaluate=is_due(step, hp.eval_interval, end_of_period) or last_step,
        checkpoint=is_due(step, hp.checkpoint_interval, end_of_period) or last_step,
    )


STOPPED = "stopped"  # cancelled: stop, no checkpoint beyond those due
HELD = "held"  # handing over (worker shutdown): checkpoint the step just taken, then stop


def stop_request(sink: Sink, accelerator: Any) -> str | None:
    """None to go on, STOPPED or HELD. Asked after each step's log rows (so a stop after N logged
    steps ends at step N) and before the first step of each phase (a request that came during
    generation). The main process asks the sink; every process gets its answer, so all stop at the
    same step. A cancel outranks a hand-over: a cancelled job needs no checkpoint to resume from."""
    from accelerate.utils import broadcast

    code = 0
    if accelerator.is_main_process:
        code = 1 if sink.should_stop() else 2 if sink.should_hold() else 0
    flag = torch.tensor(code, device=accelerator.device)
    if accelerator.num_processes > 1:
        flag = broadcast(flag, from_process=0)
    return {0: None, 1: STOPPED, 2: HELD}[int(flag.item())]


def optimizer_step(
    accelerator: Any, model: Any, optimizer: Any, scheduler: Any, max_grad_norm: float
) -> tuple[float, float]:
    """Clip (0 = measure only), step the optimiser and the schedule, zero the gradients.

    Returns (gradient norm before clipping, the learning rate this step was taken with)."""
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm or float("inf"))
    if not math.isfinite(float(grad_norm)) and accelerator.mixed_precision != "fp16":
        # (fp16's scaler skips such a step and lowers its scale: a normal event there, not a failure)
        raise TrainingDivergedError(
            "hyperparameters",
            f"hyperparameters: the gradient norm was {float(grad_norm)} at this step, so training stopped "
            "before it overwrote the weights; lower learning_rate (or, for RFT, check the reward model's scores)",
        )
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: the step did not happen
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(grad_norm), float(lr)


@dataclass
class MetricAccumulator:
    """The meaning of a logged training metric, the same for every method: the MEAN over the optimiser
    steps since the last log row that gave it of each per-step value (train/loss, train/grad_norm,
    rewards/*, ...; a pair method's window that kept no pair gives no rewards/*),
    except train/lr, which is the rate of the last of those steps, and train/tokens_per_s, which is all
    input tokens of those steps over their summed wall time."""

    steps: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # steps that gave each value
    input_tokens: float = 0.0
    seconds: float = 0.0
    lr: float = 0.0

    def add(self, values: dict[str, float], *, lr: float, input_tokens: float, seconds: float) -> None:
        self.steps += 1
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
            self.counts[name] = self.counts.get(name, 0) + 1
        self.lr, self.input_tokens, self.seconds = (
            lr,
            self.input_tokens + input_tokens,
            self.seconds + seconds,
        )

    def pop(self) -> dict[str, float]:
        """The metrics of the steps since the last pop, and start over."""
        out = {name: total / self.counts[name] for name, total in self.sums.items()}
        out["train/lr"] = self.lr
        out["train/tokens_per_s"] = self.input_tokens / max(self.seconds, 1e-9)
        self.steps, self.sums, self.counts, self.input_tokens, self.seconds = 0, {}, {}, 0.0, 0.0
        return out


# Per-step values that, when (numerically) 0 for a whole period, mean the period trained nothing, and why.
STILL_SIGNALS = {
    "train/grad_norm": "the gradient was zero at every step, so the policy did not move",
    "advantages/std": (
        "every prompt's samples got equal rewards at every step (identical samples: is "
        "generation.temperature 0?), so every RLOO advantage was zero"
    ),
}


# "Zero" up to float noise: k token-identical samples scored in one padded batch can get rewards that
# differ in the 8th digit (different padding, different summation order), and so advantages and a
# gradient of ~1e-8. A real run's gradient norm and reward spread are many orders above this.
STILL_TOLERANCE = 1e-6


@dataclass
class MovementCheck:
    """Watches the per-step values of STILL_SIGNALS. A period (epoch or outer iteration) in which one
    was zero (at most STILL_TOLERANCE) at every step gets a warning event; a run in which the gradient
    was zero at every step fails with PolicyDidNotMoveError instead of reporting success."""

    period_max: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    moved: bool = False

    def add(self, values: dict[str, float]) -> None:
        self.steps += 1
        for name in STILL_SIGNALS:
            if name in values:
                self.period_max[name] = max(self.period_max.get(name, 0.0), abs(float(values[name])))
        self.moved = self.moved or abs(values.get("train/grad_norm", 0.0)) > STILL_TOLERANCE

    def end_period(self, report: Sink, label: str) -> None:
        for name, peak in self.period_max.items():
            if peak <= STILL_TOLERANCE:
                report.log_event(f"{label}: {STILL_SIGNALS[name]}", level="warning", data={"signal": name})
        self.period_max = {}

    def check_run(self) -> None:
        if self.steps and not self.moved:
            raise PolicyDidNotMoveError(
                "hyperparameters",
                f"hyperparameters: the policy did not move: the gradient was zero at all {self.steps} "
                "optimiser steps of this run, so nothing was trained",
            )


@dataclass
class CheckpointSelection:
    """select_checkpoint: "last" hands back the final checkpoint; "best_eval_loss" the one with the lowest
    eval/loss, the starting model (step 0) included. Its state travels in every checkpoint's
    trainer_state ("selection"), so a resumed run keeps the best it had seen."""

    mode: str  # "last" | "best_eval_loss"
    best_step: int | None = None
    best_loss: float | None = None
    last_step: int | None = None
    last_loss: float | None = None

    @property
    def active(self) -> bool:
        return self.mode == "best_eval_loss"

    def observe(self, step: int, metrics: dict[str, float]) -> bool:
        """Record an evaluation; True when it is the best so far (its step must then be checkpointed).
        Ties keep the earlier step: it is as good and trained less."""
        if not self.active or "eval/loss" not in metrics:
            return False
        loss = float(metrics["eval/loss"])
        self.last_step, self.last_loss = step, loss
        if self.best_loss is None or loss < self.best_loss:
            self.best_step, self.best_loss = step, loss
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_step": self.best_step,
            "best_loss": self.best_loss,
            "last_step": self.last_step,
            "last_loss": self.last_loss,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("best_step", "best_loss", "last_step", "last_loss"):
            setattr(self, key, state.get(key))


def validate(run: Run, model: Any, validation: Validation | None, step: int) -> tuple[dict[str, float], bool]:
    """Evaluate on the validation file (eval/loss and the rest, when it has demonstrations or pairs; the
    grader's eval/reward and the rest, when the job has one), report the metrics at `step`, and record
    them for select_checkpoint. Returns (the metrics, whether this step must be checkpointed as the best
    so far)."""
    metrics = (
        evaluate(model, run.tokenizer, validation, run.accelerator, run.hp.batch_size) if validation else {}
    )
    if run.graded is not None:
        metrics.update(graded_metrics(run, model))
    run.report.log_metrics(step, metrics)
    return metrics, run.selection.observe(step, metrics)


def save_start(
    run: Run,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    validation: Validation | None,
    trainer_state: dict[str, Any],
    extra: Callable[[Path], None] | None = None,
    *,
    with_optimizer: bool = True,
) -> Path | None:
    """With select_checkpoint "best_eval_loss", on a fresh run: evaluate the starting model and save it
    as the checkpoint of step 0 (`trainer_state` is the run's starting position), so that a run none of
    whose steps lowers eval/loss hands back where it started rather than something worse. Returns that
    checkpoint, or None when there is nothing to do."""
    if not run.selection.active or run.resume is not None or validation is None:
        return None
    metrics, _ = validate(run, model, validation, 0)
    state = {**trainer_state, "metrics": metrics}
    return save(run, model, optimizer, scheduler, state, extra, with_optimizer=with_optimizer)


def save(
    run: Run,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    trainer_state: dict[str, Any],
    extra: Callable[[Path], None] | None = None,
    *,
    with_optimizer: bool = True,
) -> Path:
    """Write the checkpoint of `trainer_state["global_step"]` on the main process (with `extra`'s method
    files), report it, and return its directory on every process.

    with_optimizer=False leaves out the optimiser and scheduler state, for checkpoints that no resume
    would continue that optimiser from: the run's last step, and an IRFT/DPO iteration's end (the next
    iteration builds a fresh one). AdamW's two moments are twice the fp32 weights, so this is most of
    the checkpoint's bytes, its hashing and its upload."""
    accelerator, step = run.accelerator, trainer_state["global_step"]
    trainer_state = {**trainer_state, "selection": run.selection.state_dict()}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_checkpoint(
            run.config.output_dir,
            step,
            model=accelerator.unwrap_model(model),
            tokenizer=run.tokenizer,
            config=run.config.to_dict(),
            trainer_state=trainer_state,
            optimizer=optimizer if with_optimizer else None,
            scheduler=scheduler if with_optimizer else None,
            dtype=run.save_dtype,
            extra=extra,
        )
        run.report.on_checkpoint(
            step, checkpoint_dir(run.config.output_dir, step), dict(trainer_state["metrics"])
        )
    accelerator.wait_for_everyone()
    return checkpoint_dir(run.config.output_dir, step)


def finish(
    run: Run,
    status: str,
    step: int,
    trained_tokens: int,
    final_checkpoint: Path | None,
    last_metrics: dict,
    score: Callable[[Run], Path] | None = None,
) -> RunResult:
    """Report how the run ended (completed, STOPPED or HELD) and return its result. A completed run of a
    reward-learning method scores its training demonstrations first (`score`, on the main process only:
    trainer/demonstration_scores.py)."""
    scores = (
        score(run)
        if score is not None and status == "completed" and run.accelerator.is_main_process
        else None
    )
    message = (
        f"Training held at step {step}: checkpointed there, to be resumed"
        if status == HELD
        else f"Training {status} at step {step}"
    )
    run.report.log_event(message, data={"global_step": step, "trained_tokens": trained_tokens})
    selected = _report_selection(run) if status == "completed" else None
    return RunResult(
        status=status,
        global_step=step,
        trained_tokens=trained_tokens,
        final_checkpoint=final_checkpoint,
        last_metrics=last_metrics,
        selected_step=selected,
        demonstration_scores=scores,
    )


def _report_selection(run: Run) -> int | None:
    """The step select_checkpoint hands back (None: the final checkpoint), and the event that says so."""
    sel = run.selection
    if not sel.active or sel.best_step is None:
        return None
    data = sel.state_dict()
    if sel.best_step == 0:
        run.report.log_event(
            f"No step lowered eval/loss below the starting model's ({sel.best_loss:.4f}; the last "
            f"evaluation, step {sel.last_step}: {sel.last_loss:.4f}), so the fine-tuned model is the "
            "starting model (the checkpoint of step 0): this run did not improve on held-out demonstrations",
            level="warning",
            data=data,
        )
    else:
        run.report.log_event(
            f"The fine-tuned model is the checkpoint of step {sel.best_step}, the lowest eval/loss "
            f"({sel.best_loss:.4f}; the last evaluation, step {sel.last_step}: {sel.last_loss:.4f})",
            data=data,
        )
    return sel.best_step
