"""Webhook endpoints of the caller's tenant (a Juice extension: OpenAI configures webhooks in its
dashboard; the events and their signature follow OpenAI's and the Standard Webhooks spec)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Security
from pydantic import BaseModel, Field

from api.deps import CallerDep, SessionDep
from api.schemas.errors import AUTHENTICATED, bearer_auth, error_responses
from api.services import webhooks as svc

router = APIRouter(prefix="/webhooks", tags=["webhooks"], dependencies=[Security(bearer_auth)])

EventType = Literal[
    "fine_tuning.job.succeeded",
    "fine_tuning.job.failed",
    "fine_tuning.job.cancelled",
    "fine_tuning.job.paused",
]


class WebhookCreate(BaseModel):
    url: str = Field(
        max_length=2048,
        pattern=r"^https?://[^\s/?#]+([/?#]\S*)?$",
        description="The receiver: an http(s) URL on a public address.",
    )
    events: list[EventType] | None = Field(None, description="Event types to send; all of them by default.")


class WebhookEndpointObject(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    events: list[str]
    created_at: int
    secret: str | None = Field(
        None, description="whsec_...: the signing secret, in the creation response only; keep it."
    )


class WebhookList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookEndpointObject]


class WebhookDeleted(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool


def _public(obj: dict[str, Any]) -> WebhookEndpointObject:
    return WebhookEndpointObject(**obj)


@router.post("", response_model=WebhookEndpointObject, responses=error_responses(*AUTHENTICATED, 400))
def create_webhook(session: SessionDep, caller: CallerDep, body: WebhookCreate) -> WebhookEndpointObject:
    """Add a receiver of the tenant's job events; the response carries its signing secret, once."""
    endpoint = svc.create_endpoint(session, caller.tenant_id, body.url, list(body.events or []) or None)
    return _public(svc.endpoint_object(endpoint, with_secret=True))


@router.get("", response_model=WebhookList, responses=error_responses(*AUTHENTICATED))
def list_webhooks(session: SessionDep, caller: CallerDep) -> WebhookList:
    """The tenant's receivers (without their secrets)."""
    return WebhookList(
        data=[_public(svc.endpoint_object(e)) for e in svc.list_endpoints(session, caller.tenant_id)]
    )


@router.delete("/{webhook_id}", response_model=WebhookDeleted, responses=error_responses(*AUTHENTICATED, 404))
def delete_webhook(session: SessionDep, caller: CallerDep, webhook_id: str) -> WebhookDeleted:
    """Remove a receiver; its pending deliveries go with it."""
    svc.delete_endpoint(session, caller.tenant_id, webhook_id)
    return WebhookDeleted(id=webhook_id, deleted=True)
