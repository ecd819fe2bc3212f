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


class ExplainRequest(ScoreRequest):
    """The body of /v1/explain: the same fields as /v1/score, with its own limits."""


class Behaviour(BaseModel):
    position: int = Field(description="index in the history used, 0 = oldest")
    item_id: str
    category: str | None = Field(description="from the request, else the item's own if known")
    title: str | None = Field(description="display title, when the bundle carries one")


class WeightedBehaviour(Behaviour):
    weight: float = Field(description="attention weight of this behaviour for the candidate")


class ExplainedCandidate(BaseModel):
    item_id: str
    category: str | None
    title: str | None
    score: float = Field(description="the CTR, equal to /v1/score's for the same request")
    behaviours: list[WeightedBehaviour] = Field(description="the history, heaviest first")


class ExplainResponse(BaseModel):
    version: str = Field(description="the model version behind every score and weight")
    pooling: str = Field(description="attention (DIN) or sum (BaseModel: every weight is 1)")
    normalised: bool = Field(description="true when the weights of a candidate sum to 1")
    history_length: int
    history_source: str
    unknown_ids: int
    history: list[Behaviour] = Field(description="the behaviours used, oldest first")
    candidates: list[ExplainedCandidate] = Field(description="in request order")


class VersionSummary(BaseModel):
    version: str
    published_at: float = Field(description="Unix time the version was published")
    activated_at: float | None = Field(description="Unix time of its last activation")
    active: bool
    pooling: str | None = Field(description="attention (DIN) or sum (BaseModel)")
    metrics: dict = Field(description="the exporter's evaluation: test_auc, test_gauc, ...")


class Activation(BaseModel):
    version: str
    at: float


class VersionsResponse(BaseModel):
    active: str | None = Field(description="the version Redis points every replica at")
    serving: str | None = Field(description="the version this replica has loaded")
    versions: list[VersionSummary] = Field(description="newest first, the last 20")
    activations: list[Activation] = Field(description="newest first, the last 20")


class VersionDetail(BaseModel):
    version: str
    published_at: float
    model: dict = Field(description="the model's hyper-parameters")
    metrics: dict
    row_dtype: str
    tables: dict[str, int] = Field(description="rows per table")
    explainable: bool = Field(description="the graph outputs attention weights")
    item_metadata: int = Field(description="items with a title and category")
    demo_users: list[str] = Field(description="held-out users worth showing")
    demo_items: list[str] = Field(description="candidates worth showing")
    report: list[str] = Field(description="training report files")
