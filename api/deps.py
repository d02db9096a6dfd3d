"""Request dependencies: a DB session per request and the caller's tenant from the Bearer key."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.core.security import hash_api_key
from api.db.models import ApiKey, Tenant
from api.db.session import get_sessionmaker
from api.errors import Unauthorized


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


def current_caller(session: SessionDep, authorization: Annotated[str | None, Header()] = None) -> Caller:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key")
    key = authorization[7:].strip()
    row = session.execute(
        select(ApiKey.tenant_id, Tenant.name)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None))
    ).first()
    if row is None:
        raise Unauthorized("Incorrect API key provided.", code="invalid_api_key")
    return Caller(tenant_id=row[0], tenant_name=row[1])


CallerDep = Annotated[Caller, Depends(current_caller)]
