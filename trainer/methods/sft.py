"""Supervised fine-tuning: token-level NLL on the trained response tokens (methods.md §2).

The algorithm as shipped:

1. Load the base model (with a fresh LoRA adapter when enabled) and its tokenizer; tokenise the
   training file (`data.py`: labels only on assistant / completion tokens).
2. Each epoch visits the examples in a permutation seeded by `seed + epoch`. A micro-batch is
   `batch_size` examples per process; `gradient_accumulation_steps` micro-batches make one optimiser
   step, so a step sees batch_size * gradient_accumulation_steps * num_processes examples.
3. Loss = sum of token NLL over the window / number of trained tokens in the window across all
   processes: TRL's `num_items_in_batch` reduction, a token-level mean (methods.md §2.2, case E).
4. Clip the gradient norm to max_grad_norm, AdamW step, HF scheduler step (linear warmup of
   warmup_steps or ceil(warmup_ratio * total_steps) steps).
5. Between optimiser steps: log every logging_interval steps, evaluate on the validation file
   (eval/loss; a preference file also gives IRFT/RFT's eval/logp_gap, so runs compare on one metric),
   checkpoint, and poll `sink.should_stop()`.

Choices and deviations:

- No packing; right padding; examples longer than max_seq_len keep their start.
- Weights train in float32; mixed precision (bf16 by default on CUDA) only autocasts the forward.
- Checkpoints store weights in the base model's dtype. A full fine-tune of a bf16 base that is
  resumed therefore restarts from bf16-rounded weights (optimiser state is exact); resume is exact
  for float32 bases and for LoRA, whose adapter is saved in float32.
- Multi-process runs use DDP through Accelerate; FSDP / DeepSpeed sharded checkpoints are not
  supported yet (the main process saves the full state dict).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from trainer.callbacks import NullSink, Sink
from trainer.checkpointing import (
    checkpoint_dir,
    load_optimizer_and_scheduler,
    load_rng_state,
    load_trainer_state,
    save_checkpoint,
    verify_checkpoint,
)
from trainer.collators import CompletionCollator
from trainer.config import GenerationSettings, TrainConfig
from trainer.data import (
    IGNORE_INDEX,
    DataStats,
    TokenizedExample,
    ensure_chat_template,
    load_sft_dataset,
    read_jsonl,
)
from trainer.errors import DataError, ModelLoadError
from trainer.evaluation import is_preference_rows, logp_gap, preference_triples
from trainer.logprobs import per_token_logps
from trainer.losses import sft_nll, token_accuracy
from trainer.modeling import base_dtype, load_model_and_tokenizer
from trainer.optim import build_optimizer, build_scheduler, steps_per_epoch
from trainer.result import RunResult
from trainer.runtime import epoch_order, local_examples, make_accelerator, optimizer_windows


def _load_dataset(
    path: str, param: str, tokenizer: Any, max_seq_len: int
) -> tuple[list[TokenizedExample], DataStats]:
    try:
        return load_sft_dataset(path, tokenizer, max_seq_len)
    except ValueError as exc:  # the message carries the line number
        raise DataError(param, f"{param}: {exc}") from exc


# Prompts of preference pairs keep their last tokens as IRFT/RFT's do by default, so the gap is comparable.
PAIR_MAX_PROMPT_LEN = GenerationSettings().max_prompt_len


def load_preference_pairs(path: str, tokenizer: Any, max_seq_len: int, max_prompt_len: int) -> list | None:
    """(prompt, chosen, rejected) token ids of a preference validation file, for eval/logp_gap; None for a
    demonstration file. Every method uses it, so SFT runs compare with IRFT and RFT runs on that metric."""
    rows = [row for _, row in read_jsonl(path)]
    if not is_preference_rows(rows):
        return None
    ensure_chat_template(tokenizer)
    try:
        return preference_triples(tokenizer, rows, max_seq_len, max_prompt_len)
    except ValueError as exc:
        raise DataError("validation_file", f"validation_file: {exc}") from exc


def train(config: TrainConfig, sink: Sink) -> RunResult:
    """Run SFT as configured, reporting to `sink`; resume from `config.resume_from` when set."""
    from accelerate.utils import broadcast, set_seed

    hp = config.hyperparameters
    accelerator = make_accelerator(config)
    rank, world = accelerator.process_index, accelerator.num_processes
    report: Sink = sink if accelerator.is_main_process else NullSink()  # only rank 0 talks
    set_seed(config.seed)

    # --- model and data ---------------------------------------------------------------------------
    resume = Path(config.resume_from) if config.resume_from else None
    if resume is not None and not verify_checkpoint(resume):
        raise ValueError(f"resume_from: expected a complete checkpoint directory, got {str(resume)!r}")
    try:
        if resume is not None and config.hyperparameters.lora.enabled:
            model, tokenizer = load_model_and_tokenizer(config.model, adapter_dir=resume / "adapter")
        elif resume is not None:
            model, tokenizer = load_model_and_tokenizer(resume / "model")
        else:
            model, tokenizer = load_model_and_tokenizer(config.model, lora=hp.lora)
    except (OSError, ValueError) as exc:  # missing files, no hub access, unknown architecture
        raise ModelLoadError("model", f"cannot load model {config.model!r}: {exc}") from exc
    save_dtype = base_dtype(config.model)

    train_set, stats = _load_dataset(config.training_file, "training_file", tokenizer, hp.max_seq_len)
    _report_data(report, "training", stats)
    if not train_set:
        raise ValueError("training_file: expected at least one example with a trained token, got none")
    eval_set: list[TokenizedExample] = []
    eval_pairs = None
    if config.validation_file:
        eval_set, eval_stats = _load_dataset(
            config.validation_file, "validation_file", tokenizer, hp.max_seq_len
        )
        _report_data(report, "validation", eval_stats)
        eval_pairs = load_preference_pairs(
            config.validation_file, tokenizer, hp.max_seq_len, PAIR_MAX_PROMPT_LEN
        )

    # --- optimiser, schedule, resume ----------------------------------------------------------------
    per_epoch = steps_per_epoch(len(train_set), hp.batch_size, hp.gradient_accumulation_steps, world)
    total_steps = per_epoch * hp.n_epochs
    model.to(accelerator.device)
    optimizer = build_optimizer(model, hp)
    scheduler = build_scheduler(optimizer, hp, total_steps)
    position = {"global_step": 0, "epoch": 0, "step_in_epoch": 0, "trained_tokens": 0}
    if resume is not None:
        state = load_trainer_state(resume)
        if (state["steps_per_epoch"], state["num_processes"]) != (per_epoch, world):
            raise ValueError(
                f"resume_from: expected a checkpoint with {per_epoch} steps per epoch on {world} processes, "
                f"got {state['steps_per_epoch']} on {state['num_processes']} "
                "(data or batch settings changed)"
            )
        position = {key: state[key] for key in position}
        load_optimizer_and_scheduler(resume, optimizer, scheduler)
    model, optimizer = accelerator.prepare(model, optimizer)
    if resume is not None:
        load_rng_state(resume)  # last, so that nothing above draws from the restored streams
        report.log_event(f"Resumed from {resume} at step {position['global_step']}", data=dict(position))
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
    collate = CompletionCollator(pad_token_id=tokenizer.pad_token_id)
    step, trained_tokens = position["global_step"], position["trained_tokens"]
    last_checkpoint, last_metrics = resume, {}
    since_log = _Accumulator()
    status = "completed"
    for epoch in range(position["epoch"], hp.n_epochs):
        windows = optimizer_windows(
            epoch_order(len(train_set), config.seed, epoch),
            hp.batch_size * world,
            hp.gradient_accumulation_steps,
        )
        first = position["step_in_epoch"] if epoch == position["epoch"] else 0
        for step_in_epoch in range(first, len(windows)):
            stop = torch.tensor(
                int(sink.should_stop()) if accelerator.is_main_process else 0, device=accelerator.device
            )
            if world > 1:
                stop = broadcast(stop, from_process=0)
            if stop.item():
                status = "stopped"
                break

            batches = [collate(local_examples(train_set, mb, rank, world)) for mb in windows[step_in_epoch]]
            result = _train_step(model, optimizer, scheduler, accelerator, batches, hp.max_grad_norm)
            step += 1
            trained_tokens += result["num_items"]
            since_log.add(result)
            end_of_epoch = step_in_epoch == len(windows) - 1
            last_step = step == total_steps

            if step % hp.logging_interval == 0 or last_step:
                last_metrics = since_log.metrics(result)
                last_metrics.update(
                    {
                        "train/epoch": epoch + (step_in_epoch + 1) / len(windows),
                        "train/tokens": float(trained_tokens),
                    }
                )
                report.log_metrics(step, last_metrics)
                since_log = _Accumulator()
            if eval_set and (_due(step, hp.eval_interval, end_of_epoch) or last_step):
                eval_metrics = evaluate(model, eval_set, collate, accelerator, hp.batch_size)
                if eval_pairs:
                    eval_metrics.update(
                        logp_gap(
                            accelerator.unwrap_model(model),
                            tokenizer,
                            [],
                            triples=eval_pairs,
                            max_seq_len=hp.max_seq_len,
                            max_prompt_len=PAIR_MAX_PROMPT_LEN,
                            batch_size=hp.batch_size,
                        )
                    )
                last_metrics = {**last_metrics, **eval_metrics}
                report.log_metrics(step, eval_metrics)
            if _due(step, hp.checkpoint_interval, end_of_epoch) or last_step:
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
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    save_checkpoint(
                        config.output_dir,
                        step,
                        model=accelerator.unwrap_model(model),
                        tokenizer=tokenizer,
                        config=config.to_dict(),
                        trainer_state=trainer_state,
                        optimizer=optimizer,
                        scheduler=scheduler,
                        dtype=save_dtype,
                    )
                    report.on_checkpoint(step, checkpoint_dir(config.output_dir, step), dict(last_metrics))
                accelerator.wait_for_everyone()
                last_checkpoint = checkpoint_dir(config.output_dir, step)  # on every process
        if status == "stopped":
            break

    report.log_event(
        f"Training {status} at step {step}", data={"global_step": step, "trained_tokens": trained_tokens}
    )
    return RunResult(
        status=status,
        global_step=step,
        trained_tokens=trained_tokens,
        final_checkpoint=last_checkpoint,
        last_metrics=last_metrics,
    )


def _train_step(
    model, optimizer, scheduler, accelerator, batches: list[dict[str, torch.Tensor]], max_grad_norm: float
) -> dict[str, Any]:
    """One optimiser step over a window of micro-batches. Returns global (all-process) sums."""
    model.train()
    device = accelerator.device
    local_items = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
    # The divisor is the trained-token count of the whole window on all processes (methods.md §2.2).
    num_items = accelerator.reduce(torch.tensor(local_items, device=device), reduction="sum")
    sums = torch.zeros(3, device=device)  # loss, correct predictions, non-padding input tokens
    started = time.perf_counter()
    for k, batch in enumerate(batches):
        batch = {key: value.to(device) for key, value in batch.items()}
        # Gradients are all-reduced only on the window's last micro-batch.
        sync = nullcontext() if k == len(batches) - 1 else accelerator.no_sync(model)
        with sync:
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
            ).logits  # (B, T, V)
            logps, mask = per_token_logps(logits, batch["labels"])  # (B, T-1), (B, T-1)
            loss = sft_nll(logps, mask, num_items)
            # DDP averages gradients over processes; scaling by their number leaves the global token mean.
            accelerator.backward(loss * accelerator.num_processes)
        n_tokens = mask.sum()
        sums += torch.stack(
            [
                loss.detach(),
                token_accuracy(logits.detach(), batch["labels"]) * n_tokens,
                batch["attention_mask"].sum().float(),
            ]
        )
    # clip_grad_norm_ returns the norm before clipping; inf means "measure, don't clip".
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm or float("inf"))
    lr = scheduler.get_last_lr()[0]  # the rate this step is taken with
    optimizer.step()
    if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: the step did not happen
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    loss_sum, correct, input_tokens = accelerator.reduce(sums, reduction="sum").tolist()
    return {
        "loss": loss_sum,
        "correct": correct,
        "num_items": int(num_items),
        "input_tokens": input_tokens,
        "grad_norm": float(grad_norm),
        "lr": lr,
        "seconds": time.perf_counter() - started,
    }


@torch.no_grad()
def evaluate(
    model, examples: list[TokenizedExample], collate: CompletionCollator, accelerator, batch_size: int
) -> dict[str, float]:
    """Token-mean NLL and token accuracy over `examples`, sharded over processes."""
    net = accelerator.unwrap_model(model)  # no DDP hooks: processes may run different batch counts
    net.eval()
    shard = examples[accelerator.process_index :: accelerator.num_processes]
    sums = torch.zeros(3, device=accelerator.device)  # summed NLL, trained tokens, correct predictions
    for i in range(0, len(shard), batch_size):
        batch = {k: v.to(accelerator.device) for k, v in collate(shard[i : i + batch_size]).items()}
        logits = net(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).logits  # (B, T, V)
        logps, mask = per_token_logps(logits, batch["labels"])  # (B, T-1)
        n_tokens = mask.sum()
        accuracy = token_accuracy(logits, batch["labels"])
        sums += torch.stack([-logps.sum(), n_tokens.float(), accuracy * n_tokens])
    nll, n_tokens, correct = accelerator.reduce(sums, reduction="sum").tolist()
    net.train()
    n_tokens = max(n_tokens, 1.0)
    return {"eval/loss": nll / n_tokens, "eval/token_accuracy": correct / n_tokens}


class _Accumulator:
    """Sums over the optimiser steps since the last log line."""

    def __init__(self) -> None:
        self.steps = 0
        self.loss = self.correct = self.items = self.input_tokens = self.seconds = 0.0

    def add(self, r: dict[str, Any]) -> None:
        self.steps += 1
        self.loss += r["loss"]
        self.correct += r["correct"]
        self.items += r["num_items"]
        self.input_tokens += r["input_tokens"]
        self.seconds += r["seconds"]

    def metrics(self, last: dict[str, Any]) -> dict[str, float]:
        return {
            "train/loss": self.loss / max(self.steps, 1),
            "train/lr": float(last["lr"]),
            "train/grad_norm": float(last["grad_norm"]),
            "train/tokens_per_s": self.input_tokens / max(self.seconds, 1e-9),
            "train/token_accuracy": self.correct / max(self.items, 1.0),
        }


def _due(step: int, interval: int, end_of_epoch: bool) -> bool:
    """Every `interval` optimiser steps, or at the end of each epoch when interval is 0."""
    return step % interval == 0 if interval > 0 else end_of_epoch


def _report_data(report: Sink, name: str, stats: DataStats) -> None:
    if stats.used_default_chat_template:
        report.log_event("The tokenizer has no chat template; using the ChatML default", level="warning")
    report.log_event(
        f"Loaded {stats.n_examples} {name} examples from {stats.n_rows} rows "
        f"({stats.n_truncated} truncated, {stats.n_dropped} dropped with no trained token)",
        level="warning" if stats.n_dropped else "info",
        data={
            "split": name,
            "rows": stats.n_rows,
            "examples": stats.n_examples,
            "truncated": stats.n_truncated,
            "dropped": stats.n_dropped,
            "trained_tokens_per_epoch": stats.n_trained_tokens,
            "formats": stats.formats,
        },
    )
