"""Log-probs and losses against hand-computed cases D and E (docs/methods.md §6.4, §6.5; tolerance 1e-6)."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.logprobs import per_token_logps, sequence_logps
from trainer.losses import sft_nll, token_accuracy

TOL = 1e-6

# docs/methods.md §6.4, case D: vocab 4, prompt = tokens 0 and 1, response scored at positions 1 and 2.
REAL_IDS = [0, 1, 2, 3]
REAL_LABELS = [-100, -100, 2, 3]
GEN_IDS = [0, 1, 1, 3]
GEN_LABELS = [-100, -100, 1, 3]
POLICY_REAL = [[0, 0, 0, 0], [1, 0, 2, 0], [0, 3, 0, 1], [5, 5, 5, 5]]
REFERENCE_REAL = [[0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 1], [9, 9, 9, 9]]  # p3 is ignored
POLICY_GEN = [[0, 0, 0, 0], [1, 0, 2, 0], [2, 0, 0, 0], [5, 5, 5, 5]]
REFERENCE_GEN = [[0, 0, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [9, 9, 9, 9]]


def _seq_logp(logits, labels) -> float:
    per_token, mask = per_token_logps(torch.tensor([logits], dtype=torch.float32), torch.tensor([labels]))
    return sequence_logps(per_token, mask).item()


def test_case_d_per_token_logps_and_shift():
    per_token, mask = per_token_logps(
        torch.tensor([POLICY_REAL], dtype=torch.float32), torch.tensor([REAL_LABELS])
    )
    assert per_token.shape == (1, 3) and per_token.dtype == torch.float32
    assert mask.tolist() == [[False, True, True]]
    # position 0 is masked and contributes exactly 0; positions 1, 2 score labels 2, 3.
    assert per_token[0, 0].item() == 0.0
    assert per_token[0, 1].item() == pytest.approx(-0.493812, abs=TOL)
    assert per_token[0, 2].item() == pytest.approx(-2.210998, abs=TOL)


def test_case_d_sequence_logps():
    assert _seq_logp(POLICY_REAL, REAL_LABELS) == pytest.approx(-2.704809, abs=TOL)
    assert _seq_logp(REFERENCE_REAL, REAL_LABELS) == pytest.approx(-1.750077, abs=TOL)
    assert _seq_logp(POLICY_GEN, GEN_LABELS) == pytest.approx(-4.834565, abs=TOL)
    assert _seq_logp(REFERENCE_GEN, GEN_LABELS) == pytest.approx(-3.487337, abs=TOL)
    z = (_seq_logp(POLICY_REAL, REAL_LABELS) - _seq_logp(POLICY_GEN, GEN_LABELS)) - (
        _seq_logp(REFERENCE_REAL, REAL_LABELS) - _seq_logp(REFERENCE_GEN, GEN_LABELS)
    )
    assert z == pytest.approx(0.392496, abs=TOL)


def test_case_d_batched_matches_rows():
    logits = torch.tensor([POLICY_REAL, POLICY_GEN], dtype=torch.float32)
    labels = torch.tensor([REAL_LABELS, GEN_LABELS])
    seq = sequence_logps(*per_token_logps(logits, labels))
    assert seq.tolist() == pytest.approx([-2.704809, -4.834565], abs=TOL)


def test_masked_sum_sanity_check():
    per_token = torch.tensor([[-2.0, -1.5, -0.7, -0.2, -1.1, -0.4]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    assert sequence_logps(per_token, mask).item() == pytest.approx(-2.4, abs=TOL)
    assert sft_nll(per_token, mask).item() == pytest.approx(0.6, abs=TOL)  # the mean, negated


def _case_e():
    per_token = torch.tensor([[-0.5, -1.0, -1.5], [-2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    return per_token, mask


def test_case_e_token_mean_nll():
    per_token, mask = _case_e()
    assert sft_nll(per_token, mask).item() == pytest.approx(1.25, abs=TOL)
    assert sft_nll(per_token, mask, num_items=4).item() == pytest.approx(1.25, abs=TOL)
    # The other reductions give different numbers; sft_nll is neither of them.
    per_seq_mean = -((per_token * mask).sum(-1) / mask.sum(-1)).mean().item()
    per_seq_sum = -(per_token * mask).sum(-1).mean().item()
    assert per_seq_mean == pytest.approx(1.5, abs=TOL)
    assert per_seq_sum == pytest.approx(2.5, abs=TOL)


def test_case_e_split_over_accumulation_window():
    """Two micro-batches, each divided by the window's token count, sum to the token mean."""
    per_token, mask = _case_e()
    window = mask.sum()
    parts = [sft_nll(per_token[i : i + 1], mask[i : i + 1], num_items=window) for i in range(2)]
    assert parts[0].item() == pytest.approx(3.0 / 4, abs=TOL)
    assert parts[1].item() == pytest.approx(2.0 / 4, abs=TOL)
    assert sum(parts).item() == pytest.approx(1.25, abs=TOL)


def test_sft_nll_empty_mask_is_zero_not_nan():
    assert sft_nll(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool)).item() == 0.0


def test_sft_nll_gradient_is_minus_one_over_n():
    per_token, mask = _case_e()
    per_token.requires_grad_(True)
    sft_nll(per_token, mask).backward()
    assert per_token.grad.tolist() == [[-0.25, -0.25, -0.25], [-0.25, 0.0, 0.0]]


def test_token_accuracy_case_d():
    # argmax p1 = 2 (label 2: right), argmax p2 = 1 (label 3: wrong); p0 is masked.
    # token_accuracy takes the scored positions only, as a packed batch gives them (packing.py).
    logits, labels = torch.tensor(POLICY_REAL, dtype=torch.float32), torch.tensor(REAL_LABELS)
    scored = labels[1:] != -100  # position t scores the label at t + 1
    acc = token_accuracy(logits[:-1][scored], labels[1:][scored])
    assert acc.item() == pytest.approx(0.5, abs=TOL)
    assert token_accuracy(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)).item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_per_token_logps_matches_naive_log_softmax(dtype):
    """The gather - logsumexp form equals log_softmax + gather, computed in float32, for any input dtype."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 7, 50, generator=g) * 4).to(dtype)
    labels = torch.randint(0, 50, (3, 7), generator=g)
    labels[0, :3] = -100
    labels[2, 5:] = -100
    per_token, mask = per_token_logps(logits, labels)
    naive = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = labels[:, 1:]
    expected = torch.where(
        targets != -100, naive.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1), torch.zeros(())
    )
    assert per_token.dtype == torch.float32
    assert torch.equal(mask, targets != -100)
    torch.testing.assert_close(per_token, expected, atol=1e-5, rtol=1e-5)


def test_sft_nll_equals_cross_entropy():
    """Token-mean NLL is exactly what transformers' ignore_index cross-entropy computes."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 11, generator=g)
    labels = torch.randint(0, 11, (2, 5), generator=g)
    labels[1, 3:] = -100
    ours = sft_nll(*per_token_logps(logits, labels))
    ref = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)
    assert not math.isnan(ours.item())
