"""The string_check grader: exact comparisons and substring tests of two rendered templates."""

from __future__ import annotations

from typing import Any

from graders import templates
from graders.schemas import StringCheckGrader


def compare(operation: str, value: str, reference: str) -> float:
    """1.0 or 0.0. `like` and `ilike` ask whether the reference occurs in the value (ilike ignoring case,
    by Unicode case folding), as OpenAI's grader does."""
    if operation == "eq":
        return float(value == reference)
    if operation == "ne":
        return float(value != reference)
    if operation == "like":
        return float(reference in value)
    if operation == "ilike":
        return float(reference.casefold() in value.casefold())
    raise ValueError(f"operation: unknown {operation!r}")


def grade(grader: StringCheckGrader, context: dict[str, Any]) -> float:
    value = templates.render(grader.input, context, "input")
    reference = templates.render(grader.reference, context, "reference")
    return compare(grader.operation, value, reference)
