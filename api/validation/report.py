"""What the validator hands back: the report of a good file and the error of a bad one.

The per-example rules' `RowError`, and the helpers that name JSON values in error messages, live with
those rules in `trainer.spec.rules`."""

from __future__ import annotations

from dataclasses import dataclass, field

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
