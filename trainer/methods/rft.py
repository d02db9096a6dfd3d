"""RFT, Algorithm 1 of Li et al. (NeurIPS 2024), methods.md §3: a reward model learned from the
demonstrations alongside the policy.

As shipped, for outer iteration t = 0..T-1 (T = outer_iterations):

  The iteration works on its own 1/T slice of the shuffled demonstrations (like IRFT's stagewise
  schedule; the first len % T slices hold one extra example), so the whole run sees each
  demonstration once. `n_epochs` is not used: the policy makes one on-policy pass per slice.

  a. Sample k = samples_per_prompt continuations of each prompt of the slice with the current policy
     (hp.generation; temperature 1.0 by default), seeded from (seed, t).
  b. Reward step: Bradley-Terry on pairs (demonstration = chosen, each generation = rejected) for
     reward_epochs passes, AdamW at reward_learning_rate (constant, no weight decay), batches of
     batch_size pairs, gradients clipped at max_grad_norm. The reward
     model and its optimiser carry over from iteration to iteration (the reference warm-starts too).
  c. Policy step, reward model frozen: for each optimiser step (batch_size prompts per micro-batch,
     gradient_accumulation_steps micro-batches), sample k fresh continuations per prompt, score them,
     r' = r - beta * (log pi(y|x) - log pi_ref(y|x)) with pi_ref the INITIAL model (methods.md §3.1),
     RLOO advantages A_i = r'_i - mean_{j != i} r'_j, loss = -mean(A * log pi(y|x)).
  d. At the end of the iteration: an event with three samples; validation (eval/loss on a
     demonstration file; eval/logp_gap(_accuracy) on a preference file).

One process only (generation and the reward model are not sharded); a multi-process launch is refused.

Why RLOO with a KL penalty instead of the reference code's APA + value network (§3.3): the
KL-regularised objective r - beta * KL(pi || pi_ref) IS the lower-level problem of §3.1, whereas
APA's squared anchor to pi_ref with a KL term multiplied by 0 and a GAE value baseline are
implementation artefacts of the trlx fork. RLOO (Ahmadian et al. 2024, "Back to Basics: Revisiting
REINFORCE Style Optimization for RLHF") uses the other k-1 samples of the same prompt as an unbiased,
low-variance baseline, so there is no value network: one model copy fewer (the reference needs three
GPUs), no value loss to tune, and the reward enters exactly once, at the end of the sequence.

Memory: policy + reward model (both trained, each with AdamW state) + pi_ref. With LoRA, pi_ref is the
policy with its adapter disabled (`disable_adapter()`), which is exactly the initial model, at no
extra memory. Without LoRA a frozen copy of the initial weights is kept (one extra model of weights,
no optimiser state); on CUDA it lives on the CPU and is moved to the GPU only to score a batch.

Metrics. Per policy step (at its optimiser step): train/loss (RLOO loss, window mean), train/lr,
train/grad_norm, train/tokens_per_s (prompt + sample tokens through the policy step per second),
train/epoch (fraction of the whole run: (t + fraction of iteration t) / T), train/tokens (cumulative
generated tokens trained on), train/kl (mean log pi - log pi_ref of the samples, a per-sequence KL
estimate), rewards/generations (mean reward-model score of the samples), advantages/mean,
advantages/std, train/generation_length, train/outer_iteration (1-based). Once per iteration after the
reward step (at the step count reached so far, 0 for the first): reward_model/loss,
reward_model/accuracy (chosen > rejected), rewards/demonstrations, rewards/generations (means over its
batches). At the end of each iteration: eval/loss (demonstration validation file) or eval/logp_gap and
eval/logp_gap_accuracy (preference validation file: mean log pi(chosen) - log pi(rejected), and the
fraction of pairs where it is > 0).

Checkpoints: as SFT (`model/`, `adapter/`, `state/`) plus `reward_model/` (a plain HF sequence
classifier) and `state/reward_optimizer.pt`; trainer_state adds outer_iteration, phase
("reward" = the iteration starts from its reward step, "policy" = continue the policy step at
step_in_phase). Checkpoints are only written between policy steps, so the reward model saved is the
one the policy phase uses. All sampling is seeded from (seed, iteration, step) in a forked RNG, and
the global RNG is restored, so a resumed run continues exactly.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import torch

from trainer.callbacks import Sink
from trainer.checkpointing import (
    load_optimizer_and_scheduler,
    load_rng_state,
    load_trainer_state,
    save_checkpoint,
    verify_checkpoint,
)
from trainer.collators import CompletionCollator
from trainer.config import TrainConfig
from trainer.data import IGNORE_INDEX, TokenizedExample, detect_format, read_jsonl
from trainer.errors import DataError, ModelLoadError
from trainer.generation import generate_responses
from trainer.logprobs import per_token_logps, sequence_logps
from trainer.losses import bradley_terry_loss, kl_penalized_rewards, rloo_advantages, rloo_policy_loss
from trainer.methods.validation import Validation, evaluate_validation, load_validation
from trainer.modeling import base_dtype, load_model_and_tokenizer, load_tokenizer
from trainer.optim import build_optimizer, build_scheduler
from trainer.result import RunResult
from trainer.reward_model import (
    REWARD_DIR,
    REWARD_OPTIMIZER,
    RewardTokens,
    collate_sequences,
    load_reward_model,
    save_reward_model,
    score,
)
from trainer.runtime import epoch_order, make_accelerator, optimizer_windows


def train(config: TrainConfig, sink: Sink) -> RunResult:
    """Run RFT as configured, reporting to `sink`; resume from `config.resume_from` when set."""
    from accelerate.utils import set_seed

    hp = config.hyperparameters
    accelerator = make_accelerator(config)
    if accelerator.num_processes > 1:
        raise ValueError("method: rft runs on one process (generation and reward model are not sharded)")
    device = accelerator.device
    set_seed(config.seed)

    resume = Path(config.resume_from) if config.resume_from else None
    if resume is not None and not (verify_checkpoint(resume) and (resume / REWARD_DIR).is_dir()):
        raise ValueError(f"resume_from: expected a complete RFT checkpoint directory, got {str(resume)!r}")
    lora = hp.lora.enabled
    try:
        if resume is not None and lora:
            model, tokenizer = load_model_and_tokenizer(config.model, adapter_dir=resume / "adapter")
        elif resume is not None:
            model, tokenizer = load_model_and_tokenizer(resume / "model")
        else:
            model, tokenizer = load_model_and_tokenizer(config.model, lora=hp.lora)
        reference = None
        if not lora:  # pi_ref = the initial model, frozen
            reference, _ = load_model_and_tokenizer(config.model)
            reference.requires_grad_(False).eval()
        reward_source = resume / REWARD_DIR if resume is not None else (hp.reward_model or config.model)
        reward_tokenizer = load_tokenizer(reward_source)
        reward = load_reward_model(reward_source, reward_tokenizer.pad_token_id, seed=config.seed)
    except (OSError, ValueError) as exc:
        raise ModelLoadError("model", f"cannot load model {config.model!r}: {exc}") from exc
    save_dtype = base_dtype(config.model)
    reward_dtype = base_dtype(hp.reward_model or config.model)
    ref_device = "cpu" if device.type == "cuda" else device
    if reference is not None:
        reference.to(ref_device)
    to_reward = RewardTokens(tokenizer, reward_tokenizer, hp.max_seq_len)

    demos = _demonstrations(config, tokenizer, hp, sink)
    val = load_validation(config.validation_file, tokenizer, hp, sink)

    # --- schedule ---------------------------------------------------------------------------------
    T = hp.outer_iterations
    order = epoch_order(len(demos), config.seed, 0)
    sizes = [len(demos) // T + (1 if t < len(demos) % T else 0) for t in range(T)]
    slices = [order[sum(sizes[:t]) : sum(sizes[: t + 1])] for t in range(T)]
    windows = [optimizer_windows(s, hp.batch_size, hp.gradient_accumulation_steps) for s in slices]
    total_steps = sum(len(w) for w in windows)

    model.to(device)
    reward.to(device)
    optimizer = build_optimizer(model, hp)
    scheduler = build_scheduler(optimizer, hp, total_steps)
    reward_optimizer = torch.optim.AdamW(
        [p for p in reward.parameters() if p.requires_grad], lr=hp.reward_learning_rate
    )
    pos = {"global_step": 0, "outer_iteration": 0, "phase": "reward", "step_in_phase": 0, "trained_tokens": 0}
    if resume is not None:
        state = load_trainer_state(resume)
        if state.get("total_steps") != total_steps:
            raise ValueError(
                f"resume_from: expected a checkpoint of a {total_steps}-step run, got "
                f"{state.get('total_steps')} (data or batch settings changed)"
            )
        pos = {key: state[key] for key in pos}
        load_optimizer_and_scheduler(resume, optimizer, scheduler)
        reward_optimizer.load_state_dict(
            torch.load(resume / "state" / REWARD_OPTIMIZER, map_location="cpu", weights_only=True)
        )
    model, optimizer = accelerator.prepare(model, optimizer)
    if resume is not None:
        load_rng_state(resume)
        sink.log_event(f"Resumed from {resume} at step {pos['global_step']}", data=dict(pos))
    sink.log_event(
        f"RFT for {T} outer iterations, {total_steps} policy steps, "
        f"{hp.samples_per_prompt} samples per prompt",
        data={
            "total_steps": total_steps,
            "outer_iterations": T,
            "examples": len(demos),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "reward_parameters": sum(p.numel() for p in reward.parameters() if p.requires_grad),
        },
    )

    run = _Run(config, accelerator, model, tokenizer, reference, ref_device, reward, to_reward)
    step, tokens = pos["global_step"], pos["trained_tokens"]
    last_checkpoint, last_metrics, status = resume, {}, "completed"
    for t in range(pos["outer_iteration"], T):
        if not slices[t]:
            continue
        first = pos["step_in_phase"] if (t == pos["outer_iteration"] and pos["phase"] == "policy") else 0
        if not (t == pos["outer_iteration"] and pos["phase"] == "policy"):
            if sink.should_stop():
                status = "stopped"
                break
            metrics = run.reward_phase(t, [demos[i] for i in slices[t]], reward_optimizer)
            sink.log_metrics(step, metrics)
            last_metrics = {**last_metrics, **metrics}
        for k in range(first, len(windows[t])):
            if sink.should_stop():
                status = "stopped"
                break
            batches = [[demos[i] for i in mb] for mb in windows[t][k]]
            metrics, n_tokens = run.policy_step(t, k, batches, optimizer, scheduler)
            step, tokens = step + 1, tokens + n_tokens
            end = k == len(windows[t]) - 1
            metrics.update(
                {
                    "train/epoch": (t + (k + 1) / len(windows[t])) / T,
                    "train/tokens": float(tokens),
                    "train/outer_iteration": float(t + 1),
                }
            )
            if step % hp.logging_interval == 0 or end:
                sink.log_metrics(step, metrics)
            last_metrics = {**last_metrics, **metrics}
            if end:
                # Same shape as IRFT's event, so one viewer shows both methods' samples per iteration.
                sink.log_event(
                    f"Outer iteration {t + 1}/{T} done",
                    data={"outer_iteration": t + 1, "samples": run.samples[:3]},
                )
                if val is not None:
                    eval_metrics = run.evaluate(val)
                    sink.log_metrics(step, eval_metrics)
                    last_metrics = {**last_metrics, **eval_metrics}
            if (hp.checkpoint_interval and step % hp.checkpoint_interval == 0) or end:
                nxt = (
                    {"outer_iteration": t + 1, "phase": "reward", "step_in_phase": 0}
                    if end
                    else {"outer_iteration": t, "phase": "policy", "step_in_phase": k + 1}
                )
                state = {
                    "global_step": step,
                    "trained_tokens": tokens,
                    "total_steps": total_steps,
                    "metrics": last_metrics,
                    **nxt,
                }
                last_checkpoint = _checkpoint(
                    config,
                    accelerator,
                    model,
                    tokenizer,
                    reward,
                    reward_tokenizer,
                    optimizer,
                    scheduler,
                    reward_optimizer,
                    state,
                    save_dtype,
                    reward_dtype,
                )
                sink.on_checkpoint(step, last_checkpoint, dict(last_metrics))
        if status == "stopped":
            break

    sink.log_event(f"Training {status} at step {step}", data={"global_step": step, "trained_tokens": tokens})
    return RunResult(
        status=status,
        global_step=step,
        trained_tokens=tokens,
        final_checkpoint=last_checkpoint,
        last_metrics=last_metrics,
    )


class _Run:
    """The models of one run and the three things done with them: sample, reward step, policy step."""

    def __init__(self, config, accelerator, model, tokenizer, reference, ref_device, reward, to_reward):
        self.config, self.hp, self.accelerator = config, config.hyperparameters, accelerator
        self.model, self.tokenizer, self.reference, self.ref_device = model, tokenizer, reference, ref_device
        self.reward, self.to_reward = reward, to_reward
        self.device = accelerator.device
        self.collate = CompletionCollator(pad_token_id=tokenizer.pad_token_id)
        self.samples: list[dict[str, str]] = []

    def _seed(self, t: int, phase: int, k: int) -> int:
        return (self.config.seed * 1_000_003 + t * 10_007 + phase * 1_009 + k) % (2**31)

    def sample(self, prompts: list[list[int]], seed: int) -> list[list[int]]:
        """k continuations per prompt (prompt-major), cut after the first EOS."""
        k = self.hp.samples_per_prompt
        responses = generate_responses(
            self.accelerator.unwrap_model(self.model),
            self.tokenizer,
            prompts,
            self.hp.generation,
            num_return_sequences=k,
            seed=seed,
        )
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

    def reward_phase(self, t: int, demos: list[tuple[list[int], list[int]]], optimizer) -> dict[str, float]:
        """Sample, then train the reward model on (demonstration, generation) pairs. Returns its metrics."""
        k, hp = self.hp.samples_per_prompt, self.hp
        pairs = []  # (chosen sequence, rejected sequence)
        for i in range(0, len(demos), hp.generation.batch_size):
            chunk = demos[i : i + hp.generation.batch_size]
            generations = self.sample([p for p, _ in chunk], self._seed(t, 1, i))
            pairs += [(p + r, p + generations[j * k + m]) for j, (p, r) in enumerate(chunk) for m in range(k)]
        self.reward.train()
        sums = torch.zeros(5)  # loss, correct, chosen score, rejected score, batches
        for epoch in range(hp.reward_epochs):
            generator = torch.Generator().manual_seed(self._seed(t, 2, epoch))
            perm = torch.randperm(len(pairs), generator=generator)
            for b in range(0, len(pairs), hp.batch_size):
                batch = [pairs[j] for j in perm[b : b + hp.batch_size].tolist()]
                scores = self._scores([c for c, _ in batch] + [r for _, r in batch])  # (2N,)
                chosen, rejected = scores[: len(batch)], scores[len(batch) :]
                loss = bradley_terry_loss(chosen, rejected)
                loss.backward()
                if hp.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(self.reward.parameters(), hp.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                sums += torch.tensor(
                    [
                        loss.item(),
                        (chosen > rejected).float().mean().item(),
                        chosen.mean().item(),
                        rejected.mean().item(),
                        1.0,
                    ]
                )
        self.reward.eval()
        n = max(sums[4].item(), 1.0)
        return {
            "reward_model/loss": sums[0].item() / n,
            "reward_model/accuracy": sums[1].item() / n,
            "rewards/demonstrations": sums[2].item() / n,
            "rewards/generations": sums[3].item() / n,
        }

    def _logps(self, net, examples: list[TokenizedExample]) -> torch.Tensor:
        batch = {key: v.to(self.device) for key, v in self.collate(examples).items()}
        with self.accelerator.autocast():
            logits = net(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
            ).logits  # (B, T, V)
        return sequence_logps(*per_token_logps(logits, batch["labels"]))  # (B,)

    @torch.no_grad()
    def _ref_logps(self, examples: list[TokenizedExample]) -> torch.Tensor:
        if self.reference is None:  # LoRA: the adapter-disabled base is the initial model
            net = self.accelerator.unwrap_model(self.model)
            was_training = net.training
            net.eval()
            with net.disable_adapter():
                out = self._logps(net, examples)
            net.train(was_training)
            return out
        self.reference.to(self.device)
        out = self._logps(self.reference, examples)
        self.reference.to(self.ref_device)
        return out

    def policy_step(self, t: int, k_step: int, batches, optimizer, scheduler) -> tuple[dict[str, float], int]:
        """One optimiser step: per micro-batch sample, score, RLOO, backward; then clip and step."""
        hp, k = self.hp, self.hp.samples_per_prompt
        started = time.perf_counter()
        n_prompts = sum(len(b) for b in batches)
        sums = {"loss": 0.0, "kl": 0.0, "reward": 0.0, "length": 0.0, "input_tokens": 0.0, "tokens": 0}
        advantages_all = []
        for m, batch in enumerate(batches):
            prompts = [p for p, _ in batch]
            responses = self.sample(prompts, self._seed(t, 3, k_step * 1000 + m))
            examples = [
                TokenizedExample(prompts[i // k] + r, [IGNORE_INDEX] * len(prompts[i // k]) + r)
                for i, r in enumerate(responses)
            ]
            with torch.no_grad():
                rewards = self._scores([e.input_ids for e in examples]).view(len(batch), k)  # (P, k)
            ref = self._ref_logps(examples).view(len(batch), k)  # (P, k)
            self.model.train()
            logps = self._logps(self.model, examples).view(len(batch), k)  # (P, k), with grad
            shaped = kl_penalized_rewards(rewards, logps.detach(), ref, hp.beta)
            advantages = rloo_advantages(shaped)  # (P, k)
            # weighted so the window's loss is the mean over all its prompts' samples
            loss = rloo_policy_loss(logps, advantages) * (len(batch) / n_prompts)
            self.accelerator.backward(loss)
            sums["loss"] += loss.item()
            sums["kl"] += (logps.detach() - ref).sum().item()
            sums["reward"] += rewards.sum().item()
            sums["length"] += sum(len(r) for r in responses)
            sums["input_tokens"] += sum(len(e.input_ids) for e in examples)
            sums["tokens"] += sum(len(r) for r in responses)
            advantages_all.append(advantages.flatten())
        max_norm = hp.max_grad_norm or float("inf")  # 0 = measure only
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        if not self.accelerator.optimizer_step_was_skipped:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        n = n_prompts * k
        adv = torch.cat(advantages_all)
        return {
            "train/loss": sums["loss"],
            "train/lr": float(lr),
            "train/grad_norm": float(grad_norm),
            "train/tokens_per_s": sums["input_tokens"] / max(time.perf_counter() - started, 1e-9),
            "train/kl": sums["kl"] / n,
            "rewards/generations": sums["reward"] / n,
            "advantages/mean": adv.mean().item(),
            "advantages/std": adv.std(unbiased=False).item(),
            "train/generation_length": sums["length"] / n,
        }, sums["tokens"]

    def evaluate(self, val: Validation) -> dict[str, float]:
        return evaluate_validation(self.model, self.tokenizer, val, self.hp, self.accelerator)


def _demonstrations(config, tokenizer, hp, sink) -> list[tuple[list[int], list[int]]]:
    """(prompt, response) token ids of every training row (`pairs.prompt_and_response`: the last
    assistant turn and what precedes it), the prompt cut to its last generation.max_prompt_len tokens
    and the response to the rest of max_seq_len."""
    from trainer.data import ensure_chat_template
    from trainer.pairs import prompt_and_response, truncate_pair

    rows = read_jsonl(config.training_file)
    if any(detect_format(row) != "prompt_completion" for _, row in rows) and ensure_chat_template(tokenizer):
        sink.log_event("The tokenizer has no chat template; using the ChatML default", level="warning")
    demos = []
    for lineno, row in rows:
        try:
            prompt, response = prompt_and_response(tokenizer, row)
        except ValueError as exc:
            raise DataError("training_file", f"training_file: line {lineno}: {exc}") from exc
        prompt, (response,) = truncate_pair(prompt, [response], hp.max_seq_len, hp.generation.max_prompt_len)
        demos.append((prompt, response))
    if not demos:
        raise DataError("training_file", "training_file: expected at least one example, got none")
    sink.log_event(
        f"Loaded {len(demos)} demonstrations",
        data={
            "split": "training",
            "rows": len(rows),
            "examples": len(demos),
            "trained_tokens_per_epoch": sum(len(r) for _, r in demos),
        },
    )
    return demos


def _checkpoint(
    config,
    accelerator,
    model,
    tokenizer,
    reward,
    reward_tokenizer,
    optimizer,
    scheduler,
    reward_optimizer,
    state,
    save_dtype,
    reward_dtype,
) -> Path:
    """SFT's checkpoint plus reward_model/ and state/reward_optimizer.pt, renamed into place at once."""

    def extra(path: Path) -> None:
        save_reward_model(reward, reward_tokenizer, path / REWARD_DIR, dtype=reward_dtype)
        torch.save(reward_optimizer.state_dict(), path / "state" / REWARD_OPTIMIZER)

    return save_checkpoint(
        config.output_dir,
        state["global_step"],
        model=accelerator.unwrap_model(model),
        tokenizer=tokenizer,
        config=config.to_dict(),
        trainer_state=state,
        optimizer=optimizer,
        scheduler=scheduler,
        dtype=save_dtype,
        extra=extra,
    )
