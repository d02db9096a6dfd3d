"""The FastAPI app: OpenAI-compatible routes under /v1 and the dashboard at /. Never imports torch or the worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.core.config import get_settings
from api.core.security import server_secret
from api.dashboard import routes as dashboard
from api.errors import install_error_handlers
from api.routes import (
    chat,
    checkpoints,
    demonstration_scores,
    files,
    graders,
    health,
    jobs,
    methods,
    metrics,
    models,
    webhooks,
)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Refuse to start without a link-signing secret (production, JUICE_SECRET_KEY unset), and generate the
    # embedded default's one now rather than on the first link request.
    server_secret(get_settings())
    yield
    if (inference := getattr(app.state, "inference", None)) is not None:  # api/routes/chat.py's pool
        await inference.http.aclose()


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=_lifespan,
        title="Juice",
        version="0.1.0",
        description="Self-hostable fine-tuning: SFT, RFT and IRFT behind OpenAI's fine-tuning API.",
    )
    install_error_handlers(app)
    app.include_router(files.router, prefix="/v1")
    app.include_router(jobs.router, prefix="/v1")
    app.include_router(checkpoints.router, prefix="/v1")
    app.include_router(metrics.router, prefix="/v1")
    app.include_router(demonstration_scores.router, prefix="/v1")
    app.include_router(graders.router, prefix="/v1")
    app.include_router(methods.router, prefix="/v1")
    app.include_router(models.router, prefix="/v1")
    app.include_router(chat.router, prefix="/v1")
    app.include_router(webhooks.router, prefix="/v1")
    app.include_router(health.router)
    app.include_router(dashboard.router)  # last: its /static/{name} must not shadow API paths
    return app


app = create_app()
