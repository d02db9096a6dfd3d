"""Liveness and readiness probes (unauthenticated, outside /v1)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from api.deps import SessionDep
from api.schemas.errors import error_responses

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process serves requests. Touches nothing else, so a database outage does not get
    a healthy API restarted by its supervisor (it answers 503 itself meanwhile, and recovers)."""
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(503))
def readyz(session: SessionDep) -> dict[str, str]:
    """Readiness: the database answers. 503 `database_unavailable` (with Retry-After) while it is away."""
    session.execute(text("SELECT 1"))
    return {"status": "ok"}
