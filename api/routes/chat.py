"""OpenAI's chat completions for base and fine-tuned models; the inference server does the decoding."""

from __future__ import annotations

from fastapi import APIRouter, Request, Security
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.core.config import get_settings
from api.db.session import session_scope
from api.deps import CallerDep
from api.schemas.errors import AUTHENTICATED, bearer_auth, error_responses
from api.services import chat as svc
from api.storage import get_store
from inference.schemas import ChatCompletion, ChatCompletionRequest
from inference.streaming import SSE_HEADERS, ClosingStreamingResponse

router = APIRouter(prefix="/chat", tags=["chat"], dependencies=[Security(bearer_auth)])


def _source(tenant_id: int, tenant_name: str, model: str) -> dict[str, str]:
    with session_scope() as session:
        return svc.model_source(session, get_settings(), get_store(), tenant_id, tenant_name, model)


def _client(request: Request) -> svc.InferenceClient:
    state = request.app.state
    if getattr(state, "inference", None) is None:
        state.inference = svc.InferenceClient(get_settings())
    return state.inference


@router.post(
    "/completions",
    response_model=ChatCompletion,
    responses={
        **error_responses(*AUTHENTICATED, 400, 404),
        200: {"content": {"text/event-stream": {}}, "description": "A chat.completion, or its chunks as SSE"},
    },
)
async def create_chat_completion(
    request: Request, caller: CallerDep, body: ChatCompletionRequest
) -> Response:
    """Create a model response for the conversation; `stream: true` sends chat.completion.chunk events."""
    svc.check_budget(body, get_settings())
    # The lookup touches the database and the store: off the event loop, which streams serve.
    source = await run_in_threadpool(_source, caller.tenant_id, caller.tenant_name, body.model)
    upstream = await _client(request).open(body.model_dump(mode="json", exclude_unset=True), source)
    if upstream.status_code in (401, 403):  # the API's own token, not the caller's key, was refused
        await upstream.aclose()
        raise svc.InferenceUnavailable(
            "The inference server refused the API's token: JUICE_INFERENCE_API_KEY differs between them."
        )
    kind = upstream.headers.get("content-type", "application/json")
    if body.stream and upstream.status_code == 200:
        return ClosingStreamingResponse(
            svc.InferenceClient.relay(upstream), media_type=kind, headers=SSE_HEADERS
        )
    content = await upstream.aread()
    await upstream.aclose()
    return Response(content, status_code=upstream.status_code, media_type=kind)
