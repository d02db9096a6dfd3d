"""CompletionCollator against literal tensors."""

from __future__ import annotations

import pytest
import torch

from trainer.collators import CompletionCollator
from trainer.data import TokenizedExample


def test_right_padding_and_masks():
    batch = CompletionCollator(pad_token_id=0)(
        [
            TokenizedExample([5, 6, 7], [-100, 6, 7]),
            TokenizedExample([8, 9], [-100, 9]),
        ]
    )
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 6, 7], [8, 9, 0]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1], [1, 1, 0]]))
    assert torch.equal(batch["labels"], torch.tensor([[-100, 6, 7], [-100, 9, -100]]))
    assert all(t.dtype == torch.long for t in batch.values())


def test_pad_id_is_only_a_filler():
    # pad id 7 also occurs as a real token; the attention mask and labels still tell them apart.
    batch = CompletionCollator(pad_token_id=7)(
        [TokenizedExample([7], [7]), TokenizedExample([1, 2, 3], [-100, -100, 3])]
    )
    assert torch.equal(batch["input_ids"], torch.tensor([[7, 7, 7], [1, 2, 3]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 0, 0], [1, 1, 1]]))
    assert torch.equal(batch["labels"], torch.tensor([[7, -100, -100], [-100, -100, 3]]))


def test_errors():
    collate = CompletionCollator(pad_token_id=0)
    with pytest.raises(ValueError, match="empty"):
        collate([])
    with pytest.raises(ValueError, match="example 0"):
        collate([TokenizedExample([1, 2], [1])])


def test_docstring_example_is_exact():
    import doctest

    import trainer.collators

    result = doctest.testmod(trainer.collators)
    assert result.attempted > 0 and result.failed == 0
