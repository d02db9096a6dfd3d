"""Every method's hyperparameters, defined once: each field's type, default, bounds and help text.

The trainer runs these classes (trainer/config.py re-exports them); the API derives its request models
from them, adding only OpenAI's "auto" and `learning_rate_multiplier` (api/schemas/hyperparameters.py),
and its `GET /v1/fine_tuning/methods` describes them to the dashboard's form. pydantic only: importing
this module loads no torch.

Rules shared by every class here (`SpecModel`):

- Unknown keys are errors (`extra="forbid"`).
- Numbers are numbers: a boolean given for an integer or float field is refused (`n_epochs: true` is a
  mistake, not 1); numeric strings are converted (`"3"`, `"1e-4"`, as the command line and YAML 1.1 give
  them); NaN and infinities are refused, and every number has an upper bound as well as a lower one
  (`MAX_STEPS` for step counts and intervals), so nothing absurd is stored or reaches the step arithmetic.
- A nested block given as a mapping is MERGED over the field's own default: RFT's generation default
  samples at temperature 1.0, so `{"generation": {"max_new_tokens": 24}}` keeps temperature 1.0 instead
  of falling back to the class default (0.0, greedy, which would make RFT's k samples identical). A
  nested block given as an instance is taken as it is.

The step arithmetic these knobs imply (optimiser steps per epoch, outer-iteration slices, K_t and the
total) is in trainer/spec/plan.py; the descriptions below refer to it rather than restate it.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, get_args

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

__all__ = [
    "HYPERPARAMETERS",
    "MAX_STEPS",
    "DPOHyperparameters",
    "GenerationSettings",
    "IQLHyperparameters",
    "IRFTHyperparameters",
    "LoraSettings",
    "RFTHyperparameters",
    "ReinforcementHyperparameters",
    "SFTHyperparameters",
    "SpecModel",
    "error_message",
]


# The upper bound of every step count and step interval: far past any real run (a million optimiser
# steps is weeks of GPU time), yet small enough that the step arithmetic stays far below 2**53, exact in
# every JSON reader (the dashboard's JavaScript included).
MAX_STEPS = 10_000_000


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a (possibly Annotated, possibly nested) union, Annotated unwrapped."""
    if typing.get_origin(annotation) is Annotated:
        return _members(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _merge(default: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(default)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class SpecModel(BaseModel):
    """Base of every settings class: strict keys, numbers that are numbers, nested blocks merged."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_and_nested_blocks(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields[info.field_name]  # type: ignore[index]  # field_name is set for field validators
        members = _members(field.annotation)
        if isinstance(value, bool) and bool not in members:
            if int in members:
                raise PydanticCustomError("int_type", "Input should be a valid integer, not a boolean")
            if float in members:
                raise PydanticCustomError("float_type", "Input should be a valid number, not a boolean")
        if isinstance(value, dict):
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                return _merge(default.model_dump(), value)
        return value


# ---------------------------------------------------------------------------------------------------
# Nested blocks


class LoraSettings(SpecModel):
    """LoRA adapters (peft) instead of full fine-tuning."""

    enabled: bool = Field(
        False, description="Train LoRA adapters instead of all weights (the base weights stay frozen)."
    )
    r: int = Field(8, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(
        16, ge=1, le=4096, description="LoRA scaling numerator: updates are scaled by alpha/r."
    )
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description=(
            "Module names to adapt (e.g. [q_proj, v_proj]), or 'all-linear': peft's shorthand for "
            "every linear layer but the output head."
        ),
        # What `_names` enforces, in the JSON schema too (it applies to the list branch only); kept out
        # of the type, whose constraints api/services/methods.py describes as bounds.
        json_schema_extra={"minItems": 1, "items": {"type": "string", "minLength": 1}},
    )

    @field_validator("target_modules")
    @classmethod
    def _names(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and (not value or not all(value)):
            raise ValueError("a non-empty list of non-empty module names")
        return value


# max_new_tokens "auto": this many times the longest demonstration response (capped by max_seq_len), so
# a continuation may run past every demonstration, and one that still has not stopped is told apart as
# unfinished (issue 23: a fixed 40-token cap cut 98% of a base model's answers mid-sentence).
AUTO_NEW_TOKENS_FACTOR = 2


class GenerationSettings(SpecModel):
    """How the policy samples continuations of training prompts (IRFT, RFT)."""

    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] | Literal["auto"] = Field(
        "auto",
        description=(
            f"Longest sampled continuation, in tokens; auto = {AUTO_NEW_TOKENS_FACTOR} × the longest "
            "demonstration response of the training file, at most max_seq_len. Either way a "
            "continuation is cut to fit max_seq_len with its prompt (and then counts as unfinished)."
        ),
    )
    temperature: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description=(
            "Sampling temperature; 0 = greedy (the reference code's Hugging Face default, "
            "docs/methods.md §1.5)."
        ),
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus-sampling probability mass.")
    max_prompt_len: int = Field(
        256,
        ge=1,
        le=131072,
        description="Prompts keep their last max_prompt_len tokens (docs/methods.md §1.3).",
    )
    batch_size: int = Field(
        32,
        ge=1,
        le=1024,
        description=(
            "Prompts per batched decode (their samples included): decoding is memory-bound, so bigger "
            "batches are nearly free per token until the KV cache fills the device."
        ),
    )


class NegativeGenerationSettings(GenerationSettings):
    """IRFT/SPIN's negatives: sampled from the policy by default. The method's gradient is an expectation
    over y~ ~ pi_theta (docs/methods.md §4.2); greedy negatives are one fixed string per prompt that a base
    model leaves unfinished, so the pair is told apart by form alone (issue 23: SPIN separated every pair
    by step 2). Greedy (0) stays available."""

    temperature: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        description="Sampling temperature of the negatives; 1 = the policy's own distribution, 0 = greedy.",
    )


class SampledGenerationSettings(GenerationSettings):
    """RFT's sampling: temperature > 0, because greedy decoding makes a prompt's k samples identical,
    every leave-one-out advantage 0 and every policy gradient 0, so the policy would never move."""

    temperature: float = Field(
        1.0,
        gt=0.0,
        le=10.0,
        description="Sampling temperature, > 0: RLOO needs distinct samples of each prompt (greedy is refused).",
    )


# ---------------------------------------------------------------------------------------------------
# Methods


SelectCheckpoint = Literal["auto", "last", "best_eval_loss"]
SELECT_CHECKPOINT_HELP = (
    "Which checkpoint becomes the job's fine-tuned model. last: the final step's. best_eval_loss "
    "(needs a validation file): the one with the lowest eval/loss on the held-out demonstrations, "
    "the starting model (step 0) included, so a run cannot hand back a model worse on them than an "
    "earlier point of itself; every improving evaluation saves a checkpoint, and an event names "
    "the step chosen. auto: best_eval_loss when the job has a validation file, else last."
)


def selects_best(select_checkpoint: str, has_validation: bool) -> bool:
    """Whether select_checkpoint, for a job with or without a validation file, hands back the
    lowest-eval/loss checkpoint (the one rule for "auto")."""
    return select_checkpoint == "best_eval_loss" or (select_checkpoint == "auto" and has_validation)


class SFTHyperparameters(SpecModel):
    """Supervised fine-tuning: next-token NLL of the demonstrations (trainer/methods/sft.py).

    One optimiser step sees batch_size * gradient_accumulation_steps * num_processes examples; the
    number of steps per epoch and in total is trainer/spec/plan.py's.
    """

    n_epochs: int = Field(3, ge=1, le=50, description="Passes over the training data.")
    batch_size: int = Field(
        8,
        ge=1,
        le=256,
        description=(
            "Examples per micro-batch on each process; one optimiser step sees batch_size × "
            "gradient_accumulation_steps × processes examples."
        ),
    )
    learning_rate: float = Field(1e-4, gt=0.0, le=1.0, description="Peak learning rate (AdamW).")
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warmup (Hugging Face's schedulers)."
    )
    warmup_ratio: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Fraction of the optimiser steps spent warming up; used when warmup_steps is 0.",
    )
    warmup_steps: int = Field(
        0,
        ge=0,
        le=MAX_STEPS,
        description=(
            "Warmup steps; wins when > 0, else ceil(warmup_ratio × total steps), as in Hugging Face's "
            "TrainingArguments."
        ),
    )
    max_seq_len: int = Field(
        1024,
        ge=16,
        le=131072,
        description="Tokens per example; a longer example keeps its start and loses the rest.",
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, le=1024, description="Micro-batches summed into each optimiser step."
    )
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(
        1.0,
        ge=0.0,
        le=1e6,  # a sane run's gradient norms are O(1)-O(100): a larger threshold never clips
        description="Gradient-norm clipping threshold; 0 = no clipping (the norm is still logged).",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA adapter settings.")
    checkpoint_interval: int = Field(
        0,
        ge=0,
        le=MAX_STEPS,
        description="Optimiser steps between checkpoints; 0 = at the end of each epoch. The last step always saves.",
    )
    eval_interval: int = Field(
        0,
        ge=0,
        le=MAX_STEPS,
        description="Optimiser steps between validation passes; 0 = at the end of each epoch.",
    )
    logging_interval: int = Field(1, ge=1, le=MAX_STEPS, description="Optimiser steps between metric rows.")
    select_checkpoint: SelectCheckpoint = Field(
        "last",
        description=SELECT_CHECKPOINT_HELP + " Default last: OpenAI's fine_tuned_model is the final step's.",
    )


class OuterIterationHyperparameters(SFTHyperparameters):
    """What IRFT and RFT share: their period is an outer iteration, not an epoch (`trainer/loop.py`)."""

    checkpoint_interval: int = Field(
        0,
        ge=0,
        le=MAX_STEPS,
        description=(
            "Optimiser steps between checkpoints; 0 = at the end of each outer iteration. "
            "The last step always saves."
        ),
    )
    eval_interval: int = Field(
        0,
        ge=0,
        le=MAX_STEPS,
        description="Optimiser steps between validation passes; 0 = at the end of each outer iteration.",
    )
    # From SFT's plateau, every IRFT, SPIN and RFT run of the re-measurement raised the held-out
    # demonstrations' loss from its first step and ended below its starting model on held-out answers
    # (docs/results.md); "auto" hands back the starting model then, so a run cannot end worse on the
    # user's own held-out data than where it began.
    select_checkpoint: SelectCheckpoint = Field(
        "auto",
        description=SELECT_CHECKPOINT_HELP + " Default auto: from a validation file, a reward-learning run "
        "that only raised its loss hands back the model it started from.",
    )


NLL_WEIGHT_HELP = (
    "Weight of a likelihood anchor added to the pair loss: the token-mean negative log-likelihood of the "
    "demonstration (IRFT/SPIN) or preferred response (DPO) over the step's pairs, exactly SFT's loss on "
    "them (Iterative RPO, Pang et al. 2024; DPO-Positive). It keeps the demonstrations' likelihood from "
    "falling with the negatives' (likelihood displacement); 0 = the plain pair loss."
)


class IRFTHyperparameters(OuterIterationHyperparameters):
    """IRFT, Algorithm 2 (docs/methods.md §4): an implicit reward from demonstrations vs the policy's own
    generations. SPIN is outer_iterations = 1.

    outer_iterations (T): times the policy regenerates continuations and pi_ref is refreshed.
    schedule: "stagewise" = outer iteration t trains on its own 1/T slice of the data (the reference
    code; the whole run sees the data n_epochs times); "full" = every outer iteration regenerates for
    and trains on the whole set (multi-iteration SPIN). They coincide at T = 1.
    n_epochs: passes over the iteration's data per outer iteration, so K_t, the optimiser steps of
    outer iteration t, is steps_per_epoch(|data_t|) * n_epochs (trainer/spec/plan.py).
    """

    n_epochs: int = Field(
        3,
        ge=1,
        le=50,
        description=(
            "Passes over each outer iteration's data (its 1/T slice, or all of it with schedule "
            "'full'); K_t = steps per epoch × n_epochs (trainer/spec/plan.py)."
        ),
    )
    beta: float = Field(
        0.1,
        gt=0.0,
        le=100.0,
        description="Scale of the implicit reward: beta × log(pi / pi_ref) of a continuation.",
    )
    loss_type: Literal["sigmoid", "hinge"] = Field(
        "sigmoid",
        description=(
            "Loss on the implicit-reward margin z of demonstration over generation: "
            "sigmoid = -log σ(beta·z), hinge = max(0, 1 - beta·z)."
        ),
    )
    outer_iterations: int = Field(
        1,
        ge=1,
        le=1000,
        description=("T: rounds of regenerating continuations and refreshing the reference model; 1 = SPIN."),
    )
    schedule: Literal["stagewise", "full"] = Field(
        "stagewise",
        description=(
            "stagewise: outer iteration t trains on its own 1/T slice of the data (the run sees the "
            "data n_epochs times); full: every outer iteration regenerates for and trains on all of it "
            "(multi-iteration SPIN). The same at T = 1."
        ),
    )
    nll_weight: float = Field(1.0, ge=0.0, le=100.0, description=NLL_WEIGHT_HELP)
    samples_per_prompt: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Negatives sampled per prompt; each makes its own (demonstration, negative) pair, so the "
            "step's pair loss averages over them (the anchor counts each demonstration once). A "
            "micro-batch holds batch_size × samples_per_prompt pairs: k times the memory."
        ),
    )
    truncated_negatives: Literal["drop", "keep"] = Field(
        "drop",
        description=(
            "A negative that hit max_new_tokens without its end-of-turn token: drop = leave it out of "
            "the pair loss (an unfinished string is told apart from a demonstration by form alone), "
            "keep = train on it. Either way they are counted (negatives/truncated). A negative identical "
            "to its demonstration is always left out (its pair has no contrast)."
        ),
    )
    generation: NegativeGenerationSettings = Field(
        default_factory=NegativeGenerationSettings,
        description="How the policy samples its negatives (temperature 1.0 by default: the policy's own distribution).",
    )


class RFTHyperparameters(OuterIterationHyperparameters):
    """RFT, Algorithm 1 (docs/methods.md §3): an explicit reward model and a KL-regularised policy update.

    The data is cut into T = outer_iterations slices as IRFT's stagewise schedule. Each outer iteration:
    sample k = samples_per_prompt continuations per prompt of its slice with the current policy, train
    the reward model (by `divergence`: Bradley-Terry, demonstration chosen, generation rejected; or a
    discriminator of demonstrations against generations) for reward_epochs passes, then n_epochs passes
    of the policy step over the slice's prompts: each policy step samples fresh continuations and
    applies a leave-one-out (RLOO) policy gradient on the learned reward minus beta * KL to the initial
    model. K_t is trainer/spec/plan.py's.
    """

    # One pass by default: every policy step samples k fresh continuations, so each further pass costs
    # as much generation as the first, and the reward model only sees the iteration's first samples.
    n_epochs: int = Field(
        1,
        ge=1,
        le=50,
        description=(
            "Passes of the policy step over each outer iteration's slice of prompts, every policy step "
            "sampling fresh continuations; K_t = steps per epoch × n_epochs (trainer/spec/plan.py). "
            "'auto' at the API is 1."
        ),
    )
    beta: float = Field(
        0.05,
        ge=0.0,
        le=100.0,
        description=(
            "KL penalty coefficient against the initial (reference) policy, per nat of a sample's "
            "log-ratio, in units of the (normalised) reward; the starting value when kl_target is set; "
            "0 = no penalty."
        ),
    )
    kl_target: float | None = Field(
        6.0,
        gt=0.0,
        le=1000.0,
        description=(
            "Adaptive KL (Ziegler et al. 2019): after each policy step the coefficient is multiplied by "
            "1 + clip(KL / kl_target - 1, -0.2, 0.2) / kl_horizon, KL being the step's mean per-sample "
            "log-ratio in nats, so the policy's drift settles near the target; null = beta stays fixed."
        ),
    )
    kl_horizon: int = Field(
        10,
        ge=1,
        le=MAX_STEPS,
        description="Policy steps over which the adaptive KL coefficient can change by about e^0.2 (see kl_target).",
    )
    reward_normalization: bool = Field(
        True,
        description=(
            "Divide the reward model's scores by their running standard deviation (over the samples "
            "scored since its last training), so beta, kl_target and missing_eos_penalty are in units of "
            "the reward's spread rather than of whatever scale Bradley-Terry training left it at."
        ),
    )
    whiten_advantages: bool = Field(
        True,
        description="Scale each micro-batch's RLOO advantages to unit variance (over all processes).",
    )
    missing_eos_penalty: float = Field(
        1.0,
        ge=0.0,
        le=100.0,
        description=(
            "Subtracted from the (normalised) reward of a sample that hit max_new_tokens without its "
            "end-of-turn token (TRL's missing_eos_penalty). The reward model scores every sequence with "
            "an end-of-turn token appended, so whether a sample stopped is this explicit, visible "
            "penalty and not something the reward model learns to detect; 0 = none."
        ),
    )
    nll_weight: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        description=(
            "Weight of the demonstrations' token-mean negative log-likelihood (SFT's loss on the step's "
            "prompts' demonstrations) added to the policy loss: InstructGPT's ptx term, an anchor to the "
            "demonstrations; 0 = none."
        ),
    )
    outer_iterations: int = Field(
        1,
        ge=1,
        le=1000,
        description=(
            "T: rounds of sampling, reward-model training and policy updates, each on its own 1/T "
            "slice of the data."
        ),
    )
    samples_per_prompt: int = Field(
        4,
        ge=2,
        le=64,
        description="k in RLOO: continuations sampled per prompt, each baselined by the other k-1.",
    )
    reward_model: str | None = Field(
        None, description="Base of the reward model; null = the job's (the policy's) base model."
    )
    reward_learning_rate: float = Field(
        1e-5, gt=0.0, le=1.0, description="Learning rate of the reward model (AdamW, constant)."
    )
    reward_epochs: int = Field(
        1, ge=1, le=50, description="Reward-model passes over each outer iteration's pairs."
    )
    reward_trainable_layers: int | None = Field(
        4,
        ge=0,
        le=1000,
        description=(
            "Top transformer blocks of the reward model that train, with its final norm and score head; "
            "the embeddings and lower blocks stay frozen, so the reward step back-propagates through "
            "these blocks only (the reference trains the top 4 of 24, docs/methods.md §3.2). "
            "null = every weight."
        ),
    )
    divergence: Literal["bt", "js", "reverse_kl"] = Field(
        "bt",
        description=(
            "What the policy's samples are matched to the demonstrations by (docs/methods.md §3.8). bt: "
            "the reward model learns that a demonstration out-scores each sample of its prompt "
            "(Bradley-Terry) and the reward is its score. js and reverse_kl: it is a discriminator "
            "D = σ(score) of demonstrations against samples, each scored alone, and the reward is "
            "-log(1 - D), minimising Jensen-Shannon (GAIL), or logit D ≈ log(p_demo / π), minimising "
            "KL(π ‖ p_demo) (mode-seeking)."
        ),
    )
    generation: SampledGenerationSettings = Field(
        default_factory=SampledGenerationSettings,
        description="How the policy samples continuations (temperature 1.0 by default: RLOO needs distinct samples).",
    )

    @field_validator("reward_model")
    @classmethod
    def _non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("a model name, or null")
        return value


class DPOHyperparameters(SFTHyperparameters):
    """DPO (Rafailov et al. 2023; OpenAI's `dpo` method) on a preference training file: IRFT's loss with
    the rejected side taken from the file instead of generated, against the INITIAL model's log-probs
    (computed once, trainer/methods/dpo.py). n_epochs passes over the pairs, as SFT's over examples."""

    beta: float = Field(
        0.1,
        gt=0.0,
        le=100.0,
        description="Scale of the implicit reward: beta × log(pi / pi_ref) of a response (OpenAI: (0, 2]).",
    )
    # 0 by default: OpenAI's and TRL's DPO (DPOTrainer's rpo_alpha is None) train the plain pair loss.
    nll_weight: float = Field(0.0, ge=0.0, le=100.0, description=NLL_WEIGHT_HELP)
    loss_type: Literal["sigmoid", "hinge"] = Field(
        "sigmoid",
        description=(
            "Loss on the implicit-reward margin z of the preferred over the rejected response: "
            "sigmoid = -log σ(beta·z) (DPO), hinge = max(0, 1 - beta·z)."
        ),
    )
    max_prompt_len: int = Field(
        256,
        ge=1,
        le=131072,
        description=(
            "Prompts keep their last max_prompt_len tokens (docs/methods.md §1.3), as IRFT's and RFT's."
        ),
    )


class IQLHyperparameters(SFTHyperparameters):
    """IQL, TD-regularised maximum likelihood (docs/methods.md §9; Wulfmeier et al. 2024, inverse soft-Q
    learning) on demonstrations: SFT's loop and loss, plus td_weight times the mean squared per-token
    reward the logits imply, r_t = Q(s_t, a_t) - gamma * V(s_{t+1}) with Q = the logits and V = their
    logsumexp (V = 0 after a response's last token). Offline: no generation, about SFT's cost per step."""

    td_weight: float = Field(
        0.1,
        ge=0.0,
        le=100.0,
        description=(
            "lambda: weight of the TD regulariser, the token-mean squared implied reward "
            "(Q(s_t, a_t) - gamma·V(s_{t+1}))², added to SFT's token-mean NLL; 0 = SFT exactly. "
            "Default 0.1 is the documented worked example's value, not measured yet."
        ),
    )
    gamma: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description=(
            "Discount of the next state's value in the implied reward; 1 = undiscounted, where the "
            "rewards of a response sum to its log-likelihood plus V of its first state. Not measured yet."
        ),
    )
    stop_gradient_next_v: bool = Field(
        False,
        description=(
            "Treat V(s_{t+1}) as a constant target in the regulariser (semi-gradient TD) instead of "
            "differentiating through it (the objective's full gradient, the default). Not measured yet."
        ),
    )


class ReinforcementGenerationSettings(SampledGenerationSettings):
    """The reinforcement method's sampling: there are no demonstrations to size "auto" from, so
    max_new_tokens is a number."""

    max_new_tokens: int = Field(  # narrower than the base's int | "auto"
        256,
        ge=1,
        le=4096,
        description=(
            "Longest sampled answer, in tokens; an answer cut there has no end-of-turn token (it counts "
            "as unfinished) and is graded as it is."
        ),
    )


class ReinforcementHyperparameters(SFTHyperparameters):
    """OpenAI's `reinforcement` method (docs/methods.md §11): the policy's sampled answers to the
    training prompts are graded, and a group-normalised policy gradient (GRPO or RLOO) with a KL penalty
    to the starting model makes the better-graded answers likelier. Steps per epoch as SFT's, counted in
    prompts (trainer/spec/plan.py); each step samples group_size answers to each of its prompts.
    OpenAI's fields: n_epochs, batch_size, learning_rate_multiplier, eval_interval, eval_samples,
    compute_multiplier, reasoning_effort."""

    n_epochs: int = Field(
        1,
        ge=1,
        le=50,
        description="Passes over the training prompts, every step sampling fresh answers.",
    )
    samples_per_prompt: int = Field(
        4,
        ge=2,
        le=64,
        description=(
            "Answers sampled per prompt before compute_multiplier scales it: the group whose rewards "
            "baseline each other."
        ),
    )
    compute_multiplier: float = Field(
        1.0,
        gt=0.0,
        le=16.0,
        description=(
            "OpenAI's knob for the compute spent exploring: scales samples_per_prompt (rounded, at "
            "least 2), so 2 samples twice as many answers per prompt at about twice the cost per step."
        ),
    )
    eval_samples: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Answers per validation prompt at each graded evaluation: 1 = greedy, more = sampled at "
            "generation.temperature and averaged."
        ),
    )
    reasoning_effort: Literal["default", "low", "medium", "high"] = Field(
        "default",
        description=(
            "OpenAI's reasoning effort. The models Juice trains have no reasoning mode to set, so "
            "anything but default is refused at job creation."
        ),
    )
    beta: float = Field(
        0.04,
        ge=0.0,
        le=100.0,
        description=(
            "KL penalty coefficient: beta × the sample's summed log-ratio to the starting model is "
            "taken off its reward (DeepSeekMath's 0.04; not measured here yet); 0 = none."
        ),
    )
    advantage: Literal["grpo", "rloo"] = Field(
        "grpo",
        description=(
            "How a prompt's answers baseline each other: grpo = (r - group mean) / group std (a group "
            "graded alike learns nothing), rloo = r - the mean of the others."
        ),
    )
    max_grader_error_share: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description=(
            "The job fails when the grader cannot score more than this share of a step's samples (they "
            "would train as reward 0)."
        ),
    )
    eval_interval: int = Field(
        0,
        ge=0,
        le=MAX_STEPS,
        description=(
            "Optimiser steps between graded evaluations of the validation prompts; 0 = at the end of "
            "each epoch. The starting model is evaluated once, before the first step."
        ),
    )
    select_checkpoint: Literal["last"] = Field(  # a narrower choice than SFT's
        "last",
        description="The final step's checkpoint is the fine-tuned model (no eval/loss to select by).",
    )
    generation: ReinforcementGenerationSettings = Field(
        default_factory=ReinforcementGenerationSettings,
        description="How the policy samples its answers (temperature 1.0 by default: a group needs distinct answers).",
    )


