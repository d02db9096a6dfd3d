"""The streaming decoder: bytes chunks -> physical lines -> one JSON object per non-blank line.

`JsonlDecoder.feed` takes chunks of any size, split anywhere (even inside a multi-byte character),
and calls ``on_object(line_number, obj)`` for every complete non-blank line; `finish` handles a last
line without a newline. Bytes are split into lines first and each line is decoded on its own, so
results, error texts included, never depend on how the input was chunked. Memory is O(longest line):
only the current unfinished line is buffered, and a line is refused with ``line_too_long`` as soon as
more than ``max_line_bytes`` of it (+ 1 for a CRLF's '\\r', + 3 for a BOM on line 1) has arrived, before
its newline does.

Lexical rules:

* UTF-8 only (``invalid_utf8``, with the offending byte's position). One UTF-8 BOM at the very start of
  the file is ignored; anywhere else it makes the line ``invalid_json``, with a hint.
* Lines end at ``\\n``; a ``\\r`` before it (CRLF) is dropped; a last line without a newline is fine.
  Blank (whitespace-only) lines are allowed anywhere and are not examples. Line numbers are 1-based
  physical lines, so they match ``sed -n Np`` on the file; a final newline does not start another line.
* Each non-blank line is one JSON value (``invalid_json``) and an object (``not_an_object``). ``NaN`` and
  ``Infinity`` are rejected (they are not JSON), and so are ``\\udXXX`` escapes that leave an unpaired
  UTF-16 surrogate (``invalid_utf8``): such text cannot be encoded as UTF-8 for the tokenizer.

The per-line cost is the ``json`` C scanner plus about a microsecond of checks; measurements are in
docs/benchmarks.md ("Upload validation throughput").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from api.validation.report import FileValidationError
from trainer.spec.rules import jtype

DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024

BOM = b"\xef\xbb\xbf"
# Unpaired surrogate escapes. Cheap screening first: any \uD800-\uDFFF escape at all; then are any left
# once proper high+low pairs (emoji written by json.dumps(ensure_ascii=True)) are removed, or is there an
# escaped backslash before a 'u' that could fool the screen? Only then is the parsed line re-encoded.
_SURROGATE_ANY = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_PAIR = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")


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


def _too_long(limit: int) -> str:
    # The same text whether the line was seen whole or cut off while streaming, so that the result never
    # depends on chunking (a streamed line's full length is never known).
    return f"the line is longer than the limit of {limit} bytes (max_line_bytes)"


class JsonlDecoder:
    """Incremental: feed() bytes chunks, then finish(). Raises `FileValidationError` at the first bad
    line; after that the decoder is in an undefined state (the validator never feeds it again)."""

    def __init__(
        self, on_object: Callable[[int, dict], None], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    ) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        self.max_line_bytes = max_line_bytes
        self.lines = 0  # physical lines seen so far
        self._on_object = on_object
        self._buf = bytearray()  # the current unfinished line

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        first_nl = chunk.find(b"\n")
        if first_nl < 0:
            self._buf += chunk
            self._check_pending()
            return
        if self._buf:
            self._buf += chunk[:first_nl]
            line = bytes(self._buf)
            self._buf.clear()
        else:
            line = chunk[:first_nl]
        self._line(line)
        last_nl = chunk.rfind(b"\n")
        if last_nl > first_nl:
            handle = self._line
            for line in chunk[first_nl + 1 : last_nl].split(b"\n"):
                handle(line)
        if last_nl + 1 < len(chunk):
            self._buf += chunk[last_nl + 1 :]
            self._check_pending()

    def finish(self) -> None:
        """The end of the input: decode a last line that has no newline."""
        if self._buf:
            line = bytes(self._buf)
            self._buf.clear()
            self._line(line)

    def _check_pending(self) -> None:
        # +1: the pending line may end in the '\r' of a CRLF, which does not count toward the limit;
        # nor does a BOM at the start of the file.
        buf = self._buf
        if len(buf) > self.max_line_bytes + 1 and not (
            self.lines == 0 and buf.startswith(BOM) and len(buf) <= self.max_line_bytes + 4
        ):
            n = self.lines + 1
            self._buf.clear()
            raise FileValidationError(n, "line_too_long", _too_long(self.max_line_bytes))

    def _line(self, raw: bytes) -> None:
        self.lines = n = self.lines + 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if n == 1 and raw.startswith(BOM):
            raw = raw[3:]
        if len(raw) > self.max_line_bytes:
            raise FileValidationError(n, "line_too_long", _too_long(self.max_line_bytes))
        if not raw.strip():
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data":
                what = f"it ends in the middle of a multi-byte character (byte {exc.start + 1})"
            else:
                what = f"invalid byte sequence {raw[exc.start : exc.end]!r} at byte {exc.start + 1}"
            raise FileValidationError(
                n, "invalid_utf8", f"the line is not valid UTF-8: {what}; files must be UTF-8 encoded"
            ) from None
        try:
            obj, end = _scan_once(text, 0)  # the C scanner, without JSONDecoder.decode's Python overhead
            if end != len(text):
                raise ValueError
        except (StopIteration, ValueError, RecursionError):
            obj = _decode_slow(text, n)  # leading/trailing whitespace, or an error to describe
        if type(obj) is not dict:
            raise FileValidationError(
                n, "not_an_object", f"each line must be a JSON object (one example), got {jtype(obj)}"
            )
        if b"\\u" in raw and _may_have_unpaired_surrogate(raw):
            try:
                json.dumps(obj, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise FileValidationError(
                    n,
                    "invalid_utf8",
                    "the line contains a \\u escape for an unpaired UTF-16 surrogate, "
                    "which is not valid Unicode text",
                ) from None
        self._on_object(n, obj)


def _decode_slow(text: str, n: int) -> Any:
    try:
        return _decode(text)
    except json.JSONDecodeError as exc:
        hint = (
            " (a UTF-8 byte order mark is only tolerated at the start of the file)"
            if text.startswith("\ufeff")
            else ""
        )
        raise FileValidationError(
            n, "invalid_json", f"the line is not valid JSON: {exc.msg} (column {exc.colno}){hint}"
        ) from None
    except ValueError as exc:  # NaN / Infinity
        raise FileValidationError(n, "invalid_json", f"the line is not valid JSON: {exc}") from None
    except RecursionError:
        raise FileValidationError(
            n, "invalid_json", "the line is not valid JSON: nested too deeply"
        ) from None
