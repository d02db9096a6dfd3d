"""IRFT, Algorithm 2 of Li et al. 2024 (methods.md §4); SPIN is outer_iterations = 1 (§5).

The algorithm as shipped, with T = outer_iterations:

    for t in 0 .. T-1:
        examples_t <- stagewise: slice t of a permutation of the data seeded by `seed` (T disjoint
                      slices of sizes differing by at most one, covering the data);
                      full: every example (multi-iteration SPIN)
        y~ <- one continuation per prompt of examples_t by the current policy (`generation.py`;
              greedy by default, seed = seed + t)
        pi_ref <- the current policy: log pi_ref(y|x) and log pi_ref(y~|x) are computed ONCE here,
              under no_grad in eval mode, and cached with the examples (no second model is kept)
        K_t optimiser steps of irft_loss (§4.1) against the cached reference log-probs:
              n_epochs passes over examples_t, each in a permutation seeded by (seed, t, epoch);
              batch_size pairs per micro-batch, gradient_accumulation_steps micro-batches a step.
              K_t = ceil(ceil(|examples_t| / batch_size) / gradient_accumulation_steps) * n_epochs,
              i.e. ceil(|examples_t| / (batch_size * gradient_accumulation_steps)) * n_epochs.

Each micro-batch is one concatenated forward of 2B rows [real; generated] (`pairs.PairCollator`); the
window's loss is the mean over its pairs. AdamW and the HF schedule are as in SFT (`optim.py`), but a
FRESH optimiser and LR schedule (warmup included) are built for every outer iteration, as the reference
code does by launching one Trainer per stage (a saw-tooth LR, §4.4 and §12.1.9).

Choices and deviations:

- Prompt/response: the response is the last assistant turn (`pairs.py`); the reference uses the first
  turn, and generates from a different prompt format than it trains with (§12.1.7); we generate from
  exactly the prompt we train with. No extra EOS is appended to responses (§12.1.13).
- With LoRA, pi_ref is the cached log-probs of the current adapter model, not the adapter-disabled
  base: pi_ref is the previous iteration's model. Adapters are not merged between iterations.
- The policy's forward runs in train mode (dropout as configured, e.g. LoRA dropout); pi_ref's in
  eval mode. The reference disables all dropout; with dropout 0 the two coincide.
- Single process only (a multi-process run is refused); generation is not sharded yet.
- train/epoch counts passes over the CURRENT iteration's examples (it restarts at 0 each iteration).

Metrics (exact names), logged every logging_interval optimiser steps and at the end of each
iteration, as means over the steps since the last log line:

    train/loss, train/lr, train/grad_norm, train/tokens_per_s (non-padding input tokens of both rows),
    train/epoch (passes over the current iteration's examples), train/tokens (cumulative response
    tokens scored, real + generated), train/outer_iteration (1-based),
    rewards/real, rewards/generated (beta * log pi / pi_ref), rewards/margin, rewards/accuracy
    (fraction real > generated), logps/real, logps/generated (summed policy log-probs),
    train/generation_length (mean generated response tokens), train/kl (mean of
    log pi(y~) - log pi_ref(y~) on the generated responses: a one-sample estimate of KL(pi || pi_ref)).

Evaluation (every eval_interval optimiser steps; 0 = end of each outer iteration; always at the last
step): a preference validation file gives eval/logp_gap and eval/logp_gap_accuracy
(`evaluation.logp_gap`), a demonstration file eval/loss (token-mean NLL, as SFT). Each iteration also
logs the event "Outer iteration t/T: generated N continuations" with three samples in its data.

Mixed precision autocasts the forward passes (Accelerate); fp16 runs without a loss scaler.

Resume: a checkpoint's trainer_state.json holds the outer iteration, the optimiser steps done in it
(and so the epoch and window), the global step and token count; mid-iteration checkpoints also hold
state/irft_cache.pt (the iteration's example indices, generated responses and reference log-probs,
plain tensors and lists, loaded with weights_only=True), so a resumed run continues the iteration
without regenerating. The optimiser and scheduler state are those of the current iteration.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from trainer.callbacks import NullSink, Sink
from trainer.checkpointing import (
    load_optimizer_and_scheduler,
    load_rng_state,
    load_trainer_state,
    save_checkpoint,
    verify_checkpoint,
)
from trainer.config import TrainConfig
from trainer.data import ensure_chat_template, read_jsonl
from trainer.errors import DataError, ModelLoadError
from trainer.generation import generate_responses
from trainer.logprobs import per_token_logps, sequence_logps
from trainer.losses import implicit_rewards, irft_loss
from trainer.methods.validation import evaluate_validation, load_validation
from trainer.modeling import base_dtype, load_model_and_tokenizer
from trainer.optim import build_optimizer, build_scheduler, steps_per_epoch
from trainer.pairs import PairCollator, prompt_and_response, truncate_pair
from trainer.result import RunResult
from trainer.runtime import epoch_order, make_accelerator, optimizer_windows

CACHE_FILE = "irft_cache.pt"  # under state/ in mid-iteration checkpoints


def iteration_indices(n: int, t: int, hp, seed: int) -> list[int]:
    """The example indices outer iteration t trains on (stagewise slice t of a seeded order, or all)."""
    if hp.schedule == "full":
        return list(range(n))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    T = hp.outer_iterations
    return order[t * n // T : (t + 1) * n // T]


def iteration_steps(n_t: int, hp) -> int:
    """K: optimiser steps of an outer iteration with n_t examples."""
    return steps_per_epoch(n_t, hp.batch_size, hp.gradient_accumulation_steps) * hp.n_epochs


def train(config: TrainConfig, sink: Sink) -> RunResult:
    """Run IRFT as configured, reporting to `sink`; resume from `config.resume_from` when set."""
    from accelerate.utils import set_seed

    hp = config.hyperparameters
    accelerator = make_accelerator(config)
    if accelerator.num_processes > 1:
        raise ValueError(
            f"method: irft runs on a single process for now, got {accelerator.num_processes} processes"
        )
    report: Sink = sink if accelerator.is_main_process else NullSink()
    set_seed(config.seed)

    # --- model and data ---------------------------------------------------------------------------
    resume = Path(config.resume_from) if config.resume_from else None
    if resume is not None and not verify_checkpoint(resume):
        raise ValueError(f"resume_from: expected a complete checkpoint directory, got {str(resume)!r}")
    try:
        if resume is not None and hp.lora.enabled:
            model, tokenizer = load_model_and_tokenizer(config.model, adapter_dir=resume / "adapter")
        elif resume is not None:
            model, tokenizer = load_model_and_tokenizer(resume / "model")
        else:
            model, tokenizer = load_model_and_tokenizer(config.model, lora=hp.lora)
    except (OSError, ValueError) as exc:
        raise ModelLoadError("model", f"cannot load model {config.model!r}: {exc}") from exc
    save_dtype = base_dtype(config.model)
    device = accelerator.device
    model.to(device)
    model = accelerator.prepare_model(model)  # single process: the same module, autocast when mixed precision

    examples = _load_pairs(config.training_file, tokenizer, hp)
    report.log_event(
        f"Loaded {len(examples)} training prompts with demonstrations",
        data={"split": "training", "examples": len(examples)},
    )
    T = hp.outer_iterations
    if hp.schedule == "stagewise" and len(examples) < T:
        raise ValueError(
            f"hyperparameters.outer_iterations: expected at most {len(examples)} (one example "
            f"per stagewise slice), got {T}"
        )
    validation = load_validation(config.validation_file, tokenizer, hp, report)
    slices = [iteration_indices(len(examples), t, hp, config.seed) for t in range(T)]
    steps = [iteration_steps(len(s), hp) for s in slices]
    total_steps = sum(steps)

    position = {"global_step": 0, "outer_iteration": 0, "step_in_iteration": 0, "trained_tokens": 0}
    cache = None
    if resume is not None:
        state = load_trainer_state(resume)
        if state.get("iteration_steps") != steps:
            raise ValueError(
                f"resume_from: expected a checkpoint with {steps} steps per outer iteration, got "
                f"{state.get('iteration_steps')} (data or batch settings changed)"
            )
        position = {key: state[key] for key in position}
        if position["step_in_iteration"] > 0:
            cache = torch.load(resume / "state" / CACHE_FILE, map_location="cpu", weights_only=True)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report.log_event(
        f"Training for {total_steps} steps in {T} outer iterations (K = {steps}), "
        f"{n_trainable} trainable parameters, mixed precision {accelerator.mixed_precision}",
        data={"total_steps": total_steps, "iteration_steps": steps, "trainable_parameters": n_trainable},
    )

    # --- loop --------------------------------------------------------------------------------------
    collate = PairCollator(pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    step, trained_tokens = position["global_step"], position["trained_tokens"]
    last_checkpoint, last_metrics, status = resume, {}, "completed"
    resumed_rng = resume is not None
    for t in range(position["outer_iteration"], T):
        first = position["step_in_iteration"] if t == position["outer_iteration"] else 0
        if cache is None or cache["iteration"] != t:
            cache = _generate_and_score(
                model, tokenizer, examples, slices[t], hp, collate, device, seed=config.seed + t, iteration=t
            )
            _report_generations(report, tokenizer, examples, cache, t, T)
        optimizer = build_optimizer(model, hp)
        scheduler = build_scheduler(optimizer, hp, steps[t])
        if first > 0:
            load_optimizer_and_scheduler(resume, optimizer, scheduler)
        if resumed_rng:
            load_rng_state(resume)  # after generation/scoring: nothing above draws from the restored streams
            report.log_event(f"Resumed from {resume} at step {step}", data=dict(position))
            resumed_rng = False
        n_t = len(cache["indices"])
        per_epoch = steps[t] // hp.n_epochs
        since_log = _Accumulator()
        for k in range(first, steps[t]):
            if sink.should_stop():
                status = "stopped"
                break
            epoch, in_epoch = divmod(k, per_epoch)
            order = epoch_order(n_t, config.seed + 1000 * t, epoch)
            window = optimizer_windows(order, hp.batch_size, hp.gradient_accumulation_steps)[in_epoch]
            result = _train_step(model, optimizer, scheduler, window, examples, cache, collate, hp, device)
            step += 1
            trained_tokens += result["trained_tokens"]
            since_log.add(result)
            end_of_iteration = k == steps[t] - 1
            if step % hp.logging_interval == 0 or end_of_iteration:
                last_metrics = since_log.metrics(result)
                last_metrics.update(
                    {
                        "train/epoch": epoch + (in_epoch + 1) / per_epoch,
                        "train/tokens": float(trained_tokens),
                        "train/outer_iteration": float(t + 1),
                    }
                )
                report.log_metrics(step, last_metrics)
                since_log = _Accumulator()
            eval_due = (step % hp.eval_interval == 0) if hp.eval_interval else end_of_iteration
            if validation and (eval_due or step == total_steps):
                eval_metrics = evaluate_validation(model, tokenizer, validation, hp, accelerator)
                last_metrics = {**last_metrics, **eval_metrics}
                report.log_metrics(step, eval_metrics)
            due = (step % hp.checkpoint_interval == 0) if hp.checkpoint_interval else end_of_iteration
            if due or step == total_steps:
                done = (
                    {"outer_iteration": t + 1, "step_in_iteration": 0}
                    if end_of_iteration
                    else {"outer_iteration": t, "step_in_iteration": k + 1}
                )
                next_epoch, next_in_epoch = divmod(k + 1, per_epoch)  # where the iteration continues
                trainer_state = {
                    "global_step": step,
                    **done,
                    "epoch": next_epoch,
                    "step_in_epoch": next_in_epoch,
                    "trained_tokens": trained_tokens,
                    "total_steps": total_steps,
                    "iteration_steps": steps,
                    "num_processes": 1,
                    "metrics": last_metrics,
                }
                last_checkpoint = _checkpoint(
                    config,
                    accelerator.unwrap_model(model),
                    tokenizer,
                    optimizer,
                    scheduler,
                    trainer_state,
                    None if end_of_iteration else cache,
                    save_dtype,
                )
                report.on_checkpoint(step, last_checkpoint, dict(last_metrics))
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


def _load_pairs(path: str, tokenizer, hp) -> list[tuple[list[int], list[int]]]:
    """(prompt, real response) per row, truncated (methods.md §1.3)."""
    try:
        rows = read_jsonl(path)
        if any("prompt" not in r or "completion" not in r for _, r in rows):
            ensure_chat_template(tokenizer)
        out = []
        for lineno, row in rows:
            try:
                prompt, response = prompt_and_response(tokenizer, row)
            except ValueError as exc:
                raise ValueError(f"{path}: line {lineno}: {exc}") from None
            prompt, (response,) = truncate_pair(
                prompt, [response], hp.max_seq_len, hp.generation.max_prompt_len
            )
            out.append((prompt, response))
    except ValueError as exc:
        raise DataError("training_file", f"training_file: {exc}") from exc
    if not out:
        raise DataError("training_file", "training_file: expected at least one example, got none")
    return out


@torch.no_grad()
def _pair_logps(model, triples, collate, device) -> tuple[torch.Tensor, torch.Tensor, dict]:
    batch = {k: v.to(device) for k, v in collate(triples).items()}
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).logits  # (2B, T, V)
    real, gen = sequence_logps(*per_token_logps(logits, batch["labels"])).chunk(2)  # (B,), (B,)
    return real, gen, batch


def _generate_and_score(model, tokenizer, examples, indices, hp, collate, device, *, seed, iteration):
    """Generate one continuation per prompt and cache log pi_ref of real and generated (pi_ref = now)."""
    prompts = [examples[i][0] for i in indices]
    generated = generate_responses(model, tokenizer, prompts, hp.generation, seed=seed)
    generated = [g[: hp.max_seq_len - len(p)] for p, g in zip(prompts, generated, strict=True)]
    was_training = model.training
    model.eval()
    ref_real, ref_gen = [], []
    for start in range(0, len(indices), hp.batch_size):
        chunk = range(start, min(start + hp.batch_size, len(indices)))
        real, gen, _ = _pair_logps(
            model, [(*examples[indices[j]], generated[j]) for j in chunk], collate, device
        )
        ref_real.append(real.float().cpu())
        ref_gen.append(gen.float().cpu())
    model.train(was_training)
    return {
        "iteration": iteration,
        "indices": list(indices),
        "generated": generated,
        "ref_real": torch.cat(ref_real),
        "ref_gen": torch.cat(ref_gen),
    }


def _report_generations(report, tokenizer, examples, cache, t, T) -> None:
    samples = [
        {"prompt": tokenizer.decode(examples[i][0]), "generated": tokenizer.decode(g)}
        for i, g in list(zip(cache["indices"], cache["generated"], strict=True))[:3]
    ]
    lengths = [len(g) for g in cache["generated"]]
    report.log_event(
        f"Outer iteration {t + 1}/{T}: generated {len(lengths)} continuations",
        data={
            "outer_iteration": t + 1,
            "samples": samples,
            "mean_generation_length": sum(lengths) / max(len(lengths), 1),
        },
    )


def _train_step(model, optimizer, scheduler, window, examples, cache, collate, hp, device) -> dict[str, Any]:
    """One optimiser step over a window of micro-batches (positions into the iteration's cache)."""
    model.train()
    n_pairs = sum(len(mb) for mb in window)
    sums = torch.zeros(9)  # loss, r_real, r_gen, accuracy, logp_real, logp_gen, gen_len, kl, input tokens
    trained = 0
    started = time.perf_counter()
    for mb in window:
        triples = [(*examples[cache["indices"][j]], cache["generated"][j]) for j in mb]
        batch = {k: v.to(device) for k, v in collate(triples).items()}
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).logits  # (2B, T, V)
        per_token, mask = per_token_logps(logits, batch["labels"])  # (2B, T-1)
        policy_real, policy_gen = sequence_logps(per_token, mask).chunk(2)  # (B,), (B,)
        ref_real, ref_gen = cache["ref_real"][mb].to(device), cache["ref_gen"][mb].to(device)  # (B,)
        loss, _ = irft_loss(policy_real, policy_gen, ref_real, ref_gen, hp.beta, hp.loss_type)
        (loss * len(mb) / n_pairs).backward()  # the window's loss is the mean over its pairs
        r_real, r_gen = (
            implicit_rewards(policy_real, ref_real, hp.beta),
            implicit_rewards(policy_gen, ref_gen, hp.beta),
        )
        sums += (
            torch.stack(
                [
                    loss.detach() * len(mb),
                    r_real.sum(),
                    r_gen.sum(),
                    (r_real > r_gen).float().sum(),
                    policy_real.detach().sum(),
                    policy_gen.detach().sum(),
                    torch.tensor(float(sum(len(cache["generated"][j]) for j in mb))),
                    (policy_gen.detach() - ref_gen).sum(),
                    batch["attention_mask"].sum().float(),
                ]
            )
            .cpu()
            .float()
        )
        trained += int(mask.sum())
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm or float("inf"))
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    means = (sums[:8] / n_pairs).tolist()
    return {
        "means": means,
        "input_tokens": float(sums[8]),
        "trained_tokens": trained,
        "grad_norm": float(grad_norm),
        "lr": lr,
        "seconds": time.perf_counter() - started,
    }


