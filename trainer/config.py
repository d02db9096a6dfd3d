"""Training configuration: `TrainConfig` and each method's hyperparameters, validated on construction.

The hyperparameter classes are defined once, in trainer/spec/hyperparameters.py (torch-free, so the API
validates job requests against the very same definitions); this module re-exports them and adds the
run's own settings (model, files, method, seed, device, ...).

The worker builds a `TrainConfig` from the job row with `TrainConfig.from_dict`; the CLI builds one
with `load_config(yaml_path, overrides)`, where the order is defaults < YAML < `key=value` flags.
The resolved config (`to_dict()`) is written next to every checkpoint.

Every validation error is a `ValueError` whose message starts with the dotted field name:
`hyperparameters.learning_rate: expected a number in (0.0, 1.0], got -1.0` (several wrong fields give
several such parts, joined by "; ").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SerializeAsAny, ValidationError, field_validator

from graders.schemas import Grader
from trainer.spec.hyperparameters import (
    HYPERPARAMETERS,
    DPOHyperparameters,
    GenerationSettings,
    IRFTHyperparameters,
    LoraSettings,
    MethodName,
    RFTHyperparameters,
    SFTHyperparameters,
    SpecModel,
    error_message,
)

__all__ = [
    "HYPERPARAMETERS",
    "DPOHyperparameters",
    "GenerationSettings",
    "IRFTHyperparameters",
    "LoraSettings",
    "RFTHyperparameters",
    "SFTHyperparameters",
    "TrainConfig",
    "load_config",
]


class TrainConfig(SpecModel):
    """One training run. `hyperparameters` is the class of `method` (HYPERPARAMETERS[method])."""

    model: str = Field(min_length=1, description="Local Hugging Face directory or hub id.")
    training_file: str = Field(min_length=1, description="Local JSONL path.")
    output_dir: str = Field(min_length=1, description="Where checkpoints are written.")
    validation_file: str | None = Field(None, min_length=1, description="Local JSONL path, or null.")
    method: MethodName = Field("sft", description="Which training method runs.")
    seed: int = Field(
        0,
        ge=0,
        le=2**32 - 1,  # numpy's seed range (accelerate's set_seed seeds numpy too)
        description="Seeds data order, initialisation of new heads, sampling.",
    )
    hyperparameters: SerializeAsAny[SFTHyperparameters] = Field(
        default_factory=SFTHyperparameters, description="The method's hyperparameters."
    )
    resume_from: str | None = Field(None, min_length=1, description="A complete checkpoint directory.")
    grader: Grader | None = Field(
        None,
        description=(
            "OpenAI's grader shapes (graders/schemas.py): the reinforcement method's reward; for any "
            "method with a validation file of prompts, its graded evaluation."
        ),
    )
    grader_python: str | None = Field(
        None,
        min_length=1,
        description=(
            "The interpreter python graders run on in their sandbox (graders/sandbox.py); null = this "
            "one. A service passes one the sandbox's unprivileged user can run."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto = bf16 when the device supports it, else no
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"

    def __init__(self, **data: Any) -> None:
        method = data.get("method", "sft")
        expected = HYPERPARAMETERS.get(method) if isinstance(method, str) else None
        if expected is not None:
            hp = data.get("hyperparameters", {})
            if isinstance(hp, SFTHyperparameters) and type(hp) is not expected:
                hp = hp.model_dump(exclude_unset=True)  # e.g. SFT's knobs given for an IRFT run
            if not isinstance(hp, expected):
                try:
                    data["hyperparameters"] = expected.model_validate(hp)
                except ValidationError as exc:
                    raise ValueError(error_message(exc, expected, "hyperparameters")) from None
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ValueError(error_message(exc, type(self))) from None

    @field_validator("model", "training_file", "validation_file", "output_dir", "resume_from")
    @classmethod
    def _expand_home(cls, value: str | None) -> str | None:
        # YAML and the CLI pass paths unexpanded
        return str(Path(value).expanduser()) if value and value.startswith("~") else value

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML 1.1 reads a bare `no` as false

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from nested plain dicts (JSON from the API, YAML). Unknown keys are errors."""
        if not isinstance(d, dict):
            raise ValueError(f"config: expected a mapping, got {d!r}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


# ---------------------------------------------------------------------------------------------------
# YAML + command-line overrides


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML file (or nothing) and apply `key=value` overrides, then validate.

    Keys are dotted paths: `seed=1`, `hyperparameters.learning_rate=3e-4`, `hyperparameters.lora.r=16`.
    A hyperparameter name alone (`learning_rate=3e-4`) is accepted as a shorthand. A value is the
    string as typed, converted by the field's type (`mixed_precision=no` is the string "no",
    `learning_rate=1e-4` a float, `lora.enabled=true` a boolean); only a list or mapping in brackets
    (`target_modules=[q_proj,v_proj]`) and `null`/`~` are read as YAML.
    """
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a YAML mapping, got {type(loaded).__name__}")
        data = loaded or {}
    top = set(TrainConfig.model_fields)
    hp_names = {name for cls in HYPERPARAMETERS.values() for name in cls.model_fields}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise ValueError(f"{item}: expected key=value")
        parts = key.split(".")
        if parts[0] not in top and parts[0] in hp_names:
            parts = ["hyperparameters", *parts]
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{key}: {part} is not a mapping")
        node[parts[-1]] = _override_value(raw)
    return TrainConfig.from_dict(data)


def _override_value(raw: str) -> Any:
    text = raw.strip()
    if text in ("null", "~"):
        return None
    if text[:1] in ("[", "{"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{raw}: not a YAML list or mapping ({exc})") from None
    return text
