"""Padding-free batches (trainer/packing.py): the packed, label-only forward gives the padded forward's
log-probs and gradients, rows never see each other, and a model that cannot pack falls back loudly."""

from __future__ import annotations

import copy

import pytest
import torch

from trainer.collators import CompletionCollator
from trainer.data import TokenizedExample
from trainer.logprobs import per_token_logps, sequence_logps, token_logps
from trainer.losses import sft_nll, token_accuracy
from trainer.modeling import load_model_and_tokenizer
from trainer.packing import (
    _PACKS,
    _SHARES,
    _padding_is_cheaper,
    label_logits,
    pack,
    pack_one,
    pack_pairs,
    row_sums,
)
from trainer.pairs import PairCollator, pair_logps


def _rows(seed: int = 0) -> list[TokenizedExample]:
    """Four rows of different lengths and prompt lengths; the last has no trained token at all."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for length, prompt in [(7, 3), (12, 5), (4, 1), (9, 9)]:
        ids = torch.randint(5, 100, (length,), generator=g).tolist()
        rows.append(TokenizedExample(ids, [-100] * prompt + ids[prompt:]))
    return rows


def _padded_row_logps(model, rows):
    batch = CompletionCollator(pad_token_id=0)(rows)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logps(*per_token_logps(logits, batch["labels"]))  # (R,)


def _packed_row_logps(model, rows):
    batch = pack_one(rows)
    return row_sums(token_logps(label_logits(model, batch), batch.targets), batch)


@pytest.fixture
def model(tiny_model_dir):
    model, _ = load_model_and_tokenizer(str(tiny_model_dir))
    return model.eval()


def test_pack_one_layout():
    batch = pack_one([TokenizedExample([5, 6, 7], [-100, 6, 7]), TokenizedExample([8, 9], [-100, 9])])
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    # Position t scores the label at t + 1 of the same row; the boundary 2 -> 3 is never scored.
    assert batch.logit_positions.tolist() == [0, 1, 3]
    assert batch.targets.tolist() == [6, 7, 9]
    assert batch.row_of_target.tolist() == [0, 0, 1]
    assert [len(r.input_ids) for r in batch.rows] == [3, 2] and batch.n_tokens == 5 and batch.n_targets == 3


def test_pack_splits_at_the_token_limit_and_keeps_order():
    rows = [TokenizedExample([1] * n, [-100] + [1] * (n - 1)) for n in (3, 4, 2, 9, 1)]
    runs = pack(rows, max_tokens=7)
    assert [list(r) for r, _ in runs] == [[0, 1], [2], [3], [4]]  # 3+4; 2 (+9 > 7); 9 alone; 1
    assert [b.n_tokens for _, b in runs] == [7, 2, 9, 1]
    assert [list(r) for r, _ in pack(rows, max_tokens=None)] == [[0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="empty"):
        pack([])


def test_padded_view_indexes_the_same_positions():
    rows = _rows()
    batch = pack_one(rows)
    ids, mask, flat = batch.padded(pad_token_id=0)
    reference = CompletionCollator(pad_token_id=0)(rows)
    assert torch.equal(ids, reference["input_ids"]) and torch.equal(mask, reference["attention_mask"])
    labels = reference["labels"][:, 1:]  # what position t of each row scores
    width = ids.shape[1]
    expected = [(r * width + t) for r in range(len(rows)) for t in range(width - 1) if labels[r, t] != -100]
    assert flat.tolist() == expected


def test_packed_log_probs_equal_padded(model):
    rows = _rows()
    with torch.no_grad():
        packed, padded = _packed_row_logps(model, rows), _padded_row_logps(model, rows)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    assert packed[3].item() == 0.0  # no trained token
    assert packed[:3].abs().min() > 1.0  # real log-probs, not zeros


def test_rows_do_not_attend_to_each_other(model):
    """A row's log-probs do not change with what is packed before it."""
    rows = _rows()
    other = _rows(seed=7)
    with torch.no_grad():
        alone = _packed_row_logps(model, rows[1:2])
        after_others = _packed_row_logps(model, [other[0], other[1], rows[1]])[2]
    assert after_others.item() == pytest.approx(alone.item(), abs=1e-5)


def test_packed_sft_gradient_equals_padded(model):
    rows = _rows()
    padded_model = copy.deepcopy(model)
    batch = pack_one(rows)
    logits = label_logits(model, batch)
    sft_nll(token_logps(logits, batch.targets)).backward()
    reference = CompletionCollator(pad_token_id=0)(rows)
    out = padded_model(input_ids=reference["input_ids"], attention_mask=reference["attention_mask"]).logits
    sft_nll(*per_token_logps(out, reference["labels"])).backward()
    for (name, a), (_, b) in zip(model.named_parameters(), padded_model.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)
    assert 0.0 <= token_accuracy(logits, batch.targets).item() <= 1.0


