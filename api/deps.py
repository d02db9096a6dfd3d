"""Request dependencies: a DB session per request and the caller's tenant from the Bearer key
(or, for checkpoint downloads only, from a signed link).

Every way in (`current_caller`, `stream_caller`, `checkpoint_download_caller`) ends in `_admit`, which
takes a token from the tenant's request bucket (api.ratelimit): over the rate, 429 with Retry-After."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.core.config import get_settings
from api.core.security import (
    MAX_LINK_LIFETIME_S,
    checkpoint_link_signature_ok,
    hash_api_key,
    link_expired,
    link_outlives_cap,
    server_secret,
)
from api.db.session import get_sessionmaker
from api.db.tables import ApiKey, Tenant
from api.errors import Forbidden, TooManyRequests, Unauthorized
from api.ratelimit import TokenBuckets
from api.services.jobs import get_job

# Largest value a BIGINT id column holds; a bigger `key` would make the driver raise, not miss.
MAX_KEY_ID = 2**63 - 1


def get_db() -> Iterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_db)]


@dataclass(frozen=True)
class Caller:
    tenant_id: int
    tenant_name: str
    key_id: int  # the api_keys row that authenticated this request
    # That key's stored hash: with the server secret it derives the key's link-signing key. Kept out of
    # repr, hence out of logs.
    key_hash: str = field(repr=False)


_buckets_lock = threading.Lock()


def _request_buckets(request: Request) -> TokenBuckets | None:
    """This app's per-tenant buckets (made on first use, so each app, hence each process, has its own);
    None when rate limiting is off."""
    settings = get_settings()
    if settings.rate_limit_per_s <= 0:
        return None
    state = request.app.state
    with _buckets_lock:
        buckets: TokenBuckets | None = getattr(state, "request_buckets", None)
        if buckets is None:
            buckets = TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst)
            state.request_buckets = buckets
    return buckets


def _admit(request: Request, caller: Caller) -> Caller:
    """Count the request against its tenant's rate; 429 with Retry-After when the bucket is empty."""
    buckets = _request_buckets(request)
    if buckets is not None and (wait_s := buckets.take(caller.tenant_id)):
        settings = get_settings()
        raise TooManyRequests(
            f"Rate limit reached: {settings.rate_limit_per_s:g} requests per second per organization"
            f" (bursts of up to {settings.rate_limit_burst}). Retry in {wait_s} s.",
            code="rate_limit_exceeded",
            retry_after_s=wait_s,
        )
    return caller


def _bearer_caller(session: Session, authorization: str | None) -> Caller:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key")
    key_hash = hash_api_key(authorization[7:].strip())
    row = session.execute(
        select(ApiKey.id, ApiKey.tenant_id, Tenant.name)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    ).first()
    if row is None:
        raise Unauthorized("Incorrect API key provided.", code="invalid_api_key")
    return Caller(tenant_id=row.tenant_id, tenant_name=row.name, key_id=row.id, key_hash=key_hash)


def current_caller(
    request: Request, session: SessionDep, authorization: Annotated[str | None, Header()] = None
) -> Caller:
    return _admit(request, _bearer_caller(session, authorization))


CallerDep = Annotated[Caller, Depends(current_caller)]


def stream_caller(
    request: Request, job_id: str, authorization: Annotated[str | None, Header()] = None
) -> Caller:
    """The Bearer key's caller, for a long-lived stream of `job_id`: checked in a session of its own
    that is closed before the stream starts (a SessionDep lives as long as the response, and a stream
    holding a pooled connection for hours starves every other request). A plain `def`, so FastAPI runs
    it in a worker thread, not on the event loop. Another tenant's job is a 404, as everywhere."""
    with get_sessionmaker()() as session:
        caller = _admit(request, _bearer_caller(session, authorization))
        get_job(session, caller.tenant_id, job_id)
    return caller


StreamCallerDep = Annotated[Caller, Depends(stream_caller)]


def _link_caller(
    session: Session, job_id: str, checkpoint_id: str, key: int, expires: int, signature: str
) -> Caller:
    row = session.execute(
        select(ApiKey.id, ApiKey.key_hash, ApiKey.tenant_id, Tenant.name)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.id == key, ApiKey.revoked_at.is_(None))
    ).first()
    # An unknown or revoked key reads as a bad signature: the link is dead either way.
    if row is None or not checkpoint_link_signature_ok(
        server_secret(get_settings()), row.id, row.key_hash, job_id, checkpoint_id, expires, signature
    ):
        raise Forbidden(
            "This download link's signature is not valid.", code="invalid_signature", param="signature"
        )
    # Checked after the signature, so `expires` is known to be the one the server signed.
    now = time.time()
    if link_expired(expires, now):
        raise Forbidden(
            "This download link has expired; create a new one.", code="link_expired", param="expires"
        )
    # The cap holds on every use, not only at creation: a validly signed link that would stay valid longer
    # than any link may (minted by hand with the secret, or before the cap was lowered) opens nothing.
    if link_outlives_cap(expires, now):
        raise Forbidden(
            f"This download link outlives the {MAX_LINK_LIFETIME_S} s maximum; create a new one.",
            code="link_lifetime_exceeded",
            param="expires",
        )
    return Caller(tenant_id=row.tenant_id, tenant_name=row.name, key_id=row.id, key_hash=row.key_hash)


def checkpoint_download_caller(
    request: Request,
    session: SessionDep,
    job_id: str,
    checkpoint_id: str,
    authorization: Annotated[str | None, Header()] = None,
    key: Annotated[int | None, Query(ge=1, le=MAX_KEY_ID)] = None,
    expires: Annotated[int | None, Query(ge=0, le=MAX_KEY_ID)] = None,
    signature: Annotated[str | None, Query(max_length=128)] = None,
) -> Caller:
    """The Bearer key, or a signed link's key: a browser navigation (`<a href>`) cannot send a header.

    The route still checks that the caller's tenant owns the job, so a valid link for one tenant's
    checkpoint opens nothing of another's."""
    if authorization or (key is None and expires is None and signature is None):
        return current_caller(request, session, authorization)  # no credentials at all stays a 401
    if key is None or expires is None or not signature:
        raise Forbidden(
            "A download link needs key, expires and signature.", code="invalid_signature", param="signature"
        )
    return _admit(request, _link_caller(session, job_id, checkpoint_id, key, expires, signature))


CheckpointDownloadCallerDep = Annotated[Caller, Depends(checkpoint_download_caller)]
