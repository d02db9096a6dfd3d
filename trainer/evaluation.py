"""Evaluation on the validation file, the same for every method, so that runs compare on one metric.

Every validation file gives `eval/loss` and `eval/token_accuracy`: the token-mean NLL and next-token
accuracy on its trained tokens (for a preference file, the preferred responses), as SFT trains.

A preference file (prompt/chosen/rejected or OpenAI's input/preferred_output/non_preferred_output)
also gives Paper A's Figure 1 metric (docs/methods.md §1.9), `eval/logp_gap`: the mean of
log pi(chosen | prompt) - log pi(rejected | prompt), summed response log-probs computed as in
docs/methods.md §1.2 (not ported from the reference's `test_reward_accuracy.py`, whose faults
docs/methods.md §1.9 lists), and `eval/logp_gap_accuracy`, the fraction of pairs where that gap is
positive. Prompts and responses come from `pairs.py`, so the scored tokens are those the trainers
train on; prompts keep their last `max_prompt_len` tokens, as the reward-learning methods' generation
prompts do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trainer.callbacks import Sink
from trainer.data import TokenizedExample, detect_format, ensure_chat_template, read_jsonl
from trainer.demonstrations import load_examples
from trainer.errors import DataError
from trainer.logprobs import token_logps
from trainer.losses import token_accuracy
from trainer.packing import label_logits, pack
from trainer.pairs import prompt_and_response, score_pairs, truncate_pair
from trainer.runtime import gather_shards, shard

Triple = tuple[list[int], list[int], list[int]]  # (prompt, chosen, rejected) token ids


@dataclass
class Validation:
    """A loaded validation file: its examples, and its preference pairs when it is a preference file."""

    examples: list[TokenizedExample]
    pairs: list[Triple] | None


def is_preference_rows(rows: list[dict[str, Any]]) -> bool:
    """True when every row is a preference row (prompt/chosen/rejected or OpenAI's input/...)."""
    return bool(rows) and all(detect_format(r) == "preference" for r in rows)


def preference_triples(
    tokenizer,
    rows: list[dict[str, Any]],
    max_seq_len: int,
    max_prompt_len: int,
    line_numbers: list[int] | None = None,
) -> list[Triple]:
    """(prompt, chosen, rejected) token ids of preference rows, truncated as training pairs are.
    Errors name the file's line (`line_numbers`, 1-based) or else the row's 0-based index."""
    triples = []
    for i, row in enumerate(rows):
        where = f"line {line_numbers[i]}" if line_numbers else f"row {i}"
        # The same row with the rejected response in the chosen slot (rows passed the format rule).
        if "non_preferred_output" in row:
            rejected_row = {**row, "preferred_output": row["non_preferred_output"]}
        else:
            rejected_row = {**row, "chosen": row["rejected"]}
        try:
            prompt, chosen = prompt_and_response(tokenizer, row)
            prompt_r, rejected = prompt_and_response(tokenizer, rejected_row)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if prompt_r != prompt:
            raise ValueError(f"{where}: the chosen and rejected responses tokenise to different prompts")
        prompt, (chosen, rejected) = truncate_pair(prompt, [chosen, rejected], max_seq_len, max_prompt_len)
        triples.append((prompt, chosen, rejected))
    return triples


def load_preference_pairs(
    path: str, tokenizer: Any, max_seq_len: int, max_prompt_len: int
) -> list[Triple] | None:
    """The (prompt, chosen, rejected) triples of a preference file; None for a demonstration file."""
    try:
        numbered = read_jsonl(path)
        rows = [row for _, row in numbered]
        if not is_preference_rows(rows):
            return None
        ensure_chat_template(tokenizer)
        lines = [lineno for lineno, _ in numbered]
        return preference_triples(tokenizer, rows, max_seq_len, max_prompt_len, lines)
    except ValueError as exc:
        raise DataError("validation_file", f"validation_file: {exc}") from exc


def load_validation(
    path: str | None, tokenizer: Any, max_seq_len: int, max_prompt_len: int, report: Sink
) -> Validation | None:
    """The validation file read once at the start of a run; None when the job has none."""
    if not path:
        return None
    examples = load_examples(path, "validation_file", tokenizer, max_seq_len, report)
    pairs = load_preference_pairs(path, tokenizer, max_seq_len, max_prompt_len)
    if pairs is not None:
        report.log_event(f"Loaded {len(pairs)} preference validation pairs", data={"split": "validation"})
    return Validation(examples, pairs)


def evaluate(
    model: Any, tokenizer: Any, validation: Validation, accelerator: Any, batch_size: int
) -> dict[str, float]:
    """Every validation metric of the current policy (see the module docstring)."""
    net = accelerator.unwrap_model(model)  # no DDP hooks: processes may run different batch counts
    metrics = token_metrics(net, validation.examples, tokenizer, accelerator, batch_size)
    if validation.pairs:
        metrics.update(
            logp_gap(net, tokenizer, validation.pairs, batch_size=batch_size, accelerator=accelerator)
        )
    return metrics


@torch.no_grad()
def token_metrics(
    net: Any, examples: list[TokenizedExample], tokenizer: Any, accelerator: Any, batch_size: int
) -> dict[str, float]:
    """Token-mean NLL and token accuracy over `examples`, sharded over processes."""
    was_training = net.training
    net.eval()
    shard = examples[accelerator.process_index :: accelerator.num_processes]
    sums = torch.zeros(3, device=accelerator.device)  # summed NLL, trained tokens, correct predictions
    try:
        for i in range(0, len(shard), batch_size):
            for _, batch in pack(shard[i : i + batch_size]):
                batch = batch.to(accelerator.device)
                with accelerator.autocast():
                    logits = label_logits(net, batch)  # (L, V)
                n_tokens = float(batch.n_targets)
                sums += torch.stack(
                    [
                        -token_logps(logits, batch.targets).sum(),
                        torch.tensor(n_tokens, device=accelerator.device),
                        token_accuracy(logits, batch.targets) * n_tokens,
                    ]
                )
    finally:
        net.train(was_training)
    nll, n_tokens, correct = accelerator.reduce(sums, reduction="sum").tolist()
    n_tokens = max(n_tokens, 1.0)
    return {"eval/loss": nll / n_tokens, "eval/token_accuracy": correct / n_tokens}


@torch.no_grad()
def logp_gap(
    model: Any, tokenizer: Any, triples: list[Triple], *, batch_size: int = 8, accelerator: Any = None
) -> dict[str, float]:
    """{"eval/logp_gap": mean gap, "eval/logp_gap_accuracy": fraction of gaps > 0} over `triples`
    (from `preference_triples`). `model` runs in eval mode (restored afterwards) on its own device;
    with `accelerator`, each process scores its share of the pairs."""
    if not triples:
        return {"eval/logp_gap": 0.0, "eval/logp_gap_accuracy": 0.0}
    rank, world = (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)
    mine = shard(triples, rank, world)
    was_training = model.training
    model.eval()
    gaps: list[float] = []
    try:
        for start in range(0, len(mine), batch_size):
            chosen, rejected = score_pairs(model, mine[start : start + batch_size])  # (b,)
            gaps += (chosen - rejected).float().cpu().tolist()
    finally:
        model.train(was_training)
    if accelerator is not None:
        gaps = gather_shards(gaps, accelerator)
    gap = torch.tensor(gaps)
    return {"eval/logp_gap": gap.mean().item(), "eval/logp_gap_accuracy": (gap > 0).float().mean().item()}
