"""Chat completions: which weights a model name means for a tenant, and the hand-off to the inference
server (Juice's `juice inference`, or an OpenAI-compatible engine such as vLLM's server).

Names a caller may use, as on OpenAI:
  - a base model of `GET /v1/models` (a folder under a model root) or, where allowed, a hub id;
  - its own fine-tuned model, `ft:BASE:ORG:SUFFIX:ID`: the checkpoint that is that model
    (`models.fine_tuned_checkpoint`: the one select_checkpoint chose, else the newest stored);
  - one checkpoint of its own job, `ft:...:ckpt-step-N` (the checkpoints list's
    `fine_tuned_model_checkpoint`), running jobs included, so a checkpoint can be tried mid-training.
Anything else, another tenant's models included, is 404 `model_not_found`.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.core.config import Settings
from api.core.security import inference_token
from api.db.tables import Checkpoint, Job
from api.errors import InvalidRequest, NotFound, ServiceUnavailable
from api.services.jobs import fine_tuned_model_base
from api.services.models import FINE_TUNED_PREFIX, fine_tuned_checkpoint, fine_tuned_source, resolve_model
from api.storage import ArtifactStore
from inference.schemas import ChatCompletionRequest

CHECKPOINT_NAME = re.compile(r"(?P<model>ft:.+):ckpt-step-(?P<step>[0-9]{1,9})")
SOURCE_HEADER = "X-Juice-Model-Source"
UNAVAILABLE_RETRY_AFTER_S = 5


class InferenceUnavailable(ServiceUnavailable):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="inference_unavailable", retry_after_s=UNAVAILABLE_RETRY_AFTER_S)


def _checkpoint_source(
    session: Session, store: ArtifactStore, tenant_id: int, tenant_name: str, name: str
) -> str | None:
    """The store key of the model folder of checkpoint `ft:...:ckpt-step-N` of one of the tenant's jobs
    (not of a deleted model's job: deleting the model retires its checkpoints too); None otherwise."""
    match = CHECKPOINT_NAME.fullmatch(name)
    if match is None:
        return None
    short_id = match["model"].rsplit(":", 1)[-1]
    jobs = session.scalars(
        select(Job).where(
            Job.tenant_id == tenant_id,
            Job.id.startswith(f"ftjob-{short_id}", autoescape=True),
            Job.model_deleted_at.is_(None),
        )
    )
    for job in jobs:
        if fine_tuned_model_base(job, tenant_name) != match["model"]:
            continue
        ckpt = session.scalars(
            select(Checkpoint).where(
                Checkpoint.job_id == job.id, Checkpoint.kind == "model", Checkpoint.step == int(match["step"])
            )
        ).first()
        if ckpt is not None and store.exists(f"{ckpt.storage_path}/manifest.json"):
            return f"{ckpt.storage_path}/model"
    return None


def model_source(
    session: Session, settings: Settings, store: ArtifactStore, tenant_id: int, tenant_name: str, name: str
) -> dict[str, str]:
    """Where the weights of `name` are, as the inference server's source header says it."""
    if name.startswith(FINE_TUNED_PREFIX):
        if key := _checkpoint_source(session, store, tenant_id, tenant_name, name):
            return {"storage_path": key}
        try:
            job = fine_tuned_source(session, tenant_id, name)
        except InvalidRequest:
            raise NotFound("model", name, param="model") from None
        ckpt = fine_tuned_checkpoint(session, store, job)  # NotFound when its checkpoint is gone
        return {"storage_path": f"{ckpt.storage_path}/model"}
    try:
        return {"path": resolve_model(name, settings)}
    except InvalidRequest:
        raise NotFound("model", name, param="model") from None


def check_budget(body: ChatCompletionRequest, settings: Settings) -> None:
    """A reply's token budget is the operator's to cap (a CPU or a shared GPU serves one reply at a time)."""
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    asked = body.max_completion_tokens or body.max_tokens
    if asked is not None and asked > settings.inference_max_tokens:
        raise InvalidRequest(
            f"{param}: {asked} is more than this server allows ({settings.inference_max_tokens}).",
            code="invalid_value",
            param=param,
        )


class InferenceClient:
    """Forwards a validated request body to the inference server; one connection pool per API process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http = httpx.AsyncClient(
            base_url=settings.resolved_inference_url,
            timeout=httpx.Timeout(settings.inference_timeout_s, connect=5.0),
        )

    def _headers(self, source: dict[str, str]) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {inference_token(self.settings)}"}
        if self.settings.inference_backend == "juice":
            headers[SOURCE_HEADER] = json.dumps(source)
        return headers

    async def open(self, body: dict[str, object], source: dict[str, str]) -> httpx.Response:
        """Send the request; the response's body is still unread (stream it or `aread` it)."""
        request = self.http.build_request(
            "POST", "/v1/chat/completions", json=body, headers=self._headers(source)
        )
        try:
            return await self.http.send(request, stream=True)
        except httpx.TimeoutException as exc:  # up, but busy or loading a model for longer than we wait
            raise InferenceUnavailable(
                f"The inference server did not answer within {self.settings.inference_timeout_s:.0f} s "
                f"({type(exc).__name__}); retry shortly."
            ) from exc
        except httpx.TransportError as exc:
            raise InferenceUnavailable(
                f"The inference server at {self.settings.resolved_inference_url} did not answer ({exc!r}); "
                "start it with `juice inference` (juice up starts one) or set JUICE_INFERENCE_URL."
            ) from exc

    @staticmethod
    async def relay(response: httpx.Response) -> AsyncIterator[bytes]:
        """The server's bytes as they come; a connection lost part-way ends the stream with an error event."""
        try:
            async for part in response.aiter_raw():
                yield part
        except httpx.TransportError:
            yield (  # after a blank line: the lost connection may have cut an event in half
                b'\n\ndata: {"error":{"message":"the inference server went away mid-reply","type":"api_error",'
                b'"param":null,"code":"inference_unavailable"}}\n\n'
            )
        finally:
            await response.aclose()
