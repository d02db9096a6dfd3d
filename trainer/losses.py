"""Losses as pure functions of log-prob tensors (methods.md §2, §13). No model or optimiser here.

SFT only for now; the IRFT logistic loss, the reward-model Bradley-Terry loss and the RFT policy loss
belong here too, each a pure function tested against the hand-computed cases of methods.md §13.
"""

from __future__ import annotations

import torch


def sft_nll(
    per_token_logps: torch.Tensor,
    mask: torch.Tensor | None = None,
    num_items: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Token-level mean negative log-likelihood (TRL parity, methods.md §2.2).

    loss = -sum_{b,t} mask * logp / num_items, where num_items is the number of trained tokens in the
    whole gradient-accumulation window (across processes). Summing the per-micro-batch losses of a
    window then gives the mean over all its tokens, so long and short examples weigh per token, not
    per sequence. With num_items=None it is the mean over this batch's trained tokens.

    Args:
        per_token_logps: log-probs of any shape: (B, T) from `logprobs.per_token_logps`, or (L,) of
            the trained positions of a packed batch.
        mask: same shape, bool, True at trained positions; None = every position is trained.
        num_items: the divisor; defaults to the number of trained positions.

    Returns:
        scalar tensor. 0 when there is nothing to divide by.
    """
    if mask is None:
        mask = torch.ones_like(per_token_logps, dtype=torch.bool)
    total = -(per_token_logps * mask).sum()  # scalar
    if num_items is None:
        num_items = mask.sum()
    if isinstance(num_items, torch.Tensor):
        return total / num_items.clamp(min=1).to(total.dtype)
    return total / max(int(num_items), 1)


def token_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction of scored positions where argmax(logits) == target.

    Args:
        logits: (L, V) at the scored positions of a packed batch (`packing.py`: position t scores the
            label at t + 1); targets: (L,) those labels.

    Returns:
        scalar float32 tensor in [0, 1]; 0 when there is no position.
    """
    correct = (logits.argmax(dim=-1) == targets).sum()
    return correct.float() / max(int(targets.numel()), 1)


# ---------------------------------------------------------------------------------------------------
# RFT (methods.md §3): the reward model's Bradley-Terry loss and the RLOO policy-gradient pieces.


def bradley_terry_loss(
    chosen_scores: torch.Tensor, rejected_scores: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Sequence-level Bradley-Terry loss of the reward model (methods.md §3.1 step 2, §3.2).

    loss = mean_i w_i * -log sigmoid(chosen_i - rejected_i). methods.md §13 case G: end scores 1.5 vs
    -0.1 give 0.183901. Deviations from the reference code, both deliberate: it is the MEAN over pairs
    (the reference SUMS, so its effective learning rate grows with the batch size, §12.1.4), and it
    compares one score per sequence, read at the last response token where RL reads it, instead of
    a per-token loss over the window where the two texts differ.

    Args:
        chosen_scores, rejected_scores: (N,) rewards of the demonstration and of the generation.
        weights: optional (N,) per-pair weights (the reference's demonstration_weight).

    Returns:
        scalar tensor.
    """
    losses = -torch.nn.functional.logsigmoid(chosen_scores - rejected_scores)  # (N,)
    if weights is not None:
        losses = losses * weights
    return losses.mean()


def kl_penalized_rewards(
    rewards: torch.Tensor, policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float
) -> torch.Tensor:
    """r(x, y) - beta * (log pi(y|x) - log pi_ref(y|x)) per sequence: the lower-level objective of
    methods.md §3.1 (KL-regularised RL) with the sequence's log-ratio as the single-sample KL estimate.

    Args:
        rewards, policy_logps, ref_logps: same shape, e.g. (P, k); log-probs summed over the response.

    Returns:
        the penalised rewards, same shape, detached (they are REINFORCE targets, not a loss).
    """
    return (rewards - beta * (policy_logps - ref_logps)).detach()


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out advantages (Ahmadian et al. 2024): A_i = r_i - mean_{j != i} r_j.

    Args:
        rewards: (P, k) rewards of k samples for each of P prompts, k >= 2.

    Returns:
        (P, k) advantages. Equal to k/(k-1) * (r_i - mean_j r_j); each row sums to 0.
    """
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError(f"rloo_advantages: expected at least 2 samples per prompt, got {k}")
    baseline = (rewards.sum(dim=-1, keepdim=True) - rewards) / (k - 1)  # (P, k)
    return rewards - baseline


def rloo_policy_loss(policy_logps: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """REINFORCE loss -mean(A.detach() * log pi(y|x)); its gradient is the policy gradient.

    Args:
        policy_logps: (...) summed response log-probs under the policy (with grad).
        advantages: (...) same shape, e.g. from `rloo_advantages`.

    Returns:
        scalar tensor.
    """
    return -(advantages.detach() * policy_logps).mean()


# ---------------------------------------------------------------------------------------------------
# IRFT / SPIN (methods.md §4.1): logistic loss on the implicit reward of real vs generated responses.


def irft_loss(
    policy_real: torch.Tensor,
    policy_gen: torch.Tensor,
    ref_real: torch.Tensor,
    ref_gen: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
) -> tuple[torch.Tensor, torch.Tensor]:
    """IRFT / SPIN loss (methods.md §4.1, cases A-D of §13).

    z = [log pi(y|x) - log pi(y~|x)] - [log pi_ref(y|x) - log pi_ref(y~|x)] for the demonstration y
    and the self-generation y~; sigmoid: -log sigma(beta z) = softplus(-beta z) (computed as softplus,
    which is stable for large |beta z|); hinge: max(0, 1 - beta z). Mean over the batch. At
    initialisation (policy = reference) z = 0 and the sigmoid loss is log 2 (case C).

    Args:
        policy_real, policy_gen: (B,) summed response log-probs under the trained policy (with grad).
        ref_real, ref_gen: (B,) the same under pi_ref (no grad needed).
        beta: the implicit reward's scale.
        loss_type: "sigmoid" or "hinge".

    Returns:
        (loss, z): the scalar batch-mean loss and the (B,) margins z.
    """
    z = (policy_real - policy_gen) - (ref_real - ref_gen)  # (B,)
    if loss_type == "sigmoid":
        losses = torch.nn.functional.softplus(-beta * z)  # (B,)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * z)  # (B,)
    else:
        raise ValueError(f"loss_type: expected sigmoid or hinge, got {loss_type!r}")
    return losses.mean(), z


def implicit_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """beta * (log pi(y|x) - log pi_ref(y|x)), detached: rewards/real and rewards/generated (§1.5).

    Args:
        policy_logps, ref_logps: (B,) summed response log-probs.

    Returns:
        (B,) rewards.
    """
    return (beta * (policy_logps - ref_logps)).detach()
