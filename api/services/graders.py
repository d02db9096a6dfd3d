"""Running and validating a grader for a caller (graders/ does the work): what this server cannot run
is refused with a 400 naming the grader, never scored 0 sample by sample."""

from __future__ import annotations

from typing import Any

from api.core.config import Settings
from api.errors import InvalidRequest
from graders import run, sandbox


def _uses_python(grader: Any) -> bool:
    if grader.type == "multi":
        return any(_uses_python(g) for g in grader.graders.values())
    return bool(grader.type == "python")


def check_runnable(grader: Any, settings: Settings, param: str = "grader") -> None:
    """InvalidRequest (naming `param`) when this server cannot run `grader`."""
    why = run.unsupported(grader)
    if why is None and _uses_python(grader):
        why = sandbox.available(settings.grader_interpreter)
    if why is not None:
        raise InvalidRequest(f"{param}: {why}.", code="unsupported_grader", param=param)


def grade(grader: Any, model_sample: str, item: dict[str, Any] | None, settings: Settings) -> dict[str, Any]:
    check_runnable(grader, settings)
    return run.run_one(grader, model_sample, item or {}, sandbox.Limits(python=settings.grader_interpreter))
