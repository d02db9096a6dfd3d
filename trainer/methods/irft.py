"""IRFT, Algorithm 2 of Li et al. 2024 (docs/methods.md §4); SPIN is outer_iterations = 1
(docs/methods.md §4.4).

The algorithm as shipped, with T = outer_iterations:

    for t in 0 .. T-1:
        examples_t <- stagewise: slice t of a permutation of the data seeded by `seed` (T disjoint
                      slices of sizes differing by at most one, covering the data; `loop.iteration_slices`);
                      full: every example (multi-iteration SPIN)
        y~ <- k = samples_per_prompt continuations per prompt of examples_t by the current policy
              (`generation.py`; sampled at temperature 1.0 by default, seed = seed + t; max_new_tokens
              "auto" = 2 x the longest demonstration response)
        screen: a y~ identical to its demonstration is left out of the pair loss (no contrast), and
              one that never stopped (hit max_new_tokens) is left out too with truncated_negatives
              "drop" (the default): it differs from a demonstration by form alone (issue 23)
        pi_ref <- the current policy: log pi_ref(y|x) and log pi_ref(y~|x) are computed ONCE here,
              under no_grad in eval mode, and cached with the examples (no second model is kept)
        K_t optimiser steps of anchored_pair_loss against the cached reference log-probs: the
              logistic loss of docs/methods.md §4.1 over the kept pairs plus nll_weight x the
              demonstrations' token-mean NLL (SFT's loss; 1.0 by default, 0 = the paper's loss):
              n_epochs passes over examples_t, each in a permutation seeded by (seed, t, epoch);
              batch_size pairs per micro-batch, gradient_accumulation_steps micro-batches a step.
              K_t = ceil(ceil(|examples_t| / batch_size) / gradient_accumulation_steps) * n_epochs,
              i.e. ceil(|examples_t| / (batch_size * gradient_accumulation_steps)) * n_epochs
              (`spec/plan.py`, which the worker's progress total also uses).

The inner loop (caching pi_ref, K_t steps, metrics, checkpoints, resume) is `trainer/pair_training.py`'s,
shared with DPO; this file says where the second response comes from: the policy's own generation.
AdamW and the HF schedule are as in SFT (`optim.py`), but a FRESH optimiser and LR schedule (warmup
included) are built for every outer iteration, as the reference code does by launching one Trainer per
stage (a saw-tooth LR, docs/methods.md §4.3).

Choices and deviations:

- Negatives: sampled, not greedy. The paper's gradient is an expectation over y~ ~ pi_theta; greedy
  negatives of a base model were one fixed unfinished string per prompt (39.3 of 40 tokens on arith),
  told apart from the EOS-terminated demonstrations by form alone: SPIN separated every pair by step 2
  and then only pushed its own generations down (issue 23). Greedy (temperature 0) remains available.
- The likelihood anchor (nll_weight): without it, pairs that differ by one number drag both sides down
  together (from an SFT model at 3e-4 the demonstrations fell from -2.8 to -17 nats and exact answers
  from 0.225 to 0: likelihood displacement, Razin et al. 2024); Iterative RPO (Pang et al. 2024) and
  DPO-Positive add this term. It counts each demonstration once, whatever k is.
- Prompt/response: the response is the last assistant turn (`pairs.py`); the reference uses the first
  turn, and generates from a different prompt format than it trains with; we generate from exactly
  the prompt we train with. No extra EOS is appended to responses (both: docs/methods.md §1.3).
- With LoRA, pi_ref is the cached log-probs of the current adapter model, not the adapter-disabled
  base: pi_ref is the previous iteration's model. Adapters are not merged between iterations.
- The policy's forward runs in train mode (dropout as configured, e.g. LoRA dropout); pi_ref's in
  eval mode. The reference disables all dropout; with dropout 0 the two coincide.
- Several processes (DDP): each generates and scores its strided share of the slice and all get the
  whole cache (`pair_training.py`); a micro-batch is batch_size pairs per process.
- train/epoch counts passes over the CURRENT iteration's examples (it restarts at 0 each iteration).

Metrics (exact names), logged every logging_interval optimiser steps and at the end of each
iteration (`loop.due`), as means over the steps since the last log line (`loop.MetricAccumulator`):

    train/loss (pair loss + nll_weight x train/nll), train/pair_loss (over the kept pairs), train/nll
    (the demonstrations' token-mean NLL), pairs/valid (the fraction of pairs kept), train/lr,
    train/grad_norm, train/tokens_per_s (tokens through the model: each prompt
    once, both responses), train/epoch (passes over the current iteration's examples), train/tokens
    (cumulative response tokens scored, real + generated), train/outer_iteration (1-based),
    rewards/real, rewards/generated (beta * log pi / pi_ref), rewards/margin, rewards/accuracy
    (fraction real > generated), logps/real, logps/generated (summed policy log-probs),
    train/generation_length (mean generated response tokens), train/kl (mean of
    log pi(y~) - log pi_ref(y~) on the generated responses: a one-sample estimate of KL(pi || pi_ref)).

Evaluation (every eval_interval optimiser steps; 0 = end of each outer iteration; always at the last
step; `evaluation.py`, as every method): eval/loss and eval/token_accuracy, and on a preference
validation file eval/logp_gap and eval/logp_gap_accuracy. Each iteration also logs, in its first
metrics row, negatives/identical, negatives/truncated (unfinished), negatives/dropped_identical and
negatives/dropped_truncated (fractions of its negatives), and the event "Outer iteration t/T: generated
N continuations; M train as negatives, ..." saying how many were left out and why, with three samples.

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

from pathlib import Path
from typing import Any

from trainer import demonstration_scores as scores
from trainer import loop
from trainer.callbacks import Sink
from trainer.config import TrainConfig
from trainer.demonstrations import load_demonstrations
from trainer.evaluation import load_validation
from trainer.generation import eos_token_ids, finished, generate_responses, resolve_max_new_tokens
from trainer.pair_training import PairTask, train_pairs
from trainer.result import RunResult
from trainer.spec import plan

CACHE_FILE = "irft_cache.pt"  # under state/ in mid-iteration checkpoints


def train(config: TrainConfig, sink: Sink) -> RunResult:
    """Run IRFT as configured, reporting to `sink`; resume from `config.resume_from` when set."""
    run = loop.open_run(config, sink, fp16=False)
    hp, report, tokenizer = run.hp, run.report, run.tokenizer
    examples = load_demonstrations(
        config.training_file, tokenizer, hp.max_seq_len, hp.generation.max_prompt_len, report
    )
    validation = load_validation(
        config.validation_file, tokenizer, hp.max_seq_len, hp.generation.max_prompt_len, report
    )
    T, k = hp.outer_iterations, hp.samples_per_prompt
    settings = resolve_max_new_tokens(hp.generation, [r for _, r in examples], hp.max_seq_len, report)
    eos_ids = eos_token_ids(run.model, tokenizer)

    def generate(model: Any, t: int, indices: list[int]) -> list[list[int]]:
        """y~: k continuations per prompt of slice t by the current policy, seeded by seed + t."""
        prompts = [examples[i][0] for i in indices]
        # keys: the global indices, so a sampled prompt's stream is the same on whichever process
        return generate_responses(
            model, tokenizer, prompts, settings, num_return_sequences=k, seed=config.seed + t, keys=indices
        )

    def screen(cache: dict[str, Any]) -> tuple[list[bool], dict[str, float]]:
        return screen_negatives(
            [examples[i][1] for i in cache["indices"]], cache["generated"], k, eos_ids, hp.truncated_negatives
        )

    def report_generations(cache: dict, t: int) -> None:
        samples = [
            {
                "prompt": tokenizer.decode(examples[cache["indices"][row // k]][0]),
                "generated": tokenizer.decode(g),
            }
            for row, g in enumerate(cache["generated"][:3])
        ]
        lengths = [len(g) for g in cache["generated"]]
        n, used, screened = len(lengths), sum(cache["valid"]), cache["screened"]
        same, cut = (round(screened[f"negatives/dropped_{why}"] * n) for why in ("identical", "truncated"))
        kept_cut = round(screened["negatives/truncated"] * n) - cut
        report.log_event(
            f"Outer iteration {t + 1}/{T}: generated {n} continuations; {used} train as negatives, "
            f"{n - used} left out ({same} identical to their demonstration, {cut} unfinished at "
            f"max_new_tokens{f'; {kept_cut} unfinished kept' if kept_cut else ''})",
            data={
                "outer_iteration": t + 1,
                "samples": samples,
                "mean_generation_length": sum(lengths) / max(n, 1),
                "negatives": n,
                "negatives_used": used,
                **screened,
            },
        )

    task = PairTask(
        method="irft",
        first="real",
        second_name="generated",
        examples=examples,
        slices=loop.iteration_slices("irft", hp, len(examples), config.seed),
        second=generate,
        generated=True,
        cache_file=CACHE_FILE,
        per_prompt=k,
        screen=screen,
        on_iteration=report_generations,
        score=lambda run: score_lines(run, examples, hp.beta),
    )
    return train_pairs(
        run,
        sink,
        task,
        plan.iteration_steps("irft", hp, len(examples), run.accelerator.num_processes),
        validation,
    )


def score_lines(run: loop.Run, examples: list[tuple[list[int], list[int]]], beta: float) -> Path:
    """Each demonstration's implicit reward beta * [log pi - log pi_0] under the final policy against the
    job's starting model (trainer/demonstration_scores.py)."""
    logps = scores.response_logps(run.model, examples)
    reference = scores.reference_logps(run)(examples)
    return scores.save(run, beta * (logps - reference), scores.response_tokens(examples), logps)


