"""Training on demonstrations with a loss per trained token: the loop SFT runs (methods/sft.py, the token-mean
NLL) and IQL runs (methods/iql.py, that NLL plus a TD regulariser on the same logits). A method gives a
`TokenObjective`: its loss on one pack's logits and the metrics its sums make; everything else is here,
once.

The loop (docs/methods.md §2.3):

1. Load the base model (with a fresh LoRA adapter when enabled) and its tokenizer; tokenise the
   training file (`data.py`: labels only on assistant / completion tokens).
2. Each epoch visits the examples in a permutation seeded by `seed + epoch`. A micro-batch is
   `batch_size` examples per process; `gradient_accumulation_steps` micro-batches make one optimiser
   step, so a step sees batch_size * gradient_accumulation_steps * num_processes examples.
3. Each micro-batch is packed padding-free (`packing.py`: the rows concatenated with per-row position
   ids, the LM head on the trained positions only) and its logits go to the objective's loss, whose
   divisor is the number of trained tokens in the window across all processes: TRL's
   `num_items_in_batch` reduction, a token-level mean (docs/methods.md §2.2, §6.5). A row is never
   split between two packs, so a loss that looks at a token's successor in its row sees it.
4. Clip the gradient norm to max_grad_norm, AdamW step, HF scheduler step (linear warmup of
   warmup_steps or ceil(warmup_ratio * total_steps) steps).
5. Between optimiser steps (`loop.due`): log every logging_interval steps and at the end of each
   epoch (means since the last log),
   evaluate on the validation file (`evaluation.py`: eval/loss, and eval/logp_gap on a preference
   file, as every method does), checkpoint, and poll `sink.should_stop()`.

Metrics every step: train/loss, train/token_accuracy, train/grad_norm (and the objective's own), with
`loop.MetricAccumulator`'s train/lr, train/tokens_per_s; train/epoch and train/tokens at each log row.

Choices and deviations:

- The rows are not regrouped by length, so the batch order is the seeded permutation.
- Weights train in float32; mixed precision (bf16 by default on CUDA) only autocasts the forward.
- Checkpoints store weights in the base model's dtype. A full fine-tune of a bf16 base that is
  resumed therefore restarts from bf16-rounded weights (optimiser state is exact); resume is exact
  for float32 bases and for LoRA, whose adapter is saved in float32.
- Multi-process runs use DDP through Accelerate; FSDP / DeepSpeed sharded checkpoints are not
  supported yet (the main process saves the full state dict).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer import loop
from trainer.callbacks import Sink
from trainer.checkpointing import load_optimizer_and_scheduler, load_rng_state
from trainer.config import GenerationSettings, TrainConfig
from trainer.data import TokenizedExample
from trainer.demonstrations import load_examples
from trainer.evaluation import load_validation
from trainer.losses import token_accuracy
from trainer.optim import build_optimizer, build_scheduler
from trainer.packing import PACK_TOKENS, PackedBatch, label_logits, pack
from trainer.result import RunResult
from trainer.runtime import epoch_order, local_examples, optimizer_windows
from trainer.spec import plan

# Preference validation prompts keep their last tokens as IRFT/RFT's do by default, so gaps compare.
PAIR_MAX_PROMPT_LEN = GenerationSettings().max_prompt_len


def no_metrics(sums: list[float], num_items: int) -> dict[str, float]:
    return {}


@dataclass(frozen=True)
class TokenObjective:
    """What a token-level method puts into the shared loop.

    method: its name in `spec/plan.py` (the step arithmetic).
    loss(logits, batch, num_items) -> (loss, sums): `logits` (L, V) at `batch`'s trained positions,
        `num_items` the trained tokens of the whole window on all processes (a 0-dim tensor); `loss` is
        this pack's share of the window's loss (with grad, so that the packs' losses add up to it), and
        `sums` a (k,) detached tensor of whatever the metrics need, the same k for every pack (the step
        adds them over packs and processes).
    metrics(sums, num_items) -> the step's own train/* values from the window's summed `sums`, besides
        train/loss, train/token_accuracy and train/grad_norm, which every objective logs.
    """

    method: str
    loss: Callable[[torch.Tensor, PackedBatch, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    metrics: Callable[[list[float], int], dict[str, float]] = no_metrics
    # (the run, at its end) -> the training demonstrations' scores file; None: not scored (SFT)
    score: Callable[[loop.Run], Path] | None = None


def train_tokens(config: TrainConfig, sink: Sink, objective: TokenObjective) -> RunResult:
    """Train `objective` as configured, reporting to `sink`; resume from `config.resume_from` when set."""
    run = loop.open_run(config, sink)
    hp, accelerator, report, tokenizer = run.hp, run.accelerator, run.report, run.tokenizer
    rank, world = accelerator.process_index, accelerator.num_processes

    train_set = load_examples(config.training_file, "training_file", tokenizer, hp.max_seq_len, report)
    validation = load_validation(
        config.validation_file, tokenizer, hp.max_seq_len, PAIR_MAX_PROMPT_LEN, report
    )

    # --- optimiser, schedule, resume ----------------------------------------------------------------
    per_epoch = plan.steps_per_epoch(len(train_set), hp.batch_size, hp.gradient_accumulation_steps, world)
    total_steps = plan.total_steps(objective.method, hp, len(train_set), world)
    optimizer = build_optimizer(run.model, hp)
    scheduler = build_scheduler(optimizer, hp, total_steps)
    position = loop.restore_position(
        run.resume,
        {"global_step": 0, "epoch": 0, "step_in_epoch": 0, "trained_tokens": 0},
        {"steps_per_epoch": per_epoch, "num_processes": world},
    )
    if run.resume is not None and position["global_step"] < total_steps:  # the last step's has none
        load_optimizer_and_scheduler(run.resume, optimizer, scheduler)
    model, optimizer = accelerator.prepare(run.model, optimizer)
    if run.resume is not None:
        load_rng_state(run.resume)  # last, so that nothing above draws from the restored streams
        report.log_event(f"Resumed from {run.resume} at step {position['global_step']}", data=dict(position))
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report.log_event(
        f"Training for {total_steps} steps ({per_epoch} per epoch), "
        f"{n_trainable} trainable parameters, mixed precision {accelerator.mixed_precision}",
        data={
            "total_steps": total_steps,
            "steps_per_epoch": per_epoch,
            "trainable_parameters": n_trainable,
            "num_processes": world,
        },
    )

    # --- loop ------------------------------------------------------------------------------------------
    def warn(message: str) -> None:
        report.log_event(message, level="warning")

    step, trained_tokens = position["global_step"], position["trained_tokens"]
    start = {
        **position,
        "batch_in_epoch": 0,
        "total_steps": total_steps,
        "steps_per_epoch": per_epoch,
        "num_processes": world,
    }
    last_checkpoint = loop.save_start(run, model, optimizer, scheduler, validation, start) or run.resume
    last_metrics: dict[str, float] = {}
    since_log, watch = loop.MetricAccumulator(), loop.MovementCheck()
    status = "completed"
    for epoch in range(position["epoch"], hp.n_epochs):
        windows = optimizer_windows(
            epoch_order(len(train_set), config.seed, epoch),
            hp.batch_size * world,
            hp.gradient_accumulation_steps,
        )
        first = position["step_in_epoch"] if epoch == position["epoch"] else 0
        for step_in_epoch in range(first, len(windows)):
            starting = epoch == position["epoch"] and step_in_epoch == first  # before the run's first step
            if starting and (stop := loop.stop_request(sink, accelerator)):
                status = stop
                break
            micro_batches = [local_examples(train_set, mb, rank, world) for mb in windows[step_in_epoch]]
            started = time.perf_counter()
            result = train_step(model, accelerator, micro_batches, warn, objective)
            grad_norm, lr = loop.optimizer_step(accelerator, model, optimizer, scheduler, hp.max_grad_norm)
            step += 1
            trained_tokens += result["num_items"]
            since_log.add(
                {
                    "train/loss": result["loss"],
                    "train/token_accuracy": result["correct"] / max(result["num_items"], 1),
                    "train/grad_norm": grad_norm,
                    **result["metrics"],
                },
                lr=lr,
                input_tokens=result["input_tokens"],
                seconds=time.perf_counter() - started,
            )
            watch.add({"train/grad_norm": grad_norm})
            end_of_epoch = step_in_epoch == len(windows) - 1
            if end_of_epoch:
                watch.end_period(report, f"Epoch {epoch + 1}/{hp.n_epochs}")
            now = loop.due(hp, step, end_of_period=end_of_epoch, last_step=step == total_steps)
            if now.log:
                last_metrics = since_log.pop()
                last_metrics["train/epoch"] = epoch + (step_in_epoch + 1) / len(windows)
                last_metrics["train/tokens"] = float(trained_tokens)
                report.log_metrics(step, last_metrics)
            stop = loop.stop_request(sink, accelerator)
            best = False
            if (validation or run.graded) and now.evaluate:
                eval_metrics, best = loop.validate(run, model, validation, step)
                last_metrics = {**last_metrics, **eval_metrics}
            if now.checkpoint or stop == loop.HELD or best:
                # Where a resumed run continues: the next epoch, or the next window of this one.
                done_in_epoch = 0 if end_of_epoch else step_in_epoch + 1
                trainer_state = {
                    "global_step": step,
                    "epoch": epoch + 1 if end_of_epoch else epoch,
                    "step_in_epoch": done_in_epoch,
                    "batch_in_epoch": done_in_epoch * hp.gradient_accumulation_steps,  # micro-batches
                    "trained_tokens": trained_tokens,
                    "total_steps": total_steps,
                    "steps_per_epoch": per_epoch,
                    "num_processes": world,
                    "metrics": last_metrics,
                }
                last_checkpoint = loop.save(
                    run, model, optimizer, scheduler, trainer_state, with_optimizer=step < total_steps
                )
            if stop:
                status = stop
                break
        if status != "completed":
            break

    if status == "completed":
        watch.check_run()
    return loop.finish(run, status, step, trained_tokens, last_checkpoint, last_metrics, objective.score)


def train_step(
    model, accelerator, window: list[list[TokenizedExample]], warn, objective: TokenObjective
) -> dict[str, Any]:
    """Forward and backward over a window of micro-batches, each packed padding-free into one or more
    forwards (packing.py). Returns global (all-process) sums: loss, correct, num_items, input_tokens,
    and the objective's metrics of them."""
    model.train()
    device = accelerator.device
    limit = PACK_TOKENS if accelerator.num_processes == 1 else None  # see packing.py on DDP
    packs = [batch.to(device) for rows in window for _, batch in pack(rows, limit)]
    local_items = sum(batch.n_targets for batch in packs)
    # The divisor is the trained-token count of the whole window on all processes (docs/methods.md §2.2).
    num_items = accelerator.reduce(torch.tensor(local_items, device=device), reduction="sum")
    sums: torch.Tensor | None = None  # loss, correct predictions, input tokens, the objective's sums
    for k, batch in enumerate(packs):
        # Gradients are all-reduced only on the window's last forward.
        sync = nullcontext() if k == len(packs) - 1 else accelerator.no_sync(model)
        with sync:
            logits = label_logits(model, batch, warn)  # (L, V), the trained positions only
            loss, extra = objective.loss(logits, batch, num_items)
            # DDP averages gradients over processes; scaling by their number leaves the global token mean.
            accelerator.backward(loss * accelerator.num_processes)
        pack_sums = torch.cat(
            [
                torch.stack(
                    [
                        loss.detach(),
                        token_accuracy(logits.detach(), batch.targets) * batch.n_targets,
                        torch.tensor(float(batch.n_tokens), device=device),
                    ]
                ),
                extra.to(device=device, dtype=loss.dtype),
            ]
        )
        sums = pack_sums if sums is None else sums + pack_sums
    assert sums is not None  # pack() refuses an empty micro-batch
    loss_sum, correct, input_tokens, *extra_sums = accelerator.reduce(sums, reduction="sum").tolist()
    return {
        "loss": loss_sum,
        "correct": correct,
        "num_items": int(num_items),
        "input_tokens": input_tokens,
        "metrics": objective.metrics(extra_sums, int(num_items)),
    }
