"""Losses as pure functions of log-prob tensors (methods.md §2, §13). No model or optimiser here.

SFT only for now; the IRFT logistic loss, the reward-model Bradley-Terry loss and the RFT policy loss
belong here too, each a pure function tested against the hand-computed cases of methods.md §13.
"""

from __future__ import annotations

import torch

from trainer.data import IGNORE_INDEX


def sft_nll(
    per_token_logps: torch.Tensor, mask: torch.Tensor, num_items: int | torch.Tensor | None = None
) -> torch.Tensor:
    """Token-level mean negative log-likelihood (TRL parity, methods.md §2.2).

    loss = -sum_{b,t} mask * logp / num_items, where num_items is the number of trained tokens in the
    whole gradient-accumulation window (across processes). Summing the per-micro-batch losses of a
    window then gives the mean over all its tokens, so long and short examples weigh per token, not
    per sequence. With num_items=None it is the mean over this batch's trained tokens.

    Args:
        per_token_logps: (B, T) log-probs, from `logprobs.per_token_logps`.
        mask: (B, T) bool, True at trained positions.
        num_items: the divisor; defaults to mask.sum().

    Returns:
        scalar tensor. 0 when there is nothing to divide by.
    """
    total = -(per_token_logps * mask).sum()  # scalar
    if num_items is None:
        num_items = mask.sum()
    if isinstance(num_items, torch.Tensor):
        return total / num_items.clamp(min=1).to(total.dtype)
    return total / max(int(num_items), 1)


def token_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of trained positions where argmax(logits at t) == label at t + 1.

    Args:
        logits: (B, T, V); labels: (B, T) with IGNORE_INDEX where not trained.

    Returns:
        scalar float32 tensor in [0, 1]; 0 when no position is trained.
    """
    predictions = logits[:, :-1, :].argmax(dim=-1)  # (B, T-1)
    targets = labels[:, 1:]  # (B, T-1)
    mask = targets != IGNORE_INDEX
    correct = ((predictions == targets) & mask).sum()
    return correct.float() / mask.sum().clamp(min=1).float()
