"""Token and sequence log-probabilities of labelled tokens (docs/methods.md §1.2). Pure functions."""

from __future__ import annotations

import torch

from trainer.data import IGNORE_INDEX


def per_token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(label_{t+1} | tokens <= t) for every position, with its mask.

    Causal shift: the logits at position t score the label at t + 1, so the last logit and the first
    label are dropped. Logits are upcast to float32 before normalising, as the reference code does;
    bf16 log-softmax over a large vocabulary loses several digits.

    Args:
        logits: (B, T, V) model output.
        labels: (B, T) token ids, IGNORE_INDEX (-100) where not scored.

    Returns:
        (per_token, mask), both (B, T - 1): per_token is float32 and 0 where mask is False.
    """
    targets = labels[:, 1:]  # (B, T-1)
    mask = targets != IGNORE_INDEX  # (B, T-1)
    safe_targets = targets.masked_fill(~mask, 0)  # gather needs a valid index everywhere
    logps = token_logps(logits[:, :-1, :], safe_targets)  # (B, T-1)
    return logps.masked_fill(~mask, 0.0), mask


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] at each position, in float32: (..., V), (...) -> (...).

    The packed forward (`packing.py`) calls this on the (L, V) logits of the scored positions only.
    """
    logits = logits.float()
    # log_softmax(x)[y] = x[y] - logsumexp(x): gathers one value instead of materialising (..., V).
    picked = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def sequence_logps(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of per-token log-probs over masked-in positions: log pi(y | x). (B, T) -> (B,)."""
    return (per_token * mask).sum(dim=-1)
