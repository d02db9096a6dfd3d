"""The streaming decoder: bytes chunks -> physical lines -> one JSON object per non-blank line.

`JsonlDecoder.feed` takes chunks of any size, split anywhere (even inside a multi-byte character),
and calls ``on_object(line_number, obj)`` for every complete non-blank line; `finish` handles a last
line without a newline. Bytes are split into lines first and each line is decoded on its own, so
results, error texts included, never depend on how the input was chunked. Memory is O(longest line):
only the current unfinished line is buffered, and a line is refused with ``line_too_long`` as soon as
more than ``max_line_bytes`` of it (+ 1 for a CRLF's '\\r', + 3 for a BOM on line 1) has arrived, before
its newline does.

What a line must be (UTF-8, one JSON object, no NaN, no unpaired surrogate; CRLF and a leading BOM
are fine) is `trainer.spec.lines.decode_line`, the rule the trainer reads files by as well. Line
numbers are 1-based physical lines, so they match ``sed -n Np`` on the file.
"""

from __future__ import annotations

from collections.abc import Callable

from api.validation.report import FileValidationError
from trainer.spec.lines import BOM, LineError, decode_content, strip_line

DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024


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
        raw = strip_line(raw, n)
        if len(raw) > self.max_line_bytes:  # a CRLF's \r and a leading BOM do not count
            raise FileValidationError(n, "line_too_long", _too_long(self.max_line_bytes))
        try:
            obj = decode_content(raw)
        except LineError as exc:
            raise FileValidationError(n, exc.code, exc.reason) from None
        if obj is not None:
            self._on_object(n, obj)
