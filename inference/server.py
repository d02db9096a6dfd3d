"""`juice inference`: the process that answers chat completions, so the API never loads torch and no
request ever runs inside a training worker.

It speaks OpenAI's `POST /v1/chat/completions` itself (plain and SSE streaming), so the API forwards a
request unchanged to it or, in production, to vLLM's OpenAI server instead (docs/decisions.md). The
API has already checked the caller and the model name; it says where the weights are in the
`X-Juice-Model-Source` header, `{"path": <local model folder, alias or hub id>}` or `{"storage_path":
<a checkpoint's model/ folder in the artifact store>}`, and authenticates with the inference token
(api.core.security.inference_token). The most recently used `inference_max_models` models stay loaded.

Concurrency: every forward pass runs on one decoding thread, one token of one reply at a time, so
replies in flight advance in turns (a long reply does not hold the others back until it ends) and the
event loop never waits on torch. Models load on a second thread, so a load never stalls decoding of
the models already loaded. At most `inference_max_pending` replies are in flight; more get 503 with
Retry-After. A client that goes away stops its reply at the next token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Header
from fastapi.responses import StreamingResponse

from api.core.config import Settings, get_settings
from api.core.security import inference_token
from api.errors import ApiError, InvalidRequest, ServiceUnavailable, Unauthorized, install_error_handlers
from api.services.models import resolve_model
from api.storage import ArtifactStore
from inference.decoding import ChatModel, Piece, Sampling
from inference.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    Usage,
)
from inference.streaming import SSE_HEADERS, ClosingStreamingResponse

log = logging.getLogger(__name__)
T = TypeVar("T")
BUSY_RETRY_AFTER_S = 2


class ModelNotLoadable(ApiError):
    """The name passed the API's checks but no weights load from it (a hub id not downloaded here)."""

    status_code = 404
    type = "invalid_request_error"


def _first_line(exc: BaseException) -> str:
    return next(iter(str(exc).splitlines()), type(exc).__name__)


class ModelCache:
    """Loaded models by source, least recently used first. Checkpoints are downloaded to disk for the
    load and the download is removed when the model leaves the cache."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.max_models = settings.inference_max_models
        self.store = ArtifactStore(settings.resolved_storage_url)
        self.download_root = settings.work_path / "inference"
        self.models: OrderedDict[str, tuple[ChatModel, Path | None]] = OrderedDict()
        self.lock = threading.Lock()  # guards `models` only, never held while loading

    @staticmethod
    def key(source: dict[str, str]) -> str:
        return json.dumps(source, sort_keys=True)

    def loaded(self, source: dict[str, str]) -> ChatModel | None:
        with self.lock:
            entry = self.models.get(self.key(source))
            if entry is not None:
                self.models.move_to_end(self.key(source))
            return entry[0] if entry else None

    def _download(self, storage_path: str) -> Path:
        folder = self.download_root / hashlib.sha256(storage_path.encode()).hexdigest()[:24]
        tmp = folder.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.store.get_dir(storage_path, tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        return folder

    def _open(self, source: dict[str, str]) -> tuple[ChatModel, Path | None]:
        download = self._download(source["storage_path"]) if "storage_path" in source else None
        try:
            path = str(download) if download else resolve_model(source["path"], self.settings)
            return ChatModel(path, local_files_only=True), download
        except BaseException:
            if download is not None:
                shutil.rmtree(download, ignore_errors=True)
            raise

    def load(self, source: dict[str, str]) -> ChatModel:
        """Load (on the loader thread). A path is resolved again here, as the worker does before training:
        only a model root's folder or a hub id already in the local cache ever loads; chat never downloads."""
        if (model := self.loaded(source)) is not None:  # loaded meanwhile by an earlier request
            return model
        started = time.monotonic()
        try:
            model, download = self._open(source)
        except InvalidRequest as exc:
            raise ModelNotLoadable(exc.message, code="model_not_found", param="model") from exc
        except OSError as exc:  # transformers' "not in the local cache", a missing file
            raise ModelNotLoadable(
                f"The model could not be loaded here: {_first_line(exc)}",
                code="model_not_found",
                param="model",
            ) from exc
        except RuntimeError as exc:  # out of memory, most often
            raise ServiceUnavailable(
                f"The model could not be loaded: {_first_line(exc)}",
                code="model_load_failed",
                retry_after_s=30,
            ) from exc
        with self.lock:
            self.models[self.key(source)] = (model, download)
            while len(self.models) > self.max_models:
                _, (_, folder) = self.models.popitem(last=False)
                if folder is not None:  # the weights are in memory; a stream still using them keeps them
                    shutil.rmtree(folder, ignore_errors=True)
        log.info("loaded %s in %.1f s", self.key(source), time.monotonic() - started)
        return model


def _source(x_juice_model_source: Annotated[str, Header()]) -> dict[str, str]:
    try:
        source = json.loads(x_juice_model_source)
    except ValueError:
        source = None
    if not (isinstance(source, dict) and len(source) == 1 and {"path", "storage_path"} & source.keys()):
        raise InvalidRequest(
            "X-Juice-Model-Source must be {'path': ...} or {'storage_path': ...}.", code="bad_source"
        )
    return {k: str(v) for k, v in source.items()}


@dataclass(frozen=True)
class Reply:
    """One request's replies: what every chunk and the final object repeat."""

    id: str
    created: int
    model: str


