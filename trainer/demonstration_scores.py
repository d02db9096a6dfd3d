"""Demonstration quality scores: after a reward-learning job, every line of its training file scored by
the reward the job learned, so that a user with a noisy dataset can read the least demonstration-like
lines first (docs/methods.md §10).

What is scored is each line's last assistant response given everything before it (`pairs.py`'s
prompt/response split and truncation, the one IRFT and RFT train on), by the method's own reward:

    rft   reward_model             r_phi(prompt + response + EOS): the trained reward model's scalar
                                   (`reward_model.RewardTokens`: the same tokens it was trained on)
    irft  implicit_reward          beta * [log pi(y|x) - log pi_0(y|x)]: the final policy against the
                                   job's starting model pi_0 (SPIN/IRFT's reward, summed over the
                                   outer iterations: each stage's reference is the previous stage)
    dpo   implicit_reward_margin   the chosen response's implicit reward minus the rejected one's
                                   (a line whose preference the model disagrees with scores below 0)
    iql   implied_reward           sum_t [Q(s_t, a_t) - gamma V(s_{t+1})] over the response: the reward
                                   the logits imply as a soft Q-function (`losses.td_regularised_nll`)

Why the FINAL policy and not the one select_checkpoint hands back: the scores describe the data through
the reward the whole run learned. The handed-back model may be the starting model itself (no step
improved the validation loss), and its implicit reward against pi_0 is then 0 for every line.

Each line also gets `score_per_token` (the score over the response's tokens: a summed log-ratio or
reward grows with length, so a long line can rank low for its length alone) and `log_likelihood` (with
its per-token form): log pi(y|x) of the scored response under the final policy. On arith_noisy the
likelihood flagged the wrong demonstrations far better than an implicit reward, which divides out the
base model's knowledge that makes a wrong answer unlikely (docs/decisions.md); the results page reports
how well each column flags known-bad lines (docs/results.md).

The file (`demonstration_scores.jsonl`, one JSON object per training line) is written in rank order,
lowest score first (rank 1), ties by line number:

    {"line": 17, "rank": 1, "score": -3.2, "score_per_token": -0.11, "tokens": 29, "kind": "implicit_reward",
     "log_likelihood": -41.0, "log_likelihood_per_token": -1.41}

Scoring costs one forward pass over the training set per model involved (two for IRFT and DPO on full
fine-tuning, where pi_0 is loaded again from the base model; with LoRA pi_0 is the adapter switched
off). It runs on the main process only, after the last checkpoint: a run stopped while it scores is
resumed from that checkpoint and scores again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from trainer.data import TokenizedExample
from trainer.logprobs import token_logps
from trainer.losses import td_regularised_nll
from trainer.packing import label_logits, pack_one, row_sums
from trainer.spec.scores import FILE, KINDS

BATCH = 16  # responses per forward: scoring has no backward, so a few times a training micro-batch fits

Pair = tuple[list[int], list[int]]  # (prompt, response) token ids


def ranked(
    lines: Sequence[int],
    scores: Sequence[float],
    tokens: Sequence[int],
    kind: str,
    log_likelihood: Sequence[float],
) -> list[dict]:
    """The file's rows: one per line, lowest score first (rank 1), ties by line number.

    >>> [r["line"] for r in ranked([1, 2, 3], [0.5, -1.0, 0.5], [2, 4, 1], "implicit_reward", [0, 0, 0])]
    [2, 1, 3]
    >>> ranked([7], [-1.0], [4], "reward_model", [-2.0])[0]["log_likelihood_per_token"]
    -0.5
    """
    order = sorted(range(len(lines)), key=lambda i: (scores[i], lines[i]))
    return [
        {
            "line": int(lines[i]),
            "rank": rank,
            "score": float(scores[i]),
            "score_per_token": float(scores[i]) / max(int(tokens[i]), 1),
            "tokens": int(tokens[i]),
            "kind": kind,
            "log_likelihood": float(log_likelihood[i]),
            "log_likelihood_per_token": float(log_likelihood[i]) / max(int(tokens[i]), 1),
        }
        for rank, i in enumerate(order, start=1)
    ]


def write(path: Path, rows: list[dict]) -> Path:
    """Write the rows atomically (a temp file renamed over `path`): a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)  # a run resumed at its last step wrote nothing yet
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _rows(pairs: Sequence[Pair]) -> list[TokenizedExample]:
    return [TokenizedExample(list(p) + list(r), [-100] * len(p) + list(r)) for p, r in pairs]


