"""Job-request hyperparameters: the trainer's own classes (trainer/spec/hyperparameters.py) with OpenAI's
conventions on top. Shapes only: api/services/hyperparameters.py's `resolve` turns a request into exactly
what the trainer runs.

Each request model is DERIVED from its trainer class and differs only in:

- `n_epochs`, `batch_size` and `learning_rate` also accept "auto" (their default), resolved from the
  training file's size and the base learning rate;
- a method's own OpenAI "auto" fields (`EXTRA_AUTO_FIELDS`: DPO's `beta`) accept "auto" too, their
  default, resolved to the trainer's default;
- a request-only `learning_rate_multiplier` ("auto" or > 0; not together with `learning_rate`) that
  scales the base learning rate (BASE_LR_FULL, or BASE_LR_LORA with LoRA).

The base rates are here, not with the rules that resolve "auto": the multiplier's documented meaning
quotes them, and a job's response reports its multiplier from them (`learning_rate_multiplier`, used by
api/schemas/jobs.py, which may not import a service).

Every other field (type, default, bounds, description, nested lora/generation blocks and their merge
rule) is the trainer's, so there is nothing here to drift; tests/api/test_hyperparameter_spec.py checks
it field by field. The stored job holds `resolve`'s dict: the trainer's fields only, validated by the
trainer class, so the stored job is exactly what trains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, create_model, model_validator

from trainer.spec import hyperparameters as spec

Auto = Literal["auto"]
AUTO_FIELDS = ("n_epochs", "batch_size", "learning_rate")  # every method's, resolved from the data
# Further fields OpenAI lets a method's request give as "auto", which is the trainer's default:
# DPO's `beta` (OpenAI: "auto" or a number in (0, 2]).
# reinforcement's OpenAI fields: `compute_multiplier`, `eval_interval` and `eval_samples`.
EXTRA_AUTO_FIELDS: dict[str, tuple[str, ...]] = {
    "dpo": ("beta",),
    "reinforcement": ("compute_multiplier", "eval_interval", "eval_samples"),
}

# Base learning rates that `learning_rate_multiplier` scales (and "auto" uses). LoRA adapters start at
# zero and need a larger step than full fine-tuning (the PEFT/TRL defaults are of this order).
BASE_LR_LORA = 2e-4
BASE_LR_FULL = 2e-5

# The nested blocks are the trainer's own: a request's lora/generation is validated exactly as it trains.
LoraSettings = spec.LoraSettings
GenerationSettings = spec.GenerationSettings


def base_learning_rate(lora_enabled: bool) -> float:
    return BASE_LR_LORA if lora_enabled else BASE_LR_FULL


def _one_learning_rate(self: Any) -> Any:
    """The one check only a request has."""
    if self.learning_rate != "auto" and self.learning_rate_multiplier != "auto":
        raise ValueError("give learning_rate or learning_rate_multiplier, not both")
    return self


def _auto(field_name: str, trainer_cls: type[spec.SFTHyperparameters]) -> tuple[Any, Any]:
    """The trainer's field, with "auto" accepted and the default."""
    info = trainer_cls.model_fields[field_name]
    typed = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    return Auto | typed, Field("auto", description=info.description)  # the trainer's bounds, in the union


def auto_fields(method: str) -> tuple[str, ...]:
    """The fields of `method`'s request that accept "auto"."""
    return AUTO_FIELDS + EXTRA_AUTO_FIELDS.get(method, ())


def _request_model(method: str, trainer_cls: type[spec.SFTHyperparameters]) -> type[spec.SFTHyperparameters]:
    return create_model(  # type: ignore[call-overload]  # field definitions built at runtime
        trainer_cls.__name__,
        __base__=trainer_cls,
        __validators__={"_one_learning_rate": model_validator(mode="after")(_one_learning_rate)},
        __module__=__name__,
        __doc__=f"{trainer_cls.__name__} as a job request gives it: OpenAI's 'auto' and multiplier added.",
        **{name: _auto(name, trainer_cls) for name in auto_fields(method)},
        learning_rate_multiplier=(
            Auto | Annotated[float, Field(gt=0, le=1000)],
            Field(
                "auto",
                description=(
                    f"Scales the base learning rate ({BASE_LR_FULL:g} full, {BASE_LR_LORA:g} LoRA); "
                    "give this or learning_rate, not both."
                ),
            ),
        ),
    )


# method -> the trainer's class (what a stored job holds)
TRAINER_HYPERPARAMETERS = spec.HYPERPARAMETERS
# method -> request model (what the API validates and /v1/fine_tuning/methods describes), one per
# trainer class
HYPERPARAMETERS: dict[str, type[spec.SFTHyperparameters]] = {
    method: _request_model(method, cls) for method, cls in TRAINER_HYPERPARAMETERS.items()
}
assert EXTRA_AUTO_FIELDS.keys() <= HYPERPARAMETERS.keys()

if TYPE_CHECKING:  # to a type checker a request model is its trainer class (create_model is dynamic)
    SFTHyperparameters = spec.SFTHyperparameters
    IRFTHyperparameters = spec.IRFTHyperparameters
    RFTHyperparameters = spec.RFTHyperparameters
    DPOHyperparameters = spec.DPOHyperparameters
    IQLHyperparameters = spec.IQLHyperparameters
    ReinforcementHyperparameters = spec.ReinforcementHyperparameters
else:
    SFTHyperparameters = HYPERPARAMETERS["sft"]
    IRFTHyperparameters = HYPERPARAMETERS["irft"]
    RFTHyperparameters = HYPERPARAMETERS["rft"]
    DPOHyperparameters = HYPERPARAMETERS["dpo"]
    IQLHyperparameters = HYPERPARAMETERS["iql"]
    ReinforcementHyperparameters = HYPERPARAMETERS["reinforcement"]


def learning_rate_multiplier(stored: dict[str, Any]) -> float | None:
    """OpenAI's multiplier for a stored job: its learning rate over the base rate it would scale."""
    lr = stored.get("learning_rate")
    if not isinstance(lr, int | float):
        return None
    base = base_learning_rate(bool((stored.get("lora") or {}).get("enabled")))
    return float(f"{lr / base:.12g}")
