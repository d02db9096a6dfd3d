"""Training on (prompt, first, second) response pairs against cached reference log-probs: the loop
IRFT runs (first = the demonstration, second = the policy's own continuation, regenerated every outer
iteration; methods/irft.py) and DPO runs once (first = the preferred, second = the rejected response of
a preference file; methods/dpo.py). Both minimise `losses.anchored_pair_loss`: the DPO/SPIN logistic
loss (or its hinge) of beta * (log pi/pi_ref(first) - log pi/pi_ref(second)) over the pairs the task's
screen kept, plus nll_weight times the first responses' token-mean NLL (0 = the plain pair loss). A
task may give k second responses per example (IRFT's samples_per_prompt): each is its own pair.

Per outer iteration t (DPO: one): the task gives the second responses of slice t; log pi_ref of both
responses is computed ONCE, under no_grad in eval mode with the current policy, and cached with the
slice (no second model is kept); then K_t optimiser steps (`spec/plan.py`) over n_epochs passes of the
slice, each pass in a permutation seeded by (seed, t, epoch), with a FRESH optimiser and LR schedule
per iteration (a saw-tooth LR for IRFT, docs/methods.md §4.3). Each micro-batch is one concatenated forward
of its B examples' B x k pairs (k second responses each, so k times SFT's memory per example) packed
padding-free, each prompt computed once for both responses and the LM head on response tokens only
(`packing.pack_pairs`); the window's loss is the mean pair loss over its kept pairs plus nll_weight
times its first responses' token-mean NLL.

Metrics, with the task's side names (IRFT: real/generated, DPO: chosen/rejected), logged by
`loop.due` as means since the last log row: train/loss, train/pair_loss, train/nll, train/lr,
train/grad_norm,
train/tokens_per_s, train/epoch (passes over the current iteration's examples), train/tokens
(cumulative response tokens scored, both sides), rewards/<first>, rewards/<second> (beta * log pi /
pi_ref), rewards/margin, rewards/accuracy (fraction first > second, a tie 1/2; these four over the kept pairs),
logps/<first> (per example), logps/<second> (per pair)
(summed policy log-probs); with generated second responses also train/generation_length and train/kl
(mean log pi(y~) - log pi_ref(y~), a one-sample estimate of KL(pi || pi_ref)) and pairs/valid; with T > 1,
train/outer_iteration. Evaluation as every method's (`evaluation.py`).

Resume: trainer_state.json holds the outer iteration, the steps done in it, the global step and token
count; a mid-iteration checkpoint also holds state/<cache_file> (the slice's indices, second
responses and reference log-probs, plain tensors and lists, loaded with weights_only=True), so a
resumed run continues the iteration without regenerating or rescoring.

Several processes (DDP): each makes the second responses of its strided share of the slice and
scores their reference log-probs, and every process gets the whole cache (`runtime.gather_shards`);
a micro-batch is batch_size examples (batch_size x k pairs) per process. Mixed precision autocasts the
forwards; the per-iteration optimiser is not the accelerator's, so fp16 (which needs its loss scaler)
is refused by the methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer import loop
from trainer.callbacks import Sink
from trainer.checkpointing import load_optimizer_and_scheduler, load_rng_state
from trainer.evaluation import Validation
from trainer.losses import anchored_pair_loss, implicit_rewards, pair_wins
from trainer.optim import build_optimizer, build_scheduler
from trainer.pairs import pair_logps, score_pairs
from trainer.result import RunResult
from trainer.runtime import epoch_order, gather_shards, optimizer_windows, shard

Pair = tuple[list[int], list[int]]  # (prompt, first response) token ids

# A window whose mean pair loss is below this has sigma(beta * margin) > 0.98 on average: its gradient
# (proportional to sigma(-beta * margin)) is under 2% of what it was at the start of the iteration.
SATURATED_LOSS = 0.02
# rewards/accuracy counts a pair whose implicit-reward margin is within this as a tie (1/2): at an
# iteration's first step the policy is its reference, every margin is 0 up to float rounding (two
# forwards of different packings), and rounding must not decide the metric (or differ between one
# process and two). A trained margin is orders of magnitude larger.
REWARD_TIE = 1e-4


@dataclass
class SaturationCheck:
    """Warns when an outer iteration's logistic pair loss saturated early: from some step on, every
    window separated its pairs (rewards/accuracy 1) at a loss under SATURATED_LOSS, for at least half
    of the iteration's steps. The policy then barely moves for the rest of the iteration (its gradient
    vanishes with sigma(-beta * margin)), which is not a failure of the run but is what makes SPIN/IRFT
    lose to SFT when the policy's own continuations are trivially told apart from the demonstrations
    (docs/results.md). Pure: the caller reports the message."""

    losses: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)

    def add(self, loss: float, accuracy: float, grad_norm: float) -> None:
        self.losses.append(loss)
        self.accuracies.append(accuracy)
        self.grad_norms.append(grad_norm)

    def end_period(self, label: str, first: str, second: str) -> tuple[str, dict[str, Any]] | None:
        """The warning for the period just ended, if it saturated (and start the next period)."""
        n, since = len(self.losses), len(self.losses)
        while since > 0 and self.losses[since - 1] < SATURATED_LOSS and self.accuracies[since - 1] >= 1.0:
            since -= 1
        flat = n - since  # the trailing steps all saturated
        warning = None
        if n >= 2 and flat * 2 >= n:
            data = {
                "saturated_from_step_in_period": since + 1,
                "saturated_steps": flat,
                "period_steps": n,
                "grad_norm_first": self.grad_norms[0],
                "grad_norm_last": self.grad_norms[-1],
            }
            warning = (
                f"{label}: the pair loss saturated from step {since + 1} of {n} (loss < {SATURATED_LOSS}, "
                f"every {first} response scored above its {second} one), so the last {flat} steps "
                f"barely moved the policy (grad norm {self.grad_norms[0]:.3g} at the first step, "
                f"{self.grad_norms[-1]:.3g} at the last). The {second} responses are too easy to tell "
                "apart: when they are the policy's own generations, start from a model already "
                "fine-tuned (SFT) on these demonstrations, or lower the learning rate",
                data,
            )
        self.losses, self.accuracies, self.grad_norms = [], [], []
        return warning


@dataclass
class PairTask:
    """What a method gives the loop."""

    method: str  # "irft" | "dpo": the plan's method name
    first: str  # the first response's name in metric names: "real" | "chosen"
    second_name: str  # "generated" | "rejected"
    examples: list[Pair]
    slices: list[list[int]]  # example indices of each outer iteration
    # (policy, t, indices) -> per_prompt second responses of each index, prompt-major
    second: Callable[[Any, int, list[int]], list[list[int]]]
    generated: bool  # second responses come from the policy: also log generation length and KL
    cache_file: str  # under state/ in mid-iteration checkpoints
    per_prompt: int = 1  # second responses per example
    # (the scored cache) -> which pairs train, and the metrics of that choice; None = all of them
    screen: Callable[[dict[str, Any]], tuple[list[bool], dict[str, float]]] | None = None
    on_iteration: Callable[[dict, int], None] | None = None  # after scoring an iteration (events)
    # (the run, at its end) -> the training demonstrations' scores file (trainer/demonstration_scores.py)
    score: Callable[[loop.Run], Path] | None = None


def train_pairs(
    run: loop.Run, sink: Sink, task: PairTask, steps: list[int], validation: Validation | None
) -> RunResult:
    """The loop above, from `run` (policy loaded, maybe resumed) to its RunResult."""
    config, hp, accelerator, report, resume = run.config, run.hp, run.accelerator, run.report, run.resume
    world = accelerator.num_processes
    model = accelerator.prepare_model(run.model)  # DDP over several processes; autocast when mixed
    T, slices, total_steps = len(task.slices), task.slices, sum(steps)

    position = loop.restore_position(
        resume,
        {"global_step": 0, "outer_iteration": 0, "step_in_iteration": 0, "trained_tokens": 0},
        {"iteration_steps": steps, "num_processes": world},
    )
    cache = None
    screened: dict[str, float] = {}  # the negatives' screen of the iteration, not logged yet
    if resume is not None and position["step_in_iteration"] > 0:
        cache = torch.load(resume / "state" / task.cache_file, map_location="cpu", weights_only=True)
        if not cache.get("screen_logged", True):  # checkpointed before the iteration's first log row
            screened = dict(cache.get("screened", {}))
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report.log_event(
        f"Training for {total_steps} steps in {T} outer iteration{'s' if T > 1 else ''} (K = {steps}), "
        f"{n_trainable} trainable parameters, mixed precision {accelerator.mixed_precision}",
        data={
            "total_steps": total_steps,
            "iteration_steps": steps,
            "trainable_parameters": n_trainable,
            "num_processes": world,
        },
    )

    # --- loop --------------------------------------------------------------------------------------
    step, trained_tokens = position["global_step"], position["trained_tokens"]
    start = {**position, "epoch": 0, "step_in_epoch": 0, "total_steps": total_steps}
    start.update(iteration_steps=steps, num_processes=world)
    # The starting model's checkpoint (select_checkpoint best_eval_loss); an iteration's optimiser is
    # built at its start, so there is none to save yet.
    last_checkpoint = (
        loop.save_start(run, model, None, None, validation, start, with_optimizer=False) or resume
    )
    last_metrics: dict[str, float] = {}
    status = "completed"
    resumed_rng = resume is not None
    watch = loop.MovementCheck()
    saturation = SaturationCheck()
    for t in range(position["outer_iteration"], T):
        first = position["step_in_iteration"] if t == position["outer_iteration"] else 0
        if cache is None or cache["iteration"] != t:
            # Each process makes the second responses of its share of the slice; all get all of them
            # (gathered a prompt's group at a time, so the k responses of a prompt stay together).
            mine = shard(slices[t], accelerator.process_index, world)
            k = task.per_prompt
            made = task.second(accelerator.unwrap_model(model), t, mine)
            groups = gather_shards([made[j * k : (j + 1) * k] for j in range(len(mine))], accelerator)
            second = [response for group in groups for response in group]
            cache = score_reference(
                model,
                task.examples,
                slices[t],
                second,
                hp,
                iteration=t,
                accelerator=accelerator,
                per_prompt=k,
            )
            if task.screen is not None:
                cache["valid"], cache["screened"] = task.screen(cache)
                screened = dict(cache["screened"])  # rides on the iteration's first metrics row
                cache["screen_logged"] = False
                if not any(cache["valid"]):
                    report.log_event(
                        f"Outer iteration {t + 1}/{T}: no pair trains: every {task.second_name} response "
                        "was identical to its first response or unfinished, so only the nll_weight anchor "
                        "moves the policy this iteration (raise generation.max_new_tokens, or set "
                        "truncated_negatives to keep)",
                        level="warning",
                        data=dict(cache["screened"]),
                    )
            if task.on_iteration is not None:
                task.on_iteration(cache, t)
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
            if k == first and (stop := loop.stop_request(sink, accelerator)):
                status = stop
                break
            epoch, in_epoch = divmod(k, per_epoch)
            order = epoch_order(n_t, config.seed + 1000 * t, epoch)
            window = optimizer_windows(order, hp.batch_size * world, hp.gradient_accumulation_steps)[in_epoch]
            started = time.perf_counter()
            result = _train_step(model, accelerator, window, task, cache, hp)
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
            means = result["means"]
            if "train/pair_loss" in means:  # only windows that kept pairs can saturate
                saturation.add(means["train/pair_loss"], means["rewards/accuracy"], grad_norm)
            end_of_iteration = k == steps[t] - 1
            if end_of_iteration:
                label = f"Outer iteration {t + 1}/{T}" if T > 1 else "The run"
                watch.end_period(report, label)
                saturated = saturation.end_period(label, task.first, task.second_name)
                if saturated is not None:
                    report.log_event(saturated[0], level="warning", data=saturated[1])
            now = loop.due(hp, step, end_of_period=end_of_iteration, last_step=step == total_steps)
            if now.log:
                last_metrics = since_log.pop()
                last_metrics["train/epoch"] = epoch + (in_epoch + 1) / per_epoch
                last_metrics["train/tokens"] = float(trained_tokens)
                if T > 1 or task.method != "dpo":
                    last_metrics["train/outer_iteration"] = float(t + 1)
                last_metrics.update(screened)
                screened = {}
                if cache is not None:
                    cache["screen_logged"] = True
                report.log_metrics(step, last_metrics)
            stop = loop.stop_request(sink, accelerator)
            best = False
            if (validation or run.graded) and now.evaluate:
                eval_metrics, best = loop.validate(run, model, validation, step)
                last_metrics = {**last_metrics, **eval_metrics}
            if now.checkpoint or stop == loop.HELD or best:
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
                    "num_processes": world,
                    "metrics": last_metrics,
                }
                # Mid-iteration checkpoints also hold the iteration's generations and pi_ref log-probs.
                mid = None if end_of_iteration else cache
                extra = (
                    None
                    if mid is None
                    else (lambda path, c=mid: torch.save(c, path / "state" / task.cache_file))
                )
                # At an iteration's end the next iteration builds a fresh optimiser: none to save.
                last_checkpoint = loop.save(
                    run,
                    model,
                    optimizer,
                    scheduler,
                    trainer_state,
                    extra,
                    with_optimizer=not end_of_iteration,
                )
            if stop:
                status = stop
                break
        if status != "completed":
            break

    if status == "completed":
        watch.check_run()
    return loop.finish(run, status, step, trained_tokens, last_checkpoint, last_metrics, task.score)


def score_reference(
    model, examples, indices, second, hp, *, iteration, accelerator=None, per_prompt: int = 1
) -> dict[str, Any]:
    """The iteration's cache: its indices, the `per_prompt` second responses of each (prompt-major, cut
    to max_seq_len) and log pi_ref of both responses of every pair, pi_ref being `model` as it is now
    (eval mode, no grad). Every pair starts valid (`valid`; a task's screen may drop some). With
    `accelerator` on several processes each scores its share of the pairs and all get the whole cache."""
    owner = [indices[j // per_prompt] for j in range(len(second))]  # each pair's example
    second = [g[: hp.max_seq_len - len(examples[i][0])] for i, g in zip(owner, second, strict=True)]
    rank, world = (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)
    net = model if accelerator is None else accelerator.unwrap_model(model)  # no DDP hooks: no grad here
    mine = shard(range(len(second)), rank, world)  # positions among the pairs
    was_training = net.training
    net.eval()
    ref_first: list[float] = []
    ref_second: list[float] = []
    for start in range(0, len(mine), hp.batch_size):
        chunk = mine[start : start + hp.batch_size]
        a, b = score_pairs(net, [(*examples[owner[j]], second[j]) for j in chunk])
        ref_first += a.float().cpu().tolist()
        ref_second += b.float().cpu().tolist()
    net.train(was_training)
    if accelerator is not None:
        ref_first, ref_second = gather_shards(ref_first, accelerator), gather_shards(ref_second, accelerator)
    # Key names are those IRFT checkpoints have always used (real = first, gen = second).
    return {
        "iteration": iteration,
        "indices": list(indices),
        "per_prompt": per_prompt,
        "generated": second,
        "valid": [True] * len(second),
        "ref_real": torch.tensor(ref_first, dtype=torch.float32),
        "ref_gen": torch.tensor(ref_second, dtype=torch.float32),
    }


def per_prompt(cache: dict[str, Any]) -> int:
    """Second responses per prompt (caches of checkpoints written before there could be several: 1)."""
    return int(cache.get("per_prompt", 1))


def valid_pairs(cache: dict[str, Any]) -> list[bool]:
    return list(cache.get("valid", [True] * len(cache["generated"])))


def _train_step(model, accelerator, window, task: PairTask, cache, hp) -> dict[str, Any]:
    """Forward and backward over a window of global micro-batches (prompt positions in the iteration's
    cache), this process taking its strided share of each. The loss is `losses.anchored_pair_loss` with
    the window's divisors (its valid pairs and its first responses' tokens, on all processes), so the
    micro-batches' losses add up to the window's mean pair loss plus nll_weight times its demonstration
    NLL. Returns the window's metric means over all processes and its input and trained token counts."""
    model.train()
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    k, valid = per_prompt(cache), valid_pairs(cache)
    first_of = [task.examples[i][1] for i in cache["indices"]]
    window_prompts = [j for mb in window for j in mb]  # on all processes
    n_valid = sum(valid[j * k + m] for j in window_prompts for m in range(k))
    n_first_tokens = sum(len(first_of[j]) for j in window_prompts)
    nll_weight = getattr(hp, "nll_weight", 0.0)
    # loss, pair loss, nll, then sums over valid pairs: reward first, reward second, margin, first > second;
    # over all pairs: logp first, logp second, generated tokens, log-ratio second; input, trained tokens
    sums = torch.zeros(13, device=device)
    for m, global_mb in enumerate(window):
        mb = shard(global_mb, rank, world)
        live = 1.0 if mb else 0.0
        if not mb:  # a short last micro-batch left this process nothing: a zero-weight forward keeps
            mb = global_mb[:1]  # every process running the same passes, as DDP requires
        rows = [j * k + r for j in mb for r in range(k)]  # this micro-batch's pairs
        triples = [(*task.examples[cache["indices"][row // k]], cache["generated"][row]) for row in rows]
        mask = torch.tensor([valid[row] for row in rows], device=device)
        # Gradients are all-reduced only on the window's last backward.
        sync = nullcontext() if m == len(window) - 1 else accelerator.no_sync(model)
        with sync:
            policy_real, policy_gen = pair_logps(model, triples)  # (B*k,), (B*k,)
            ref_real, ref_gen = cache["ref_real"][rows].to(device), cache["ref_gen"][rows].to(device)
            pair_loss, _ = anchored_pair_loss(
                policy_real,
                policy_gen,
                ref_real,
                ref_gen,
                hp.beta,
                hp.loss_type,
                valid=mask,
                num_pairs=n_valid,
            )
            nll = -policy_real.sum() / k / max(n_first_tokens, 1)  # SFT's token mean, each first once
            loss = (pair_loss + nll_weight * nll) * live
            # DDP averages gradients over processes: scaling by their number leaves the window's sum.
            accelerator.backward(loss * world)
        if not live:
            continue
        r_real = implicit_rewards(policy_real.detach(), ref_real, hp.beta)
        r_gen = implicit_rewards(policy_gen.detach(), ref_gen, hp.beta)
        on = mask.float()
        generated_tokens = sum(len(cache["generated"][row]) for row in rows)
        first_tokens = sum(len(first_of[j]) for j in mb)
        sums += torch.stack(
            [
                loss.detach(),
                pair_loss.detach(),
                nll.detach(),
                (r_real * on).sum(),
                (r_gen * on).sum(),
                ((r_real - r_gen) * on).sum(),
                (pair_wins(r_real, r_gen, REWARD_TIE) * on).sum(),
                policy_real.detach().sum() / k,
                policy_gen.detach().sum(),
                torch.tensor(float(generated_tokens), device=device),
                (policy_gen.detach() - ref_gen).sum(),
                torch.tensor(
                    float(sum(len(p) for p, _, _ in triples) / k + first_tokens + generated_tokens),
                    device=device,
                ),
                torch.tensor(float(first_tokens + generated_tokens), device=device),
            ]
        ).float()
    totals = accelerator.reduce(sums, reduction="sum").cpu().tolist()
    n_prompts, n_pairs = len(window_prompts), len(window_prompts) * k
    first, second = task.first, task.second_name
    means = {
        "train/loss": totals[0],
        "train/nll": totals[2],
        f"logps/{first}": totals[7] / n_prompts,
        f"logps/{second}": totals[8] / n_pairs,
    }
    if n_valid:  # a window that kept no pair has no pair metrics (not zeros that would drag a mean)
        means.update(
            {
                "train/pair_loss": totals[1],
                f"rewards/{first}": totals[3] / n_valid,
                f"rewards/{second}": totals[4] / n_valid,
                "rewards/margin": totals[5] / n_valid,
                "rewards/accuracy": totals[6] / n_valid,
            }
        )
    if task.generated:  # neither is meaningful for responses the policy did not sample
        means["train/generation_length"] = totals[9] / n_pairs
        means["train/kl"] = totals[10] / n_pairs
        means["pairs/valid"] = n_valid / n_pairs
    return {"means": means, "input_tokens": totals[11], "trained_tokens": int(totals[12])}