class Engine:
    """The decoding thread, the loader thread and the count of replies in flight."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache = ModelCache(settings)
        self.decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="juice-decode")
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="juice-load")
        self.in_flight = 0

    async def _on(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def model(self, source: dict[str, str]) -> ChatModel:
        loaded = self.cache.loaded(source)
        return loaded if loaded is not None else await self._on(self.loader, self.cache.load, source)

    def admit(self) -> None:
        if self.in_flight >= self.settings.inference_max_pending:
            raise ServiceUnavailable(
                f"The inference server has {self.in_flight} replies in flight; retry shortly.",
                code="inference_busy",
                retry_after_s=BUSY_RETRY_AFTER_S,
            )
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    async def pieces(self, model: ChatModel, prompt: list[int], sampling: Sampling) -> AsyncIterator[Piece]:
        """The reply's pieces, each decoded by one turn on the decoding thread."""
        steps: Generator[Piece] = model.complete(prompt, sampling)
        done = Piece("")  # a sentinel: never one of the reply's pieces
        try:
            while (piece := await self._on(self.decoder, next, steps, done)) is not done:
                yield piece
        finally:
            await self._on(self.decoder, steps.close)  # after any step of it still running


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    token = inference_token(settings).encode()
    engine = Engine(settings)
    app = FastAPI(title="Juice inference", docs_url=None, redoc_url=None)
    install_error_handlers(app)

    def authorized(authorization: Annotated[str, Header()] = "") -> None:
        given = authorization.removeprefix("Bearer ").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, token):
            raise Unauthorized("Bad inference token.", code="invalid_api_key")

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        return {"status": "ok", "loaded": len(engine.cache.models), "in_flight": engine.in_flight}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)], response_model=None)
    async def chat_completions(
        req: ChatCompletionRequest, source: Annotated[dict[str, str], Depends(_source)]
    ) -> ChatCompletion | StreamingResponse:
        engine.admit()
        try:
            model = await engine.model(source)
            prompt = _prompt(model, req)
        except BaseException:
            engine.release()
            raise
        samplings = _samplings(req, settings)
        reply = Reply(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), req.model)
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            chunks = _stream(engine, model, prompt, samplings, reply, usage)
            return ClosingStreamingResponse(
                chunks,
                on_close=engine.release,
                media_type="text/event-stream",
                headers=SSE_HEADERS,
            )
        try:
            return await _complete(engine, model, prompt, samplings, reply)
        finally:
            engine.release()

    return app


def _prompt(model: ChatModel, req: ChatCompletionRequest) -> list[int]:
    try:
        prompt = model.prompt_ids([m.plain() for m in req.messages])
    except ValueError as exc:  # no chat template, or the template refuses these messages
        raise InvalidRequest(
            f"Model {req.model!r}: {exc}", code="invalid_messages", param="messages"
        ) from exc
    if len(prompt) >= model.context_length:
        raise InvalidRequest(
            f"The messages are {len(prompt)} tokens; {req.model!r} takes at most {model.context_length}.",
            code="context_length_exceeded",
            param="messages",
        )
    return prompt


def _samplings(req: ChatCompletionRequest, settings: Settings) -> list[Sampling]:
    return [
        Sampling(
            max_tokens=req.token_budget(settings.inference_default_max_tokens),
            temperature=req.temperature,
            top_p=req.top_p,
            stop=req.stop_list,
            seed=None if req.seed is None else req.seed + i,  # n replies, each reproducible, not equal
        )
        for i in range(req.n)
    ]


def _usage(prompt: list[int], completion_tokens: int) -> Usage:
    # the prompt once, however many replies (n) it got, as OpenAI counts it
    return Usage(
        prompt_tokens=len(prompt),
        completion_tokens=completion_tokens,
        total_tokens=len(prompt) + completion_tokens,
    )


async def _complete(
    engine: Engine, model: ChatModel, prompt: list[int], samplings: list[Sampling], reply: Reply
) -> ChatCompletion:
    choices, completion_tokens = [], 0
    for i, sampling in enumerate(samplings):
        text, last = "", Piece("")
        async for last in engine.pieces(model, prompt, sampling):
            text += last.text
        completion_tokens += last.completion_tokens
        choices.append(
            Choice(index=i, message=AssistantMessage(content=text), finish_reason=last.finish_reason)
        )
    return ChatCompletion(
        id=reply.id,
        created=reply.created,
        model=reply.model,
        choices=choices,
        usage=_usage(prompt, completion_tokens),
    )


def _sse(chunk: ChatCompletionChunk | dict[str, object]) -> bytes:
    body = chunk if isinstance(chunk, dict) else chunk.model_dump(mode="json", exclude_none=False)
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


async def _stream(
    engine: Engine,
    model: ChatModel,
    prompt: list[int],
    samplings: list[Sampling],
    reply: Reply,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """OpenAI's chunk sequence: per choice a role chunk, content chunks, a finish chunk; then, if asked,
    one usage chunk with no choices; then `data: [DONE]`. An error part-way is one `error` event."""

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> bytes:
        return _sse(
            ChatCompletionChunk(
                id=reply.id, created=reply.created, model=reply.model, choices=choices, usage=usage
            )
        )

    completion_tokens = 0
    try:
        for i, sampling in enumerate(samplings):
            yield chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content=""))])
            async for piece in engine.pieces(model, prompt, sampling):
                if piece.text:
                    yield chunk([ChunkChoice(index=i, delta=Delta(content=piece.text))])
                if piece.finish_reason:
                    completion_tokens += piece.completion_tokens
                    yield chunk([ChunkChoice(index=i, delta=Delta(), finish_reason=piece.finish_reason)])
        if include_usage:
            yield chunk([], _usage(prompt, completion_tokens))
        yield b"data: [DONE]\n\n"
    except (ValueError, RuntimeError) as exc:  # a failure mid-reply (out of memory): the stream says so
        log.exception("stream %s failed", reply.id)
        error = {"message": _first_line(exc), "type": "api_error", "param": None, "code": "inference_failed"}
        yield _sse({"error": error})
