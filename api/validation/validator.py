"""`JsonlValidator`: the decoder, the format rule and the per-example rules over a whole file.

For every object the decoder (`decoder.py`) hands over, the validator decides its shape by the format
rule shared with the trainer (`trainer.spec.formats.identify`), holds the file to one format, and runs
the per-example rules (`trainer.spec.rules.CHECKS`, which the trainer runs on every row it reads too).
File-level rules, which no single row can break:

* Every example of a file is in the file's format, the format of its first example (``mixed_formats``);
  the two preference shapes are one format and may be mixed. A row with only ``prompt`` is read as an
  incomplete example of the file's format when that is prompt_completion or preference.
* ``empty_file`` when there are no examples at all (zero bytes, only blank lines or only a BOM),
  ``insufficient_examples`` when there are fewer than ``min_examples``. Both have ``line=None``.
* Warnings are capped at ``MAX_WARNINGS`` entries plus one final "... more warnings" entry.
* After an error the validator is dead: every later ``feed``/``finish`` re-raises the same error.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from api.validation.decoder import DEFAULT_MAX_LINE_BYTES, JsonlDecoder
from api.validation.report import MAX_WARNINGS, FileValidationError, ValidationReport
from trainer.spec.formats import (
    CHAT_SHAPE,
    OPENAI_PREFERENCE_SHAPE,
    PROMPT_COMPLETION_SHAPE,
    TRL_PREFERENCE_SHAPE,
    Format,
    FormatError,
    Shape,
    identify,
)
from trainer.spec.rules import CHECKS, RowError

_CHAT = Format.CHAT
_PROMPT_COMPLETION = Format.PROMPT_COMPLETION
_PREFERENCE = Format.PREFERENCE


class JsonlValidator:
    """Incremental: feed() bytes chunks of any size as they arrive, then finish()."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, min_examples: int = 1) -> None:
        self._decoder = JsonlDecoder(self._example, max_line_bytes)
        self.max_line_bytes = max_line_bytes
        self.min_examples = min_examples
        self._examples = 0
        self._format: Format | None = None
        self._format_line = 0
        self._current_line = 0
        self._warnings: list[str] = []
        self._n_warnings = 0
        self._error: FileValidationError | None = None
        self._report: ValidationReport | None = None

    # -- public ------------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._report is not None:
            raise RuntimeError("feed() called after finish()")
        try:
            self._decoder.feed(chunk)
        except FileValidationError as exc:
            self._error = exc
            raise

    def finish(self) -> ValidationReport:
        if self._error is not None:
            raise self._error
        if self._report is not None:
            return self._report
        try:
            self._decoder.finish()
            if self._examples == 0:
                raise FileValidationError(
                    None, "empty_file", "the file contains no examples (it is empty or has only blank lines)"
                )
            if self._examples < self.min_examples:
                raise FileValidationError(
                    None,
                    "insufficient_examples",
                    f"the file has {self._examples} example(s); at least {self.min_examples} are required",
                )
        except FileValidationError as exc:
            self._error = exc
            raise
        warnings = list(self._warnings)
        if self._n_warnings > len(warnings):
            warnings.append(f"... and {self._n_warnings - len(warnings)} more warning(s)")
        assert self._format is not None
        self._report = ValidationReport(self._format, self._examples, self._decoder.lines, warnings)
        return self._report

    # -- internals ---------------------------------------------------------------------------------

    def _example(self, n: int, obj: dict) -> None:
        """One decoded object on line ``n``: its shape, the file's format, the per-example rules."""
        expected = self._format
        # Exact key sets of the file's format imply what identify(obj) would say; anything else goes the
        # long way.
        if expected is _CHAT and len(obj) == 1 and "messages" in obj:
            shape = CHAT_SHAPE
        elif expected is _PROMPT_COMPLETION and len(obj) == 2 and "completion" in obj and "prompt" in obj:
            shape = PROMPT_COMPLETION_SHAPE
        elif expected is _PREFERENCE and len(obj) == 3 and obj.keys() == OPENAI_PREFERENCE_SHAPE.keys:
            shape = OPENAI_PREFERENCE_SHAPE
        elif expected is _PREFERENCE and len(obj) == 3 and obj.keys() == TRL_PREFERENCE_SHAPE.keys:
            shape = TRL_PREFERENCE_SHAPE
        else:
            shape = self._resolve_shape(obj, n)
        self._current_line = n
        try:
            CHECKS[shape](obj, self._warn)
        except (RowError, FormatError) as exc:
            raise FileValidationError(n, exc.code, exc.reason) from None
        self._examples += 1

    def _resolve_shape(self, obj: dict, n: int) -> Shape:
        """The shape to check ``obj`` against: fixes the file's format on the first example and raises
        ``unknown_format`` / ``ambiguous_format`` / ``mixed_formats``."""
        expected = self._format
        try:
            shape = identify(obj, prefer=expected)
        except FormatError as exc:
            raise FileValidationError(n, exc.code, exc.reason) from None
        if expected is None:
            self._format = shape.format
            self._format_line = n
        elif shape.format is not expected:
            raise FileValidationError(
                n,
                "mixed_formats",
                f"this example is in {shape.format.value} format but the file is in "
                f"{expected.value} format (detected on line {self._format_line}); "
                "every line must use the same format",
            )
        return shape

    def _warn(self, msg: str) -> None:
        self._n_warnings += 1
        if len(self._warnings) < MAX_WARNINGS:
            self._warnings.append(f"line {self._current_line}: {msg}")


def validate_jsonl_bytes(data: bytes, **kw: Any) -> ValidationReport:
    """Validate a whole file held in memory. Keyword arguments go to ``JsonlValidator``."""
    validator = JsonlValidator(**kw)
    validator.feed(data)
    return validator.finish()


def validate_jsonl_file(fileobj: BinaryIO, *, chunk_size: int = 1 << 20, **kw: Any) -> ValidationReport:
    """Validate a binary file object by reading it in ``chunk_size`` pieces."""
    validator = JsonlValidator(**kw)
    while chunk := fileobj.read(chunk_size):
        validator.feed(chunk)
    return validator.finish()
