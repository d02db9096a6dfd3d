"""Describe each fine-tuning method's hyperparameters by introspecting its pydantic model.

The dashboard's New-job form is generated from this description, so it is derived from the very
models that validate job requests (api/schemas/hyperparameters.py, themselves derived from the trainer's
trainer/spec/hyperparameters.py) rather than kept as a second table:
a new field, bound or choice shows up here by itself, and a field whose annotation cannot be described
faithfully raises instead of being described wrongly.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from api.method_names import TRAINING_FORMATS, aliases_of
from api.schemas.hyperparameters import HYPERPARAMETERS
from api.schemas.methods import HyperparameterSpec, HyperparameterType, MethodList, MethodObject

AUTO = "auto"

# One sentence per method; everything else on the method object is derived.
DESCRIPTIONS: dict[str, str] = {
    "sft": "Supervised fine-tuning: minimises the next-token negative log-likelihood of the demonstrations.",
    "irft": (
        "Implicit reward fine-tuning: learns an implicit reward by contrasting the demonstrations with "
        "the model's own generations, refreshing the reference model every outer iteration "
        "(SPIN is outer_iterations=1)."
    ),
    "rft": (
        "Reward fine-tuning: trains an explicit Bradley-Terry reward model that prefers demonstrations "
        "to the model's generations, then updates the policy with RLOO on that reward minus a KL "
        "penalty to the initial model."
    ),
    "dpo": (
        "Direct preference optimisation (OpenAI's dpo) on a preference file: raises the implicit reward "
        "beta * log(pi / pi_ref) of each preferred response over its rejected one, pi_ref being the "
        "initial model."
    ),
    "iql": (
        "TD-regularised maximum likelihood (inverse soft-Q learning): the demonstrations' next-token "
        "negative log-likelihood plus td_weight times the squared per-token reward the logits imply; "
        "offline, at about the cost of SFT."
    ),
    "reinforcement": (
        "Reinforcement fine-tuning (OpenAI's reinforcement) on prompts and a grader: the policy's sampled "
        "answers are graded, and a group-normalised policy gradient with a KL penalty to the initial model "
        "makes the better-graded ones likelier."
    ),
}

_SCALARS: dict[type, HyperparameterType] = {bool: "boolean", int: "integer", float: "number", str: "string"}
_BOUNDS = ("ge", "gt", "le", "lt")


def _union_members(annotation: Any) -> list[Any]:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _union_members(arg)]
    return [annotation]


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """`Annotated[T, Field(ge=1), ...]` -> (T, [Ge(1), ...]); anything else -> (itself, [])."""
    if get_origin(annotation) is not Annotated:
        return annotation, []
    base, *extras = get_args(annotation)
    return base, list(_constraints(extras))


def _constraints(items: Iterable[Any]) -> Iterator[Any]:
    for item in items:
        if isinstance(item, FieldInfo):  # pydantic keeps a nested Field's constraints in .metadata
            yield from item.metadata
        else:
            yield item


def _type_of(annotation: Any) -> HyperparameterType:
    if get_origin(annotation) is list and get_args(annotation) == (str,):
        return "string_list"
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    raise TypeError(f"cannot describe a hyperparameter of type {annotation!r}")


def _literal_type(values: list[Any]) -> HyperparameterType:
    kinds = {_type_of(type(v)) for v in values}
    if len(kinds) != 1:
        raise TypeError(f"cannot describe a choice of mixed types {values!r}")
    return kinds.pop()


def _bounds(constraints: list[Any]) -> dict[str, Any]:
    """Ge/Gt/Le/Lt (or an Interval) -> minimum/maximum and whether each is exclusive."""
    out: dict[str, Any] = {
        "minimum": None,
        "maximum": None,
        "exclusive_minimum": False,
        "exclusive_maximum": False,
    }
    for c in constraints:
        found = {b: getattr(c, b) for b in _BOUNDS if getattr(c, b, None) is not None}
        if not found:  # e.g. a length or multiple-of constraint: describing it as unbounded would lie
            raise TypeError(f"cannot describe the constraint {c!r}")
        for bound, value in found.items():
            side = "minimum" if bound in ("ge", "gt") else "maximum"
            out[side], out[f"exclusive_{side}"] = value, bound in ("gt", "lt")
    return out


def describe_field(name: str, info: FieldInfo, default: Any) -> HyperparameterSpec:
    """One leaf field -> its spec. `default` is the value a default-constructed model holds."""
    members = _union_members(info.annotation)
    nullable = type(None) in members
    literals: list[Any] = []
    typed: list[tuple[Any, list[Any]]] = []
    for member in members:
        if member is type(None):
            continue
        base, constraints = _unwrap(member)
        if get_origin(base) is Literal:
            literals.extend(get_args(base))
        else:
            typed.append((base, constraints))
    auto = AUTO in literals and bool(typed)
    if auto:
        literals.remove(AUTO)
    constraints = list(_constraints(info.metadata))
    if not typed:  # a pure choice
        type_, enum = _literal_type(literals), literals
    elif len(typed) == 1:
        base, inner = typed[0]
        type_, enum = _type_of(base), None
        constraints += inner
        # A sentinel such as lora.target_modules' "all-linear" can only be conveyed as the default.
        if any(v != default for v in literals):
            raise TypeError(f"{name}: cannot describe the special values {literals!r}")
    else:
        raise TypeError(f"{name}: cannot describe a union of {[b for b, _ in typed]!r}")
    return HyperparameterSpec(
        name=name,
        type=type_,
        default=default,
        auto=auto,
        enum=enum,
        nullable=nullable,
        description=info.description,
        **_bounds(constraints),
    )


def describe_model(model: type[BaseModel], defaults: BaseModel, prefix: str = "") -> list[HyperparameterSpec]:
    """Every leaf field of `model` in declaration order, nested models flattened to dotted names.

    Defaults are read from a default-constructed instance, so a nested model's default_factory (RFT's
    generation temperature of 1.0, for one) is honoured rather than the nested class's own default."""
    specs: list[HyperparameterSpec] = []
    for name, info in model.model_fields.items():
        value = getattr(defaults, name)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            specs.extend(describe_model(info.annotation, value, prefix=f"{prefix}{name}."))
        else:
            specs.append(describe_field(prefix + name, info, value))
    return specs


def list_methods() -> MethodList:
    return MethodList(
        data=[
            MethodObject(
                id=method,
                aliases=aliases_of(method),
                description=DESCRIPTIONS[method],
                training_file_formats=list(TRAINING_FORMATS[method]),
                hyperparameters=describe_model(model, model()),
            )
            for method, model in HYPERPARAMETERS.items()
        ]
    )