def group_size(hp: ReinforcementHyperparameters) -> int:
    """Answers sampled per prompt: samples_per_prompt × compute_multiplier, rounded, at least 2."""
    return max(2, round(hp.samples_per_prompt * hp.compute_multiplier))


HYPERPARAMETERS: dict[str, type[SFTHyperparameters]] = {
    "sft": SFTHyperparameters,
    "irft": IRFTHyperparameters,
    "rft": RFTHyperparameters,
    "dpo": DPOHyperparameters,
    "iql": IQLHyperparameters,
    "reinforcement": ReinforcementHyperparameters,
}
# A type needs the names spelled; pinned to the dict here.
MethodName = Literal["sft", "irft", "rft", "dpo", "iql", "reinforcement"]
assert set(get_args(MethodName)) == set(HYPERPARAMETERS)


# ---------------------------------------------------------------------------------------------------
# Error messages: `hyperparameters.learning_rate: expected a number in (0.0, 1.0], got -1`


def error_message(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """One line per wrong field, each starting with its dotted name (after `prefix`)."""
    lines: dict[str, str] = {}
    for err in exc.errors():
        path, field, known = _locate(model, err["loc"])
        name = ".".join([p for p in (prefix, path) if p]) or "config"
        if name in lines:  # a union fails once per branch; one line describes the field
            continue
        kind = err["type"]
        if kind == "extra_forbidden":
            lines[name] = f"{name}: unknown key (known: {', '.join(sorted(known))})"
        elif kind == "missing":
            lines[name] = f"{name}: required"
        elif field is None:  # the model itself: not a mapping, or a check across fields
            what = "a mapping" if kind in ("model_type", "dict_type", "model_attributes_type") else None
            detail = (
                f"expected {what}, got {err['input']!r}" if what else err["msg"].removeprefix("Value error, ")
            )
            lines[name] = f"{name}: {detail}"
        else:
            lines[name] = f"{name}: expected {expectation(field)}, got {err['input']!r}"
    return "; ".join(lines.values())


def _locate(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, FieldInfo | None, set[str]]:
    """Walk an error's loc through the models: (dotted field path, the leaf field, the keys known there)."""
    parts: list[str] = []
    field: FieldInfo | None = None
    current: type[BaseModel] | None = model
    for item in loc:
        if current is None:  # inside a leaf: a list index or a union branch label
            break
        known = set(current.model_fields)
        if item not in current.model_fields:
            return ".".join([*parts, str(item)]), None, known
        parts.append(str(item))
        field = current.model_fields[item]
        nested = [m for m in _members(field.annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
        current = nested[0] if nested else None
        if nested:
            field = None  # an error at the nested block itself is about the block
    return ".".join(parts), field, set(current.model_fields) if current else set()


def expectation(field: FieldInfo) -> str:
    """What a field accepts, in words: "an integer in [1, 50]", "one of linear, cosine", ..."""
    words = []
    literals: list[Any] = []
    for member in _members(field.annotation):
        if typing.get_origin(member) is Literal:
            literals.extend(typing.get_args(member))
        elif member is type(None):
            words.append("null")
        elif member is bool:
            words.append("true or false")
        elif member is int:
            words.append("an integer" + _bounds(field.annotation, field.metadata))
        elif member is float:
            words.append("a number" + _bounds(field.annotation, field.metadata))
        elif member is str:
            words.append("a non-empty string")
        elif typing.get_origin(member) is list:
            words.append("a non-empty list of names")
        else:
            words.append(getattr(member, "__name__", str(member)))
    if literals and words:  # special values beside a type: lora.target_modules' 'all-linear'
        words = [*(repr(v) for v in literals), *words]
    elif literals:
        words = [f"one of {', '.join(str(v) for v in literals)}"]
    return " or ".join(words)


def _bounds(annotation: Any, metadata: list[Any]) -> str:
    """Ge/Gt/Le/Lt (on the field, or inside an Annotated union member) -> " >= 1", " in (0.0, 1.0]"."""
    found: dict[str, Any] = {}
    items = list(metadata)
    for member in typing.get_args(annotation) or ():
        if typing.get_origin(member) is Annotated:
            items.extend(typing.get_args(member)[1:])
    for item in items:
        if isinstance(item, FieldInfo):
            items.extend(item.metadata)
            continue
        for bound in ("ge", "gt", "le", "lt"):
            if isinstance(item, getattr(annotated_types, bound.capitalize())):
                found[bound] = getattr(item, bound)
    low = ("[", found["ge"]) if "ge" in found else ("(", found["gt"]) if "gt" in found else None
    high = (found["le"], "]") if "le" in found else (found["lt"], ")") if "lt" in found else None
    if low and high:
        return f" in {low[0]}{low[1]}, {high[0]}{high[1]}"
    if low:
        return f" {'>=' if low[0] == '[' else '>'} {low[1]}"
    if high:
        return f" {'<=' if high[1] == ']' else '<'} {high[0]}"
    return ""
