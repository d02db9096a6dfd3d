"""Webhooks: a tenant's endpoints are told when one of its jobs succeeds, fails, is cancelled or is
paused, signed as the Standard Webhooks spec says (standardwebhooks.com), OpenAI's webhook body.

- An endpoint (`POST /v1/webhooks`) has a URL, the event types it wants, and a secret `whsec_<base64>`
  shown once at creation.
- `notify` writes one delivery row per subscribed endpoint in the same transaction as the status
  change (an outbox: a change is never committed without its notifications, nor sent without one).
- `deliver_due`, run by the dispatcher thread of `juice worker --sweeper` (worker/sweeper.py), POSTs
  each due delivery with `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 of
  HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`; a 2xx answer delivers it, anything else retries
  after RETRY_DELAYS_S, and every outcome is a job event. The webhook-id is the delivery's id, the
  same on every retry, so a receiver can drop duplicates.
- Receivers on private, loopback or link-local addresses are refused (at creation and again at
  every delivery, after DNS) unless `JUICE_WEBHOOK_ALLOW_PRIVATE_NETWORKS` is set: a tenant must not
  make the server call its own internal services.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.core.config import Settings, get_settings
from api.db.base import utcnow
from api.db.tables import Job, JobEvent, WebhookDelivery, WebhookEndpoint
from api.errors import InvalidRequest, NotFound
from api.schemas.common import unix

# What a job notifies, by the status it moved to (OpenAI's three, and Juice's pause).
EVENT_OF_STATUS = {
    "succeeded": "fine_tuning.job.succeeded",
    "failed": "fine_tuning.job.failed",
    "cancelled": "fine_tuning.job.cancelled",
    "paused": "fine_tuning.job.paused",
}
EVENT_TYPES = tuple(EVENT_OF_STATUS.values())
# Seconds before retry n (after attempt n failed); after the last, the delivery is given up.
RETRY_DELAYS_S = (5, 30, 120, 600, 3600, 6 * 3600)
MAX_ATTEMPTS = len(RETRY_DELAYS_S) + 1
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header value of one message (Standard Webhooks, v1 = HMAC-SHA256)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _private_address(host: str) -> str | None:
    """The first address `host` resolves to that is not public, or None."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):  # no such name, or none DNS could carry (a 64+ char label)
        return None  # the delivery fails and retries, which is the user's to fix
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            return str(address)
    return None


def check_url(url: str, settings: Settings, param: str = "url") -> None:
    try:
        parts = urlsplit(url)
        hostname, _ = parts.hostname, parts.port  # parsed lazily: "https://t[x" or ":port" raise here
    except ValueError as exc:  # an unbalanced "[" (IPv6 literal), a bad port
        raise InvalidRequest(
            f"{param} is not a valid URL ({exc}): {url!r}.", code="invalid_url", param=param
        ) from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise InvalidRequest(f"{param} must be an http(s) URL, got {url!r}.", code="invalid_url", param=param)
    try:
        hostname.encode("idna")
    except UnicodeError:
        raise InvalidRequest(
            f"{param}: {hostname!r} is not a valid host name.", code="invalid_url", param=param
        ) from None
    if not settings.webhook_allow_private_networks and (private := _private_address(hostname)):
        raise InvalidRequest(
            f"{param} {url!r} resolves to a private address ({private}); webhooks go to public receivers "
            "only (JUICE_WEBHOOK_ALLOW_PRIVATE_NETWORKS lifts this for trusted networks).",
            code="invalid_url",
            param=param,
        )


def create_endpoint(session: Session, tenant_id: int, url: str, events: list[str] | None) -> WebhookEndpoint:
    check_url(url, get_settings())
    wanted = list(dict.fromkeys(events)) if events else list(EVENT_TYPES)
    unknown = [e for e in wanted if e not in EVENT_TYPES]
    if unknown:
        raise InvalidRequest(
            f"events: unknown event type {unknown[0]!r}; one of {', '.join(EVENT_TYPES)}.",
            code="invalid_value",
            param="events",
        )
    endpoint = WebhookEndpoint(tenant_id=tenant_id, url=url, events=wanted, secret=new_secret())
    session.add(endpoint)
    session.commit()
    return endpoint


def list_endpoints(session: Session, tenant_id: int) -> list[WebhookEndpoint]:
    query = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id)
    return list(session.scalars(query.order_by(WebhookEndpoint.seq)))


