"""Request limits: body size before parsing, and the configured list and id limits."""

from __future__ import annotations

import re

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.schemas import Item, ScoreRequest

CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
ID_PATTERN = r"^[^\x00-\x1f\x7f]*$"  # the same rule, for the OpenAPI schema


class BodySizeLimit:
    """Answers 413 once a body passes max_bytes, without reading the rest of it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _too_large(send, self.max_bytes)
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _too_large(send, self.max_bytes)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, max_bytes: int) -> None:
    body = b'{"error":"body_too_large","detail":"request body exceeds %d bytes"}' % max_bytes
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def parse_score_request(raw: bytes, model: type[ScoreRequest] = ScoreRequest) -> ScoreRequest:
    """Parse and validate in one pass (pydantic's JSON parser also bounds nesting depth)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        errors = error.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def document_limits(schemas: dict, settings: Settings) -> None:
    """Write the configured limits into the OpenAPI schemas, so the contract is the real one."""
    ids = {"maxLength": settings.max_id_length, "pattern": ID_PATTERN}
    item = schemas["Item"]["properties"]
    item["item_id"] |= ids
    item["category"]["anyOf"][0] |= ids
    for name, max_candidates in (
        ("ScoreRequest", settings.max_candidates),
        ("ExplainRequest", settings.explain_max_candidates),
    ):
        request = schemas[name]["properties"]
        request["user_id"] |= ids
        request["candidates"]["maxItems"] = max_candidates
        request["history"]["anyOf"][0]["maxItems"] = settings.max_history


def check_limits(
    request: ScoreRequest, settings: Settings, max_candidates: int | None = None
) -> None:
    """422 naming the field, for limits that come from configuration (max_candidates
    defaults to the score route's)."""
    errors = []
    max_candidates = max_candidates or settings.max_candidates
    if len(request.candidates) > max_candidates:
        errors.append(_error(("candidates",), f"at most {max_candidates} candidates"))
    if request.history is not None and len(request.history) > settings.max_history:
        errors.append(_error(("history",), f"at most {settings.max_history} behaviours"))
    if errors or not _ids_look_fine(request, settings.max_id_length):
        errors += _id_errors(("user_id",), request.user_id, settings.max_id_length)
        for field, items in (
            ("candidates", request.candidates),
            ("history", request.history or []),
        ):
            for index, item in enumerate(items):
                errors += _item_errors((field, index), item, settings.max_id_length)
    if errors:
        raise RequestValidationError(errors)


def _ids_look_fine(request: ScoreRequest, max_length: int) -> bool:
    """The fast path: one pass over all ids, no per-id error building."""
    items = request.candidates + (request.history or [])
    ids = [request.user_id, *(i.item_id for i in items)]
    ids += [i.category for i in items if i.category is not None]
    return max(map(len, ids)) <= max_length and not CONTROL_CHARS.search("".join(ids))


def _item_errors(loc: tuple, item: Item, max_length: int) -> list[dict]:
    errors = _id_errors((*loc, "item_id"), item.item_id, max_length)
    if item.category is not None:
        errors += _id_errors((*loc, "category"), item.category, max_length)
    return errors


def _id_errors(loc: tuple, value: str, max_length: int) -> list[dict]:
    if len(value) > max_length:
        return [_error(loc, f"ids are at most {max_length} characters")]
    if CONTROL_CHARS.search(value):
        return [_error(loc, "ids must not contain control characters")]
    return []


def _error(loc: tuple, message: str) -> dict:
    return {"type": "value_error", "loc": ("body", *loc), "msg": message, "input": None}