_MEAN_NAMES = (
    "train/loss",
    "rewards/real",
    "rewards/generated",
    "rewards/accuracy",
    "logps/real",
    "logps/generated",
    "train/generation_length",
    "train/kl",
)


class _Accumulator:
    """Per-step means averaged over the optimiser steps since the last log line."""

    def __init__(self) -> None:
        self.steps, self.sums, self.input_tokens, self.seconds = 0, [0.0] * len(_MEAN_NAMES), 0.0, 0.0

    def add(self, r: dict[str, Any]) -> None:
        self.steps += 1
        self.sums = [a + b for a, b in zip(self.sums, r["means"], strict=True)]
        self.input_tokens += r["input_tokens"]
        self.seconds += r["seconds"]

    def metrics(self, last: dict[str, Any]) -> dict[str, float]:
        out = {name: value / max(self.steps, 1) for name, value in zip(_MEAN_NAMES, self.sums, strict=True)}
        out["rewards/margin"] = out["rewards/real"] - out["rewards/generated"]
        out.update(
            {
                "train/lr": float(last["lr"]),
                "train/grad_norm": float(last["grad_norm"]),
                "train/tokens_per_s": self.input_tokens / max(self.seconds, 1e-9),
            }
        )
        return out


def _checkpoint(config, model, tokenizer, optimizer, scheduler, trainer_state, cache, save_dtype) -> Path:
    """SFT's checkpoint; mid-iteration ones also hold state/irft_cache.pt, renamed into place at once."""
    step = trainer_state["global_step"]
    common = dict(
        model=model,
        tokenizer=tokenizer,
        config=config.to_dict(),
        trainer_state=trainer_state,
        optimizer=optimizer,
        scheduler=scheduler,
        dtype=save_dtype,
    )
    extra = None if cache is None else (lambda path: torch.save(cache, path / "state" / CACHE_FILE))
    return save_checkpoint(config.output_dir, step, **common, extra=extra)
