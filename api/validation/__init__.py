"""Streaming validation and format detection for JSONL fine-tuning files.

Pure: the standard library and `trainer.spec` only (no FastAPI, SQLAlchemy or torch), so the
API, the worker and the CLI can all import it.

Usage::

    v = JsonlValidator()
    for chunk in upload:            # bytes chunks of any size, split anywhere (even mid-character)
        v.feed(chunk)               # raises FileValidationError at the first bad line
    report = v.finish()             # ValidationReport(format, examples, lines, warnings)

    validate_jsonl_bytes(data)      # whole file in memory
    validate_jsonl_file(fileobj)    # binary file object, read in 1 MiB chunks

Accepted formats (every line of a file must use the same one, the format of its first example):

* ``chat``: ``{"messages": [...], "tools"?: [...], "parallel_tool_calls"?: bool, "functions"?: [...]}``
  (OpenAI ``FineTuneChatRequestInput``; also what RFT and IRFT train on).
* ``prompt_completion``: ``{"prompt": str, "completion": str}``.
* ``preference`` (DPO), in either of two shapes, which may be mixed within a file:
  TRL's ``{"prompt": str|messages, "chosen": str|messages, "rejected": str|messages}`` or OpenAI's
  ``{"input": {"messages": [...], "tools"?, "parallel_tool_calls"?},
  "preferred_output": [<1 assistant msg>], "non_preferred_output": [<1 assistant msg>]}``.

Which keys make a row which format (`trainer.spec.formats`) and what a good example of each is (the
per-example rules, `trainer.spec.rules`) are defined once, in the trainer's torch-free spec, and the
trainer runs the same rules on every row it reads. The package, by job:

    decoder.py    bytes -> lines -> JSON objects: UTF-8, BOM, CRLF, blank lines, line length, surrogates
    validator.py  JsonlValidator: the decoder, the shared rules and the file-level rules (one format,
                  empty, minimum)
    codes.py      every error code with its meaning (ERRORS, ERROR_CODES)
    report.py     ValidationReport, FileValidationError, MAX_WARNINGS
"""

from __future__ import annotations

from api.validation.codes import ERROR_CODES, ERRORS
from api.validation.report import MAX_WARNINGS, FileValidationError, ValidationReport
from api.validation.validator import JsonlValidator, validate_jsonl_bytes, validate_jsonl_file
from trainer.spec.formats import Format

#: The format of a validated file (the format rule's enum, under the name the API has always used).
FileFormat = Format

__all__ = [
    "ERRORS",
    "ERROR_CODES",
    "MAX_WARNINGS",
    "FileFormat",
    "FileValidationError",
    "JsonlValidator",
    "ValidationReport",
    "validate_jsonl_bytes",
    "validate_jsonl_file",
]
