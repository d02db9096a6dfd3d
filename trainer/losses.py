"""Losses as pure functions of log-prob tensors (docs/methods.md §2, §3, §4, §9). No model or optimiser.

SFT's token-mean NLL, RFT's reward-model Bradley-Terry loss and RLOO policy pieces, the reinforcement
method's group-normalised (GRPO) advantages, the IRFT/SPIN/DPO
pair loss (with its optional likelihood anchor) and IQL's TD-regularised NLL (on logits), each a pure
function tested against the hand-computed cases of docs/methods.md §6 (tests/trainer/test_losses.py,
test_rft_losses.py, test_irft_losses.py).
"""

from __future__ import annotations

import torch


def sft_nll(
    per_token_logps: torch.Tensor,
    mask: torch.Tensor | None = None,
    num_items: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Token-level mean negative log-likelihood (TRL parity, docs/methods.md §2.2).

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
# RFT (docs/methods.md §3): the reward model's Bradley-Terry loss and the RLOO policy-gradient pieces.


def bradley_terry_loss(
    chosen_scores: torch.Tensor, rejected_scores: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Sequence-level Bradley-Terry loss of the reward model (docs/methods.md §3.1, §3.2).

    loss = mean_i w_i * -log sigmoid(chosen_i - rejected_i). Case G (docs/methods.md §6.6): end scores
    1.5 vs -0.1 give 0.183901. Deviations from the reference code (docs/methods.md §3.2), both
    deliberate: it is the MEAN over pairs (the reference SUMS, so its effective learning rate grows with
    the batch size), and it compares one score per sequence, read at the last response token where RL
    reads it, instead of a per-token loss over the window where the two texts differ.

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


# Below this spread a group's rewards count as equal: GRPO's advantages are then 0, not noise / eps.
GROUP_STD_FLOOR = 1e-6


def grpo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """Group-normalised advantages (GRPO, Shao et al. 2024, "DeepSeekMath"): A_i = (r_i - mean_j r_j) /
    std_j r_j over the k samples of the same prompt, the population std (so k = 2 with rewards 0 and 1
    gives -1 and +1). A group whose rewards are all equal has nothing to learn from: its advantages are 0
    (not 0 / eps).

    Args:
        rewards: (P, k) rewards of k samples for each of P prompts, k >= 2.

    Returns:
        (P, k) advantages; each row sums to 0 and, unless all equal, has unit population std.
    """
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError(f"grpo_advantages: expected at least 2 samples per prompt, got {k}")
    centred = rewards - rewards.mean(dim=-1, keepdim=True)  # (P, k)
    std = centred.square().mean(dim=-1, keepdim=True).sqrt()  # (P, 1)
    flat = std <= GROUP_STD_FLOOR
    return torch.where(flat, torch.zeros_like(centred), centred / std.clamp_min(GROUP_STD_FLOOR))


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
# RFT's divergence (docs/methods.md §3.8; Sun 2024, "Supervised Fine-Tuning as Inverse Reinforcement
# Learning"): how the reward model is trained and what the policy is rewarded with. p is the
# demonstrations' distribution p_demo(y|x), q the policy's pi(y|x), D = sigmoid(r) the reward model read
# as a discriminator. tests/trainer/test_divergences.py checks each derivation below numerically.

DIVERGENCES = ("bt", "js", "reverse_kl")


def discriminator_loss(
    demo_scores: torch.Tensor,
    sample_scores: torch.Tensor,
    demo_weights: torch.Tensor | None = None,
    sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """GAIL's discriminator loss: the logistic loss of D = sigmoid(r) on demonstrations (label 1) and
    policy samples (label 0), each scored alone, not as a pair difference:

        L(r) = -E_{y~p}[log D(y)] - E_{y~q}[log(1 - D(y))]
             = mean_i softplus(-r(demo_i)) + mean_j softplus(r(sample_j))

    Optimal discriminator: L is a sum over y of -p(y) log D(y) - q(y) log(1 - D(y)), minimised pointwise
    where p/D = q/(1 - D), i.e. D*(y) = p(y) / (p(y) + q(y)) and r*(y) = logit D*(y) = log p(y)/q(y): the
    log density ratio of demonstrations to policy, which the rewards of `policy_rewards` are built on.
    Its value there is L* = -E_p log(p/(p+q)) - E_q log(q/(p+q)) = log 4 - 2 JS(p, q), so a trained
    discriminator also measures the Jensen-Shannon divergence: JS = (log 4 - L*) / 2 (case K, 0.025362).

    It is the sum of TWO means, one per class: each is an expectation under its own distribution, however
    many samples a demonstration has. A mean over the pooled items would weigh the k samples of a prompt k
    times its demonstration and move the optimum to p / (p + k q).

    Args:
        demo_scores: (N,) reward-model scores r of demonstrations.
        sample_scores: (M,) scores of policy samples.
        demo_weights, sample_weights: optional (N,), (M,) non-negative weights; each mean is then the
            weighted mean sum(w * loss) / sum(w) (probabilities give exact expectations, as in the tests).

    Returns:
        scalar tensor; 2 log 2 = log 4 at r = 0 (D = 1/2 everywhere).
    """

    def mean(losses: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        if weights is None:
            return losses.mean()
        return (losses * weights).sum() / weights.sum()

    softplus = torch.nn.functional.softplus
    return mean(softplus(-demo_scores), demo_weights) + mean(softplus(sample_scores), sample_weights)


def reward_model_loss(
    demo_scores: torch.Tensor, sample_scores: torch.Tensor, divergence: str = "bt"
) -> torch.Tensor:
    """RFT's reward-step loss for `divergence` (RFTHyperparameters.divergence): "bt" is
    `bradley_terry_loss` on pairs i (demonstration i out-scores sample i), exactly as before the choice
    existed; "js" and "reverse_kl" train the same discriminator (`discriminator_loss`) and differ only in
    the reward the policy is handed (`policy_rewards`).

    Args:
        demo_scores, sample_scores: (N,) scores of the demonstration and the sample of each pair; the
            discriminator reads them as N demonstrations and N samples (a demonstration with k samples
            appears k times, weighing prompts as the samples do).
    """
    if divergence == "bt":
        return bradley_terry_loss(demo_scores, sample_scores)
    if divergence in ("js", "reverse_kl"):
        return discriminator_loss(demo_scores, sample_scores)
    raise ValueError(f"divergence: expected one of {DIVERGENCES}, got {divergence!r}")


def policy_rewards(scores: torch.Tensor, divergence: str = "bt") -> torch.Tensor:
    """The reward the policy step maximises (before `reward_shaping`), from reward-model scores r.

    bt: r itself, as before the choice existed (the same tensor, untouched).

    reverse_kl: logit D = r. At the optimal discriminator r*(y) = log p(y)/q(y), so
    E_q[r*] = -KL(q || p) (case K: -0.096901). The policy step freezes r at the current policy q_t and
    ascends E_{q_theta}[r]: its gradient sum_y grad q_theta(y) * log(p(y)/q_t(y)) is, at theta = t, the
    gradient of -KL(q_theta || p) = sum_y q_theta(y) log(p(y)/q_theta(y)), because the extra term of the
    latter, sum_y q_theta(y) grad log q_theta(y) = grad sum_y q_theta(y), is 0. So the policy step
    minimises the reverse KL(pi || p_demo), mode-seeking; the policy's entropy is inside the reward (its
    -log q), and RFT's KL penalty to pi_ref comes on top.

    js: -log(1 - D) = softplus(r). With m = (p + q)/2 and JS = (KL(p || m) + KL(q || m)) / 2,
    dJS/dq(y) = log(q(y)/m(y)) / 2 = (log 2 - log((p(y) + q(y))/q(y))) / 2, and at D*,
    -log(1 - D*(y)) = log((p(y) + q(y))/q(y)). Since a change of q sums to 0 the log 2 drops, so the
    frozen reward's gradient sum_y grad q(y) * -log(1 - D*(y)) = -2 grad JS(p, q): ascending it minimises
    the Jensen-Shannon divergence. This is GAIL's minimax, min_pi max_D E_p log D + E_pi log(1 - D)
    = 2 JS - log 4 at D*, whose policy part minimises E_pi log(1 - D). The other common form, log D
    (the "non-saturating" generator loss), ascends sum_y grad q(y) * log(p/(p+q)) = -grad(KL(q || p) -
    2 JS) (Arjovsky & Bottou 2017): a reverse KL with a JS bonus, not JS, which is why we do not use it.
    Its advantage, a reward that does not saturate where D -> 0, matters less here: RFT divides the
    rewards by their running std and whitens the advantages (`reward_shaping`), so a small spread of
    rewards still gives a unit-scale step.

    Args:
        scores: (...) reward-model scores r.

    Returns:
        (...) rewards, the same shape.
    """
    if divergence in ("bt", "reverse_kl"):
        return scores
    if divergence == "js":
        return torch.nn.functional.softplus(scores)
    raise ValueError(f"divergence: expected one of {DIVERGENCES}, got {divergence!r}")


# ---------------------------------------------------------------------------------------------------
# IRFT / SPIN (docs/methods.md §4.1): logistic loss on the implicit reward of real vs generated responses.


def irft_loss(
    policy_real: torch.Tensor,
    policy_gen: torch.Tensor,
    ref_real: torch.Tensor,
    ref_gen: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
) -> tuple[torch.Tensor, torch.Tensor]:
    """IRFT / SPIN loss (docs/methods.md §4.1; cases A-D, docs/methods.md §6.1-§6.4).

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
    return anchored_pair_loss(policy_real, policy_gen, ref_real, ref_gen, beta, loss_type)


def anchored_pair_loss(
    policy_first: torch.Tensor,
    policy_second: torch.Tensor,
    ref_first: torch.Tensor,
    ref_second: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    *,
    valid: torch.Tensor | None = None,
    num_pairs: int | float | None = None,
    nll_weight: float = 0.0,
    num_first_tokens: int | float | None = None,
    pairs_per_first: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair loss of IRFT/SPIN/DPO with a likelihood anchor on the first (demonstration / chosen) side:

        loss = sum_{valid i} l(beta * z_i) / num_pairs + nll_weight * NLL,
        NLL  = -sum_i log pi(first_i | x_i) / pairs_per_first / num_first_tokens

    l is `irft_loss`'s sigmoid or hinge. NLL is SFT's token-level mean (`sft_nll`) over the first
    responses: each first response appears in `pairs_per_first` rows (one per negative of its prompt) and
    counts once. The divisors are those of the whole optimiser window (all micro-batches and processes),
    so summing the micro-batches' losses gives the window's mean pair loss plus its anchor; they default
    to this batch's valid pairs and (required when nll_weight > 0) must be given for the tokens. A pair
    that is not `valid` (a dropped negative) adds nothing to the pair term but its first response still
    anchors. With nll_weight = 0 and every pair valid this is `irft_loss`'s mean exactly.

    Args:
        policy_first, policy_second, ref_first, ref_second: (B,) summed response log-probs.
        valid: (B,) bool, None = all.
        num_pairs: the pair term's divisor (valid pairs in the window); None = valid pairs here.
        num_first_tokens: the anchor's divisor (first-response tokens in the window, each counted once).

    Returns:
        (loss, z): the scalar loss and the (B,) margins z.
    """
    z = (policy_first - policy_second) - (ref_first - ref_second)  # (B,)
    if loss_type == "sigmoid":
        losses = torch.nn.functional.softplus(-beta * z)  # (B,)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * z)  # (B,)
    else:
        raise ValueError(f"loss_type: expected sigmoid or hinge, got {loss_type!r}")
    if valid is not None:
        losses = losses * valid.to(losses.dtype)
    if num_pairs is None:
        num_pairs = int(valid.sum()) if valid is not None else losses.numel()
    loss = losses.sum() / max(float(num_pairs), 1.0)
    if nll_weight:
        if num_first_tokens is None:
            raise ValueError("anchored_pair_loss: nll_weight > 0 needs num_first_tokens")
        nll = -policy_first.sum() / pairs_per_first / max(float(num_first_tokens), 1.0)
        loss = loss + nll_weight * nll
    return loss, z


def pair_wins(first: torch.Tensor, second: torch.Tensor, tie: float = 0.0) -> torch.Tensor:
    """1 where first scores above second by more than `tie`, 1/2 within it, 0 below: the accuracy of a
    reward at ranking pairs, in which a tie is a coin flip, not an error. `tie` > 0 for rewards that
    are computed twice (IRFT's and DPO's implicit reward, 0 up to float rounding while the policy is
    still its reference), so that rounding never decides a pair.

        >>> pair_wins(torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1e-7, 1.0]), tie=1e-6)
        tensor([1.0000, 0.5000, 0.5000, 0.0000])
    """
    margin = first - second
    return (margin > tie).float() + 0.5 * (margin.abs() <= tie).float()


def implicit_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """beta * (log pi(y|x) - log pi_ref(y|x)), detached: rewards/real and rewards/generated
    (docs/methods.md §4.6).

    Args:
        policy_logps, ref_logps: (B,) summed response log-probs.

    Returns:
        (B,) rewards.
    """
    return (beta * (policy_logps - ref_logps)).detach()


# ---------------------------------------------------------------------------------------------------
# IQL (docs/methods.md §9): TD-regularised maximum likelihood, inverse soft-Q learning on the LM's logits.


def successors(row: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Whether each scored target's NEXT state is scored too, as the next target in the list.

    Targets are listed row-major (row 0's in order, then row 1's ...; `packing.PackedBatch`), target i
    scored at position `position[i]` of row `row[i]` (the position of its state: the logits there are
    Q(s_t, .) and the token at position + 1 is the action a_t). The state after a_t is scored by target
    i + 1 exactly when target i + 1 is in the same row at the next position, i.e. when a_{t+1} is trained
    as well. It is not at a row's last target, nor where a trained stretch ends (a turn's end-of-turn
    token, followed by template glue or the next user message), nor across a row boundary of a pack: all
    of these are terminal states (V = 0).

        >>> successors(torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([3, 4, 7, 2, 3, 4]))
        tensor([ True, False, False,  True,  True, False])

    Args:
        row, position: (L,) integer tensors.

    Returns:
        (L,) bool.
    """
    out = torch.zeros_like(row, dtype=torch.bool)
    if row.numel() > 1:
        out[:-1] = (row[1:] == row[:-1]) & (position[1:] == position[:-1] + 1)
    return out


def td_regularised_nll(
    logits: torch.Tensor,
    targets: torch.Tensor,
    row: torch.Tensor,
    position: torch.Tensor,
    *,
    td_weight: float,
    gamma: float = 1.0,
    stop_gradient_next_v: bool = False,
    num_items: int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IQL's loss (docs/methods.md §9.1): SFT's token-mean NLL plus td_weight times the mean squared
    implied reward.

    The logits are a soft Q-function: Q(s_t, a) = logits_t[a], V(s) = logsumexp_a Q(s, a), so
    log pi(a_t|s_t) = Q(s_t, a_t) - V(s_t), and the per-token reward they imply (the inverse soft
    Bellman operator) is

        r_t = Q(s_t, a_t) - gamma * V(s_{t+1}),    V(s_{t+1}) = 0 when s_{t+1} is terminal,

    a state being terminal after the last token of a trained stretch (a response's end-of-turn / EOS
    token; also the last token left of a response cut by max_seq_len) and at a row's end (`successors`).
    Then

        loss = [ -sum_t log pi(a_t|s_t) + td_weight * sum_t r_t^2 ] / num_items

    summed over the given targets: with num_items the trained tokens of the whole optimiser window
    (across processes) the micro-batches' losses add up to the window's token means, exactly as
    `sft_nll` (whose NLL this is: td_weight = 0 is SFT, value and gradient). Case J
    (docs/methods.md §6.11): Q(s0) = [2, 0.5, -1], a0 = 0, Q(s1) = [0, 1, 0.3], a1 = 1, terminal after
    a1: V0 = 2.241311, V1 = 1.622974, r = [0.377026, 1.0], loss 0.489250 at td_weight 0.1, gamma 1.

    Args:
        logits: (L, V) Q(s_t, .) at the scored positions, targets listed row-major (`packing.py`'s
            `label_logits` of a `PackedBatch`, or the masked positions of padded rows flattened).
        targets: (L,) the actions a_t.
        row, position: (L,) each target's row and scored position in its row (`successors`).
        td_weight: lambda >= 0, the weight of the TD regulariser (1 / (4 alpha) in IQ-Learn's chi^2 form).
        gamma: discount in (0, 1].
        stop_gradient_next_v: V(s_{t+1}) as a constant target (semi-gradient TD) instead of a function
            of the weights (the objective's full gradient).
        num_items: the divisor; defaults to L.

    Returns:
        (loss, logps, rewards): the scalar loss, and per target (L,) log pi(a_t|s_t) and r_t, both with
        grad (detach them for metrics). Float32 (float64 logits stay float64, for gradcheck).
    """
    q_all = logits if logits.dtype == torch.float64 else logits.float()  # as logprobs.token_logps
    q = torch.gather(q_all, -1, targets.unsqueeze(-1)).squeeze(-1)  # (L,) Q(s_t, a_t)
    v = torch.logsumexp(q_all, dim=-1)  # (L,) V(s_t)
    logps = q - v  # (L,) bit for bit token_logps' value
    following = successors(row, position)  # (L,)
    shifted = torch.cat([v[1:], v.new_zeros(min(1, v.numel()))])  # V at the next target, 0 past the last
    next_v = torch.where(following, shifted, torch.zeros_like(shifted))  # (L,) V(s_{t+1})
    if stop_gradient_next_v:
        next_v = next_v.detach()
    rewards = q - gamma * next_v  # (L,)
    loss = sft_nll(logps, num_items=num_items)
    if td_weight:  # skipped at 0, so that the loss (and its gradient) is SFT's exactly
        squares = (rewards * rewards).sum()
        divisor = targets.numel() if num_items is None else num_items
        if isinstance(divisor, torch.Tensor):
            loss = loss + td_weight * squares / divisor.clamp(min=1).to(squares.dtype)
        else:
            loss = loss + td_weight * squares / max(int(divisor), 1)
    return loss, logps, rewards
