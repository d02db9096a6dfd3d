"""Tenants and their API keys (operator commands; no HTTP route creates keys)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api.core.security import generate_api_key, hash_api_key
from api.db.base import utcnow
from api.db.session import rows_matched
from api.db.tables import ApiKey, Tenant


def create_key(session: Session, tenant_name: str) -> str:
    """Create the tenant if new, add a key, return the key (shown once; only its hash is stored)."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    key = generate_api_key()
    session.add(ApiKey(tenant_id=tenant.id, key_hash=hash_api_key(key), prefix=key[:12]))
    session.commit()
    return key


def list_keys(session: Session) -> list[tuple[str, str, str, bool]]:
    rows = session.execute(
        select(Tenant.name, ApiKey.prefix, ApiKey.created_at, ApiKey.revoked_at)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .order_by(ApiKey.id)
    )
    return [
        (name, prefix, created.isoformat(), revoked is not None) for name, prefix, created, revoked in rows
    ]


def revoke_key(session: Session, key: str) -> bool:
    done = rows_matched(
        session,
        update(ApiKey)
        .where(ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow()),
    )
    session.commit()
    return bool(done)
