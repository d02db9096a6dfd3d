"""What the validator hands back: the report of a good file, the error of a bad one, and the helpers
that name JSON values in error messages."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from trainer.spec.formats import Format

#: Warnings kept in a report; past this, one final "... and N more warning(s)" entry counts the rest.
MAX_WARNINGS = 20


@dataclass
class ValidationReport:
    format: Format
    examples: int  # number of non-blank lines (examples)
    lines: int  # total physical lines read
    warnings: list[str] = field(default_factory=list)  # "line 3: ...", at most MAX_WARNINGS + 1


class FileValidationError(ValueError):
    """A file that cannot be trained on. ``line`` is 1-based, or None for whole-file problems; ``code``
    is one of `api.validation.codes.ERROR_CODES`."""

    def __init__(self, line: int | None, code: str, reason: str) -> None:
        self.line = line
        self.code = code
        self.reason = reason
        super().__init__(f"line {line}: {reason}" if line is not None else reason)

    def __reduce__(self):  # keep it picklable (Celery, multiprocessing) despite the custom __init__
        return (type(self), (self.line, self.code, self.reason))

    def __repr__(self) -> str:
        return f"FileValidationError(line={self.line!r}, code={self.code!r}, reason={self.reason!r})"


class RowError(Exception):
    """Raised by the per-example rules, which do not know the line; the validator adds it."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason


def jtype(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def show(value: Any, limit: int = 40) -> str:
    """A value as JSON (a string as its repr), cut to ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def keys_text(keys: Iterable[str]) -> str:
    """ "'a', 'b'": sorted and quoted."""
    return ", ".join(repr(k) for k in sorted(keys))
