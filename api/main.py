"""The FastAPI app: OpenAI-compatible routes under /v1 and the dashboard at /. Never imports torch or the worker."""

from __future__ import annotations

from fastapi import FastAPI

from api.dashboard import routes as dashboard
from api.errors import install_error_handlers
from api.routes import checkpoint_links, files, health, jobs, methods, metrics, models


def create_app() -> FastAPI:
    app = FastAPI(
        title="Juice",
        version="0.1.0",
        description="Self-hostable fine-tuning: SFT, RFT and IRFT behind OpenAI's fine-tuning API.",
    )
    install_error_handlers(app)
    app.include_router(files.router, prefix="/v1")
    app.include_router(jobs.router, prefix="/v1")
    app.include_router(checkpoint_links.router, prefix="/v1")
    app.include_router(methods.router, prefix="/v1")
    app.include_router(models.router, prefix="/v1")
    app.include_router(metrics.router, prefix="/v1")
    app.include_router(health.router)
    app.include_router(dashboard.router)  # last: its /static/{name} must not shadow API paths
    return app


app = create_app()
