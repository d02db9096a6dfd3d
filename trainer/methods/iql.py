"""IQL: TD-regularised maximum likelihood, inverse soft-Q learning on the LM's own logits (docs/methods.md §9;
Wulfmeier et al. 2024, "Imitating Language via Scalable Inverse Reinforcement Learning").

The objective, derived:

Read the language model as a soft Q-function over the token MDP (docs/methods.md §1.1): the state s_t is
the prompt and the response so far, the action a_t the next token, and

    Q(s_t, a) = logits_t[a],    V(s) = logsumexp_a Q(s, a),    pi(a|s) = softmax(Q(s, .))[a],

so log pi(a_t|s_t) = Q(s_t, a_t) - V(s_t): the ordinary softmax policy is the soft-optimal policy of Q,
and V is its soft value. Transitions are deterministic (s_{t+1} is s_t with a_t appended), so the
reward for which Q is the soft Q-function is the inverse soft Bellman operator

    r_t = Q(s_t, a_t) - gamma * V(s_{t+1}),    V(s_{t+1}) = 0 when s_{t+1} is terminal.

IQ-Learn (Garg et al. 2021) fits Q to demonstrations without ever training a separate reward: it
maximises, over Q, the expected concave function phi of that implied reward on the expert's
transitions minus the value of the initial states,

    J(Q) = E_expert[ phi(r_t) ] - (1 - gamma) E[ V(s_0) ],

and with the chi^2 choice phi(r) = r - r^2 / (4 alpha) the reward is kept near 0. The initial-state
term needs states the data may not cover well; the telescoping identity replaces it by the expert's own
transitions: summed along an episode, V(s_t) - gamma V(s_{t+1}) collapses to V(s_0) (exactly at
gamma = 1 with V = 0 at the end; as an occupancy-measure expectation in general), so
(1 - gamma) E[V(s_0)] = E_expert[ V(s_t) - gamma V(s_{t+1}) ]. Substituting, the linear part is

    E[ Q(s_t, a_t) - gamma V(s_{t+1}) ] - E[ V(s_t) - gamma V(s_{t+1}) ] = E[ Q(s_t, a_t) - V(s_t) ]
                                                                        = E[ log pi(a_t|s_t) ],

the gamma V(s_{t+1}) terms cancelling whatever gamma is. So J is the likelihood of the demonstrations
minus lambda = 1 / (4 alpha) times the mean squared implied reward, and the loss minimised here is

    L = mean_t [ -log pi(a_t|s_t) ]  +  lambda * mean_t [ (Q(s_t, a_t) - gamma V(s_{t+1}))^2 ]

over the trained response tokens: SFT's token set and reduction (the window's trained-token mean,
docs/methods.md §2.2), so lambda = 0 is SFT exactly. What the regulariser adds: the likelihood fixes the
logits of a state only up to a common offset (softmax ignores it), and the TD term chooses those offsets
so that each state's value is consistent with the next one's, i.e. it trains the logits as values and
not only as a distribution. At gamma = 1 the rewards of a response telescope:
sum_t r_t - V(s_0) = sum_t log pi(a_t|s_t) = log pi(y|x) (docs/methods.md §6.11, case J).

Conventions (`losses.td_regularised_nll`, `losses.successors`):

- V(terminal) = 0 after a trained stretch's last token: the response's end-of-turn / EOS token (each
  trained assistant turn of a chat row is its own episode, the glue and user turns after it not
  being the policy's actions), a response cut by max_seq_len (its last kept token: no bootstrap past
  the cut), and a row's end. V(s_{t+1}) is otherwise the logsumexp of the logits at the next trained
  position of the same row, which the padding-free pack (`packing.py`) already computes: the row's
  next scored target. `pack` never splits a row between two forwards, so every successor is there.
- stop_gradient_next_v: V(s_{t+1}) as a constant (semi-gradient TD) or differentiated (the default,
  J's own gradient).

The loop is SFT's (`trainer/token_training.py`): the same data, packing, steps, checkpoints, resume and
evaluation; one logsumexp per trained token serves both log pi and V, so a step costs what SFT's does
plus a few (L,)-sized operations. Metrics each step, besides SFT's (train/loss is the whole L):
train/nll (the token-mean NLL), train/td (mean r_t^2), train/reward_mean and train/reward_std (the implied
per-token rewards over the window's trained tokens, population standard deviation).

Not implemented: the online variant, which also applies the regulariser on the policy's own samples
and so needs generation (docs/methods.md §9.7).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch

from trainer import demonstration_scores as scores
from trainer.callbacks import NullSink, Sink
from trainer.config import GenerationSettings, TrainConfig
from trainer.demonstrations import load_demonstrations
from trainer.loop import Run
from trainer.losses import td_regularised_nll
from trainer.packing import PackedBatch
from trainer.result import RunResult
from trainer.spec.hyperparameters import IQLHyperparameters
from trainer.token_training import TokenObjective, train_tokens


def td_loss(
    logits: torch.Tensor,
    batch: PackedBatch,
    num_items: torch.Tensor,
    *,
    td_weight: float,
    gamma: float,
    stop_gradient_next_v: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """This pack's share of the window's loss, and its metric sums (NLL, sum r^2, sum r)."""
    loss, logps, rewards = td_regularised_nll(
        logits,
        batch.targets,
        batch.row_of_target,
        batch.in_row_position,
        td_weight=td_weight,
        gamma=gamma,
        stop_gradient_next_v=stop_gradient_next_v,
        num_items=num_items,
    )
    logps, rewards = logps.detach(), rewards.detach()
    return loss, torch.stack([-logps.sum(), (rewards * rewards).sum(), rewards.sum()])


def td_metrics(sums: list[float], num_items: int) -> dict[str, float]:
    """train/nll, train/td, train/reward_mean, train/reward_std from the window's summed NLL, r^2 and r."""
    nll, squares, total = sums
    n = max(num_items, 1)
    mean, second = total / n, squares / n
    return {
        "train/nll": nll / n,
        "train/td": second,
        "train/reward_mean": mean,
        "train/reward_std": math.sqrt(max(second - mean * mean, 0.0)),
    }


def objective(config: TrainConfig) -> TokenObjective:
    """IQL's objective with the run's td_weight, gamma and stop_gradient_next_v."""
    hp = config.hyperparameters
    assert isinstance(hp, IQLHyperparameters)  # TrainConfig gives each method its own class
    loss = partial(
        td_loss,
        td_weight=hp.td_weight,
        gamma=hp.gamma,
        stop_gradient_next_v=hp.stop_gradient_next_v,
    )
    return TokenObjective("iql", loss, td_metrics, score=partial(score_lines, gamma=hp.gamma))


def score_lines(run: Run, *, gamma: float) -> Path:
    """Each line's implied reward under the final logits (trainer/demonstration_scores.py): its last
    assistant response, as IRFT and RFT split a line, read with the loader's default prompt budget."""
    hp = run.hp
    demos = load_demonstrations(
        run.config.training_file,
        run.tokenizer,
        hp.max_seq_len,
        GenerationSettings().max_prompt_len,
        NullSink(),
    )
    rewards, logps = scores.implied_rewards(run.model, demos, gamma)
    return scores.save(run, rewards, scores.response_tokens(demos), logps)


def train(config: TrainConfig, sink: Sink) -> RunResult:
    """Run IQL as configured, reporting to `sink`; resume from `config.resume_from` when set."""
    return train_tokens(config, sink, objective(config))
