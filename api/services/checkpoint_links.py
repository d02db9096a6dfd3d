"""Signed, short-lived checkpoint download links (see api/core/security.py for the signature)."""

from __future__ import annotations

from urllib.parse import urlencode

from sqlalchemy.orm import Session

from api.core.security import sign_checkpoint_link
from api.schemas.checkpoint_links import CheckpointLink
from api.services import monitoring
from api.services.jobs import get_job


def link_url(
    content_path: str,
    *,
    secret: bytes,
    key_id: int,
    key_hash: str,
    job_id: str,
    checkpoint_id: str,
    expires: int,
) -> str:
    """`content_path?key=..&expires=..&signature=..`: everything the content route needs to verify."""
    signature = sign_checkpoint_link(secret, key_id, key_hash, job_id, checkpoint_id, expires)
    return f"{content_path}?{urlencode({'key': key_id, 'expires': expires, 'signature': signature})}"


def create_link(
    session: Session,
    *,
    secret: bytes,
    tenant_id: int,
    key_id: int,
    key_hash: str,
    job_id: str,
    checkpoint_id: str,
    content_path: str,
    expires_in: int,
    now: int,
) -> CheckpointLink:
    """A link to one of the tenant's checkpoints, signed for the calling key (404 for anything else).

    `secret` is the server secret (api.core.security.server_secret)."""
    get_job(session, tenant_id, job_id)
    monitoring.get_checkpoint(session, job_id, checkpoint_id)
    expires = now + expires_in
    url = link_url(
        content_path,
        secret=secret,
        key_id=key_id,
        key_hash=key_hash,
        job_id=job_id,
        checkpoint_id=checkpoint_id,
        expires=expires,
    )
    return CheckpointLink(url=url, expires_at=expires)
