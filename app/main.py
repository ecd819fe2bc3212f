"""The FastAPI application.

uvicorn app.main:app --host 0.0.0.0 --port 8000
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.routing import Route

from app.api import JsonEndpoint, handle_explain, handle_score, router, validation_failed
from app.config import Settings
from app.contract import OpenApiDocument, contract_routes
from app.events import handle_events
from app.limits import BodySizeLimit
from app.logs import configure_logging
from app.requests import build_request_models
from app.state import build_state, close_state
from app.ui import mount_ui


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    models = build_request_models(settings)  # the one contract: validation and the document

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level)
        state = build_state(settings, models)
        state.watcher.start()
        state.batcher.start()
        app.state.ctr = state
        try:
            yield
        finally:
            await state.batcher.stop()
            close_state(state)

    app = FastAPI(title="DIN CTR serving", version="0.2.0", lifespan=lifespan)
    app.include_router(router)
    mount_ui(app)
    app.router.routes.append(Route("/v1/score", JsonEndpoint(handle_score), methods=["POST"]))
    app.router.routes.append(Route("/v1/explain", JsonEndpoint(handle_explain), methods=["POST"]))
    app.router.routes.append(Route("/v1/events", JsonEndpoint(handle_events), methods=["POST"]))
    app.add_exception_handler(RequestValidationError, validation_failed)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.openapi = OpenApiDocument(app, contract_routes(models))
    return app


def __getattr__(name: str) -> FastAPI:
    """`app.main:app` is built on first access, so importing this module reads no settings."""
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
