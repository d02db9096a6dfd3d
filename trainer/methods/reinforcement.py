"""OpenAI's `reinforcement` method (docs/methods.md §11): the policy answers the training prompts, a
grader scores the answers, and a group-normalised policy gradient makes the better-graded answers likelier,
with a KL penalty to the starting model.

The training file is OpenAI's RFT format (trainer/prompts.py): each line is a prompt (`messages` ending
in a user message) plus the keys its grader reads as `item`. For each optimiser step, over a window of
prompts (batch_size per micro-batch on each process, gradient_accumulation_steps micro-batches):

  1. Sample k answers to each prompt with the current policy (k = `group_size(hp)`: samples_per_prompt
     scaled by compute_multiplier; hp.generation, temperature 1.0 by default), each prompt's answers
     seeded by (seed, step, prompt), so a resumed or multi-process run draws the same ones.
  2. Grade them (trainer/grading.py; a python grader's batch runs in one sandboxed process). A sample
     the grader cannot score gets reward 0 and an error flag; when more than max_grader_error_share of
     the step's samples have one, the run fails with the grader's first error (GraderFailedError).
  3. Shape: r' = r - beta * (log pi(y|x) - log pi_ref(y|x)), the sample's summed log-ratio to the
     starting model (trainer/reference.py), the KL-regularised objective's per-sample reward.
  4. Advantages within each prompt's group of k: "grpo" (r' - mean) / std (DeepSeekMath's GRPO; a group
     of equal rewards has advantage 0), or "rloo" r' - mean of the other k-1 (Ahmadian et al. 2024).
  5. Loss -mean(A * log pi(y|x)) over the window's samples (log-probs summed over the answer's tokens),
     backward, clip to max_grad_norm, AdamW step, scheduler step.

Evaluation (`loop.due`: every eval_interval steps, 0 = each epoch's end, and after the last step; once
for the starting model, by `loop.open_run`): the validation file's prompts (reinforcement lines too)
answered eval_samples times each (greedy for one) and graded, as every method's graded evaluation is
(trainer/grading.py): eval/reward, eval/pass_rate, ... It has no eval/loss: there are no reference answers
to score.

Metrics per step (means since the last log row, `loop.MetricAccumulator`): train/loss, train/grad_norm,
train/lr, train/tokens_per_s, train/kl (mean summed log-ratio of the samples, nats), train/reward,
train/reward_std, train/pass_rate, train/sub_reward/<name> (a multi grader's parts),
train/grader_error_rate, train/grader_seconds, train/generation_length, train/unfinished,
advantages/std (0 when every group's rewards were equal: nothing to learn that step), train/epoch,
train/tokens (cumulative generated tokens). A run whose gradient was zero at every step (every group
graded alike throughout: a task too hard or too easy for the grader) fails: the policy never moved.

Checkpoints: as SFT's (`model/`, `adapter/`, `state/`), trainer_state holding the step; a resumed run
continues at the next step with the same samples it would have drawn.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from trainer import grading, loop
from trainer.callbacks import Sink
from trainer.checkpointing import load_optimizer_and_scheduler, load_rng_state
from trainer.config import TrainConfig
from trainer.data import IGNORE_INDEX, TokenizedExample
from trainer.errors import GraderFailedError, InputError
from trainer.generation import eos_token_ids, generate_responses
from trainer.logprobs import token_logps
from trainer.losses import grpo_advantages, rloo_advantages, rloo_policy_loss
from trainer.optim import build_optimizer, build_scheduler
from trainer.packing import label_logits, pack_one, row_sums
from trainer.prompts import Task, load_tasks
from trainer.reference import load_reference, policy_logps, reference_logps
from trainer.result import RunResult
from trainer.runtime import epoch_order, optimizer_windows, shard
from trainer.spec import plan
from trainer.spec.hyperparameters import group_size

GRADER_PARAM = "method.reinforcement.grader"


def train(config: TrainConfig, sink: Sink) -> RunResult:
    """Run the reinforcement method as configured, reporting to `sink`; resume from `config.resume_from`."""
    if config.grader is None:
        raise InputError(GRADER_PARAM, f"{GRADER_PARAM}: the reinforcement method needs a grader, got none")
    run = loop.open_run(config, sink)
    hp, accelerator, report, tokenizer, resume = (
        run.hp,
        run.accelerator,
        run.report,
        run.tokenizer,
        run.resume,
    )
    world = accelerator.num_processes
    tasks = load_tasks(config.training_file, "training_file", tokenizer, hp.generation.max_prompt_len, report)
    reference = load_reference(config, accelerator)
    per_epoch = plan.steps_per_epoch(len(tasks), hp.batch_size, hp.gradient_accumulation_steps, world)
    total_steps = per_epoch * hp.n_epochs
    optimizer = build_optimizer(run.model, hp)
    scheduler = build_scheduler(optimizer, hp, total_steps)
    plan_keys = {"total_steps": total_steps, "num_processes": world}
    pos = loop.restore_position(resume, {"global_step": 0, "trained_tokens": 0}, plan_keys)
    if resume is not None and pos["global_step"] < total_steps:  # the last step's checkpoint has none
        load_optimizer_and_scheduler(resume, optimizer, scheduler)
    model, optimizer = accelerator.prepare(run.model, optimizer)
    if resume is not None:
        load_rng_state(resume)
        report.log_event(f"Resumed from {resume} at step {pos['global_step']}", data=dict(pos))
    k = group_size(hp)
    report.log_event(
        f"Reinforcement with a {config.grader.type} grader for {total_steps} steps, {k} samples per prompt "
        f"({hp.advantage} advantages, beta {hp.beta:g})",
        data={
            "total_steps": total_steps,
            "prompts": len(tasks),
            "samples_per_prompt": k,
            "grader": config.grader.type,
            "num_processes": world,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        },
    )
    policy = _Policy(config, accelerator, model, tokenizer, reference, tasks, k)
    step, tokens = pos["global_step"], pos["trained_tokens"]
    last_metrics: dict[str, float] = {}  # (the starting model's graded score was reported by open_run)
    last_checkpoint = resume
    status = "completed"
    since_log = loop.MetricAccumulator()
    watch = loop.MovementCheck()
    if step < total_steps and (stop := loop.stop_request(sink, accelerator)):
        status = stop
    while status == "completed" and step < total_steps:
        epoch, in_epoch = divmod(step, per_epoch)
        order = epoch_order(len(tasks), config.seed, epoch)
        window = optimizer_windows(order, hp.batch_size * world, hp.gradient_accumulation_steps)[in_epoch]
        started = time.perf_counter()
        values, input_tokens, generated = policy.step(step, window)
        grad_norm, lr = loop.optimizer_step(accelerator, model, optimizer, scheduler, hp.max_grad_norm)
        step, tokens = step + 1, tokens + generated
        values["train/grad_norm"] = grad_norm
        since_log.add(values, lr=lr, input_tokens=input_tokens, seconds=time.perf_counter() - started)
        watch.add(values)
        end = in_epoch == per_epoch - 1
        if end:
            watch.end_period(report, f"Epoch {epoch + 1}/{hp.n_epochs}")
            report.log_event(f"Epoch {epoch + 1} done", data={"epoch": epoch + 1, "samples": policy.samples})
        now = loop.due(hp, step, end_of_period=end, last_step=step == total_steps)
        if now.log:
            metrics = since_log.pop()
            metrics["train/epoch"] = step / per_epoch
            metrics["train/tokens"] = float(tokens)
            report.log_metrics(step, metrics)
            last_metrics = {**last_metrics, **metrics}
        if run.graded is not None and now.evaluate:
            eval_metrics, _ = loop.validate(run, model, None, step)
            last_metrics = {**last_metrics, **eval_metrics}
        stop = loop.stop_request(sink, accelerator)
        if now.checkpoint or stop == loop.HELD:
            more = step < total_steps  # the last step's checkpoint keeps no optimiser state
            state = {"global_step": step, "trained_tokens": tokens, **plan_keys, "metrics": last_metrics}
            last_checkpoint = loop.save(run, model, optimizer, scheduler, state, with_optimizer=more)
        if stop:
            status = stop
    if status == "completed":
        watch.check_run()
    return loop.finish(run, status, step, tokens, last_checkpoint, last_metrics)


@dataclass
class _Pass:
    """One micro-batch of a step between its two passes."""

    live: bool  # this process has prompts in it (else a zero-weight pass, for DDP)
    weight: float  # its share of the window's prompts
    examples: list[TokenizedExample]  # prompt + answer, the answer labelled
    advantages: torch.Tensor  # (P, k)


class _Policy:
    """The policy of one run and what is done with it: sample, grade, step, evaluate. Over several
    processes each takes a strided share of every micro-batch's prompts (as RFT's `_Models`)."""

    def __init__(self, config, accelerator, model, tokenizer, reference, tasks: list[Task], k: int):
        self.config, self.hp, self.accelerator = config, config.hyperparameters, accelerator
        self.model, self.tokenizer, self.reference, self.tasks, self.k = model, tokenizer, reference, tasks, k
        self.grader = config.grader
        self.limits = grading.sandbox_limits(config)
        self.eos_ids = eos_token_ids(accelerator.unwrap_model(model), tokenizer)
        self.threshold = grading.pass_threshold(self.grader)
        self.sub_names = grading.sub_grader_names(self.grader)
        self.device = accelerator.device
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.samples: list[dict[str, Any]] = []

    def _seed(self, step: int) -> int:
        return (self.config.seed * 1_000_003 + step * 10_007) % (2**31)

    def _logps(self, net, examples: list[TokenizedExample]) -> torch.Tensor:
        """log pi(y | x) of each example (B,), from one packed forward scoring the answers only."""
        batch = pack_one(examples).to(self.device)
        with self.accelerator.autocast():
            logits = label_logits(net, batch)  # (L, V)
        return row_sums(token_logps(logits, batch.targets), batch)  # (B,)

    def step(self, step: int, window: list[list[int]]) -> tuple[dict[str, float], float, int]:
        """One optimiser step's forward and backward passes over `window` (global micro-batches of task
        indices). Returns (its metric values over all processes, input tokens, generated tokens)."""
        hp, k = self.hp, self.k
        n_prompts = sum(len(mb) for mb in window)
        unwrapped = self.accelerator.unwrap_model(self.model)
        tally = grading.Tally(self.sub_names)
        passes: list[_Pass] = []
        first_error: str | None = None
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # kl, adv sum, adv squares, count
        for every in window:  # pass 1: sample, grade, shape
            local = shard(every, self.rank, self.world)
            mine = local or every[:1]  # an empty share: a zero-weight pass, as DDP needs one on every process
            prompts = [self.tasks[i].prompt for i in mine]
            responses = generate_responses(
                unwrapped, self.tokenizer, prompts, hp.generation, num_return_sequences=k,
                seed=self._seed(step), keys=mine,
            )  # fmt: skip
            responses = [r[: max(hp.max_seq_len - len(prompts[j // k]), 1)] for j, r in enumerate(responses)]
            texts = grading.decode_answers(self.tokenizer, responses)
            graded = grading.grade(
                self.grader, texts, [self.tasks[i].item for i in mine for _ in range(k)], self.limits
            )
            examples = [
                TokenizedExample(prompts[j // k] + r, [IGNORE_INDEX] * len(prompts[j // k]) + r)
                for j, r in enumerate(responses)
            ]
            rewards = torch.tensor([o.reward for o in graded.outcomes], dtype=torch.float64).view(
                len(mine), k
            )

            def answer_logps(net: Any, ex: list[TokenizedExample] = examples) -> torch.Tensor:
                return self._logps(net, ex)

            log_ratio = policy_logps(unwrapped, answer_logps) - reference_logps(
                unwrapped, self.reference, answer_logps
            )
            log_ratio = log_ratio.double().cpu().view(len(mine), k)
            shaped = rewards - hp.beta * log_ratio
            advantages = grpo_advantages(shaped) if hp.advantage == "grpo" else rloo_advantages(shaped)
            if local:
                tally.add(graded, self.threshold, responses, self.eos_ids)
                sums += torch.tensor(
                    [log_ratio.sum(), advantages.sum(), advantages.square().sum(), advantages.numel()],
                    dtype=torch.float64,
                    device=self.device,
                )
                first_error = first_error or next(
                    (_describe(o.errors) for o in graded.outcomes if o.failed), None
                )
                self._keep_samples(mine, texts, graded)
            passes.append(_Pass(bool(local), len(local) / n_prompts, examples, advantages.float()))
        total = tally.reduce(self.accelerator)
        if total.error_share > hp.max_grader_error_share:
            raise GraderFailedError(
                GRADER_PARAM,
                f"{GRADER_PARAM}: the grader could not score {total.error_share:.0%} of step {step + 1}'s "
                f"{int(total.values['n'])} samples (more than max_grader_error_share "
                f"{hp.max_grader_error_share:g}); the first error: {first_error or 'on another process'}",
            )
        kl, adv_sum, adv_squares, n = self.accelerator.reduce(sums, reduction="sum").tolist()
        losses = torch.zeros(1, device=self.device, dtype=torch.float64)
        for m, p in enumerate(passes):  # pass 2: forward and backward
            self.model.train()
            sync = nullcontext() if m == len(passes) - 1 else self.accelerator.no_sync(self.model)
            with sync:  # gradients are all-reduced on the window's last backward only
                logps = self._logps(self.model, p.examples).view(p.advantages.shape)  # (P, k), with grad
                loss = rloo_policy_loss(logps, p.advantages.to(logps.device)) * p.weight * float(p.live)
                self.accelerator.backward(loss * self.world)  # DDP averages over processes
            losses += loss.detach().double()
        loss_total = self.accelerator.reduce(losses, reduction="sum").item()
        adv_mean = adv_sum / max(n, 1.0)
        values = {
            "train/loss": loss_total,
            "train/kl": kl / max(n, 1.0),
            "advantages/std": math.sqrt(max(adv_squares / max(n, 1.0) - adv_mean**2, 0.0)),
            **total.metrics("train"),
        }
        input_tokens = sum(len(e.input_ids) for p in passes if p.live for e in p.examples)
        return values, float(input_tokens), int(total.values["tokens"])

    def _keep_samples(self, indices: list[int], texts: list[str], graded: grading.Graded) -> None:
        """The latest three (prompt, answer, reward), for the epoch's event."""
        fresh = [
            {
                "line": self.tasks[indices[j // self.k]].line,
                "prompt": self.tokenizer.decode(self.tasks[indices[j // self.k]].prompt),
                "generated": texts[j],
                "reward": graded.outcomes[j].reward,
            }
            for j in range(min(3, len(texts)))
        ]
        self.samples = (self.samples + fresh)[-3:]


def _describe(errors: dict[str, Any]) -> str:
    """A failed sample's error in a sentence: the grader's message or exception, else its flags."""
    detail = errors.get("message") or errors.get("python_grader_runtime_error_details")
    flags = ", ".join(sorted(k for k, v in errors.items() if v is True))
    return f"{flags}: {detail}" if detail else flags
