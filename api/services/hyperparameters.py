"""Hyperparameter defaulting: a job request's hyperparameters (the request models of
api/schemas/hyperparameters.py) resolved into exactly what the trainer runs, which is what a job stores.

Every "auto" becomes a number: `n_epochs` and `batch_size` from the training file's size (`auto_n_epochs`,
`auto_batch_size`), `learning_rate` from the base rate (`base_learning_rate`) times the multiplier, and a
method's own "auto" fields (DPO's `beta`) the trainer's default. The result holds the trainer's fields
only, validated by the trainer's class (`ResolveError` names a field it refuses).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ValidationError

from api.schemas.hyperparameters import (
    EXTRA_AUTO_FIELDS,
    HYPERPARAMETERS,
    TRAINER_HYPERPARAMETERS,
    base_learning_rate,
)
from trainer.spec import hyperparameters as spec


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


def method_of(hp: BaseModel) -> str:
    (method,) = [m for m, cls in HYPERPARAMETERS.items() if type(hp) is cls]
    return method


class ResolveError(ValueError):
    """A resolved request the trainer refuses (e.g. a multiplier that makes the learning rate > 1).
    `message(prefix)` names every wrong field under `prefix`; `field` is the first one's dotted name."""

    def __init__(self, exc: ValidationError, trainer_cls: type[spec.SFTHyperparameters]) -> None:
        self.exc, self.trainer_cls = exc, trainer_cls
        self.field = spec.error_message(exc, trainer_cls).split(":", 1)[0]
        super().__init__(self.message())

    def message(self, prefix: str = "") -> str:
        return spec.error_message(self.exc, self.trainer_cls, prefix)


def resolve(hp: spec.SFTHyperparameters, n_examples: int) -> dict[str, Any]:
    """Every "auto" replaced by a number and the multiplier folded into learning_rate: exactly the
    trainer's fields, validated by the trainer's class. Raises ValueError naming the field."""
    out = hp.model_dump(exclude={"learning_rate_multiplier"})
    method = method_of(hp)
    trainer_cls = TRAINER_HYPERPARAMETERS[method]
    for name in EXTRA_AUTO_FIELDS.get(method, ()):
        if out[name] == "auto":
            out[name] = trainer_cls.model_fields[name].get_default(call_default_factory=True)
    if hp.n_epochs == "auto":
        # OpenAI's rule sizes passes of supervised data; an RFT or reinforcement pass samples fresh
        # continuations at every policy step, so its "auto" is the trainer's default of one pass.
        rft = trainer_cls in (spec.RFTHyperparameters, spec.ReinforcementHyperparameters)
        out["n_epochs"] = trainer_cls.model_fields["n_epochs"].default if rft else auto_n_epochs(n_examples)
    if hp.batch_size == "auto":
        out["batch_size"] = auto_batch_size(n_examples)
    if hp.learning_rate == "auto":
        multiplier = hp.learning_rate_multiplier  # type: ignore[attr-defined]  # request-only field, added by create_model
        out["learning_rate"] = base_learning_rate(hp.lora.enabled) * (
            1.0 if multiplier == "auto" else float(multiplier)
        )
    try:
        return trainer_cls.model_validate(out).model_dump()
    except ValidationError as exc:
        raise ResolveError(exc, trainer_cls) from None
