"""`GET /v1/fine_tuning/methods` objects (Juice extension): each method and its hyperparameter knobs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

HyperparameterType = Literal["integer", "number", "boolean", "string", "string_list"]


class HyperparameterSpec(BaseModel):
    """One knob, described well enough for a client to render and check a form field."""

    name: str  # dotted path into the method's hyperparameters, e.g. "lora.r"
    type: HyperparameterType
    default: Any  # "auto" when `auto`; a JSON value otherwise
    auto: bool  # whether "auto" is accepted (the server picks the value at job creation)
    minimum: float | int | None
    maximum: float | int | None
    exclusive_minimum: bool
    exclusive_maximum: bool
    enum: list[Any] | None
    nullable: bool
    description: str | None


class MethodObject(BaseModel):
    id: str
    object: Literal["fine_tuning.method"] = "fine_tuning.method"
    aliases: list[str]
    description: str
    training_file_formats: list[str]  # the file formats (a file object's `format`) it trains on
    hyperparameters: list[HyperparameterSpec]


class MethodList(BaseModel):
    object: Literal["list"] = "list"
    data: list[MethodObject]
