"""A streaming response that always closes its source: for chat completions' SSE streams, the inference
server's (inference/server.py) and the API's relay of them (api/routes/chat.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

# Proxies must pass SSE chunks on as they come, not buffer the reply.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that closes its body iterator however the response ends (a client that went
    away included), at once rather than whenever the garbage collector finds it, then calls `on_close`."""

    def __init__(
        self, content: AsyncIterator[bytes], on_close: Callable[[], None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                close = getattr(self.body_iterator, "aclose", None)
                if close is not None:
                    await close()
            finally:
                if self.on_close is not None:
                    self.on_close()
