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
from app.metrics import observe_many
from app.pipeline import NoModel
from app.requests import parse_request
from app.schemas import ReadyResponse
from app.state import AppState
from core.redis_conn import REDIS_ERRORS
from core.row_store import VersionMissing

log = logging.getLogger(__name__)
router = APIRouter()


def get_state(request: Request) -> AppState:
    return request.app.state.ctr


StateDep = Annotated[AppState, Depends(get_state)]


def json_response(body: dict, status_code: int = 200, **options) -> Response:
    return Response(orjson.dumps(body), status_code, media_type="application/json", **options)


def validation_body(error: RequestValidationError) -> dict:
    """Each bad field named; inputs are not echoed (they may be huge or not JSON)."""
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
    return {"error": "invalid_request", "detail": detail}


async def validation_failed(request: Request, error: RequestValidationError) -> Response:
    return json_response(validation_body(error), 422)


class JsonEndpoint:
    """A POST route as plain ASGI: read the body, hand it to `handler`, answer JSON."""

    def __init__(self, handler) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state.ctr
        refusal = media_type_refusal(scope)
        if refusal is not None:  # before the body: a browser's form or text POST does nothing
            status, body, headers = 415, refusal, {}
        else:
            status, body, headers = await self.handler(state, await read_body(receive))
        await send_json(send, status, body, headers)


async def send_json(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    """One JSON answer straight to ASGI, `headers` added to the content type and length."""
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def media_type_refusal(scope: Scope) -> bytes | None:
    """The 415 body unless Content-Type is application/json (charset utf-8 at most). Only
    JSON bodies are read: a cross-site page can send text/plain or a form without asking
    the browser's CORS preflight, never application/json."""
    raw = next((v for k, v in scope["headers"] if k == b"content-type"), b"").decode("latin-1")
    media_type, *params = (part.strip().lower() for part in raw.split(";"))
    charset_ok = all(p.replace(" ", "") in ("charset=utf-8", 'charset="utf-8"') for p in params)
    if media_type == "application/json" and charset_ok:
        return None
    detail = f"Content-Type must be application/json, not {raw[:100] or 'missing'!r}"
    return orjson.dumps(
        {"error": "unsupported_media_type", "detail": detail, "loc": ["header", "content-type"]}
    )


async def read_body(receive: Receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def handle_score(state: AppState, raw: bytes) -> tuple[int, bytes, dict]:
    """(status, JSON body, extra headers) for one score request."""
    return await answer(state, "score", raw, state.models.score, run_score)


async def handle_explain(state: AppState, raw: bytes) -> tuple[int, bytes, dict]:
    """(status, JSON body, extra headers) for one explain request."""
    return await answer(state, "explain", raw, state.models.explain, run_explain)


async def answer(state: AppState, route: str, raw: bytes, model, run) -> tuple[int, bytes, dict]:
    """Parse, validate and pin the version, then run under the deadline; failures become
    4xx/503, each counted by outcome and version."""
    try:
        body = parse_request(raw, model)  # one pass: JSON parse, types and limits
        bundle = state.service.pin(body)  # field names, against the version it runs on
    except RequestValidationError as error:
        count(state, route, "invalid")
        return 422, orjson.dumps(validation_body(error)), {}
    except NoModel as error:
        count(state, route, "no_model")
        return unavailable_body("no_model", str(error))
    started = time.perf_counter()
    outcome, result = await run_pinned(state, route, run, body, bundle)
    seconds = time.perf_counter() - started
    if outcome != "ok":
        count(state, route, outcome, bundle.version, seconds)
        return result  # the error answer
    count(state, route, outcome, bundle.version, seconds, result.get("scores"))
    stage = "total" if route == "score" else route
    state.metrics.stage_seconds.labels(stage=stage, version=bundle.version).observe(seconds)
    return 200, orjson.dumps(result), {}


async def run_pinned(state: AppState, route: str, run, body, bundle) -> tuple[str, dict | tuple]:
    """("ok", the response body) or (the outcome, the error answer) of a pinned request."""
    try:
        async with asyncio.timeout(state.settings.request_timeout_s):
            return "ok", await run(state, body, bundle)
    except NoAttention as error:
        return "no_attention", (
            409,
            orjson.dumps({"error": "no_attention", "detail": str(error)}),
            {},
        )
    except VersionMissing as error:
        state.watcher.drop(bundle, error.why)
        return "version_missing", unavailable_body("version_missing", str(error))
    except REDIS_ERRORS as error:
        state.metrics.redis_errors.labels(op=route).inc()
        log.warning("%s failed on Redis: %s", route, type(error).__name__)
        detail = "the feature store did not answer in time"
        return "redis_error", unavailable_body("redis_unavailable", detail)
    except TimeoutError:
        return "timeout", unavailable_body("timeout", "the request passed its deadline")


def count(state: AppState, route: str, outcome: str, version: str = "", seconds=0.0, scores=None):
    """One request in the metrics, and in its version's arm (what the canary guard reads)."""
    state.metrics.requests.labels(route=route, outcome=outcome, version=version).inc()
    if not version:
        return
    state.arms.record(version, outcome in ("ok", "no_attention"), seconds, scores)
    if scores:
        observe_many(state.metrics.scores.labels(version=version), scores)


def unavailable_body(error: str, detail: str) -> tuple[int, bytes, dict]:
    return 503, orjson.dumps({"error": error, "detail": detail}), {"Retry-After": "1"}


async def run_explain(state: AppState, body, bundle) -> dict:
    return await state.in_worker(explain_request, state.service, body, bundle)


async def run_score(state: AppState, body, bundle) -> dict:
    """One thread hop for fetch and inference, or fetch then a shared micro-batched run.

    At the deadline the request answers and leaves its thread to finish alone: redis-py can
    outlast the Redis timeout (on a cluster it re-sends each failed per-slot MGET).
    """
    if not state.batching_now():
        return (await state.in_worker(state.service.score, body, bundle)).to_dict()
    prepared = await state.in_worker(state.service.prepare, body, bundle)
    return state.service.finish(prepared, await state.batcher.score(prepared)).to_dict()


@router.get("/healthz")
async def healthz() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def readyz(state: StateDep) -> Response:
    """Readiness: a bundle is loaded and Redis answers."""
    redis_status = state.watcher.server_refused or await state.in_worker(_ping, state)
    bundle = state.holder.current
    ready = bundle is not None and redis_status == "ok" and state.watcher.alive
    body = {
        "ready": ready,
        "version": bundle.version if bundle else None,
        "bundle_uid": bundle.uid if bundle else None,
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
