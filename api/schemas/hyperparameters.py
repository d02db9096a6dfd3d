"""Per-method hyperparameter schemas, validated at the API, resolved ("auto") before the job is stored.

Field names follow OpenAI where OpenAI has the knob (n_epochs, batch_size, learning_rate_multiplier)
and the trainer's names elsewhere. The worker turns the stored, resolved dict into a trainer config.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Auto = Literal["auto"]

# Base learning rates that `learning_rate_multiplier` scales (and "auto" uses). LoRA adapters start at
# zero and need a larger step than full fine-tuning (the PEFT/TRL defaults are of this order).
BASE_LR_LORA = 2e-4
BASE_LR_FULL = 2e-5


class LoraHyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(False, description="Train LoRA adapters instead of all weights.")
    r: Annotated[int, Field(ge=1, le=1024)] = Field(8, description="LoRA rank.")
    alpha: Annotated[int, Field(ge=1, le=4096)] = Field(16, description="LoRA scaling numerator (alpha/r).")
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(0.05, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear'."
    )


class SFTHyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_epochs: Auto | Annotated[int, Field(ge=1, le=50)] = Field(
        "auto", description="Passes over the training data (per outer iteration for IRFT and RFT)."
    )
    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] = Field(
        "auto", description="Examples per micro-batch on each GPU process."
    )
    learning_rate: Auto | Annotated[float, Field(gt=0, le=1)] = Field(
        "auto", description="Peak learning rate; give this or learning_rate_multiplier, not both."
    )
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=1000)] = Field(
        "auto", description="Scales the base learning rate (2e-5 full, 2e-4 LoRA)."
    )
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.0, description="Fraction of the steps spent warming up; used when warmup_steps is 0."
    )
    warmup_steps: Annotated[int, Field(ge=0)] = Field(
        0, description="Warmup steps; wins over warmup_ratio when > 0."
    )
    max_seq_len: Annotated[int, Field(ge=16, le=131072)] = Field(
        1024, description="Tokens per example; longer examples are truncated."
    )
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=1024)] = Field(
        1, description="Micro-batches summed into each optimizer step."
    )
    weight_decay: Annotated[float, Field(ge=0, le=1)] = Field(0.0, description="AdamW weight decay.")
    max_grad_norm: Annotated[float, Field(gt=0)] = Field(1.0, description="Gradient-norm clipping threshold.")
    lora: LoraHyperparameters = Field(
        default_factory=LoraHyperparameters, description="LoRA adapter settings."
    )
    checkpoint_interval: Annotated[int, Field(ge=0)] = Field(
        0, description="Optimizer steps between checkpoints; 0 = at the end of each epoch."
    )
    eval_interval: Annotated[int, Field(ge=0)] = Field(
        0, description="Optimizer steps between validation passes; 0 = at the end of each epoch."
    )
    logging_interval: Annotated[int, Field(ge=1)] = Field(
        1, description="Optimizer steps between metric rows."
    )

    @model_validator(mode="after")
    def _one_learning_rate(self) -> SFTHyperparameters:
        if self.learning_rate != "auto" and self.learning_rate_multiplier != "auto":
            raise ValueError("give learning_rate or learning_rate_multiplier, not both")
        return self


class GenerationHyperparameters(BaseModel):
    """How the policy samples continuations of training prompts (IRFT, RFT)."""

    model_config = ConfigDict(extra="forbid")
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = Field(
        128, description="Longest sampled continuation."
    )
    temperature: Annotated[float, Field(ge=0, le=10)] = Field(
        0.0, description="Sampling temperature; 0 = greedy."
    )
    top_p: Annotated[float, Field(gt=0, le=1)] = Field(1.0, description="Nucleus-sampling probability mass.")
    max_prompt_len: Annotated[int, Field(ge=1, le=131072)] = Field(
        256, description="Prompts keep their last max_prompt_len tokens."
    )
    batch_size: Annotated[int, Field(ge=1, le=1024)] = Field(8, description="Prompts per generate call.")


class IRFTHyperparameters(SFTHyperparameters):
    """IRFT (Algorithm 2). outer_iterations = T; SPIN is T = 1. See trainer/config.py for T, K, n_epochs."""

    beta: Annotated[float, Field(gt=0, le=100)] = Field(
        0.1, description="Scale of the implicit reward (log-ratio of policy to reference)."
    )
    loss_type: Literal["sigmoid", "hinge"] = Field(
        "sigmoid", description="Loss on the implicit-reward margin of demonstration over generation."
    )
    outer_iterations: Annotated[int, Field(ge=1, le=1000)] = Field(
        1, description="T: rounds of regenerating and refreshing the reference model; 1 = SPIN."
    )
    schedule: Literal["stagewise", "full"] = Field(
        "stagewise",
        description="stagewise: iteration t trains on its 1/T slice; full: every iteration on all data.",
    )
    generation: GenerationHyperparameters = Field(
        default_factory=GenerationHyperparameters, description="How the policy samples continuations."
    )


class RFTHyperparameters(SFTHyperparameters):
    """RFT (Algorithm 1): a Bradley-Terry reward model and an RLOO policy update with a KL penalty."""

    beta: Annotated[float, Field(ge=0, le=100)] = Field(
        0.05, description="KL penalty coefficient against the initial policy."
    )
    outer_iterations: Annotated[int, Field(ge=1, le=1000)] = Field(
        1, description="Rounds of sampling, reward-model training and policy updates."
    )
    samples_per_prompt: Annotated[int, Field(ge=2, le=64)] = Field(
        4, description="k in RLOO: continuations sampled per prompt (each baselined by the others)."
    )
    reward_model: str | None = Field(None, description="Base of the reward model; default: the job's model.")
    reward_learning_rate: Annotated[float, Field(gt=0, le=1)] = Field(
        1e-5, description="Learning rate of the reward model."
    )
    reward_epochs: Annotated[int, Field(ge=1, le=50)] = Field(
        1, description="Reward-model passes over each iteration's pairs."
    )
    # RLOO needs distinct samples per prompt, so RFT samples at temperature 1 by default.
    generation: GenerationHyperparameters = Field(
        default_factory=lambda: GenerationHyperparameters(temperature=1.0),
        description="How the policy samples continuations.",
    )


HYPERPARAMETERS: dict[str, type[SFTHyperparameters]] = {
    "sft": SFTHyperparameters,
    "irft": IRFTHyperparameters,
    "rft": RFTHyperparameters,
}


def auto_n_epochs(n_examples: int) -> int:
    """OpenAI's published rule (cookbook Chat_finetuning_data_prep): 3, more for tiny sets, fewer for huge."""
    if n_examples * 3 < 100:
        return min(25, 100 // max(n_examples, 1))
    if n_examples * 3 > 25000:
        return max(1, 25000 // n_examples)
    return 3


def auto_batch_size(n_examples: int) -> int:
    """About 0.2% of the examples, between 1 and 32 (OpenAI's auto behaves like this; exact rule unpublished)."""
    return max(1, min(32, math.ceil(0.002 * n_examples)))


def resolve(hp: SFTHyperparameters, n_examples: int) -> dict[str, object]:
    """Every "auto" replaced by a number; the stored dict is exactly what the trainer will run."""
    out = hp.model_dump()
    base_lr = BASE_LR_LORA if hp.lora.enabled else BASE_LR_FULL
    if hp.n_epochs == "auto":
        out["n_epochs"] = auto_n_epochs(n_examples)
    if hp.batch_size == "auto":
        out["batch_size"] = auto_batch_size(n_examples)
    multiplier = 1.0 if hp.learning_rate_multiplier == "auto" else float(hp.learning_rate_multiplier)
    if hp.learning_rate == "auto":
        out["learning_rate"] = base_lr * multiplier
    out["learning_rate_multiplier"] = float(out["learning_rate"]) / base_lr
    if out["learning_rate"] > 1:
        raise ValueError(f"learning_rate_multiplier {multiplier} gives a learning rate above 1")
    return out
