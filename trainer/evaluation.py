"""Validation metrics shared by the methods: the log-probability gap on preference pairs.

`logp_gap` is Paper A's Figure 1 metric (methods.md §11.1.1): on preference rows, the mean of
log pi(chosen | prompt) - log pi(rejected | prompt), with summed response log-probs computed as in
methods.md §1.2 (not ported from the reference's `test_reward_accuracy.py`, §12.1.12), and the
fraction of pairs where that gap is positive. Prompts and responses come from `pairs.py`, so the
scored tokens are those the trainers train on.
"""

from __future__ import annotations

from typing import Any

import torch

from trainer.data import detect_format
from trainer.logprobs import per_token_logps, sequence_logps
from trainer.pairs import PairCollator, prompt_and_response, truncate_pair


def is_preference_rows(rows: list[dict[str, Any]]) -> bool:
    """True when every row is a preference row (prompt/chosen/rejected or OpenAI's input/...)."""
    return bool(rows) and all(detect_format(r) == "preference" for r in rows)


def preference_triples(
    tokenizer, rows: list[dict[str, Any]], max_seq_len: int, max_prompt_len: int
) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt, chosen, rejected) token ids of preference rows, truncated as training pairs are."""
    triples = []
    for i, row in enumerate(rows):
        rejected_row = dict(row)
        if "non_preferred_output" in row:
            rejected_row["preferred_output"] = row["non_preferred_output"]
        elif "rejected" in row:
            rejected_row["chosen"] = row["rejected"]
        else:
            raise ValueError(f"row {i}: expected 'rejected' or 'non_preferred_output'")
        prompt, chosen = prompt_and_response(tokenizer, row)
        prompt_r, rejected = prompt_and_response(tokenizer, rejected_row)
        if prompt_r != prompt:
            raise ValueError(f"row {i}: the chosen and rejected responses tokenise to different prompts")
        prompt, (chosen, rejected) = truncate_pair(prompt, [chosen, rejected], max_seq_len, max_prompt_len)
        triples.append((prompt, chosen, rejected))
    return triples


@torch.no_grad()
def logp_gap(
    model,
    tokenizer,
    rows: list[dict[str, Any]],
    *,
    max_seq_len: int,
    max_prompt_len: int,
    batch_size: int = 8,
    triples: list[tuple[list[int], list[int], list[int]]] | None = None,
) -> dict[str, float]:
    """{"eval/logp_gap": mean gap, "eval/logp_gap_accuracy": fraction of gaps > 0} over `rows`.

    `model` is run in eval mode (restored afterwards) on its own device. Pass `triples` (from
    `preference_triples`) to skip re-tokenising `rows` on every evaluation.
    """
    if triples is None:
        triples = preference_triples(tokenizer, rows, max_seq_len, max_prompt_len)
    if not triples:
        return {"eval/logp_gap": 0.0, "eval/logp_gap_accuracy": 0.0}
    collate = PairCollator(pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    gaps = []
    try:
        for start in range(0, len(triples), batch_size):
            batch = {k: v.to(device) for k, v in collate(triples[start : start + batch_size]).items()}
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
            ).logits  # (2b, T, V)
            chosen, rejected = sequence_logps(*per_token_logps(logits, batch["labels"])).chunk(2)  # (b,)
            gaps.append((chosen - rejected).float().cpu())
    finally:
        model.train(was_training)
    gap = torch.cat(gaps)
    return {"eval/logp_gap": gap.mean().item(), "eval/logp_gap_accuracy": (gap > 0).float().mean().item()}