def chunks(items: Sequence[Any], size: int = BATCH) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@torch.no_grad()
def response_logps(model: Any, pairs: Sequence[Pair]) -> torch.Tensor:
    """log pi(response | prompt) of each (prompt, response), (N,) float64 on the CPU, in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for chunk in chunks(pairs):
            batch = pack_one(_rows(chunk)).to(device)
            logits = label_logits(model, batch)
            out.append(row_sums(token_logps(logits.float(), batch.targets), batch).double().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def implied_rewards(model: Any, pairs: Sequence[Pair], gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_t r_t, log pi(y|x)) of each response, both (N,) float64 on the CPU, from one forward: r_t =
    Q(s_t, a_t) - gamma V(s_{t+1}), V = 0 after the response's last token, IQL's implied reward of the
    whole response. At gamma = 1 the sum telescopes to log pi(y|x) + V(s_0) (docs/methods.md §9.1)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rewards_out, logps_out = [], []
    try:
        for chunk in chunks(pairs):
            batch = pack_one(_rows(chunk)).to(device)
            logits = label_logits(model, batch)
            _, logps, rewards = td_regularised_nll(
                logits.float(),
                batch.targets,
                batch.row_of_target,
                batch.in_row_position,
                td_weight=0.0,
                gamma=gamma,
            )
            rewards_out.append(row_sums(rewards, batch).double().cpu())
            logps_out.append(row_sums(logps, batch).double().cpu())
    finally:
        model.train(was_training)
    return torch.cat(rewards_out), torch.cat(logps_out)


def reference_logps(run: Any) -> Callable[[Sequence[Pair]], torch.Tensor]:
    """log pi_0 of pairs under the job's starting model: with LoRA the policy with its adapter switched
    off (the adapter starts at zero); otherwise the base model loaded again, for this pass only."""
    model = run.model
    if hasattr(model, "disable_adapter"):

        def with_adapter_off(pairs: Sequence[Pair]) -> torch.Tensor:
            with model.disable_adapter():
                return response_logps(model, pairs)

        return with_adapter_off

    loaded: list[Any] = []  # the base model, loaded on first use and kept for this scoring pass

    def from_base(pairs: Sequence[Pair]) -> torch.Tensor:
        if not loaded:
            from trainer.modeling import load_model_and_tokenizer

            base, _ = load_model_and_tokenizer(run.config.model)
            loaded.append(base.to(next(model.parameters()).device))
        return response_logps(loaded[0], pairs)

    return from_base


def response_tokens(pairs: Sequence[Pair]) -> list[int]:
    return [len(r) for _, r in pairs]


def training_lines(path: str) -> list[int]:
    """The 1-based line numbers of the training file's rows, in the order every loader reads them."""
    from trainer.data import read_jsonl

    return [lineno for lineno, _ in read_jsonl(path)]


def save(run: Any, scores: torch.Tensor, tokens: Sequence[int], log_likelihood: torch.Tensor) -> Path:
    """Rank `scores` (one per training line, in file order; `log_likelihood` the final policy's log pi of
    each scored response), write the file into the run's output dir and report it. Returns its path."""
    config, report = run.config, run.report
    kind = KINDS[config.method]
    lines = training_lines(config.training_file)
    if len(lines) != len(scores):  # the loaders raise on a bad row rather than skip it: this is a bug
        raise RuntimeError(f"scored {len(scores)} demonstrations but the training file has {len(lines)} rows")
    rows = ranked(lines, scores.tolist(), tokens, kind, log_likelihood.tolist())
    path = write(Path(config.output_dir) / FILE, rows)
    lowest = ", ".join(f"line {r['line']} ({r['score']:.3g})" for r in rows[:3])
    report.log_event(
        f"Scored {len(rows)} training demonstrations by {kind.replace('_', ' ')}; lowest: {lowest}",
        data={"kind": kind, "demonstrations": len(rows), "lowest": rows[:10]},
    )
    return path
