"""The FastAPI application.

uvicorn app.main:app --host 0.0.0.0 --port 8000
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.api import (
    JsonEndpoint,
    handle_explain,
    handle_score,
    router,
    send_json,
    validation_failed,
)
from app.config import Settings
from app.contract import OpenApiDocument, contract_routes
from app.events import handle_events
from app.limits import BodySizeLimit
from app.logs import configure_logging
from app.requests import build_request_models
from app.state import build_state, close_state
from app.ui import mount_ui

POST_ROUTES = {
    "/v1/score": handle_score,
    "/v1/explain": handle_explain,
    "/v1/events": handle_events,
}  # plain ASGI endpoints (app/api.py JsonEndpoint), the request paths that carry the load


class ServingApp(FastAPI):
    """FastAPI, with the POST routes in POST_ROUTES answered before its router and middleware
    stack. Those endpoints are plain ASGI already; going around the stack saves the router's
    scan of every route and the middleware layers on each scoring request. They keep the one
    middleware that applies to them (the body-size limit). Any other method or path is
    FastAPI's as before; an unexpected exception reaches uvicorn, which answers 500 and logs
    it, as FastAPI's error middleware would."""

    def __init__(self, max_body_bytes: int, token: str | None = None, **options) -> None:
        super().__init__(**options)
        self.token = token.encode() if token else None
        self.direct = {
            path: BodySizeLimit(JsonEndpoint(handler), max_bytes=max_body_bytes)
            for path, handler in POST_ROUTES.items()
        }
        for path, endpoint in self.direct.items():  # the same endpoints, for other methods
            self.router.routes.append(Route(path, endpoint, methods=["POST"]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token and scope["type"] == "http" and not authorized(scope, self.token):
            return await send_json(send, 401, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})
        endpoint = self.direct.get(route_path(scope)) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST":
            return await super().__call__(scope, receive, send)
        scope["app"] = self
        await endpoint(scope, receive, send)


TOKEN_ROUTES = ("/v1/events", "/v1/versions")  # writes, and reads of the version registry
UNAUTHORIZED = b'{"error": "unauthorized", "detail": "Authorization: Bearer <token> required"}'


def authorized(scope: Scope, token: bytes) -> bool:
    """Routes outside TOKEN_ROUTES are open; inside, the bearer token must match."""
    if scope["method"] == "OPTIONS" or not route_path(scope).startswith(TOKEN_ROUTES):
        return True
    given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
    return hmac.compare_digest(given, b"Bearer " + token)


def route_path(scope: Scope) -> str:
    """The path the router matches: without the root path a proxy mounts the service under
    (uvicorn --root-path puts it in front of scope["path"])."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


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

    token = settings.api_token.get_secret_value() if settings.api_token else None
    app = ServingApp(
        settings.max_body_bytes,
        token,
        title="DIN CTR serving",
        version="0.2.0",
        lifespan=lifespan,
    )
    app.include_router(router)
    mount_ui(app)
    app.add_exception_handler(RequestValidationError, validation_failed)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:  # the POST routes then go through the stack, for its headers
        app.direct.clear()
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["content-type", "authorization"],
        )
    app.openapi = OpenApiDocument(app, contract_routes(models))
    return app


def __getattr__(name: str) -> FastAPI:
    """`app.main:app` is built on first access, so importing this module reads no settings."""
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
