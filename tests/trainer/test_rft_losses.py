"""RFT losses (trainer/losses.py) against hand-computed numbers, methods.md §13 case G."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import bradley_terry_loss, kl_penalized_rewards, rloo_advantages, rloo_policy_loss


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


def test_kl_penalized_rewards():
    # 1 - 0.1 * (-3 - -4) = 0.9;  2 - 0.1 * (-5 - -4) = 2.1
    out = kl_penalized_rewards(
        torch.tensor([1.0, 2.0]),
        torch.tensor([-3.0, -5.0], requires_grad=True),
        torch.tensor([-4.0, -4.0]),
        0.1,
    )
    torch.testing.assert_close(out, torch.tensor([0.9, 2.1]), atol=1e-6, rtol=0)
    assert not out.requires_grad


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
