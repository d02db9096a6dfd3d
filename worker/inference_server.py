"""`juice inference`: the process that answers chat completions, so the API never loads torch and no
request ever runs inside a training worker.

It speaks OpenAI's `POST /v1/chat/completions` itself (plain and SSE streaming), so the API forwards a
request unchanged to it or, in production, to vLLM's OpenAI server instead (docs/decisions.md). The
API has already checked the caller and the model name; it says where the weights are in the
`X-Juice-Model-Source` header, `{"path": <local model folder or hub id>}` or `{"storage_path":
<a checkpoint's model/ folder in the artifact store>}`, and authenticates with the inference token
(api.core.security.inference_token). The most recently used `inference_max_models` models stay loaded.

One reply is decoded at a time (one accelerator, and a CPU's cores are already all in use by one);
the others wait their turn on a lock, streams included.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, FastAPI, Header
from fastapi.responses import StreamingResponse

from api.core.config import Settings, get_settings
from api.core.security import inference_token
from api.errors import ApiError, InvalidRequest, Unauthorized, install_error_handlers
from api.schemas.chat import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    Usage,
)
from api.storage import ArtifactStore
from trainer.chat import ChatModel, FinishReason, Sampling

log = logging.getLogger(__name__)


class ModelNotLoadable(ApiError):
    """The name passed the API's checks but no weights load from it (a hub id not in the cache, offline)."""

    status_code = 404
    type = "invalid_request_error"


class ModelCache:
    """Loaded models by source, least recently used first; checkpoints are downloaded once, to disk."""

    def __init__(self, settings: Settings) -> None:
        self.max_models = settings.inference_max_models
        self.store = ArtifactStore(settings.resolved_storage_url)
        self.download_root = settings.work_path / "inference"
        self.models: OrderedDict[str, ChatModel] = OrderedDict()
        self.lock = threading.Lock()

    def _local(self, source: dict[str, str]) -> str:
        if "path" in source:
            return source["path"]
        key = source["storage_path"]
        folder = self.download_root / hashlib.sha256(key.encode()).hexdigest()[:24]
        if not (folder / "config.json").is_file():
            tmp = folder.with_suffix(".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            self.store.get_dir(key, tmp)
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        return str(folder)

    def get(self, source: dict[str, str]) -> ChatModel:
        key = json.dumps(source, sort_keys=True)
        with self.lock:
            if key in self.models:
                self.models.move_to_end(key)
                return self.models[key]
            started = time.monotonic()
            try:
                model = ChatModel(self._local(source))
            except OSError as exc:  # transformers' "not found / cannot reach the hub", a missing file
                raise ModelNotLoadable(
                    f"The model could not be loaded: {str(exc).splitlines()[0]}",
                    code="model_not_found",
                    param="model",
                ) from exc
            self.models[key] = model
            while len(self.models) > self.max_models:
                self.models.popitem(last=False)
            log.info("loaded %s in %.1f s", key, time.monotonic() - started)
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


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    token = inference_token(settings)
    cache = ModelCache(settings)
    decoding = threading.Lock()
    app = FastAPI(title="Juice inference", docs_url=None, redoc_url=None)
    install_error_handlers(app)

    def authorized(authorization: Annotated[str, Header()] = "") -> None:
        if not hmac.compare_digest(authorization.removeprefix("Bearer "), token):
            raise Unauthorized("Bad inference token.", code="invalid_api_key")

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        return {"status": "ok", "loaded": len(cache.models)}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)], response_model=None)
    def chat_completions(
        req: ChatCompletionRequest, source: Annotated[dict[str, str], Depends(_source)]
    ) -> ChatCompletion | StreamingResponse:
        model = cache.get(source)
        try:
            prompt = model.prompt_ids([m.plain() for m in req.messages])
        except ValueError as exc:
            raise InvalidRequest(
                f"Model {req.model!r}: {exc}.", code="unsupported_model", param="model"
            ) from exc
        budget = req.token_budget(settings.inference_default_max_tokens)
        if len(prompt) >= model.context_length:
            raise InvalidRequest(
                f"The messages are {len(prompt)} tokens; {req.model!r} takes at most {model.context_length}.",
                code="context_length_exceeded",
                param="messages",
            )
        samplings = [
            Sampling(
                max_tokens=budget,
                temperature=req.temperature,
                top_p=req.top_p,
                stop=req.stop_list,
                seed=None if req.seed is None else req.seed + i,  # n replies, each reproducible, not equal
            )
            for i in range(req.n)
        ]
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            chunks = _stream(model, prompt, samplings, decoding, req.model, reply_id, created, usage)
            return StreamingResponse(chunks, media_type="text/event-stream")
        choices, completion_tokens = [], 0
        with decoding:
            for i, sampling in enumerate(samplings):
                pieces = list(model.complete(prompt, sampling))
                completion_tokens += pieces[-1].completion_tokens
                text = "".join(p.text for p in pieces)
                choices.append(
                    Choice(
                        index=i,
                        message=AssistantMessage(content=text),
                        finish_reason=pieces[-1].finish_reason or "stop",
                    )
                )
        return ChatCompletion(
            id=reply_id,
            created=created,
            model=req.model,
            choices=choices,
            usage=Usage(
                prompt_tokens=len(prompt) * req.n,
                completion_tokens=completion_tokens,
                total_tokens=len(prompt) * req.n + completion_tokens,
            ),
        )

    return app


def _sse(chunk: ChatCompletionChunk | dict[str, object]) -> bytes:
    body = chunk if isinstance(chunk, dict) else chunk.model_dump(mode="json", exclude_none=False)
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


def _stream(
    model: ChatModel,
    prompt: list[int],
    samplings: list[Sampling],
    decoding: threading.Lock,
    name: str,
    reply_id: str,
    created: int,
    include_usage: bool,
) -> Iterator[bytes]:
    """OpenAI's chunk sequence: per choice a role chunk, content chunks, a finish chunk; then, if asked,
    one usage chunk with no choices; then `data: [DONE]`. An error part-way is one `error` event."""

    def chunk(index: int, delta: Delta, finish: FinishReason | None = None) -> bytes:
        choice = ChunkChoice(index=index, delta=delta, finish_reason=finish)
        return _sse(ChatCompletionChunk(id=reply_id, created=created, model=name, choices=[choice]))

    completion_tokens = 0
    with decoding:  # released when the client goes away: Starlette closes this generator
        try:
            for i, sampling in enumerate(samplings):
                yield chunk(i, Delta(role="assistant", content=""))
                for piece in model.complete(prompt, sampling):
                    if piece.text:
                        yield chunk(i, Delta(content=piece.text))
                    if piece.finish_reason:
                        completion_tokens += piece.completion_tokens
                        yield chunk(i, Delta(), piece.finish_reason)
        except (ApiError, ValueError, RuntimeError) as exc:
            log.exception("stream %s failed", reply_id)
            yield _sse(
                {
                    "error": {
                        "message": str(exc),
                        "type": "api_error",
                        "param": None,
                        "code": "inference_failed",
                    }
                }
            )
            return
    if include_usage:
        total_prompt = len(prompt) * len(samplings)
        usage = Usage(
            prompt_tokens=total_prompt,
            completion_tokens=completion_tokens,
            total_tokens=total_prompt + completion_tokens,
        )
        yield _sse(ChatCompletionChunk(id=reply_id, created=created, model=name, choices=[], usage=usage))
    yield b"data: [DONE]\n\n"
