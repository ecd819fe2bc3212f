"""Request and response bodies of the API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictStr

EXAMPLE_REQUEST = {
    "user_id": "196",
    "candidates": [{"item_id": "242"}, {"item_id": "302"}, {"item_id": "377", "category": "Drama"}],
}


class Item(BaseModel):
    """An ad or a past behaviour: a raw item id, with its category when the client knows it."""

    model_config = ConfigDict(extra="forbid")
    item_id: StrictStr = Field(min_length=1, description="raw item id, as published")
    category: StrictStr | None = Field(
        None, min_length=1, description="raw category id; default: the item's own category"
    )


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_REQUEST]})
    user_id: StrictStr = Field(min_length=1, description="raw user id")
    history: list[Item] | None = Field(
        None, description="behaviours, oldest first; when absent, read from Redis"
    )
    candidates: list[Item] = Field(min_length=1, description="the ads to score")


class ScoreResponse(BaseModel):
    version: str = Field(description="the model version that produced every score")
    scores: list[float] = Field(description="one CTR per candidate, in request order")
    history_length: int = Field(description="behaviours used")
    history_source: str = Field(description="request or redis")
    unknown_ids: int = Field(description="ids served with the bundle's default rows")


class ErrorResponse(BaseModel):
    error: str
    detail: str


class FieldError(BaseModel):
    loc: list[str | int] = Field(description='path to the field, e.g. ["body", "candidates", 0]')
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    error: str = Field(description="always invalid_request")
    detail: list[FieldError]


class ReadyResponse(BaseModel):
    ready: bool
    version: str | None
    provider: str | None
    redis: str
