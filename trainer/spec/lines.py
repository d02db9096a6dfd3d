"""One JSONL line -> one JSON object, by the rules upload validation and the trainer share.

`decode_line(raw, line_number)` takes a physical line without its `\\n` and returns the object, None for
a blank line, or raises `LineError(code, reason)`:

* a `\\r` before the newline (CRLF) is dropped; one UTF-8 BOM is ignored at the start of line 1 only;
* UTF-8 only (``invalid_utf8``, with the offending byte's position);
* blank (ASCII whitespace only) lines are not examples;
* each other line is one JSON value (``invalid_json``) and an object (``not_an_object``); ``NaN`` and
  ``Infinity`` are refused (they are not JSON), and so are ``\\udXXX`` escapes that leave an unpaired
  UTF-16 surrogate (``invalid_utf8``): such text cannot be encoded as UTF-8 for the tokenizer.

Splitting bytes into lines, line-length limits and line numbering belong to the callers (the upload
validator streams chunks; the trainer reads a file). The per-line cost is the ``json`` C scanner plus
about a microsecond of checks (docs/benchmarks.md, "Upload validation throughput").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from trainer.spec.rules import jtype

BOM = b"\xef\xbb\xbf"
# Unpaired surrogate escapes. Cheap screening first: any \uD800-\uDFFF escape at all; then are any left
# once proper high+low pairs (emoji written by json.dumps(ensure_ascii=True)) are removed, or is there an
# escaped backslash before a 'u' that could fool the screen? Only then is the parsed line re-encoded.
_SURROGATE_ANY = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_PAIR = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")


class LineError(ValueError):
    """A line that is not one JSON object; ``code`` is the upload validator's error code."""

    def __init__(self, code: str, reason: str) -> None:
        self.code, self.reason = code, reason
        super().__init__(reason)

    def __reduce__(self):  # picklable despite the custom __init__
        return (type(self), (self.code, self.reason))


def _may_have_unpaired_surrogate(raw: bytes) -> bool:
    if _SURROGATE_ANY.search(raw) is None:
        return False
    return b"\\\\u" in raw or _SURROGATE_ANY.search(_SURROGATE_PAIR.sub(b"", raw)) is not None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_decode = _decoder.decode
# The C scanner behind decode(), set on every instance but missing from typeshed's JSONDecoder.
_scan_once: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]


def strip_line(raw: bytes, line_number: int) -> bytes:
    """The line's content: without a CRLF's `\\r`, and without a BOM at the start of line 1."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if line_number == 1 and raw.startswith(BOM):
        raw = raw[3:]
    return raw


def decode_line(raw: bytes, line_number: int) -> dict[str, Any] | None:
    """The object on a physical line (without its `\\n`), None when the line is blank; else LineError."""
    return decode_content(strip_line(raw, line_number))


def decode_content(raw: bytes) -> dict[str, Any] | None:
    """`decode_line` of a line already through `strip_line` (the upload decoder measures it between)."""
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":
            what = f"it ends in the middle of a multi-byte character (byte {exc.start + 1})"
        else:
            what = f"invalid byte sequence {raw[exc.start : exc.end]!r} at byte {exc.start + 1}"
        raise LineError(
            "invalid_utf8", f"the line is not valid UTF-8: {what}; files must be UTF-8 encoded"
        ) from None
    try:
        obj, end = _scan_once(text, 0)  # the C scanner, without JSONDecoder.decode's Python overhead
        if end != len(text):
            raise ValueError
    except (StopIteration, ValueError, RecursionError):
        obj = _decode_slow(text)  # leading/trailing whitespace, or an error to describe
    if type(obj) is not dict:
        raise LineError("not_an_object", f"each line must be a JSON object (one example), got {jtype(obj)}")
    if b"\\u" in raw and _may_have_unpaired_surrogate(raw):
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise LineError(
                "invalid_utf8",
                "the line contains a \\u escape for an unpaired UTF-16 surrogate, which is not valid Unicode text",
            ) from None
    return obj


def _decode_slow(text: str) -> Any:
    try:
        return _decode(text)
    except json.JSONDecodeError as exc:
        hint = (
            " (a UTF-8 byte order mark is only tolerated at the start of the file)"
            if text.startswith("\ufeff")
            else ""
        )
        raise LineError(
            "invalid_json", f"the line is not valid JSON: {exc.msg} (column {exc.colno}){hint}"
        ) from None
    except ValueError as exc:  # NaN / Infinity
        raise LineError("invalid_json", f"the line is not valid JSON: {exc}") from None
    except RecursionError:
        raise LineError("invalid_json", "the line is not valid JSON: nested too deeply") from None
