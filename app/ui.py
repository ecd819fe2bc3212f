"""The browser page (/ui) and the read-only routes it uses: versions, reports."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from app import catalog
from app.api import StateDep, json_response, unavailable_body
from app.contract import REJECTED, UNAVAILABLE
from app.schemas import ErrorResponse, VersionDetail, VersionsResponse
from app.state import AppState
from core.redis_conn import REDIS_ERRORS

STATIC = FilePath(__file__).resolve().parent / "static"
router = APIRouter()
Name = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]  # version or file
NOT_FOUND = {
    404: {"model": ErrorResponse, "description": "no such version or file"},
    422: REJECTED[422],
}
# The page loads only its own files and talks only to this service.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self'; object-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def mount_ui(app) -> None:
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")


@router.get("/ui", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


@router.get("/v1/versions", response_model=VersionsResponse, responses=UNAVAILABLE)
async def versions(state: StateDep) -> Response:
    """Published versions, newest first, with metrics and activation times; the canary, its
    share, and what each arm served in this replica."""
    serving = state.holder.serving
    replica = {
        "serving": serving.active.version if serving.active else None,
        "serving_canary": serving.canary.version if serving.canary else None,
        "arms": state.arms.summary(),
    }
    return await read(state, catalog.versions_page, replica)


@router.get(
    "/v1/versions/{version}", response_model=VersionDetail, responses=UNAVAILABLE | NOT_FOUND
)
async def version(state: StateDep, version: Name) -> Response:
    """One version: model, metrics, demo users and items, report files."""
    return await read(state, catalog.version_detail, version)


@router.get(
    "/v1/versions/{version}/report/{name}",
    response_class=Response,
    responses=UNAVAILABLE | NOT_FOUND | {200: {"content": {"image/png": {}, "text/markdown": {}}}},
)
async def report(state: StateDep, version: Name, name: Name) -> Response:
    """A file of the version's training report (report.png, report.md)."""
    try:
        content = await state.in_worker(catalog.report_file, *where(state), version, name)
    except REDIS_ERRORS:
        return redis_down()
    if content is None:
        return json_response({"error": "not_found", "detail": f"{version} has no {name}"}, 404)
    headers = {"X-Content-Type-Options": "nosniff"}
    return Response(content, media_type=catalog.media_type(name), headers=headers)


async def read(state: AppState, reader, *args) -> Response:
    try:
        body = await state.in_worker(reader, *where(state), *args)
    except REDIS_ERRORS:
        return redis_down()
    if body is None:
        return json_response({"error": "not_found", "detail": f"no version {args[0]}"}, 404)
    return json_response(body)


def where(state: AppState) -> tuple:
    return state.client, state.settings.namespace


def redis_down() -> Response:
    status, body, headers = unavailable_body("redis_unavailable", "Redis did not answer")
    return Response(body, status, headers=headers, media_type="application/json")
