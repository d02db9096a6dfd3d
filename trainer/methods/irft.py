"""IRFT, Algorithm 2 of Li et al. 2024 (methods.md §4); SPIN is outer_iterations = 1 (§5).

The algorithm as shipped, with T = outer_iterations:

    for t in 0 .. T-1:
        examples_t <- stagewise: slice t of a permutation of the data seeded by `seed` (T disjoint
                      slices of sizes differing by at most one, covering the data; `loop.iteration_slices`);
                      full: every example (multi-iteration SPIN)
        y~ <- one continuation per prompt of examples_t by the current policy (`generation.py`;
              greedy by default, seed = seed + t)
        pi_ref <- the current policy: log pi_ref(y|x) and log pi_ref(y~|x) are computed ONCE here,
              under no_grad in eval mode, and cached with the examples (no second model is kept)
        K_t optimiser steps of irft_loss (§4.1) against the cached reference log-probs:
              n_epochs passes over examples_t, each in a permutation seeded by (seed, t, epoch);
              batch_size pairs per micro-batch, gradient_accumulation_steps micro-batches a step.
              K_t = ceil(ceil(|examples_t| / batch_size) / gradient_accumulation_steps) * n_epochs,
              i.e. ceil(|examples_t| / (batch_size * gradient_accumulation_steps)) * n_epochs
              (`spec/plan.py`, which the worker's progress total also uses).

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
iteration (`loop.due`), as means over the steps since the last log line (`loop.MetricAccumulator`):

    train/loss, train/lr, train/grad_norm, train/tokens_per_s (non-padding input tokens of both rows),
    train/epoch (passes over the current iteration's examples), train/tokens (cumulative response
    tokens scored, real + generated), train/outer_iteration (1-based),
    rewards/real, rewards/generated (beta * log pi / pi_ref), rewards/margin, rewards/accuracy
    (fraction real > generated), logps/real, logps/generated (summed policy log-probs),
    train/generation_length (mean generated response tokens), train/kl (mean of
    log pi(y~) - log pi_ref(y~) on the generated responses: a one-sample estimate of KL(pi || pi_ref)).

Evaluation (every eval_interval optimiser steps; 0 = end of each outer iteration; always at the last
step; `evaluation.py`, as every method): eval/loss and eval/token_accuracy, and on a preference
validation file eval/logp_gap and eval/logp_gap_accuracy. Each iteration also
logs the event "Outer iteration t/T: generated N continuations" with three samples in its data.

Mixed precision autocasts the forward passes (Accelerate); backward and clipping go through the
accelerator. The per-iteration optimiser is not the accelerator's, so there is no fp16 loss scaler to
unscale gradients with: fp16 is refused (bf16 or no precision).

Resume: a checkpoint's trainer_state.json holds the outer iteration, the optimiser steps done in it
(and so the epoch and window), the global step and token count; mid-iteration checkpoints also hold
state/irft_cache.pt (the iteration's example indices, generated responses and reference log-probs,
plain tensors and lists, loaded with weights_only=True), so a resumed run continues the iteration
without regenerating. The optimiser and scheduler state are those of the current iteration.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from trainer import loop
from trainer.callbacks import Sink
from trainer.checkpointing import load_optimizer_and_scheduler, load_rng_state
from trainer.config import TrainConfig
from trainer.demonstrations import load_demonstrations
from trainer.evaluation import evaluate, load_validation
from trainer.generation import generate_responses
from trainer.logprobs import per_token_logps, sequence_logps
from trainer.losses import implicit_rewards, irft_loss
from trainer.optim import build_optimizer, build_scheduler
from trainer.pairs import PairCollator, score_pairs
from trainer.result import RunResult
from trainer.runtime import epoch_order, optimizer_windows
from trainer.spec import plan

CACHE_FILE = "irft_cache.pt"  # under state/ in mid-iteration checkpoints


def train(config: TrainConfig, sink: Sink) -> RunResult:
    """Run IRFT as configured, reporting to `sink`; resume from `config.resume_from` when set."""
    run = loop.open_run(config, sink, single_process=True, fp16=False)
    hp, accelerator, report, tokenizer, resume = (
        run.hp,
        run.accelerator,
        run.report,
        run.tokenizer,
        run.resume,
    )
    device = accelerator.device
    model = accelerator.prepare_model(run.model)  # single process: the same module, autocast when mixed

    examples = load_demonstrations(
        config.training_file, tokenizer, hp.max_seq_len, hp.generation.max_prompt_len, report
    )
    T = hp.outer_iterations
    validation = load_validation(
        config.validation_file, tokenizer, hp.max_seq_len, hp.generation.max_prompt_len, report
    )
    slices = loop.iteration_slices("irft", hp, len(examples), config.seed)
    steps = plan.iteration_steps("irft", hp, len(examples))
    total_steps = sum(steps)

    position = loop.restore_position(
        resume,
        {"global_step": 0, "outer_iteration": 0, "step_in_iteration": 0, "trained_tokens": 0},
        {"iteration_steps": steps},
    )
    cache = None
    if resume is not None and position["step_in_iteration"] > 0:
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
    watch = loop.MovementCheck()
    for t in range(position["outer_iteration"], T):
        first = position["step_in_iteration"] if t == position["outer_iteration"] else 0
        if cache is None or cache["iteration"] != t:
            cache = _generate_and_score(
                model, tokenizer, examples, slices[t], hp, collate, device, seed=config.seed + t, iteration=t
            )
            _report_generations(report, tokenizer, examples, cache, t, T)
        optimizer = build_optimizer(model, hp)
        scheduler = build_scheduler(optimizer, hp, steps[t])
        if first > 0 and resume is not None:  # continuing this iteration: its optimiser state too
            load_optimizer_and_scheduler(resume, optimizer, scheduler)
        if resumed_rng and resume is not None:
            load_rng_state(resume)  # after generation/scoring: nothing above draws from the restored streams
            report.log_event(f"Resumed from {resume} at step {step}", data=dict(position))
            resumed_rng = False
        n_t = len(cache["indices"])
        per_epoch = steps[t] // hp.n_epochs
        since_log = loop.MetricAccumulator()
        for k in range(first, steps[t]):
            if loop.stop_requested(sink, accelerator):
                status = "stopped"
                break
            epoch, in_epoch = divmod(k, per_epoch)
            order = epoch_order(n_t, config.seed + 1000 * t, epoch)
            window = optimizer_windows(order, hp.batch_size, hp.gradient_accumulation_steps)[in_epoch]
            started = time.perf_counter()
            result = _train_step(model, accelerator, window, examples, cache, collate, hp)
            grad_norm, lr = loop.optimizer_step(accelerator, model, optimizer, scheduler, hp.max_grad_norm)
            step += 1
            trained_tokens += result["trained_tokens"]
            since_log.add(
                {**result["means"], "train/grad_norm": grad_norm},
                lr=lr,
                input_tokens=result["input_tokens"],
                seconds=time.perf_counter() - started,
            )
            watch.add({"train/grad_norm": grad_norm})
            end_of_iteration = k == steps[t] - 1
            if end_of_iteration:
                watch.end_period(report, f"Outer iteration {t + 1}/{T}")
            now = loop.due(hp, step, end_of_period=end_of_iteration, last_step=step == total_steps)
            if now.log:
                last_metrics = since_log.pop()
                last_metrics["train/epoch"] = epoch + (in_epoch + 1) / per_epoch
                last_metrics["train/tokens"] = float(trained_tokens)
                last_metrics["train/outer_iteration"] = float(t + 1)
                report.log_metrics(step, last_metrics)
            if validation and now.evaluate:
                eval_metrics = evaluate(model, tokenizer, validation, accelerator, hp.batch_size)
                last_metrics = {**last_metrics, **eval_metrics}
                report.log_metrics(step, eval_metrics)
            if now.checkpoint:
                if end_of_iteration:
                    done = {"outer_iteration": t + 1, "step_in_iteration": 0}
                else:
                    done = {"outer_iteration": t, "step_in_iteration": k + 1}
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
                # Mid-iteration checkpoints also hold the iteration's generations and pi_ref log-probs.
                mid = None if end_of_iteration else cache
                extra = (
                    None if mid is None else (lambda path, c=mid: torch.save(c, path / "state" / CACHE_FILE))
                )
                last_checkpoint = loop.save(run, model, optimizer, scheduler, trainer_state, extra)
        if status == "stopped":
            break

    if status == "completed":
        watch.check_run()
    return loop.finish(run, status, step, trained_tokens, last_checkpoint, last_metrics)


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
        real, gen = score_pairs(
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


def _train_step(model, accelerator, window, examples, cache, collate, hp) -> dict[str, Any]:
    """Forward and backward over a window of micro-batches (positions into the iteration's cache).
    Returns the window's means per pair, its input and trained token counts."""
    model.train()
    device = accelerator.device
    n_pairs = sum(len(mb) for mb in window)
    sums = torch.zeros(10)  # the 9 means below, then non-padding input tokens
    trained = 0
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
        accelerator.backward(loss * len(mb) / n_pairs)  # the window's loss is the mean over its pairs
        r_real = implicit_rewards(policy_real.detach(), ref_real, hp.beta)
        r_gen = implicit_rewards(policy_gen.detach(), ref_gen, hp.beta)
        sums += (
            torch.stack(
                [
                    loss.detach() * len(mb),
                    r_real.sum(),
                    r_gen.sum(),
                    (r_real - r_gen).sum(),
                    (r_real > r_gen).float().sum(),
                    policy_real.detach().sum(),
                    policy_gen.detach().sum(),
                    torch.tensor(float(sum(len(cache["generated"][j]) for j in mb)), device=device),
                    (policy_gen.detach() - ref_gen).sum(),
                    batch["attention_mask"].sum().float(),
                ]
            )
            .float()
            .cpu()
        )
        trained += int(mask.sum())
    means = dict(zip(_MEAN_NAMES, (sums[:9] / n_pairs).tolist(), strict=True))
    return {"means": means, "input_tokens": float(sums[9]), "trained_tokens": trained}


_MEAN_NAMES = (
    "train/loss",
    "rewards/real",
    "rewards/generated",
    "rewards/margin",
    "rewards/accuracy",
    "logps/real",
    "logps/generated",
    "train/generation_length",
    "train/kl",
)
