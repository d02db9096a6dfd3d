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


# The receiver URLs services/webhooks.check_url accepts, as the document's pattern: what urlsplit and the
# IDNA codec take of an ASCII host (labels of 1 to 63 characters; an IPv6 literal in brackets; a port up
# to 65535). Validation itself stays the looser pattern below plus check_url, whose refusals (400
# `invalid_url`) clients read; the public-address rule needs DNS, so only the description can say it.
# The rest of the URL is no whitespace in any regex dialect: an ECMA `\S` (a client's) takes U+0085, the
# validating pattern's does not.
_H16 = "[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join(
    [
        rf"(?:{_H16}:){{7}}{_H16}",
        rf"(?:{_H16}:){{1,7}}:",
        *(rf"(?:{_H16}:){{1,{7 - k}}}(?::{_H16}){{1,{k}}}" for k in range(1, 7)),
        rf":(?:(?::{_H16}){{1,7}}|:)",
    ]
)
_LABEL = r"[A-Za-z0-9_~%!$&'()*+,;=-]{1,63}"  # RFC 3986 reg-name characters, one DNS label long
_PORT = r"(?::0*(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})?)?"
RECEIVER_URL_PATTERN = (
    rf"^https?://(?:[A-Za-z0-9._~%!$&'()*+,;=:@-]*@)?(?:(?:{_LABEL}\.)*{_LABEL}\.?|\[(?:{_IPV6})\])"
    rf"{_PORT}(?:[/?#][^\s\x85]*)?$"
)


class WebhookCreate(BaseModel):
    url: str = Field(
        max_length=2048,
        pattern=r"^https?://[^\s/?#]+([/?#]\S*)?$",
        json_schema_extra={"pattern": RECEIVER_URL_PATTERN},
        description="The receiver: an http(s) URL (an internationalized host name in its ASCII `xn--`"
        " form) whose host resolves to a public address. One that resolves to a private, loopback or"
        " link-local address is a 400 `invalid_url`, at creation and again (as a failed delivery) at"
        " every delivery, after DNS, which no schema can say; a server with"
        " JUICE_WEBHOOK_ALLOW_PRIVATE_NETWORKS set lifts the rule for trusted networks.",
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
