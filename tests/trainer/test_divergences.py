"""RFT's divergence choice (docs/methods.md §3.8, trainer/losses.py): the optimal discriminator and the
rewards built on it recover case K's divergences, the rewards' policy gradients are the divergences'
gradients, and on a toy problem whose optimum is known the divergences behave as the theory says:
forward KL (SFT) covers both modes of a bimodal demonstration distribution, reverse KL and JS collapse
onto one when the policy cannot represent both. Pure torch, no language model."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import discriminator_loss, policy_rewards

# Case K (docs/methods.md §3.8; the background notes, §13): p = data, q = model.
P = torch.tensor([0.5, 0.4, 0.1], dtype=torch.float64)
Q = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
FORWARD_KL, REVERSE_KL, JS = 0.109023, 0.096901, 0.025362
LOG4 = math.log(4.0)


def _kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * (a / b).log()).sum()


def _js(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    m = (p + q) / 2
    return (_kl(p, m) + _kl(q, m)) / 2


def test_case_k_divergences_from_the_optimal_discriminator():
    # D* = p / (p + q), so its logit, the score r*, is log p/q: [log 5/7, log 2, 0] = [-0.336472, 0.693147, 0]
    r_star = (P / (P + Q)).logit()
    torch.testing.assert_close(r_star, (P / Q).log())
    # reverse_kl's reward is r*: its mean over the policy's samples is -KL(q || p), over the demonstrations
    # KL(p || q): 0.7 * -0.336472 + 0.2 * 0.693147 = -0.096901; 0.5 * -0.336472 + 0.4 * 0.693147 = 0.109023
    reward = policy_rewards(r_star, "reverse_kl")
    assert (Q * reward).sum().item() == pytest.approx(-REVERSE_KL, abs=1e-6)
    assert (P * reward).sum().item() == pytest.approx(FORWARD_KL, abs=1e-6)
    # GAIL's objective at D*, E_p log D* + E_q log(1 - D*) = -(discriminator loss) = 2 JS - log 4:
    # -(0.5 * 0.867501 + 0.4 * 0.405465 + 0.1 * 0.693147 + 0.7 * 0.538997 + 0.2 * 1.098612 + 0.1 * 0.693147)
    # = -1.335570, and (log 4 - 1.335570) / 2 = 0.025362
    loss = discriminator_loss(r_star, r_star, P, Q)
    assert loss.item() == pytest.approx(1.335570, abs=1e-6)
    assert ((LOG4 - loss) / 2).item() == pytest.approx(JS, abs=1e-6)
    assert _js(P, Q).item() == pytest.approx(JS, abs=1e-6)
    # js's reward -log(1 - D*) = log((p + q)/q): [log 12/7, log 3, log 2] = [0.538997, 1.098612, 0.693147]
    torch.testing.assert_close(policy_rewards(r_star, "js"), ((P + Q) / Q).log())
    # SFT = forward KL + a constant: the cross-entropy 1.052371 = H(p) 0.943348 + 0.109023
    assert -(P * Q.log()).sum().item() == pytest.approx(1.052371, abs=1e-6)
    assert -(P * Q.log()).sum().item() - FORWARD_KL == pytest.approx(0.943348, abs=1e-6)


def test_a_discriminator_trained_by_the_loss_finds_d_star_and_measures_js():
    """A per-outcome logit table trained on exact expectations converges to r* = log p/q, wherever it
    starts, and its loss to log 4 - 2 JS."""
    r = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([r], lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        optimiser.zero_grad()
        loss = discriminator_loss(r, r, P, Q)
        loss.backward()
        return loss

    optimiser.step(closure)
    torch.testing.assert_close(r.detach(), (P / Q).log(), atol=1e-6, rtol=0)
    loss = discriminator_loss(r, r, P, Q).item()
    assert (LOG4 - loss) / 2 == pytest.approx(JS, abs=1e-6)
    # With k samples per demonstration, pooling them in one mean would move the optimum to p / (p + k q):
    # two means keep D* whatever the counts (here 3 samples of each outcome for 1 demonstration of each).
    demos, samples = r.detach(), r.detach().repeat(3)
    assert discriminator_loss(demos, samples, P, Q.repeat(3)).item() == pytest.approx(loss, abs=1e-9)


@pytest.mark.parametrize("divergence", ["reverse_kl", "js"])
def test_the_frozen_rewards_policy_gradient_is_the_divergences_gradient(divergence):
    """The policy step holds the discriminator fixed at D* of the current policy q and ascends
    E_q[reward]: that gradient is -grad KL(q || p) for reverse_kl and -2 grad JS(p, q) for js
    (trainer/losses.py `policy_rewards`), for a softmax policy over any logits."""
    logits = torch.tensor([0.3, -0.2, -0.9], dtype=torch.float64, requires_grad=True)
    q = torch.softmax(logits, 0)
    reward = policy_rewards((P / q.detach()).log(), divergence)  # r* = log p/q at the current q
    (grad_reward,) = torch.autograd.grad((q * reward).sum(), logits, retain_graph=True)
    target = -_kl(q, P) if divergence == "reverse_kl" else -2 * _js(P, q)
    (grad_target,) = torch.autograd.grad(target, logits, retain_graph=True)
    torch.testing.assert_close(grad_reward, grad_target, atol=1e-12, rtol=0)
    # GAIL's other generator reward, log D, follows -(KL(q || p) - 2 JS) instead: not JS
    log_d = torch.nn.functional.logsigmoid((P / q.detach()).log())
    (grad_log_d,) = torch.autograd.grad((q * log_d).sum(), logits, retain_graph=True)
    (grad_mixed,) = torch.autograd.grad(-(_kl(q, P) - 2 * _js(P, q)), logits)
    torch.testing.assert_close(grad_log_d, grad_mixed, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------------
# The toy problem: 11 outcomes y = 0..10; the demonstrations are bimodal, two bumps at 1 and 9 (a 1%
# floor keeps every log-ratio finite); the policy is a discretised Gaussian of fixed width 2 whose only
# parameter is its centre mu (a softmax over the logits -(y - mu)^2 / 8), so it cannot be bimodal.
# Closed-form optimum under forward KL: the family is exponential in the statistic y, so maximum
# likelihood matches the mean, E_q[y] = E_p[y] = 5: mu* = 5, the policy straddles both modes (0.40 of
# its mass on each side). Under reverse KL the mass a centred policy puts in the valley costs log q/p
# with p ~ 0.001 there, so the optimum sits on one mode (mu* ~ -1, the family's minimum found on a grid;
# the start, mu = 4.5, picks the mode at 1).

Y = torch.arange(11, dtype=torch.float64)
WIDTH = 2.0


def _bump(centre: float) -> torch.Tensor:
    b = torch.exp(-((Y - centre) ** 2) / (2 * 0.7**2))
    return b / b.sum()


DEMOS = 0.99 * (_bump(1.0) + _bump(9.0)) / 2 + 0.01 / len(Y)
LEFT, RIGHT = Y < 5, Y > 5  # the two modes' halves


def _policy(mu: torch.Tensor) -> torch.Tensor:
    return torch.softmax(-((Y - mu) ** 2) / (2 * WIDTH**2), 0)


def _train(divergence: str, iterations: int = 100, beta: float = 0.01) -> torch.Tensor:
    """Alternate a discriminator step (a per-outcome logit table, a few Adam steps on
    `discriminator_loss`, carried over from round to round as RFT's reward model is) and a policy step
    (one Adam step on the exact expectation of the reward minus beta * KL(q || q_start), RFT's penalty
    to the initial policy). "forward" is SFT: the exact expected log-likelihood of the demonstrations,
    no discriminator. Returns the final policy's probabilities."""
    mu = torch.tensor(4.5, dtype=torch.float64, requires_grad=True)
    start = _policy(mu).detach()
    scores = torch.zeros(len(Y), dtype=torch.float64, requires_grad=True)
    policy_optimiser = torch.optim.Adam([mu], lr=0.2)
    discriminator_optimiser = torch.optim.Adam([scores], lr=0.5)
    for _ in range(iterations):
        if divergence == "forward":
            objective = (DEMOS * _policy(mu).log()).sum()
        else:
            samples = _policy(mu).detach()
            for _ in range(5):
                discriminator_optimiser.zero_grad()
                discriminator_loss(scores, scores, DEMOS, samples).backward()
                discriminator_optimiser.step()
            q = _policy(mu)
            reward = policy_rewards(scores.detach(), divergence)
            objective = (q * reward).sum() - beta * _kl(q, start)
        policy_optimiser.zero_grad()
        (-objective).backward()
        policy_optimiser.step()
    return _policy(mu).detach()


def _grid_optimum(divergence) -> float:
    grid = torch.linspace(-4.0, 14.0, 1801, dtype=torch.float64)
    values = [divergence(_policy(mu)).item() for mu in grid]
    return grid[min(range(len(values)), key=values.__getitem__)].item()


def test_forward_kl_covers_both_modes():
    q = _train("forward")
    assert (q * Y).sum().item() == pytest.approx((DEMOS * Y).sum().item(), abs=0.01)  # moment matching: 5
    assert _grid_optimum(lambda q: _kl(DEMOS, q)) == pytest.approx(5.0, abs=0.01)
    assert min(q[LEFT].sum(), q[RIGHT].sum()).item() > 0.3  # 0.40 each


@pytest.mark.parametrize("divergence", ["reverse_kl", "js"])
def test_reverse_kl_and_js_collapse_onto_one_mode_when_the_policy_cannot_hold_both(divergence):
    q = _train(divergence)
    assert min(q[LEFT].sum(), q[RIGHT].sum()).item() < 0.1  # ~0.001
    assert q[LEFT].sum().item() > 0.9  # the mode the start leaned to
    # ... and that is the family's optimum, not a training accident: the learned policy's divergence is
    # within a few percent of the best centre's (the discriminator only approximates D*; beta's KL term)
    measure = (lambda q: _kl(q, DEMOS)) if divergence == "reverse_kl" else (lambda q: _js(DEMOS, q))
    best = measure(_policy(torch.tensor(_grid_optimum(measure), dtype=torch.float64))).item()
    centred = measure(_policy(torch.tensor(5.0, dtype=torch.float64))).item()
    assert best <= measure(q).item() < best + 0.05 * (centred - best)


def test_reverse_kl_covers_both_modes_when_the_policy_can():
    """The collapse is the family's, not the method's: with a free softmax over the 11 outcomes the
    reverse-KL optimum is the demonstrations' distribution itself, both modes included."""
    logits = torch.zeros(len(Y), dtype=torch.float64, requires_grad=True)
    scores = torch.zeros(len(Y), dtype=torch.float64, requires_grad=True)
    policy_optimiser = torch.optim.Adam([logits], lr=0.1)
    discriminator_optimiser = torch.optim.Adam([scores], lr=0.5)
    for _ in range(150):
        samples = torch.softmax(logits, 0).detach()
        for _ in range(5):
            discriminator_optimiser.zero_grad()
            discriminator_loss(scores, scores, DEMOS, samples).backward()
            discriminator_optimiser.step()
        q = torch.softmax(logits, 0)
        policy_optimiser.zero_grad()
        (-(q * policy_rewards(scores.detach(), "reverse_kl")).sum()).backward()
        policy_optimiser.step()
    q = torch.softmax(logits, 0).detach()
    assert min(q[LEFT].sum(), q[RIGHT].sum()).item() > 0.4
    assert _kl(q, DEMOS).item() < 0.05
