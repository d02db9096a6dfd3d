"""Training configuration: plain dataclasses, validated on construction.

The worker builds a `TrainConfig` from the job row with `TrainConfig.from_dict`; the CLI builds one
with `load_config(yaml_path, overrides)`, where the order is defaults < YAML < `key=value` flags.
The resolved config (`to_dict()`) is written next to every checkpoint.

Every validation error is a `ValueError` whose message starts with the dotted field name:
`hyperparameters.learning_rate: expected a number > 0, got -1.0`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
DEVICES = ("auto", "cpu", "cuda")
MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")
SUPPORTED_METHODS = ("sft", "irft", "rft")
IRFT_LOSSES = ("sigmoid", "hinge")
IRFT_SCHEDULES = ("stagewise", "full")


def _fail(name: str, expected: str, got: Any) -> None:
    raise ValueError(f"{name}: expected {expected}, got {got!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    # bool is an int subclass; `n_epochs: true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, f"an integer >= {minimum}", value)


def _check_float(
    name: str,
    value: Any,
    low: float,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        _fail(name, f"a number in {lo}{low}, {high}{hi}", value)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(name, f"one of {', '.join(choices)}", value)


def _check_str(name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        _fail(name, "a non-empty string", value)


@dataclass
class LoraSettings:
    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # "all-linear" (peft's shorthand: every linear layer but the output head) or explicit module names.
    target_modules: list[str] | str = "all-linear"

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            _fail("enabled", "true or false", self.enabled)
        _check_int("r", self.r, 1)
        _check_int("alpha", self.alpha, 1)
        _check_float("dropout", self.dropout, 0.0, 1.0, high_open=True)
        tm = self.target_modules
        ok = (isinstance(tm, str) and tm) or (
            isinstance(tm, list) and tm and all(isinstance(m, str) and m for m in tm)
        )
        if not ok:
            _fail("target_modules", '"all-linear" or a non-empty list of module names', tm)


@dataclass
class SFTHyperparameters:
    n_epochs: int = 3
    # Examples per micro-batch on each process. One optimiser step sees
    # batch_size * gradient_accumulation_steps * num_processes examples.
    batch_size: int = 8
    learning_rate: float = 1e-4
    lr_scheduler_type: str = "linear"  # linear | cosine | constant | constant_with_warmup
    warmup_ratio: float = 0.0
    warmup_steps: int = 0  # wins when > 0; else ceil(warmup_ratio * total_steps), as in HF TrainingArguments
    max_seq_len: int = 1024
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 disables clipping (the norm is still logged)
    lora: LoraSettings = field(default_factory=LoraSettings)
    # Optimiser steps between checkpoints; 0 = end of each epoch. The last step always saves.
    checkpoint_interval: int = 0
    eval_interval: int = 0  # optimiser steps between evals on the validation file; 0 = end of each epoch
    logging_interval: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):
            self.lora = _build(LoraSettings, self.lora, "lora")
        elif not isinstance(self.lora, LoraSettings):
            _fail("lora", "a mapping", self.lora)
        _check_int("n_epochs", self.n_epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_float("learning_rate", self.learning_rate, 0.0, low_open=True)
        _check_choice("lr_scheduler_type", self.lr_scheduler_type, SCHEDULERS)
        _check_float("warmup_ratio", self.warmup_ratio, 0.0, 1.0, high_open=True)
        _check_int("warmup_steps", self.warmup_steps, 0)
        _check_int("max_seq_len", self.max_seq_len, 2)
        _check_int("gradient_accumulation_steps", self.gradient_accumulation_steps, 1)
        _check_float("weight_decay", self.weight_decay, 0.0)
        _check_float("max_grad_norm", self.max_grad_norm, 0.0)
        _check_int("checkpoint_interval", self.checkpoint_interval, 0)
        _check_int("eval_interval", self.eval_interval, 0)
        _check_int("logging_interval", self.logging_interval, 1)


@dataclass
class GenerationSettings:
    """How the policy samples continuations of training prompts (IRFT, RFT)."""

    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy, as the reference code's HF defaults (methods.md §4.3)
    top_p: float = 1.0
    max_prompt_len: int = 256  # prompts keep their last max_prompt_len tokens (methods.md §1.3)
    batch_size: int = 8  # prompts per generate() call

    def __post_init__(self) -> None:
        _check_int("max_new_tokens", self.max_new_tokens, 1)
        _check_float("temperature", self.temperature, 0.0, 10.0)
        _check_float("top_p", self.top_p, 0.0, 1.0, low_open=True)
        _check_int("max_prompt_len", self.max_prompt_len, 1)
        _check_int("batch_size", self.batch_size, 1)


@dataclass
class IRFTHyperparameters(SFTHyperparameters):
    """IRFT, Algorithm 2 (methods.md §4). SPIN is outer_iterations = 1.

    outer_iterations (T): times the policy regenerates continuations and pi_ref is refreshed.
    schedule: "stagewise" = outer iteration t trains on its own 1/T slice of the data (the reference
    code; the whole run sees the data n_epochs times); "full" = every outer iteration regenerates for
    and trains on the whole set (multi-iteration SPIN). They coincide at T = 1.
    n_epochs: passes over the iteration's data per outer iteration. K, the optimiser steps per outer
    iteration, follows: ceil(|data_t| / (batch_size * gradient_accumulation_steps)) * n_epochs.
    """

    beta: float = 0.1
    loss_type: str = "sigmoid"  # sigmoid | hinge
    outer_iterations: int = 1
    schedule: str = "stagewise"
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    def __post_init__(self) -> None:
        if isinstance(self.generation, dict):
            self.generation = _build(GenerationSettings, self.generation, "generation")
        super().__post_init__()
        _check_float("beta", self.beta, 0.0, low_open=True)
        _check_choice("loss_type", self.loss_type, IRFT_LOSSES)
        _check_int("outer_iterations", self.outer_iterations, 1)
        _check_choice("schedule", self.schedule, IRFT_SCHEDULES)


@dataclass
class RFTHyperparameters(SFTHyperparameters):
    """RFT, Algorithm 1 (methods.md §3): an explicit reward model and a KL-regularised policy update.

    Each outer iteration: sample k continuations per prompt with the current policy, train the reward
    model (Bradley-Terry, demonstration chosen, generation rejected), then update the policy with a
    leave-one-out (RLOO) policy gradient on the learned reward minus beta * KL to the initial model.
    """

    beta: float = 0.05  # KL penalty coefficient against the initial (reference) policy
    outer_iterations: int = 1
    samples_per_prompt: int = 4  # k in RLOO; >= 2 so every sample has a leave-one-out baseline
    reward_model: str | None = None  # base of the reward model; None = the policy's base model
    reward_learning_rate: float = 1e-5
    reward_epochs: int = 1  # reward-model passes over the iteration's pairs
    generation: GenerationSettings = field(
        default_factory=lambda: GenerationSettings(temperature=1.0)
    )  # RLOO needs distinct samples

    def __post_init__(self) -> None:
        if isinstance(self.generation, dict):
            self.generation = _build(GenerationSettings, self.generation, "generation")
        super().__post_init__()
        _check_float("beta", self.beta, 0.0)
        _check_int("outer_iterations", self.outer_iterations, 1)
        _check_int("samples_per_prompt", self.samples_per_prompt, 2)
        _check_str("reward_model", self.reward_model, optional=True)
        _check_float("reward_learning_rate", self.reward_learning_rate, 0.0, low_open=True)
        _check_int("reward_epochs", self.reward_epochs, 1)


HYPERPARAMETERS: dict[str, type[SFTHyperparameters]] = {
    "sft": SFTHyperparameters,
    "irft": IRFTHyperparameters,
    "rft": RFTHyperparameters,
}


@dataclass
class TrainConfig:
    model: str  # local HF directory or hub id
    training_file: str  # local JSONL path
    output_dir: str
    validation_file: str | None = None
    method: str = "sft"
    seed: int = 0
    hyperparameters: SFTHyperparameters = field(default_factory=SFTHyperparameters)
    resume_from: str | None = None  # a complete checkpoint directory
    device: str = "auto"  # auto | cpu | cuda
    mixed_precision: str = "auto"  # auto (bf16 when the device supports it, else no) | no | bf16 | fp16

    def __post_init__(self) -> None:
        _check_choice("method", self.method, SUPPORTED_METHODS)
        expected = HYPERPARAMETERS[self.method]
        if isinstance(self.hyperparameters, dict):
            self.hyperparameters = _build(expected, self.hyperparameters, "hyperparameters")
        elif type(self.hyperparameters) is SFTHyperparameters and expected is not SFTHyperparameters:
            # the default factory made SFT's; this method has its own (more) knobs
            self.hyperparameters = _build(
                expected, dataclasses.asdict(self.hyperparameters), "hyperparameters"
            )
        elif not isinstance(self.hyperparameters, expected):
            _fail("hyperparameters", "a mapping", self.hyperparameters)
        for name in ("model", "training_file", "validation_file", "output_dir", "resume_from"):
            value = getattr(self, name)
            if isinstance(value, str) and value.startswith("~"):  # YAML and the CLI pass paths unexpanded
                setattr(self, name, str(Path(value).expanduser()))
        _check_str("model", self.model)
        _check_str("training_file", self.training_file)
        _check_str("output_dir", self.output_dir)
        _check_str("validation_file", self.validation_file, optional=True)
        _check_choice("method", self.method, SUPPORTED_METHODS)
        _check_int("seed", self.seed, 0)
        _check_str("resume_from", self.resume_from, optional=True)
        _check_choice("device", self.device, DEVICES)
        _check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISIONS)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from nested plain dicts (JSON from the API, YAML). Unknown keys are errors."""
        return _build(cls, d, "")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, d: Any, prefix: str) -> Any:
    """Construct dataclass `cls` from dict `d`, naming the offending key (with `prefix`) on error."""
    where = prefix or "config"
    if not isinstance(d, dict):
        _fail(where, "a mapping", d)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in d:
        if key not in names:
            raise ValueError(f"{_join(prefix, str(key))}: unknown key (known: {', '.join(sorted(names))})")
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in d:
            raise ValueError(f"{_join(prefix, f.name)}: required")
    try:
        return cls(**d)
    except ValueError as e:
        msg = str(e)
        # Nested dataclasses already prefixed their own errors; add ours in front.
        raise ValueError(_join(prefix, msg) if prefix else msg) from None


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# ---------------------------------------------------------------------------------------------------
# YAML + command-line overrides


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML file (or nothing) and apply `key=value` overrides, then validate.

    Keys are dotted paths: `seed=1`, `hyperparameters.learning_rate=3e-4`, `hyperparameters.lora.r=16`.
    A hyperparameter name alone (`learning_rate=3e-4`) is accepted as a shorthand. Values are parsed
    as YAML and then converted to the field's type, so `1e-4` (which YAML 1.1 reads as a string) is
    a float for a float field.
    """
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text())
        if loaded is not None and not isinstance(loaded, dict):
            _fail(str(path), "a YAML mapping", type(loaded).__name__)
        data = loaded or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise ValueError(f"{item}: expected key=value")
        parts = key.split(".")
        top = {f.name for f in dataclasses.fields(TrainConfig)}
        hp = {f.name for cls in HYPERPARAMETERS.values() for f in dataclasses.fields(cls)}
        if parts[0] not in top and parts[0] in hp:
            parts = ["hyperparameters", *parts]
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{key}: {part} is not a mapping")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return TrainConfig.from_dict(_coerce(TrainConfig, data))


def _coerce(cls: type, d: Any) -> Any:
    """Convert string leaves to the annotated field type where that is unambiguous."""
    if not isinstance(d, dict):
        return d
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in d.items():
        tp = hints.get(key)
        if dataclasses.is_dataclass(tp):
            out[key] = _coerce(tp, value)
        elif isinstance(value, str) and tp is not None:
            out[key] = _from_string(value, tp)
        else:
            out[key] = value
    return out


def _from_string(value: str, tp: Any) -> Any:
    args = typing.get_args(tp) if isinstance(tp, types.UnionType) else (tp,)
    if type(None) in args and value.lower() in ("null", "none", "~", ""):
        return None
    if str in args:
        return value
    for target in (int, float):
        if target in args:
            try:
                return target(value)
            except ValueError:
                pass
    if list in args or any(typing.get_origin(a) is list for a in args):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value  # leave it for validation to reject with a clear message
