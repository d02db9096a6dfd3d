"""RFT, Algorithm 1 of Li et al. (NeurIPS 2024), docs/methods.md §3: a reward model learned from the
demonstrations alongside the policy.

As shipped, for outer iteration t = 0..T-1 (T = outer_iterations):

  The iteration works on its own 1/T slice of the shuffled demonstrations (IRFT's stagewise slices,
  `loop.iteration_slices`), so the reward model sees each demonstration once. The policy step makes
  `n_epochs` passes over the slice's prompts, each pass in its own seeded order and every step
  sampling fresh continuations: K_t = ceil(|slice_t| / (batch_size * gradient_accumulation_steps))
  * n_epochs policy steps (`spec/plan.py`).

  a. Sample k = samples_per_prompt continuations of each prompt of the slice with the current policy
     (hp.generation; temperature 1.0 by default), seeded from (seed, t).
  b. Reward step, by hp.divergence (docs/methods.md §3.8, `losses.reward_model_loss`): "bt" (the
     default) is Bradley-Terry on pairs (demonstration = chosen, each generation = rejected); "js" and
     "reverse_kl" train a discriminator D = sigmoid(score) on the same pairs' demonstrations (label 1)
     and generations (label 0), each scored alone, a generation identical to its demonstration
     included. Every scored sequence ends in EOS (`reward_model.RewardTokens`); the pairs of every 10th
     prompt are held out to measure it on afterwards (reward_model/heldout_accuracy), for
     reward_epochs passes, training the top reward_trainable_layers blocks, final norm and head
     (`reward_model.freeze_lower_layers`), AdamW at reward_learning_rate (constant, no weight decay), batches of
     batch_size pairs, gradients clipped at max_grad_norm. The reward
     model and its optimiser carry over from iteration to iteration (the reference warm-starts too).
  c. Policy step, reward model frozen: for each optimiser step (batch_size prompts per micro-batch,
     gradient_accumulation_steps micro-batches), sample k fresh continuations per prompt, score them
     and their demonstrations, form the rewards from the scores (`losses.policy_rewards`: the score
     for bt and reverse_kl, -log(1 - D) for js), shape them (`reward_shaping.py`: divided by their
     running std, missing_eos_penalty off an unfinished sample, kl_coef * (log pi(y|x) -
     log pi_ref(y|x)) off each, pi_ref the INITIAL model, docs/methods.md §3.1), RLOO advantages
     A_i = r'_i - mean_{j != i} r'_j whitened over the whole step (all micro-batches and processes: a
     first pass samples, scores and shapes, a second backpropagates), loss = -mean(A * log pi(y|x)) +
     nll_weight * the demonstrations' token-mean NLL (InstructGPT's ptx term). After the step the
     adaptive controller moves kl_coef (starting at beta) towards kl_target.
  d. At the end of the iteration: an event with three samples. Validation (`evaluation.py`, as every
     method: eval/loss, and eval/logp_gap(_accuracy) on a preference file) every eval_interval
     policy steps, 0 = at the end of each iteration, and after the last step.

Several processes (DDP): each samples, scores and backpropagates its strided share of every batch of
prompts or pairs (`_Models`); batch_size is per process, as in SFT. Samples are seeded per prompt, so a
two-process run matches a one-process run with twice the batch (tests/trainer/test_distributed.py).

Why RLOO with a KL penalty instead of the reference code's APA + value network
(docs/methods.md §3.3): the KL-regularised objective r - beta * KL(pi || pi_ref) IS the lower-level
problem of docs/methods.md §3.1, whereas APA's squared anchor to pi_ref with a KL term multiplied by 0
and a GAE value baseline are implementation artefacts of the trlx fork. RLOO (Ahmadian et al. 2024,
"Back to Basics: Revisiting REINFORCE Style Optimization for RLHF") uses the other k-1 samples of the
same prompt as an unbiased, low-variance baseline, so there is no value network: one model copy fewer
(the reference needs three GPUs), no value loss to tune, and the reward enters exactly once, at the
end of the sequence.

Memory: policy + reward model (both trained, each with AdamW state) + pi_ref, which is the adapter-
disabled policy with LoRA and a frozen resident copy (bf16 under bf16 autocast) without it
(trainer/reference.py).

Metrics. Logged every logging_interval policy steps and at the end of each iteration, as means over
the steps since the last log row (`loop.MetricAccumulator`, as every method): train/loss (RLOO loss,
window mean, + nll_weight x train/nll), train/lr,
train/grad_norm, train/tokens_per_s (prompt + sample tokens through the policy step per second),
train/epoch (fraction of the whole run: (t + fraction of iteration t) / T), train/tokens (cumulative
generated tokens trained on), train/kl (mean log pi - log pi_ref of the samples, a per-sequence KL
estimate), rewards/generations (mean reward-model score of the samples), advantages/mean,
advantages/std (before whitening), train/generation_length, train/outer_iteration (1-based), train/kl_coef (the
coefficient the step used), train/nll (the demonstrations' NLL, 0 with nll_weight 0), train/unfinished
(the fraction of samples that never stopped), rewards/demonstrations (their demonstrations' mean score)
and reward_model/policy_accuracy (how often a demonstration out-scores a fresh sample of its prompt: the
reward model's accuracy on pairs it never trained on; under 0.5 the policy has out-scored the
demonstrations, the signature of reward hacking). Once per iteration after the reward step (at the step
count reached so far, 0 for the first): reward_model/identical (the fraction of samples identical to
their demonstration: under bt such a pair has no contrast and is left out of the reward step),
reward_model/loss, reward_model/accuracy (chosen > rejected, a tie counting 1/2, as in every accuracy here),
reward_model/heldout_accuracy (after training, on the held-out prompts' pairs), rewards/demonstrations,
rewards/generations (means over its batches), and for a discriminator (js, reverse_kl)
reward_model/demo_accuracy and reward_model/sample_accuracy (how often D > 1/2 on the demonstrations,
D < 1/2 on the samples, over the pairs it trained on). Every rewards/* metric is the formed reward
(`losses.policy_rewards`) before normalisation.

Checkpoints: as SFT (`model/`, `adapter/`, `state/`) plus `reward_model/` (a plain HF sequence
classifier) and `state/reward_optimizer.pt`; trainer_state adds outer_iteration, phase
("reward" = the iteration starts from its reward step, "policy" = continue the policy step at
step_in_phase). Checkpoints are only written between policy steps, so the reward model saved is the
one the policy phase uses; trainer_state also holds the reward's running moments and the KL
coefficient ("reward_shaping"). All sampling is seeded from (seed, iteration, step) in a forked RNG, and
the global RNG is restored, so a resumed run continues exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer import demonstration_scores, loop
from trainer.callbacks import Sink
from trainer.checkpointing import load_optimizer_and_scheduler, load_rng_state, load_trainer_state
from trainer.config import TrainConfig
from trainer.data import IGNORE_INDEX, TokenizedExample
from trainer.demonstrations import load_demonstrations
from trainer.errors import ModelLoadError
from trainer.evaluation import load_validation
from trainer.generation import eos_token_ids, finished, generate_responses, resolve_max_new_tokens
from trainer.logprobs import token_logps
from trainer.losses import pair_wins, policy_rewards, reward_model_loss, rloo_advantages, rloo_policy_loss
from trainer.modeling import base_dtype, load_tokenizer
from trainer.optim import build_optimizer, build_scheduler
from trainer.packing import label_logits, pack_one, row_sums
from trainer.reference import load_reference, policy_logps, reference_logps
from trainer.result import RunResult
from trainer.reward_model import (
    REWARD_DIR,
    REWARD_OPTIMIZER,
    RewardTokens,
    collate_sequences,
    freeze_lower_layers,
    load_reward_model,
    save_reward_model,
    score,
)
from trainer.reward_shaping import AdaptiveKL, RewardShaping, RunningMoments, shaped_rewards, whiten
from trainer.runtime import epoch_order, gather_shards, optimizer_windows, shard, sum_gradients
from trainer.spec import plan

# Every HOLDOUT_EVERY-th prompt of an outer iteration's slice (of at least that many) keeps its pairs out
# of the reward step, to measure the trained reward model on pairs it never saw (heldout_accuracy).
HOLDOUT_EVERY = 10


def train(config: TrainConfig, sink: Sink) -> RunResult:
    """Run RFT as configured, reporting to `sink`; resume from `config.resume_from` when set."""
    run = loop.open_run(config, sink, resume_check=lambda p: (p / REWARD_DIR).is_dir())
    hp, accelerator, report, tokenizer, resume = (
        run.hp,
        run.accelerator,
        run.report,
        run.tokenizer,
        run.resume,
    )
    device, world = accelerator.device, accelerator.num_processes
    reference = load_reference(config, accelerator)  # None with LoRA (trainer/reference.py)
    reward_source = resume / REWARD_DIR if resume is not None else (hp.reward_model or config.model)
    try:
        reward_tokenizer = load_tokenizer(reward_source)
        reward = load_reward_model(reward_source, reward_tokenizer.pad_token_id, seed=config.seed)
        freeze_lower_layers(reward, hp.reward_trainable_layers)
    except (OSError, ValueError) as exc:
        param = "hyperparameters.reward_model" if hp.reward_model else "model"
        raise ModelLoadError(
            param, f"cannot load the reward model from {str(reward_source)!r}: {exc}"
        ) from exc
    reward_dtype = base_dtype(hp.reward_model or config.model)
    eos_ids = eos_token_ids(run.model, tokenizer)
    to_reward = RewardTokens(tokenizer, reward_tokenizer, hp.max_seq_len, eos_ids)

    demos = load_demonstrations(
        config.training_file, tokenizer, hp.max_seq_len, hp.generation.max_prompt_len, report
    )
    generation = resolve_max_new_tokens(hp.generation, [r for _, r in demos], hp.max_seq_len, report)
    validation = load_validation(
        config.validation_file, tokenizer, hp.max_seq_len, hp.generation.max_prompt_len, report
    )

    # --- schedule ---------------------------------------------------------------------------------
    T = hp.outer_iterations
    slices = loop.iteration_slices("rft", hp, len(demos), config.seed)
    steps = plan.iteration_steps("rft", hp, len(demos), world)
    total_steps = sum(steps)

    reward.to(device)
    optimizer = build_optimizer(run.model, hp)
    scheduler = build_scheduler(optimizer, hp, total_steps)
    reward_optimizer = torch.optim.AdamW(
        [p for p in reward.parameters() if p.requires_grad], lr=hp.reward_learning_rate
    )
    pos = loop.restore_position(
        resume,
        {"global_step": 0, "outer_iteration": 0, "phase": "reward", "step_in_phase": 0, "trained_tokens": 0},
        {"iteration_steps": steps, "num_processes": world},
    )
    shaping = RewardShaping(RunningMoments(), AdaptiveKL(hp.beta, hp.kl_target, hp.kl_horizon))
    if resume is not None:
        shaping.load_state_dict(load_trainer_state(resume).get("reward_shaping"))
    if resume is not None and pos["global_step"] < total_steps:  # the last step's checkpoint has none
        load_optimizer_and_scheduler(resume, optimizer, scheduler)
        reward_optimizer.load_state_dict(
            torch.load(resume / "state" / REWARD_OPTIMIZER, map_location="cpu", weights_only=True)
        )
    model, optimizer = accelerator.prepare(run.model, optimizer)
    if resume is not None:
        load_rng_state(resume)
        report.log_event(f"Resumed from {resume} at step {pos['global_step']}", data=dict(pos))
    report.log_event(
        f"RFT for {T} outer iterations, {total_steps} policy steps (K = {steps}), "
        f"{hp.samples_per_prompt} samples per prompt, divergence {hp.divergence}",
        data={
            "divergence": hp.divergence,
            "total_steps": total_steps,
            "iteration_steps": steps,
            "outer_iterations": T,
            "examples": len(demos),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "reward_parameters": sum(p.numel() for p in reward.parameters() if p.requires_grad),
            "num_processes": world,
        },
    )

    rft = _Models(config, accelerator, model, tokenizer, reference, reward, to_reward, demos)
    rft.generation, rft.eos_ids, rft.shaping = generation, eos_ids, shaping
    step, tokens = pos["global_step"], pos["trained_tokens"]

    def saver(more: bool) -> Callable[[Path], None]:
        def extra(path: Path) -> None:  # the reward model the next steps use, and its optimiser
            save_reward_model(reward, reward_tokenizer, path / REWARD_DIR, dtype=reward_dtype)
            if more:
                torch.save(reward_optimizer.state_dict(), path / "state" / REWARD_OPTIMIZER)

        return extra

    plan_keys = {"total_steps": total_steps, "iteration_steps": steps, "num_processes": world}
    start = {**pos, **plan_keys, "reward_shaping": shaping.state_dict()}
    last_checkpoint = (
        loop.save_start(run, model, optimizer, scheduler, validation, start, saver(True)) or resume
    )
    status = "completed"
    last_metrics: dict[str, float] = {}
    watch = loop.MovementCheck()
    for t in range(pos["outer_iteration"], T):
        resuming_policy = t == pos["outer_iteration"] and pos["phase"] == "policy"
        first = pos["step_in_phase"] if resuming_policy else 0
        if not resuming_policy:
            if stop := loop.stop_request(sink, accelerator):
                status = stop
                break
            metrics = rft.reward_phase(t, slices[t], reward_optimizer)
            report.log_metrics(step, metrics)
            last_metrics = {**last_metrics, **metrics}
        per_epoch = steps[t] // hp.n_epochs
        since_log = loop.MetricAccumulator()
        for k in range(first, steps[t]):
            if k == first and (stop := loop.stop_request(sink, accelerator)):
                status = stop
                break
            epoch, in_epoch = divmod(k, per_epoch)
            order = [slices[t][i] for i in epoch_order(len(slices[t]), config.seed + 1000 * t, epoch)]
            window = optimizer_windows(order, hp.batch_size * world, hp.gradient_accumulation_steps)[in_epoch]
            started = time.perf_counter()
            values, input_tokens, n_tokens = rft.policy_step(t, k, window)
            grad_norm, lr = loop.optimizer_step(accelerator, model, optimizer, scheduler, hp.max_grad_norm)
            shaping.kl.update(values["train/kl"])  # the coefficient of the next step
            step, tokens = step + 1, tokens + n_tokens
            since_log.add(
                {**values, "train/grad_norm": grad_norm},
                lr=lr,
                input_tokens=input_tokens,
                seconds=time.perf_counter() - started,
            )
            watch.add({**values, "train/grad_norm": grad_norm})
            end = k == steps[t] - 1
            if end:
                watch.end_period(report, f"Outer iteration {t + 1}/{T}")
            now = loop.due(hp, step, end_of_period=end, last_step=step == total_steps)
            if now.log:
                metrics = since_log.pop()
                metrics["train/epoch"] = (t + (k + 1) / steps[t]) / T
                metrics["train/tokens"] = float(tokens)
                metrics["train/outer_iteration"] = float(t + 1)
                report.log_metrics(step, metrics)
                last_metrics = {**last_metrics, **metrics}
            stop = loop.stop_request(sink, accelerator)
            if end:
                # Same shape as IRFT's event, so one viewer shows both methods' samples per iteration.
                report.log_event(
                    f"Outer iteration {t + 1}/{T} done",
                    data={"outer_iteration": t + 1, "samples": rft.samples[:3]},
                )
            best = False
            if (validation or run.graded) and now.evaluate:
                eval_metrics, best = loop.validate(run, model, validation, step)
                last_metrics = {**last_metrics, **eval_metrics}
            if now.checkpoint or stop == loop.HELD or best:
                if end:
                    nxt = {"outer_iteration": t + 1, "phase": "reward", "step_in_phase": 0}
                else:
                    nxt = {"outer_iteration": t, "phase": "policy", "step_in_phase": k + 1}
                state = {
                    "global_step": step,
                    "trained_tokens": tokens,
                    **plan_keys,
                    "metrics": last_metrics,
                    "reward_shaping": shaping.state_dict(),
                    **nxt,
                }
                more = step < total_steps  # the last step's checkpoint keeps no optimiser state
                last_checkpoint = loop.save(
                    run, model, optimizer, scheduler, state, saver(more), with_optimizer=more
                )
            if stop:
                status = stop
                break
        if status != "completed":
            break

    if status == "completed":
        watch.check_run()
    return loop.finish(run, status, step, tokens, last_checkpoint, last_metrics, rft.score_lines)


@dataclass
class _Pass:
    """One micro-batch of a policy step between its two passes (`_Models.policy_step`)."""

    live: bool  # this process has prompts in it (else a zero-weight pass, for DDP)
    weight: float  # its share of the window's prompts
    examples: list[TokenizedExample]  # prompt + sample, the samples labelled
    demos: list[TokenizedExample]  # prompt + demonstration, the demonstrations labelled
    generated: int  # sample tokens
    rewards: torch.Tensor  # (P, k) reward-model scores
    demo_rewards: torch.Tensor  # (P,)
    done: torch.Tensor  # (P, k) the sample stopped by itself
    log_ratio: torch.Tensor  # (P, k) log pi - log pi_ref
    advantages: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (P, k), once shaped


class _Models:
    """The models of one run and the three things done with them: sample, reward step, policy step.

    Over several processes each takes a strided share (`runtime.shard`) of every batch of prompts:
    it samples, scores and backpropagates its share; the policy's gradients are averaged by DDP, the
    reward model's summed by `runtime.sum_gradients`, and the metrics summed over processes. Samples
    are seeded per prompt (`generation.generate_responses` keys), so the split does not change them."""

    def __init__(self, config, accelerator, model, tokenizer, reference, reward, to_reward, demos):
        self.config, self.hp, self.accelerator = config, config.hyperparameters, accelerator
        self.model, self.tokenizer, self.reference = model, tokenizer, reference
        self.reward, self.to_reward, self.demos = reward, to_reward, demos
        self.device = accelerator.device
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.samples: list[dict[str, str]] = []
        self.generation = self.hp.generation  # max_new_tokens resolved by train()
        self.eos_ids: list[int] = []
        self.shaping = RewardShaping(RunningMoments(), AdaptiveKL(self.hp.beta))

    def _seed(self, t: int, phase: int, k: int) -> int:
        return (self.config.seed * 1_000_003 + t * 10_007 + phase * 1_009 + k) % (2**31)

    def sample(self, indices: list[int], seed: int) -> list[list[int]]:
        """k continuations of the prompts of demonstrations `indices` (prompt-major), cut after the
        first EOS and to max_seq_len with their prompt (a sample cut there has no EOS: it is unfinished);
        each prompt's samples are seeded by (seed, its index)."""
        k = self.hp.samples_per_prompt
        prompts = [self.demos[i][0] for i in indices]
        generated = generate_responses(
            self.accelerator.unwrap_model(self.model),
            self.tokenizer,
            prompts,
            self.generation,
            num_return_sequences=k,
            seed=seed,
            keys=indices,
        )
        responses = [r[: self.hp.max_seq_len - len(prompts[j // k])] for j, r in enumerate(generated)]
        self.samples = (
            self.samples
            + [
                {"prompt": self.tokenizer.decode(prompts[i // k]), "generated": self.tokenizer.decode(r)}
                for i, r in enumerate(responses[:3])
            ]
        )[-3:]  # the latest three
        return responses

    def _scores(self, sequences: list[list[int]]) -> torch.Tensor:
        ids, mask = collate_sequences([self.to_reward(s) for s in sequences], self.reward.config.pad_token_id)
        # bf16 autocast when the run uses it; under fp16 the reward model stays float32, because its
        # optimiser is not the accelerator's and so has no loss scaler against fp16 gradient underflow.
        bf16 = self.accelerator.mixed_precision == "bf16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            return score(self.reward, ids.to(self.device), mask.to(self.device))  # (N,)

    @torch.no_grad()
    def score_lines(self, run: loop.Run) -> Path:
        """Each training line's score by the final reward model (trainer/demonstration_scores.py),
        read exactly as it scored demonstrations in training (prompt + response + EOS)."""
        was_training = self.reward.training
        self.reward.eval()
        try:
            values = [
                self._scores([p + r for p, r in chunk]).double().cpu()
                for chunk in demonstration_scores.chunks(self.demos)
            ]
        finally:
            self.reward.train(was_training)
        logps = demonstration_scores.response_logps(self.accelerator.unwrap_model(self.model), self.demos)
        return demonstration_scores.save(
            run, torch.cat(values), demonstration_scores.response_tokens(self.demos), logps
        )

    def reward_phase(self, t: int, indices: list[int], optimizer) -> dict[str, float]:
        """Sample, then train the reward model on (demonstration, generation) pairs. Returns its metrics."""
        k, hp = self.hp.samples_per_prompt, self.hp
        mine = shard(indices, self.rank, self.world)
        responses = self.sample(mine, self._seed(t, 1, 0))
        groups = gather_shards([responses[j * k : (j + 1) * k] for j in range(len(mine))], self.accelerator)
        # (chosen sequence, rejected sequence): every prompt's k samples, in slice order; the pairs of
        # every HOLDOUT_EVERY-th prompt are held out of training to measure the trained model on
        pairs: list[tuple[list[int], list[int]]] = []
        held: list[tuple[list[int], list[int]]] = []
        discriminator = hp.divergence != "bt"
        identical = 0
        for j, (i, group) in enumerate(zip(indices, groups, strict=True)):
            demo = self.demos[i][0] + self.demos[i][1]
            out = held if len(indices) >= HOLDOUT_EVERY and j % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 else pairs
            # A sample identical to its demonstration makes a pair with no contrast (Bradley-Terry's loss
            # is log 2 whatever the model, its gradient 0): left out, as IRFT leaves out such negatives.
            # From an SFT model most samples are (57% on arith), and their ties read as errors. A
            # discriminator keeps it: its samples must be the policy's distribution, these included
            # (D* = p / (p + q) is what it should learn where the two coincide); without them it would
            # learn demonstrations against the policy's other samples.
            identical += sum(g == self.demos[i][1] for g in group)
            out.extend((demo, self.demos[i][0] + g) for g in group if discriminator or g != self.demos[i][1])
        global_batch = hp.batch_size * self.world
        self.shaping.moments.reset()  # a retrained reward model has a scale of its own
        self.reward.train()
        trainable = [p for p in self.reward.parameters() if p.requires_grad]
        # loss, correct, chosen reward, rejected reward, batches, demonstration and sample accuracies
        sums = torch.zeros(7, device=self.device)
        for epoch in range(hp.reward_epochs):
            generator = torch.Generator().manual_seed(self._seed(t, 2, epoch))
            perm = torch.randperm(len(pairs), generator=generator).tolist()
            for b in range(0, len(pairs), global_batch):
                every = perm[b : b + global_batch]
                local = shard(every, self.rank, self.world)
                weight = len(local) / len(every)  # of this batch's mean over all processes
                batch = [pairs[j] for j in (local or every[:1])]  # empty share: a zero-weight pass
                scores = self._scores([c for c, _ in batch] + [r for _, r in batch])  # (2N,)
                chosen, rejected = scores[: len(batch)], scores[len(batch) :]
                loss = reward_model_loss(chosen, rejected, hp.divergence)
                (loss * weight).backward()
                sum_gradients(trainable, self.accelerator)
                if hp.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(trainable, hp.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if local:
                    sums += weight * torch.stack(
                        [
                            loss.detach(),
                            pair_wins(chosen, rejected).mean(),
                            policy_rewards(chosen.detach(), hp.divergence).mean(),
                            policy_rewards(rejected.detach(), hp.divergence).mean(),
                            torch.ones((), device=self.device),  # the processes' weights add up to one batch
                            pair_wins(chosen, torch.zeros_like(chosen)).mean(),  # D > 1/2 on demonstrations
                            pair_wins(torch.zeros_like(rejected), rejected).mean(),  # D < 1/2 on samples
                        ]
                    )
        self.reward.eval()
        sums = self.accelerator.reduce(sums, reduction="sum").cpu()
        n = sums[4].item()
        samples = sum(len(group) for group in groups)
        metrics = {"reward_model/identical": 1.0 - (samples - identical) / max(samples, 1)}
        if n:  # no pair left (every sample was its demonstration): the reward model did not train
            metrics.update(
                {
                    "reward_model/loss": sums[0].item() / n,
                    "reward_model/accuracy": sums[1].item() / n,
                    "rewards/demonstrations": sums[2].item() / n,
                    "rewards/generations": sums[3].item() / n,
                }
            )
            if discriminator:  # how well it tells each class: D = sigmoid(score) against 1/2
                metrics["reward_model/demo_accuracy"] = sums[5].item() / n
                metrics["reward_model/sample_accuracy"] = sums[6].item() / n
        if held:
            metrics["reward_model/heldout_accuracy"] = self._accuracy(held, global_batch)
        return metrics

    @torch.no_grad()
    def _accuracy(self, pairs: list[tuple[list[int], list[int]]], global_batch: int) -> float:
        """How often the reward model, as it is now, scores the chosen sequence above the rejected one.
        On the iteration's held-out prompts after its training, this is its accuracy on (demonstration,
        current policy sample) pairs it never trained on: whether it tells the policy's samples from the
        demonstrations at all (issue 9 found it at chance, 0.47-0.54, on an SFT policy's samples)."""
        self.reward.eval()
        counts = torch.zeros(2, device=self.device)  # correct, pairs
        mine = shard(list(range(len(pairs))), self.rank, self.world)
        for b in range(0, len(mine), max(global_batch // self.world, 1)):
            batch = [pairs[j] for j in mine[b : b + max(global_batch // self.world, 1)]]
            scores = self._scores([c for c, _ in batch] + [r for _, r in batch])  # (2N,)
            chosen, rejected = scores[: len(batch)], scores[len(batch) :]
            counts += torch.stack(
                [pair_wins(chosen, rejected).sum(), torch.tensor(float(len(batch)), device=self.device)]
            )
        correct, total = self.accelerator.reduce(counts, reduction="sum").tolist()
        return correct / max(total, 1.0)

    def _logps(self, net, examples: list[TokenizedExample]) -> torch.Tensor:
        """log pi(y | x) of each example (B,), from one packed forward scoring the samples only."""
        batch = pack_one(examples).to(self.device)
        with self.accelerator.autocast():
            logits = label_logits(net, batch)  # (L, V)
        return row_sums(token_logps(logits, batch.targets), batch)  # (B,)

    def _log_ratio(self, examples: list[TokenizedExample]) -> torch.Tensor:
        """log pi(y|x) - log pi_ref(y|x) of each example, no grad, eval mode: the KL term's estimate."""
        net = self.accelerator.unwrap_model(self.model)

        def logps(m: Any) -> torch.Tensor:
            return self._logps(m, examples)

        return policy_logps(net, logps) - reference_logps(net, self.reference, logps)

    def policy_step(
        self, t: int, k_step: int, window: list[list[int]]
    ) -> tuple[dict[str, float], float, int]:
        """One policy step over a window of global micro-batches (demonstration indices), in two passes.
        First, per micro-batch, this process samples its share and scores the samples and their
        demonstrations; the step's scores (all micro-batches, all processes) then join the running
        moments, are shaped (`reward_shaping`) into RLOO advantages, and are whitened with the whole
        step's advantage moments, so neither depends on how the step is split into micro-batches or
        processes. Second, per micro-batch, the forward and backward of the policy loss plus nll_weight
        times the demonstrations' NLL. Returns (the step's metric values over all processes, input
        tokens, generated tokens trained on)."""
        hp, k = self.hp, self.hp.samples_per_prompt
        n_prompts = sum(len(mb) for mb in window)
        # SFT's divisor: the demonstration tokens of the whole window, on all processes.
        n_demo_tokens = sum(len(self.demos[i][1]) for mb in window for i in mb)
        kl_coef = self.shaping.kl.coef
        passes: list[_Pass] = []
        for every in window:  # pass 1: sample and score
            local = shard(every, self.rank, self.world)
            mine = local or every[:1]  # empty share: a zero-weight pass, as DDP needs one on every process
            prompts = [self.demos[i][0] for i in mine]
            responses = self.sample(mine, self._seed(t, 3, k_step))
            examples = [
                TokenizedExample(prompts[i // k] + r, [IGNORE_INDEX] * len(prompts[i // k]) + r)
                for i, r in enumerate(responses)
            ]
            demos = [
                TokenizedExample(p + r, [IGNORE_INDEX] * len(p) + r) for p, r in (self.demos[i] for i in mine)
            ]
            with torch.no_grad():
                scored = self._scores([e.input_ids for e in examples] + [d.input_ids for d in demos])
            passes.append(
                _Pass(
                    live=bool(local),
                    weight=len(local) / n_prompts,  # the window's loss is the mean over its prompts' samples
                    examples=examples,
                    demos=demos,
                    generated=sum(len(r) for r in responses),
                    rewards=policy_rewards(scored[: len(examples)], hp.divergence).view(len(mine), k),
                    demo_rewards=policy_rewards(scored[len(examples) :], hp.divergence),
                    done=torch.tensor(
                        [finished(r, self.eos_ids) for r in responses], device=self.device
                    ).view(len(mine), k),
                    log_ratio=self._log_ratio(examples).view(len(mine), k),
                )
            )
        live = [p for p in passes if p.live]
        self._update_moments([p.rewards for p in live])
        for p in passes:
            shaped = shaped_rewards(
                p.rewards,
                p.done,
                p.log_ratio,
                reward_std=self.shaping.moments.std if hp.reward_normalization else 1.0,
                missing_eos_penalty=hp.missing_eos_penalty,
                kl_coef=kl_coef,
            )
            p.advantages = rloo_advantages(shaped)  # (P, k)
        # kl, reward, input tokens, generated tokens, advantage sum, sum of squares, count,
        # demonstration reward, demonstration beats sample, unfinished samples
        sums = torch.zeros(10, device=self.device, dtype=torch.float64)
        for p in live:
            sums += torch.tensor(
                [
                    p.log_ratio.sum().item(),
                    p.rewards.sum().item(),
                    float(sum(len(e.input_ids) for e in p.examples)),
                    float(p.generated),
                    p.advantages.sum().item(),
                    p.advantages.square().sum().item(),
                    float(p.advantages.numel()),
                    p.demo_rewards.sum().item(),
                    pair_wins(p.demo_rewards[:, None], p.rewards).sum().item(),
                    (~p.done).float().sum().item(),
                ],
                device=self.device,
                dtype=torch.float64,
            )
        totals = self.accelerator.reduce(sums, reduction="sum").tolist()
        kl, reward, input_tokens, tokens, adv_sum, adv_squares, n, demo_reward, demo_wins, unfinished = totals
        adv_mean = adv_sum / n
        adv_std = max(adv_squares / n - adv_mean**2, 0.0) ** 0.5
        losses = torch.zeros(2, device=self.device, dtype=torch.float64)  # policy loss, nll
        for m, p in enumerate(passes):  # pass 2: forward and backward
            advantages = whiten(p.advantages, adv_mean, adv_std) if hp.whiten_advantages else p.advantages
            self.model.train()
            # Gradients are all-reduced only on the window's last backward.
            sync = nullcontext() if m == len(passes) - 1 else self.accelerator.no_sync(self.model)
            with sync:
                # One forward for the samples and (ptx) the demonstrations: DDP expects one per backward.
                both = self._logps(self.model, p.examples + p.demos if hp.nll_weight else p.examples)
                logps = both[: len(p.examples)].view(advantages.shape)  # (P, k), with grad
                scale = 1.0 if p.live else 0.0
                loss = rloo_policy_loss(logps, advantages) * p.weight * scale
                nll = -both[len(p.examples) :].sum() / max(n_demo_tokens, 1) * scale
                self.accelerator.backward((loss + hp.nll_weight * nll) * self.world)  # DDP averages
            losses += torch.stack([loss.detach(), nll.detach()]).double()
        loss, nll = self.accelerator.reduce(losses, reduction="sum").tolist()
        values = {
            "train/loss": loss + hp.nll_weight * nll,
            "train/kl": kl / n,
            "train/kl_coef": kl_coef,
            "train/nll": nll,
            "train/unfinished": unfinished / n,
            "rewards/generations": reward / n,
            "rewards/demonstrations": demo_reward / n_prompts,
            "reward_model/policy_accuracy": demo_wins / n,
            # before whitening: their spread is what the zero-advantage check watches
            "advantages/mean": adv_mean,
            "advantages/std": adv_std,
            "train/generation_length": tokens / n,
        }
        return values, input_tokens, int(tokens)

    def _update_moments(self, scores: list[torch.Tensor]) -> None:
        """Add the step's scores, from every process, to the running moments (the same on all)."""
        local = torch.zeros(3, dtype=torch.float64, device=self.device)  # count, sum, sum of squares
        for v in scores:
            v = v.detach().double()
            local += torch.stack(
                [
                    torch.tensor(float(v.numel()), dtype=torch.float64, device=v.device),
                    v.sum(),
                    v.square().sum(),
                ]
            )
        count, total, squares = self.accelerator.reduce(local, reduction="sum").tolist()
        if count:
            mean = total / count
            self.shaping.moments.merge(count, mean, max(squares - count * mean**2, 0.0))
