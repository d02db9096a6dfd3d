"""RFT losses (trainer/losses.py) against hand-computed numbers, docs/methods.md §6.6 and §6.9."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import (
    bradley_terry_loss,
    discriminator_loss,
    policy_rewards,
    reward_model_loss,
    rloo_advantages,
    rloo_policy_loss,
)
from trainer.reward_shaping import (
    REWARD_STD_FLOOR,
    WHITEN_EPS,
    AdaptiveKL,
    RewardShaping,
    RunningMoments,
    shaped_rewards,
    whiten,
)


def test_bradley_terry_case_g_sequence_level():
    # end scores 1.5 vs -0.1: -log sigmoid(1.6) = log(1 + e^-1.6) = log(1.2018965) = 0.183901
    loss = bradley_terry_loss(torch.tensor([1.5]), torch.tensor([-0.1]))
    assert loss.item() == pytest.approx(0.183901, abs=1e-6)


def test_bradley_terry_case_g_per_token_window_mean():
    # the per-token variant is the same function over the window's tokens:
    # terms [0.554355, 0.437488, 0.183901], mean 0.391915
    loss = bradley_terry_loss(torch.tensor([0.5, 1.0, 1.5]), torch.tensor([0.2, 0.4, -0.1]))
    assert loss.item() == pytest.approx(0.391915, abs=1e-6)
    # two identical pairs: the reference SUMS (0.783829); we take the mean, so the value stays 0.391915
    both = bradley_terry_loss(torch.tensor([0.5, 1.0, 1.5] * 2), torch.tensor([0.2, 0.4, -0.1] * 2))
    assert both.item() == pytest.approx(0.391915, abs=1e-6)
    assert 2 * both.item() == pytest.approx(0.783829, abs=1e-6)


def test_bradley_terry_mean_and_weights():
    # pairs (1 vs 0) and (0 vs 0): log(1 + e^-1) = 0.3132617, log 2 = 0.6931472; mean 0.5032044
    chosen, rejected = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(0.5032044, abs=1e-6)
    # weights [2, 0]: mean(2 * 0.3132617, 0) = 0.3132617
    weighted = bradley_terry_loss(chosen, rejected, torch.tensor([2.0, 0.0]))
    assert weighted.item() == pytest.approx(0.3132617, abs=1e-6)
    # gradient wrt chosen_0: -sigmoid(-1) / 2 = -0.2689414 / 2 = -0.1344707
    c = chosen.clone().requires_grad_(True)
    bradley_terry_loss(c, rejected).backward()
    assert c.grad[0].item() == pytest.approx(-0.1344707, abs=1e-6)
    assert math.isfinite(bradley_terry_loss(torch.tensor([-100.0]), torch.tensor([100.0])).item())


def test_rloo_advantages_leave_one_out():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    # row 0: 1 - (2+3)/2 = -1.5; 2 - (1+3)/2 = 0; 3 - (1+2)/2 = 1.5
    # row 1: 0 - (0+6)/2 = -3;   0 - (0+6)/2 = -3; 6 - (0+0)/2 = 6
    expected = torch.tensor([[-1.5, 0.0, 1.5], [-3.0, -3.0, 6.0]])
    torch.testing.assert_close(rloo_advantages(rewards), expected, atol=1e-6, rtol=0)
    # two samples: A = +-(r1 - r0) = +-0.5
    torch.testing.assert_close(rloo_advantages(torch.tensor([[1.0, 1.5]])), torch.tensor([[-0.5, 0.5]]))
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.tensor([[1.0]]))


def test_shaped_rewards_kl_only_is_the_plain_kl_penalty():
    # no normalisation, no penalty: 1 - 0.1 * (-3 - -4) = 0.9;  2 - 0.1 * (-5 - -4) = 2.1
    log_ratio = torch.tensor([-3.0, -5.0], requires_grad=True) - torch.tensor([-4.0, -4.0])
    out = shaped_rewards(
        torch.tensor([1.0, 2.0]),
        torch.tensor([True, True]),
        log_ratio,
        reward_std=1.0,
        missing_eos_penalty=0.5,
        kl_coef=0.1,
    )
    torch.testing.assert_close(out, torch.tensor([0.9, 2.1]), atol=1e-6, rtol=0)
    assert not out.requires_grad


def test_missing_eos_penalty_applies_only_to_unfinished_samples():
    scores = torch.tensor([[4.0, 2.0], [1.0, -1.0]])
    done = torch.tensor([[True, False], [False, True]])
    zero = torch.zeros(2, 2)
    # reward_std 2, penalty 0.5 in normalised units: [[2, 1 - 0.5], [0.5 - 0.5, -0.5]]
    out = shaped_rewards(scores, done, zero, reward_std=2.0, missing_eos_penalty=0.5, kl_coef=0.05)
    torch.testing.assert_close(out, torch.tensor([[2.0, 0.5], [0.0, -0.5]]), atol=1e-6, rtol=0)
    # every sample finished: the penalty changes nothing
    every = shaped_rewards(
        scores, torch.ones(2, 2, dtype=torch.bool), zero, reward_std=1.0, missing_eos_penalty=3.0, kl_coef=0
    )
    torch.testing.assert_close(every, scores)


def test_whitening_gives_unit_variance_and_keeps_the_order():
    a = torch.tensor([[-1.5, 0.0, 1.5], [-3.0, -3.0, 6.0]])
    mean, std = a.mean().item(), a.std(unbiased=False).item()  # 0 and sqrt(58.5 / 6) = 3.1224990
    assert std == pytest.approx(3.1224990, abs=1e-6)
    out = whiten(a, mean, std)
    assert out.mean().item() == pytest.approx(0.0, abs=1e-6)
    # unit spread up to the epsilon that keeps a batch of equal advantages from being blown up
    assert out.std(unbiased=False).item() == pytest.approx(3.1224990 / (3.1224990 + WHITEN_EPS), abs=1e-6)
    torch.testing.assert_close(out[1, 2], torch.tensor(6.0 / (3.1224990 + WHITEN_EPS)), atol=1e-6, rtol=0)
    # equal advantages stay 0, not 0/0
    assert torch.equal(whiten(torch.zeros(2, 2), 0.0, 0.0), torch.zeros(2, 2))
    assert torch.equal(out.argsort(dim=-1), a.argsort(dim=-1))


def test_running_moments_match_the_whole_sample_in_any_batching():
    values = torch.tensor([4.0, 1.0, -2.0, 7.0, 0.5, 3.0], dtype=torch.float64)
    moments = RunningMoments()
    moments.update(values[:2])
    moments.update(values[2:5])
    moments.merge(1.0, 3.0, 0.0)  # one value, 3.0, given by its moments
    assert moments.count == 6
    assert moments.mean == pytest.approx(values.mean().item(), abs=1e-9)
    assert moments.std == pytest.approx(values.std(unbiased=False).item(), abs=1e-9)  # 2.8540906
    assert moments.std == pytest.approx(2.8540906, abs=1e-6)
    assert RunningMoments().std == 1.0  # nothing seen: nothing to scale by
    moments.reset()
    assert moments.count == 0 and moments.std == 1.0
    # tied scores: the floor, never 0 (a reward divided by 0 is inf, and RLOO's inf - inf is NaN)
    tied = RunningMoments()
    tied.update(torch.tensor([2.5, 2.5]))
    assert tied.std == REWARD_STD_FLOOR


def test_adaptive_kl_controller_steps_and_clips():
    kl = AdaptiveKL(coef=0.1, target=6.0, horizon=10)
    kl.update(9.0)  # error 9/6 - 1 = 0.5, clipped to 0.2: 0.1 * (1 + 0.02) = 0.102
    assert kl.coef == pytest.approx(0.102, abs=1e-12)
    kl.update(5.4)  # error -0.1: 0.102 * 0.99 = 0.10098
    assert kl.coef == pytest.approx(0.10098, abs=1e-12)
    fixed = AdaptiveKL(coef=0.05)  # no target: the coefficient never moves
    fixed.update(100.0)
    assert fixed.coef == 0.05


def test_reward_shaping_state_round_trips():
    shaping = RewardShaping(RunningMoments(), AdaptiveKL(0.1, 6.0, 10))
    shaping.moments.update(torch.tensor([1.0, 2.0, 4.0]))
    shaping.kl.update(12.0)
    again = RewardShaping(RunningMoments(), AdaptiveKL(0.1, 6.0, 10))
    again.load_state_dict(shaping.state_dict())
    assert again.state_dict() == shaping.state_dict()
    again.load_state_dict(None)  # a checkpoint from before shaping: unchanged
    assert again.state_dict() == shaping.state_dict()


def test_rloo_policy_loss_value_and_gradient():
    logps = torch.tensor([-1.0, -2.0, -3.0, -4.0], requires_grad=True)
    advantages = torch.tensor([1.5, 0.0, -1.5, 2.0], requires_grad=True)
    # -(1.5*-1 + 0*-2 + -1.5*-3 + 2*-4) / 4 = -(-1.5 + 0 + 4.5 - 8) / 4 = 1.25
    loss = rloo_policy_loss(logps, advantages)
    assert loss.item() == pytest.approx(1.25, abs=1e-6)
    loss.backward()
    # d/dlogp = -A / 4; advantages get no gradient
    torch.testing.assert_close(logps.grad, torch.tensor([-0.375, 0.0, 0.375, -0.5]))
    assert advantages.grad is None


def test_bt_divergence_is_the_bradley_terry_loss_and_the_raw_score_exactly():
    """divergence "bt" (the default) is RFT as it was before the choice existed: the same loss value and
    gradient as `bradley_terry_loss`, and the score itself, the same tensor, as the policy's reward."""
    chosen = torch.tensor([0.5, 1.0, 1.5, -2.0], requires_grad=True)
    rejected = torch.tensor([0.2, 0.4, -0.1, 3.0], requires_grad=True)
    loss = reward_model_loss(chosen, rejected, "bt")
    before = bradley_terry_loss(chosen, rejected)
    assert torch.equal(loss, before) and torch.equal(reward_model_loss(chosen, rejected), before)
    grads = torch.autograd.grad(loss, (chosen, rejected))
    torch.testing.assert_close(grads, torch.autograd.grad(before, (chosen, rejected)), atol=0, rtol=0)
    scores = torch.tensor([[1.5, -0.1], [4.0, 2.0]])
    assert policy_rewards(scores, "bt") is scores and policy_rewards(scores) is scores


