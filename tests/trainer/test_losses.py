"""Log-probs and losses against hand-computed cases D, E and J (docs/methods.md §6.4, §6.5, §6.11;
tolerance 1e-6)."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.logprobs import per_token_logps, sequence_logps, token_logps
from trainer.losses import sft_nll, successors, td_regularised_nll, token_accuracy

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


# ---------------------------------------------------------------------------------------------------
# IQL's TD-regularised NLL (docs/methods.md §9.1): case J (§6.11), the terminal and successor rules, the
# telescoping identity and the gradient.

# Case J: two response tokens, Q(s0) then Q(s1), a0 = 0, a1 = 1; terminal after a1.
CASE_J_LOGITS = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]]
CASE_J_ACTIONS = [0, 1]


def _td(logits, targets, row, position, **kw):
    return td_regularised_nll(
        torch.as_tensor(logits),
        torch.as_tensor(targets),
        torch.as_tensor(row),
        torch.as_tensor(position),
        **kw,
    )


def test_case_j_td_regularised_nll():
    loss, logps, rewards = _td(CASE_J_LOGITS, CASE_J_ACTIONS, [0, 0], [4, 5], td_weight=0.1, gamma=1.0)
    q = torch.tensor([2.0, 1.0])  # Q(s_t, a_t)
    v = q - logps  # V(s_t) = Q(s_t, a_t) - log pi(a_t|s_t)
    assert v.tolist() == pytest.approx([2.241311, 1.622974], abs=TOL)
    assert logps.tolist() == pytest.approx([-0.241311, -0.622974], abs=TOL)
    # r0 = Q(s0, a0) - V1, r1 = Q(s1, a1) - 0 (terminal)
    assert rewards.tolist() == pytest.approx([0.377026, 1.0], abs=TOL)
    assert (rewards.sum() - v[0]).item() == pytest.approx(-0.864285, abs=TOL)  # = sum log pi
    assert logps.sum().item() == pytest.approx(-0.864285, abs=TOL)
    assert loss.item() == pytest.approx(0.489250, abs=TOL)  # 0.432143 + 0.1 * 0.571068
    assert (-logps.mean()).item() == pytest.approx(0.432143, abs=TOL)
    assert (0.1 * (rewards**2).mean()).item() == pytest.approx(0.057107, abs=TOL)


def test_case_j_inside_a_pack_keeps_its_terminal_state():
    """Case J's tokens as one row's response between two other rows: the row before ends at its own last
    target and the row after starts a new episode, so r1 is still Q(s1, a1) - 0 and the loss over the pack
    is the sum of the rows' own losses over the pack's divisor."""
    g = torch.Generator().manual_seed(0)
    before, after = torch.randn(3, 3, generator=g), torch.randn(2, 3, generator=g)
    logits = torch.cat([before, torch.tensor(CASE_J_LOGITS), after])
    targets = torch.tensor([2, 0, 1, *CASE_J_ACTIONS, 0, 2])
    row = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    position = torch.tensor([1, 2, 3, 6, 7, 0, 1])  # row 1's prompt is positions 0-5: not scored
    loss, _, rewards = td_regularised_nll(logits, targets, row, position, td_weight=0.1, num_items=7)
    assert rewards[3:5].tolist() == pytest.approx([0.377026, 1.0], abs=TOL)
    alone = [
        td_regularised_nll(logits[a:b], targets[a:b], row[a:b], position[a:b], td_weight=0.1, num_items=7)
        for a, b in ((0, 3), (3, 5), (5, 7))
    ]
    assert torch.cat([r for _, _, r in alone]).tolist() == pytest.approx(rewards.tolist(), abs=TOL)
    assert sum(part.item() for part, _, _ in alone) == pytest.approx(loss.item(), abs=TOL)
    assert alone[1][0].item() == pytest.approx(0.489250 * 2 / 7, abs=TOL)  # case J over a 7-token window


def test_successors_stop_at_row_ends_and_gaps():
    # row 0: positions 3, 4 trained, then a gap (template glue, a user turn), then 7; row 1: 2, 3, 4.
    got = successors(torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([3, 4, 7, 2, 3, 4]))
    assert got.tolist() == [True, False, False, True, True, False]
    # the next row's first target right after this row's last, at the next flat position, is not a successor
    assert successors(torch.tensor([0, 1]), torch.tensor([5, 6])).tolist() == [False, False]
    assert successors(torch.tensor([0]), torch.tensor([2])).tolist() == [False]
    assert successors(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)).tolist() == []


def test_td_regularised_nll_of_nothing_is_zero():
    loss, logps, rewards = _td(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), [], [], td_weight=0.1)
    assert loss.item() == 0.0 and logps.numel() == rewards.numel() == 0


def _random_episodes(seed: int, dtype=torch.float32):
    """Random logits for three rows: row 0 with two trained stretches (a multi-turn chat), rows 1 and 2
    with one each."""
    g = torch.Generator().manual_seed(seed)
    row = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    position = torch.tensor([2, 3, 4, 9, 10, 5, 6, 7, 0, 1])
    logits = (3 * torch.randn(len(row), 7, generator=g)).to(dtype)
    targets = torch.randint(0, 7, (len(row),), generator=g)
    return logits, targets, row, position


def test_telescoping_identity_at_gamma_1():
    """sum_t r_t - V(s_0) = sum_t log pi(a_t|s_t) over every episode (trained stretch), at gamma = 1."""
    logits, targets, row, position = _random_episodes(1, torch.float64)
    _, logps, rewards = td_regularised_nll(logits, targets, row, position, td_weight=0.1, gamma=1.0)
    v = torch.logsumexp(logits, dim=-1)
    for start, end in ((0, 3), (3, 5), (5, 8), (8, 10)):  # the episodes
        lhs = rewards[start:end].sum() - v[start]
        assert lhs.item() == pytest.approx(logps[start:end].sum().item(), abs=1e-10)


def test_gamma_discounts_the_next_value_only():
    logits, targets, row, position = _random_episodes(2)
    _, _, r1 = td_regularised_nll(logits, targets, row, position, td_weight=0.1, gamma=1.0)
    _, _, r_half = td_regularised_nll(logits, targets, row, position, td_weight=0.1, gamma=0.5)
    q = logits.gather(-1, targets[:, None]).squeeze(-1)
    next_v = q - r1  # V(s_{t+1}), 0 at terminal states
    torch.testing.assert_close(r_half, q - 0.5 * next_v, atol=1e-6, rtol=0)
    assert next_v[[2, 4, 7, 9]].tolist() == [0.0, 0.0, 0.0, 0.0]  # each episode's last token


def test_td_weight_0_is_sft_nll_in_value_and_gradient():
    logits, targets, row, position = _random_episodes(3)
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours, _, _ = td_regularised_nll(a, targets, row, position, td_weight=0.0, num_items=13)
    sft = sft_nll(token_logps(b, targets), num_items=13)
    ours.backward()
    sft.backward()
    assert ours.item() == sft.item()
    assert torch.equal(a.grad, b.grad)


def test_the_loss_is_nll_plus_weighted_mean_square_over_the_divisor():
    logits, targets, row, position = _random_episodes(4)
    loss, logps, rewards = td_regularised_nll(logits, targets, row, position, td_weight=0.3, num_items=25)
    want = (-logps.sum() + 0.3 * (rewards**2).sum()) / 25
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    as_tensor, _, _ = td_regularised_nll(
        logits, targets, row, position, td_weight=0.3, num_items=torch.tensor(25)
    )
    assert as_tensor.item() == pytest.approx(loss.item(), rel=1e-7)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_td_regulariser_gradient_matches_finite_differences(gamma):
    """The full gradient (through V(s_{t+1}) too), against finite differences in float64."""
    logits, targets, row, position = _random_episodes(5, torch.float64)
    logits = (logits / 3).requires_grad_()

    def loss(x):
        return td_regularised_nll(x, targets, row, position, td_weight=0.7, gamma=gamma)[0]

    assert torch.autograd.gradcheck(loss, (logits,), eps=1e-6, atol=1e-7)


def test_stop_gradient_next_v_is_the_semi_gradient():
    """With stop_gradient_next_v, V(s_{t+1}) is a constant target: the gradient equals that of the same
    loss written out with the next state's logsumexp detached, and differs from the full gradient."""
    logits, targets, row, position = _random_episodes(6, torch.float64)
    a, b, c = (logits.clone().requires_grad_() for _ in range(3))
    kw = {"td_weight": 0.7, "gamma": 0.9}
    td_regularised_nll(a, targets, row, position, stop_gradient_next_v=True, **kw)[0].backward()
    td_regularised_nll(c, targets, row, position, **kw)[0].backward()
    q = b.gather(-1, targets[:, None]).squeeze(-1)
    v = torch.logsumexp(b, dim=-1)
    follows = successors(row, position)
    next_v = torch.where(follows, torch.cat([v[1:], v.new_zeros(1)]), torch.zeros_like(v)).detach()
    ((-(q - v)).sum() + 0.7 * ((q - 0.9 * next_v) ** 2).sum()).div(len(targets)).backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-12, rtol=0)
    assert not torch.allclose(a.grad, c.grad)
