"""POST /v1/events: behaviours as they happen, appended to the behaviour stream(s) for
ctr-ingest to apply to each user's history (the contract: core/events.py).

    {"events": [{"user_id": "196", "item_id": "242", "time": 1733059200, "event_id": "e1"}]}

The answer, 202 {"accepted": n}, comes once every event is in its stream: durable, not yet
applied. Besides the four fields an event may carry values of the item-side fields of the
version being served (e.g. "cat"); any other name is refused. A client that retries after a
503 should send event_id: the worker applies an event id once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Annotated, NotRequired

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model
from typing_extensions import TypedDict

from core.events import (
    BASE_FIELDS,
    EVENT_ID,
    ID_PATTERN,
    ITEM_ID,
    TIME,
    USER_ID,
    add_events,
    event_fields,
)
from core.redis_conn import REDIS_ERRORS

log = logging.getLogger(__name__)
EXAMPLE = {
    "events": [
        {"user_id": "196", "item_id": "242", "time": 1733059200, "event_id": "e1"},
        {"user_id": "196", "item_id": "302", "time": 1733059260.5, "cat": "Drama"},
    ]
}


@functools.cache
def build_events_model(max_id_length: int, max_events: int) -> type[BaseModel]:
    """The request body model, with the configured limits (built once per pair)."""
    raw_id = Annotated[
        str,
        StringConstraints(strict=True, min_length=1, max_length=max_id_length, pattern=ID_PATTERN),
    ]
    seconds = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
    event = TypedDict(
        "Event",
        {
            USER_ID: Annotated[raw_id, Field(description="raw user id")],
            ITEM_ID: Annotated[raw_id, Field(description="raw item id")],
            TIME: Annotated[seconds, Field(description="when it happened, unix seconds")],
            EVENT_ID: NotRequired[Annotated[raw_id, Field(description="applied once per id")]],
        },
        extra_items=raw_id,
    )
    event.__doc__ = "One behaviour, plus optional raw values of the version's item-side fields."
    event.__pydantic_config__ = ConfigDict(extra="allow")  # the extra items, typed above
    return create_model(
        "EventsRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]}),
        events=(list[event], Field(min_length=1, max_length=max_events)),
    )


async def handle_events(state, raw: bytes) -> tuple[int, bytes, dict]:
    """(status, JSON body, extra headers) for one POST /v1/events."""
    settings = state.settings
    model = build_events_model(settings.max_id_length, settings.max_events)
    try:
        events = parse_events(raw, model)
        check_event_fields(events, state)
    except RequestValidationError as error:
        return _counted(state, "invalid", 422, _validation_body(error))
    except NoVersion as error:
        return _counted(state, "no_model", 503, _unavailable("no_model", str(error)), retry=True)
    try:
        async with asyncio.timeout(settings.request_timeout_s):
            accepted = await asyncio.to_thread(append_events, state, events)
    except REDIS_ERRORS as error:
        log.warning("events failed on Redis: %s", type(error).__name__)
        detail = "the event stream did not answer: retry (with event_id, never applied twice)"
        return _counted(state, "redis_error", 503, _unavailable("redis_unavailable", detail), True)
    except TimeoutError:
        detail = "the request passed its deadline"
        return _counted(state, "timeout", 503, _unavailable("timeout", detail), retry=True)
    return _counted(state, "ok", 202, {"accepted": accepted})


class NoVersion(RuntimeError):
    """Side fields were sent before any version is served, so none can be checked."""


def parse_events(raw: bytes, model: type[BaseModel]) -> list[dict]:
    try:
        return model.model_validate_json(raw).events
    except ValidationError as error:
        errors = error.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def check_event_fields(events: list[dict], state) -> None:
    """422 naming each field that is neither an event field nor an item-side field of the
    version being served."""
    named = set().union(*events) - BASE_FIELDS
    if not named:
        return
    bundle = state.holder.current
    if bundle is None:
        raise NoVersion("no model version is loaded yet: item-side fields cannot be checked")
    allowed = {spec.name for spec in bundle.manifest.schema.side_fields}
    if named <= allowed:
        return
    declared = ", ".join(sorted(allowed)) or "none"
    raise RequestValidationError(
        [
            {
                "type": "unknown_field",
                "loc": ("body", "events", index, name),
                "msg": f"{bundle.version} has no item-side field {name!r} "
                f"(item-side fields: {declared})",
                "input": None,
            }
            for index, event in enumerate(events)
            for name in event
            if name not in BASE_FIELDS and name not in allowed
        ]
    )


def append_events(state, events: list[dict]) -> int:
    """XADD every event to its user's stream partition, pipelined."""
    settings = state.settings
    fields = [
        event_fields(
            e[USER_ID],
            e[ITEM_ID],
            e[TIME],
            e.get(EVENT_ID),
            {k: v for k, v in e.items() if k not in BASE_FIELDS},
        )
        for e in events
    ]
    partitions = settings.stream_partitions
    return add_events(state.client, settings.namespace, fields, partitions)


def _validation_body(error: RequestValidationError) -> dict:
    """The API's 422 shape: each bad field named, inputs not echoed."""
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
    return {"error": "invalid_request", "detail": detail}


def _unavailable(error: str, detail: str) -> dict:
    return {"error": error, "detail": detail}


def _counted(
    state, outcome: str, status: int, body: dict, retry: bool = False
) -> tuple[int, bytes, dict]:
    state.metrics.requests.labels(route="events", outcome=outcome, version="").inc()
    return status, orjson.dumps(body), {"Retry-After": "1"} if retry else {}