def test_discriminator_loss_scores_each_sequence_alone():
    # demonstrations [1, 0] (label 1), samples [0, -2] (label 0): softplus(-1) = 0.3132617,
    # softplus(0) = 0.6931472, softplus(-2) = 0.1269280;
    # (0.3132617 + 0.6931472) / 2 + (0.6931472 + 0.1269280) / 2 = 0.5032044 + 0.4100376 = 0.9132420
    demos, samples = torch.tensor([1.0, 0.0]), torch.tensor([0.0, -2.0])
    assert discriminator_loss(demos, samples).item() == pytest.approx(0.9132420, abs=1e-6)
    for divergence in ("js", "reverse_kl"):  # the same discriminator for both
        assert torch.equal(reward_model_loss(demos, samples, divergence), discriminator_loss(demos, samples))
    # not a pair difference: shifting every score by the same amount changes it (Bradley-Terry's does not)
    assert discriminator_loss(demos + 1, samples + 1).item() != pytest.approx(0.9132420, abs=1e-3)
    assert bradley_terry_loss(demos + 1, samples + 1).item() == pytest.approx(
        bradley_terry_loss(demos, samples).item(), abs=1e-6
    )
    # at r = 0 (D = 1/2 everywhere) it is log 4 = 1.3862944, whatever the counts
    assert discriminator_loss(torch.zeros(3), torch.zeros(7)).item() == pytest.approx(1.3862944, abs=1e-6)
    # gradients: d/d demo_0 = -sigmoid(-1) / 2 = -0.1344707; d/d sample_1 = sigmoid(-2) / 2 = 0.0596014
    d, s = demos.clone().requires_grad_(True), samples.clone().requires_grad_(True)
    discriminator_loss(d, s).backward()
    assert d.grad[0].item() == pytest.approx(-0.1344707, abs=1e-6)
    assert s.grad[1].item() == pytest.approx(0.0596014, abs=1e-6)
    # weights make each mean a weighted mean: (3 * 0.3132617 + 1 * 0.6931472) / 4 + 0.6931472 = 1.1013802
    weighted = discriminator_loss(demos, samples, torch.tensor([3.0, 1.0]), torch.tensor([1.0, 0.0]))
    assert weighted.item() == pytest.approx(1.1013802, abs=1e-6)
    assert math.isfinite(discriminator_loss(torch.tensor([-100.0]), torch.tensor([100.0])).item())


def test_policy_rewards_by_divergence():
    scores = torch.tensor([-2.0, 0.0, 3.0])
    # reverse_kl: logit D, the score itself
    torch.testing.assert_close(policy_rewards(scores, "reverse_kl"), scores)
    # js: -log(1 - sigmoid(r)) = softplus(r): [0.1269280, 0.6931472, 3.0485874]
    torch.testing.assert_close(
        policy_rewards(scores, "js"), torch.tensor([0.1269280, 0.6931472, 3.0485874]), atol=1e-6, rtol=0
    )
    d = torch.sigmoid(scores)
    torch.testing.assert_close(policy_rewards(scores, "js"), -torch.log1p(-d), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        policy_rewards(scores, "reverse_kl"), torch.log(d / (1 - d)), atol=1e-5, rtol=0
    )
    assert torch.isfinite(policy_rewards(torch.tensor([-100.0, 100.0]), "js")).all()
    with pytest.raises(ValueError, match="divergence"):
        policy_rewards(scores, "forward_kl")
    with pytest.raises(ValueError, match="divergence"):
        reward_model_loss(scores, scores, "forward_kl")
