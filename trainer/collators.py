"""Batching of tokenised examples.

The masking convention, used everywhere in `trainer/`: `labels` has the same shape as `input_ids`;
`labels[b, t] = input_ids[b, t]` where the token is trained and `-100` (`IGNORE_INDEX`, the value
transformers and PyTorch's cross-entropy ignore) on prompt, template, untrained-message and padding
positions. Logits at position t score the label at t + 1 (see `logprobs.per_token_logps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trainer.data import IGNORE_INDEX, TokenizedExample


@dataclass
class CompletionCollator:
    """Right-pad a list of `TokenizedExample` into tensors for SFT.

    Example, with `pad_token_id=0`:

        >>> collate = CompletionCollator(pad_token_id=0)
        >>> batch = collate([TokenizedExample([5, 6, 7], [-100, 6, 7]),
        ...                  TokenizedExample([8, 9], [-100, 9])])
        >>> batch["input_ids"]
        tensor([[5, 6, 7],
                [8, 9, 0]])
        >>> batch["attention_mask"]
        tensor([[1, 1, 1],
                [1, 1, 0]])
        >>> batch["labels"]
        tensor([[-100,    6,    7],
                [-100,    9, -100]])
    """

    pad_token_id: int

    def __call__(self, examples: Sequence[TokenizedExample]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty batch")
        length = max(len(e.input_ids) for e in examples)
        input_ids = torch.full((len(examples), length), self.pad_token_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(examples), length), dtype=torch.long)  # (B, T)
        labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        for i, e in enumerate(examples):
            if len(e.input_ids) != len(e.labels):
                raise ValueError(f"example {i}: {len(e.input_ids)} input_ids but {len(e.labels)} labels")
            n = len(e.input_ids)
            input_ids[i, :n] = torch.tensor(e.input_ids, dtype=torch.long)
            attention_mask[i, :n] = 1
            labels[i, :n] = torch.tensor(e.labels, dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