def delete_endpoint(session: Session, tenant_id: int, endpoint_id: str) -> None:
    endpoint = session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id, WebhookEndpoint.tenant_id == tenant_id
        )
    )
    if endpoint is None:
        raise NotFound("webhook", endpoint_id, param="webhook_id")
    session.delete(endpoint)
    session.commit()


def notify(session: Session, job_id: str, status: str) -> int:
    """Queue the event of `job_id` having moved to `status` for each endpoint of its tenant that
    wants it, in the caller's transaction. Returns the deliveries written."""
    event = EVENT_OF_STATUS.get(status)
    if event is None:
        return 0
    tenant_id = session.scalar(select(Job.tenant_id).where(Job.id == job_id))
    endpoints = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id)).all()
    count = 0
    for endpoint in endpoints:
        if event not in endpoint.events:
            continue
        delivery = WebhookDelivery(endpoint_id=endpoint.id, job_id=job_id, type=event, payload={})
        session.add(delivery)
        session.flush()  # its id is the event's id
        delivery.payload = {
            "id": delivery.id,
            "object": "event",
            "type": event,
            "created_at": int(time.time()),
            "data": {"id": job_id},
        }
        count += 1
    return count


def _send(
    client: httpx.Client, url: str, secret: str, msg_id: str, payload: dict[str, Any], settings: Settings
) -> str | None:
    """POST one delivery; None on a 2xx, else why not. Never raises: whatever a receiver's URL or
    answer does (a malformed name, a reset, a timeout), it is this delivery's failure alone."""
    try:
        host = urlsplit(url).hostname or ""
        if not settings.webhook_allow_private_networks and (private := _private_address(host)):
            return f"refused: {host} now resolves to a private address ({private})"
        body = json.dumps(payload, separators=(",", ":"))
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "Juice-Webhooks/1",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, msg_id, timestamp, body),
        }
        r = client.post(url, content=body, headers=headers, follow_redirects=False)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    return None if 200 <= r.status_code < 300 else f"HTTP {r.status_code}"


def deliver_due(session: Session, settings: Settings | None = None, limit: int = 20) -> int:
    """Send the deliveries that are due, oldest first; returns how many were attempted.

    Three short transactions, none held across the HTTP calls (on SQLite an open write transaction
    would block every heartbeat and metric write meanwhile): take the due rows by moving their
    next_attempt_at past the send window (so another dispatcher skips them, and a dispatcher that
    dies mid-send leaves them due again later), send, then record each outcome."""
    settings = settings or get_settings()
    now = utcnow()
    due = session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.seq)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not due:
        session.rollback()
        return 0
    window = timedelta(seconds=limit * (settings.webhook_timeout_s + 5))
    work = []
    for delivery in due:
        endpoint = session.scalar(select(WebhookEndpoint).where(WebhookEndpoint.id == delivery.endpoint_id))
        assert endpoint is not None  # deleting an endpoint deletes its deliveries
        delivery.next_attempt_at = now + window
        work.append(
            (delivery.id, delivery.type, delivery.job_id, endpoint.url, endpoint.secret, delivery.payload)
        )
    session.commit()

    with httpx.Client(timeout=settings.webhook_timeout_s) as client:
        outcomes = [(item, _send(client, item[3], item[4], item[0], item[5], settings)) for item in work]

    for (msg_id, event, job_id, url, _, _), error in outcomes:
        row = session.scalar(select(WebhookDelivery).where(WebhookDelivery.id == msg_id))
        if row is None:  # its endpoint was deleted meanwhile
            continue
        delivery = row
        delivery.attempts += 1
        where = f"Webhook {event} to {url}"
        if error is None:
            delivery.state, delivery.last_error = "delivered", None
            message, level = f"{where} delivered (attempt {delivery.attempts}).", "info"
        elif delivery.attempts >= MAX_ATTEMPTS:
            delivery.state, delivery.last_error = "failed", error
            message, level = f"{where} failed ({error}); given up after {delivery.attempts} attempts.", "warn"
        else:
            delay = RETRY_DELAYS_S[delivery.attempts - 1]
            delivery.last_error, delivery.next_attempt_at = error, utcnow() + timedelta(seconds=delay)
            message, level = f"{where} failed ({error}); retrying in {delay} s.", "warn"
        session.add(
            JobEvent(
                job_id=job_id,
                message=message,
                level=level,
                data={"webhook_id": msg_id, "attempt": delivery.attempts},
            )
        )
        session.commit()
    return len(due)


def endpoint_object(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "url": endpoint.url,
        "events": endpoint.events,
        "created_at": unix(endpoint.created_at),
    }
    if with_secret:
        out["secret"] = endpoint.secret
    return out
