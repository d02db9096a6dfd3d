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
        "all-linear", description="Module names to adapt, or 'all-linear'.")


class SFTHyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_epochs: Auto | Annotated[int, Field(ge=1, le=50)] = "auto"
    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] = "auto"
    learning_rate: Auto | Annotated[float, Field(gt=0, le=1)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=1000)] = "auto"
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.0
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    max_seq_len: Annotated[int, Field(ge=16, le=131072)] = 1024
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=1024)] = 1
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0
    lora: LoraHyperparameters = Field(default_factory=LoraHyperparameters)
    checkpoint_interval: Annotated[int, Field(ge=0)] = Field(
        0, description="Optimizer steps between checkpoints; 0 = at the end of each epoch.")
    eval_interval: Annotated[int, Field(ge=0)] = Field(
        0, description="Optimizer steps between validation passes; 0 = at the end of each epoch.")
    logging_interval: Annotated[int, Field(ge=1)] = 1

    @model_validator(mode="after")
    def _one_learning_rate(self) -> SFTHyperparameters:
        if self.learning_rate != "auto" and self.learning_rate_multiplier != "auto":
            raise ValueError("give learning_rate or learning_rate_multiplier, not both")
        return self


class GenerationHyperparameters(BaseModel):
    """How the policy samples continuations of training prompts (IRFT, RFT)."""

    model_config = ConfigDict(extra="forbid")
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 128
    temperature: Annotated[float, Field(ge=0, le=10)] = Field(0.0, description="0 = greedy.")
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    max_prompt_len: Annotated[int, Field(ge=1, le=131072)] = 256
    batch_size: Annotated[int, Field(ge=1, le=1024)] = Field(8, description="Prompts per generate call.")


class IRFTHyperparameters(SFTHyperparameters):
    """IRFT (Algorithm 2). outer_iterations = T; SPIN is T = 1. See trainer/config.py for T, K, n_epochs."""

    beta: Annotated[float, Field(gt=0, le=100)] = 0.1
    loss_type: Literal["sigmoid", "hinge"] = "sigmoid"
    outer_iterations: Annotated[int, Field(ge=1, le=1000)] = 1
    schedule: Literal["stagewise", "full"] = Field(
        "stagewise", description="stagewise: iteration t trains on its 1/T slice; full: every iteration on all data.")
    generation: GenerationHyperparameters = Field(default_factory=GenerationHyperparameters)


class RFTHyperparameters(SFTHyperparameters):
    """RFT (Algorithm 1): a Bradley-Terry reward model and an RLOO policy update with a KL penalty."""

    beta: Annotated[float, Field(ge=0, le=100)] = 0.05
    outer_iterations: Annotated[int, Field(ge=1, le=1000)] = 1
    samples_per_prompt: Annotated[int, Field(ge=2, le=64)] = 4
    reward_model: str | None = Field(None, description="Base of the reward model; default: the job's model.")
    reward_learning_rate: Annotated[float, Field(gt=0, le=1)] = 1e-5
    reward_epochs: Annotated[int, Field(ge=1, le=50)] = 1
    generation: GenerationHyperparameters = Field(
        default_factory=lambda: GenerationHyperparameters(temperature=1.0))


HYPERPARAMETERS: dict[str, type[SFTHyperparameters]] = {
    "sft": SFTHyperparameters, "irft": IRFTHyperparameters, "rft": RFTHyperparameters,
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
