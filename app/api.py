"""HTTP routes: scoring, explaining, health, readiness, metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Receive, Scope, Send

from app.explain import NoAttention, explain_request
from app.limits import check_limits, parse_score_request
from app.schemas import (
    ErrorResponse,
    ExplainRequest,
    ExplainResponse,
    ReadyResponse,
    ScoreRequest,
    ScoreResponse,
    ValidationErrorResponse,
)
from app.scoring import NoModel
from app.state import AppState
from core.redis_conn import REDIS_ERRORS

log = logging.getLogger(__name__)
router = APIRouter()


def get_state(request: Request) -> AppState:
    return request.app.state.ctr


StateDep = Annotated[AppState, Depends(get_state)]
UNAVAILABLE = {503: {"model": ErrorResponse, "description": "Redis or the model is unavailable"}}
REJECTED = {
    413: {"model": ErrorResponse, "description": "the body is over CTR_MAX_BODY_BYTES"},
    422: {"model": ValidationErrorResponse, "description": "a field is malformed or over a limit"},
}


def json_response(body: dict, status_code: int = 200, **options) -> Response:
    return Response(orjson.dumps(body), status_code, media_type="application/json", **options)


def validation_body(error: RequestValidationError) -> dict:
    """Each bad field named; inputs are not echoed (they may be huge or not JSON)."""
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
    return {"error": "invalid_request", "detail": detail}


async def validation_failed(request: Request, error: RequestValidationError) -> Response:
    return json_response(validation_body(error), 422)


# The contracts of POST /v1/score and /v1/explain, for the OpenAPI document only: the routes
# themselves are plain ASGI JsonEndpoints, which skip the framework's per-request work
# (request objects, dependency solving), about a tenth of a score request.
score_contract = APIRouter()
NO_ATTENTION = {409: {"model": ErrorResponse, "description": "the version has no attention"}}


@score_contract.post("/v1/score", response_model=ScoreResponse, responses=UNAVAILABLE | REJECTED)
async def score(body: ScoreRequest) -> ScoreResponse:
    """Score candidate ads for a user with the active model version."""
    raise NotImplementedError("served by JsonEndpoint(handle_score)")


@score_contract.post(
    "/v1/explain",
    response_model=ExplainResponse,
    responses=UNAVAILABLE | REJECTED | NO_ATTENTION,
)
async def explain(body: ExplainRequest) -> ExplainResponse:
    """Score candidates and rank, for each, the user's behaviours by attention weight."""
    raise NotImplementedError("served by JsonEndpoint(handle_explain)")


class JsonEndpoint:
    """A POST route as plain ASGI: read the body, hand it to `handler`, answer JSON."""

    def __init__(self, handler) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state.ctr
        status, body, headers = await self.handler(state, await read_body(receive))
        raw_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def handle_score(state: AppState, raw: bytes) -> tuple[int, bytes, dict]:
    """(status, JSON body, extra headers) for one score request."""
    return await answer(state, "score", raw, ScoreRequest, run_score)


async def handle_explain(state: AppState, raw: bytes) -> tuple[int, bytes, dict]:
    """(status, JSON body, extra headers) for one explain request."""
    limit = state.settings.explain_max_candidates
    return await answer(state, "explain", raw, ExplainRequest, run_explain, limit)


async def answer(
    state: AppState, route: str, raw: bytes, model, run, max_candidates: int | None = None
) -> tuple[int, bytes, dict]:
    """Parse and check the body, then run it under the deadline; failures become 4xx/503."""
    try:
        body = parse_score_request(raw, model)  # one pass: JSON parse and validation
        check_limits(body, state.settings, max_candidates)
    except RequestValidationError as error:
        return 422, orjson.dumps(validation_body(error)), {}
    started = time.perf_counter()
    requests = state.metrics.requests
    try:
        async with asyncio.timeout(state.settings.request_timeout_s):
            result = await run(state, body)
    except NoModel as error:
        requests.labels(route=route, outcome="no_model").inc()
        return unavailable_body("no_model", str(error))
    except NoAttention as error:
        requests.labels(route=route, outcome="no_attention").inc()
        return 409, orjson.dumps({"error": "no_attention", "detail": str(error)}), {}
    except REDIS_ERRORS as error:
        state.metrics.redis_errors.labels(op=route).inc()
        requests.labels(route=route, outcome="redis_error").inc()
        log.warning("%s failed on Redis: %s", route, type(error).__name__)
        return unavailable_body("redis_unavailable", "the feature store did not answer in time")
    except TimeoutError:
        requests.labels(route=route, outcome="timeout").inc()
        return unavailable_body("timeout", "the request passed its deadline")
    stage = "total" if route == "score" else route
    state.metrics.stage_seconds.labels(stage=stage).observe(time.perf_counter() - started)
    requests.labels(route=route, outcome="ok").inc()
    return 200, orjson.dumps(result), {}


def unavailable_body(error: str, detail: str) -> tuple[int, bytes, dict]:
    return 503, orjson.dumps({"error": error, "detail": detail}), {"Retry-After": "1"}


async def run_explain(state: AppState, body: ExplainRequest) -> dict:
    return await state.in_worker(explain_request, state.service, body)


async def run_score(state: AppState, body: ScoreRequest) -> dict:
    """One thread hop for fetch and inference, or fetch then a shared micro-batched run.

    At the deadline the request answers and leaves its thread to finish alone: redis-py can
    outlast the Redis timeout (on a cluster it re-sends each failed per-slot MGET).
    """
    if not state.batching_now():
        return (await state.in_worker(state.service.score, body)).to_dict()
    prepared = await state.in_worker(state.service.prepare, body)
    return state.service.finish(prepared, await state.batcher.score(prepared)).to_dict()


@router.get("/healthz")
async def healthz() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def readyz(state: StateDep) -> Response:
    """Readiness: a bundle is loaded and Redis answers."""
    redis_status = await state.in_worker(_ping, state)
    bundle = state.holder.current
    ready = bundle is not None and redis_status == "ok" and state.watcher.alive
    body = {
        "ready": ready,
        "version": bundle.version if bundle else None,
        "provider": bundle.provider if bundle else None,
        "redis": redis_status,
    }
    return json_response(body, 200 if ready else 503)


def _ping(state: AppState) -> str:
    try:
        state.client.ping()
    except REDIS_ERRORS as error:
        state.metrics.redis_errors.labels(op="ping").inc()
        return f"error: {type(error).__name__}"
    return "ok"


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(state: StateDep) -> Response:
    """Prometheus metrics."""
    state.metrics.cache_rows.set(len(state.cache))
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
