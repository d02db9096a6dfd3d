"""Prompt/response split, pair truncation and the [real; gen] collator."""

from __future__ import annotations

import pytest
import torch

from trainer.logprobs import per_token_logps, sequence_logps
from trainer.pairs import PairCollator, prompt_and_response, truncate_pair


def test_chat_row_last_assistant_turn_is_response(tokenizer):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "The end."},
    ]
    prompt, response = prompt_and_response(tokenizer, {"messages": messages})
    expected_prompt = tokenizer.apply_chat_template(
        [{"role": m["role"], "content": m["content"]} for m in messages[:3]],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert tokenizer.decode(prompt) == expected_prompt
    assert tokenizer.decode(response) == "The end.<|im_end|>"
    assert response[-1] == tokenizer.eos_token_id


def test_prompt_completion_row_goes_through_template(tokenizer):
    prompt, response = prompt_and_response(tokenizer, {"prompt": "Name a colour.", "completion": "Blue."})
    assert tokenizer.decode(prompt) == "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(response) == "Blue.<|im_end|>"


def test_preference_row_uses_chosen(tokenizer):
    _, response = prompt_and_response(
        tokenizer, {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."}
    )
    assert tokenizer.decode(response) == "Blue.<|im_end|>"


def test_row_without_assistant_is_rejected(tokenizer):
    with pytest.raises(ValueError):
        prompt_and_response(tokenizer, {"messages": [{"role": "user", "content": "Hi"}]})


def test_truncate_pair_keeps_prompt_end_and_cuts_responses():
    prompt, (real, gen) = truncate_pair(
        list(range(10)), [[20, 21, 22, 23], [30]], max_seq_len=6, max_prompt_len=3
    )
    assert prompt == [7, 8, 9]
    assert real == [20, 21, 22] and gen == [30]
    # Short enough: untouched.
    assert truncate_pair([1, 2], [[3, 4]], max_seq_len=8, max_prompt_len=4) == ([1, 2], [[3, 4]])


def test_pair_collator_literal_tensors():
    batch = PairCollator(0)([([5, 6], [8, 3], [3]), ([7], [9, 9, 3], [4, 3])])
    assert torch.equal(
        batch["input_ids"], torch.tensor([[5, 6, 8, 3], [7, 9, 9, 3], [5, 6, 3, 0], [7, 4, 3, 0]])
    )
    assert torch.equal(
        batch["attention_mask"], torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 0]])
    )
    assert torch.equal(
        batch["labels"],
        torch.tensor([[-100, -100, 8, 3], [-100, 9, 9, 3], [-100, -100, 3, -100], [-100, 4, 3, -100]]),
    )


def test_pair_collator_logps_split_real_and_generated():
    torch.manual_seed(0)
    logits = torch.randn(4, 4, 10)
    batch = PairCollator(0)([([5, 6], [8, 3], [3]), ([7], [9, 9, 3], [4, 3])])
    real, gen = sequence_logps(*per_token_logps(logits, batch["labels"])).chunk(2)
    logp = torch.log_softmax(logits, -1)
    assert real[0].item() == pytest.approx((logp[0, 1, 8] + logp[0, 2, 3]).item(), abs=1e-6)
    assert real[1].item() == pytest.approx((logp[1, 0, 9] + logp[1, 1, 9] + logp[1, 2, 3]).item(), abs=1e-6)
    assert gen[0].item() == pytest.approx(logp[2, 1, 3].item(), abs=1e-6)
    assert gen[1].item() == pytest.approx((logp[3, 0, 4] + logp[3, 1, 3]).item(), abs=1e-6)
