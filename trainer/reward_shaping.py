"""From RFT's reward-model scores to the advantages its policy gradient uses (docs/methods.md §3.3;
issue 23).

Per policy step, for the k samples y of each prompt x:

    r     = reward(score(x, y))               the reward model, read at an end-of-turn token that every
                                              scored sequence has (`reward_model.RewardTokens`), made a
                                              reward by the run's divergence (`losses.policy_rewards`:
                                              the score itself for bt and reverse_kl, softplus for js)
    r1    = r / sigma                         sigma: the running std of the scores since the reward
                                              model last trained (`RunningMoments`); off: sigma = 1
    r2    = r1 - missing_eos_penalty          for a sample that never emitted its end-of-turn token
    r3    = r2 - kl_coef * (log pi - log pi_ref)(y|x)
    A     = RLOO(r3)                          each sample baselined by its prompt's other k-1
    A'    = A / std(A over the step)          whitening (`whiten`), over all micro-batches and processes

Why each step: without normalisation the Bradley-Terry head's raw scale (~4, advantage std up to 2.5)
dwarfed a KL coefficient of 0.05, so KL reached 7-9 nats for a penalty of ~0.4 (issue 23). Dividing by the
running std puts kl_coef and the penalty in units of the reward's spread; whitening makes the step size
independent of how spread the batch's rewards happen to be. The missing-EOS penalty makes "did the sample
stop" an explicit, documented term instead of a feature the reward model learns to detect (before, a
truncated sample was scored without EOS while every demonstration ended in one, and the policy collapsed
to short EOS-terminated strings). The adaptive controller (`AdaptiveKL`, Ziegler et al. 2019) steers the
coefficient so the policy's drift settles near a target.

Everything here is a pure function or a small state object with `state_dict`/`load_state_dict`, so a
resumed run continues with the same sigma and kl_coef.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Floors of the spreads divided by: a reward model that scores a batch's samples (nearly) alike must not
# blow their differences up to unit scale, nor divide by zero (a reviewer's batch of one prompt whose two
# samples tied made every reward inf and the run NaN).
REWARD_STD_FLOOR = 1e-3
WHITEN_EPS = 1e-4


@dataclass
class RunningMoments:
    """Mean and variance of every value seen (Chan et al.'s parallel update of Welford's algorithm)."""

    count: float = 0.0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean

    def update(self, values: torch.Tensor) -> None:
        """Add a batch of values (any shape)."""
        v = values.detach().double()
        if v.numel():
            mean = float(v.mean())
            self.merge(float(v.numel()), mean, float(((v - mean) ** 2).sum()))

    def merge(self, count: float, mean: float, m2: float) -> None:
        """Add a batch given by its count, mean and sum of squared deviations (e.g. reduced over processes)."""
        if count <= 0:
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta**2 * self.count * count / total
        self.count = total

    @property
    def std(self) -> float:
        """The population std of the values seen, at least REWARD_STD_FLOOR; 1.0 before there are two
        (nothing to scale by yet)."""
        if self.count < 2:
            return 1.0
        return max((self.m2 / self.count) ** 0.5, REWARD_STD_FLOOR)

    def reset(self) -> None:
        self.count, self.mean, self.m2 = 0.0, 0.0, 0.0

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.count, self.mean, self.m2 = float(state["count"]), float(state["mean"]), float(state["m2"])


@dataclass
class AdaptiveKL:
    """The KL coefficient: fixed when `target` is None, else Ziegler et al.'s proportional controller,
    coef <- coef * (1 + clip(kl / target - 1, -0.2, 0.2) / horizon) after each policy step."""

    coef: float
    target: float | None = None
    horizon: int = 10

    def update(self, kl: float) -> None:
        """`kl`: the step's mean per-sample log-ratio log pi(y|x) - log pi_ref(y|x), in nats."""
        if self.target is None:
            return
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.coef *= 1.0 + error / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"coef": self.coef}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.coef = float(state["coef"])


def shaped_rewards(
    scores: torch.Tensor,
    finished: torch.Tensor,
    log_ratio: torch.Tensor,
    *,
    reward_std: float,
    missing_eos_penalty: float,
    kl_coef: float,
) -> torch.Tensor:
    """r / reward_std - missing_eos_penalty * (not finished) - kl_coef * log_ratio, detached.

    Args:
        scores: (P, k) reward-model scores.
        finished: (P, k) bool, True where the sample ended with its end-of-turn token.
        log_ratio: (P, k) log pi(y|x) - log pi_ref(y|x), summed over the sample's tokens.
        reward_std: the scale to divide the scores by (1.0 = none).

    Returns:
        (P, k) the rewards RLOO baselines.
    """
    penalty = missing_eos_penalty * (~finished).to(scores.dtype)
    return (scores / reward_std - penalty - kl_coef * log_ratio).detach()


def whiten(advantages: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """(A - mean) / (std + eps), with the mean and std of the whole optimiser step's advantages over all
    micro-batches and processes (the caller reduces them), so a run's advantages do not depend on how its
    batch is split into micro-batches or processes."""
    return (advantages - mean) / (std + WHITEN_EPS)


@dataclass
class RewardShaping:
    """RFT's shaping state: the reward's running moments and the KL coefficient, saved in checkpoints."""

    moments: RunningMoments
    kl: AdaptiveKL

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {"moments": self.moments.state_dict(), "kl": self.kl.state_dict()}

    def load_state_dict(self, state: dict[str, dict[str, float]] | None) -> None:
        """None (a checkpoint written before shaping existed) keeps the fresh state."""
        if state is not None:
            self.moments.load_state_dict(state["moments"])
            self.kl.load_state_dict(state["kl"])