def screen_negatives(
    demonstrations: list[list[int]],
    negatives: list[list[int]],
    per_prompt: int,
    eos_ids: list[int],
    truncated: str,
) -> tuple[list[bool], dict[str, float]]:
    """Which (demonstration, negative) pairs train, and the fractions of negatives behind that choice.

    A negative identical to its demonstration is left out: the pair has no contrast, and its loss would
    push the demonstration's likelihood both up and down. An unfinished negative (it ran to
    max_new_tokens, or was cut to max_seq_len, without its end-of-turn token) is left out when
    `truncated` is "drop": it differs from every demonstration by form alone, the contrast SPIN/IRFT won
    on without learning the content (issue 23). `negatives` is prompt-major, `per_prompt` per
    demonstration.

    Returns (valid per negative, {"negatives/identical", "negatives/truncated" (unfinished, dropped or
    not), "negatives/dropped_identical", "negatives/dropped_truncated"}: fractions of all negatives).
    """
    valid, identical, unfinished, dropped_unfinished = [], 0, 0, 0
    for row, negative in enumerate(negatives):
        same = negative == demonstrations[row // per_prompt]
        cut = not finished(negative, eos_ids)
        drop_cut = cut and truncated == "drop" and not same
        identical += same
        unfinished += cut
        dropped_unfinished += drop_cut
        valid.append(not same and not drop_cut)
    n = max(len(negatives), 1)
    return valid, {
        "negatives/identical": identical / n,
        "negatives/truncated": unfinished / n,
        "negatives/dropped_identical": identical / n,
        "negatives/dropped_truncated": dropped_unfinished / n,
    }