def test_lora_model_packs_and_its_adapter_off_base_too(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    base, _ = load_model_and_tokenizer(str(tiny_model_dir))
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a non-zero adapter, so policy and reference differ
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.add_(0.05)
    lora.eval()
    rows = _rows()
    with torch.no_grad():
        torch.testing.assert_close(
            _packed_row_logps(lora, rows), _padded_row_logps(lora, rows), atol=1e-5, rtol=0
        )
        with lora.disable_adapter():
            off = _packed_row_logps(lora, rows)
            torch.testing.assert_close(off, _padded_row_logps(lora, rows), atol=1e-5, rtol=0)
        assert not torch.allclose(off, _packed_row_logps(lora, rows))


class _IgnoresPositionIds(torch.nn.Module):
    """A causal LM whose forward drops position ids: packed rows would attend across boundaries."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, use_cache=False):
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = None  # a custom mask ignored too: plain causal attention over the pack
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep)


def test_model_that_cannot_pack_falls_back_to_padded_and_warns(model):
    wrapped = _IgnoresPositionIds(model).eval()
    rows = _rows()
    batch = pack_one(rows)
    warnings: list[str] = []
    with torch.no_grad():
        logits = label_logits(wrapped, batch, warnings.append)
        again = label_logits(wrapped, batch, warnings.append)  # decided once per model
    assert len(warnings) == 1 and "Padding-free batches are off" in warnings[0]
    assert _PACKS[wrapped] is False
    with torch.no_grad():
        expected = _padded_row_logps(model, rows)
    torch.testing.assert_close(
        row_sums(token_logps(logits, batch.targets), batch), expected, atol=1e-5, rtol=0
    )
    assert torch.equal(logits, again)


def _triples(seed: int = 0):
    """(prompt, a, b) with prompts and responses of different lengths; one empty b."""
    g = torch.Generator().manual_seed(seed)

    def ids(n):
        return torch.randint(5, 100, (n,), generator=g).tolist()

    return [(ids(6), ids(3), ids(5)), (ids(2), ids(7), ids(1)), (ids(9), ids(2), [])]


def test_pack_pairs_layout_and_rows():
    batch = pack_pairs([([5, 6], [7], [8, 9])])
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 2, 3]]  # b continues the prompt, not a
    assert batch.logit_positions.tolist() == [1, 1, 3]  # the prompt's last token scores a[0] and b[0]
    assert batch.row_of_target.tolist() == [0, 1, 1] and batch.in_row_position.tolist() == [1, 1, 2]
    assert [r.input_ids for r in batch.rows] == [[5, 6, 7], [5, 6, 8, 9]]
    allow = batch.attention_mask_4d("sdpa", torch.float32)[0, 0]
    assert allow.tolist() == [
        [True, False, False, False, False],
        [True, True, False, False, False],
        [True, True, True, False, False],
        [True, True, False, True, False],  # b[0] sees the prompt, not a
        [True, True, False, True, True],
    ]
    additive = batch.attention_mask_4d("eager", torch.float32)[0, 0]
    assert torch.equal(additive == 0, allow)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_shared_prompt_pair_log_probs_and_gradients_equal_padded_rows(tiny_model_dir, implementation):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=implementation).eval()
    reference = copy.deepcopy(model)
    triples = _triples()
    first, second = pair_logps(model, triples)
    collate = PairCollator(pad_token_id=0)(triples)
    out = reference(input_ids=collate["input_ids"], attention_mask=collate["attention_mask"]).logits
    ref_first, ref_second = sequence_logps(*per_token_logps(out, collate["labels"])).chunk(2)
    torch.testing.assert_close(first, ref_first, atol=1e-5, rtol=0)
    torch.testing.assert_close(second, ref_second, atol=1e-5, rtol=0)
    assert second[2].item() == 0.0  # the empty response
    assert _SHARES[model] is True  # the shared layout was used, not the fallback
    (first - 0.5 * second).sum().backward()
    (ref_first - 0.5 * ref_second).sum().backward()
    for (name, a), (_, b) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_shared_prompt_falls_back_to_plain_rows_when_the_mask_is_ignored(model):
    wrapped = _IgnoresPositionIds(model).eval()  # also drops the 4D mask's meaning: it attends causally
    triples = _triples()
    warnings: list[str] = []
    with torch.no_grad():
        first, second = pair_logps(wrapped, triples, warnings.append)
        expected_first, expected_second = pair_logps(model, triples)
    assert _SHARES[wrapped] is False and any("Shared-prompt pair batches are off" in w for w in warnings)
    torch.testing.assert_close(first, expected_first, atol=1e-5, rtol=0)
    torch.testing.assert_close(second, expected_second, atol=1e-5, rtol=0)


def test_similar_length_rows_are_padded_with_the_head_on_scored_positions_only(model):
    g = torch.Generator().manual_seed(3)
    rows = []
    for prompt in (2, 5, 3, 6):  # equal lengths, different prompt lengths: the union of scored positions
        ids = torch.randint(5, 100, (10,), generator=g).tolist()
        rows.append(TokenizedExample(ids, [-100] * prompt + ids[prompt:]))
    batch = pack_one(rows)
    assert _padding_is_cheaper(batch, model.config.hidden_size)
    assert not _padding_is_cheaper(pack_one(_rows()), model.config.hidden_size)  # varied lengths pack
    with torch.no_grad():
        ours = row_sums(token_logps(label_logits(model, batch), batch.targets), batch)
        expected = _padded_row_logps(model, rows)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
