"""Response bodies of the API; the request models are built from the settings (requests.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ScoreResponse(BaseModel):
    version: str = Field(description="the model version that produced every score")
    scores: list[float] = Field(description="one CTR per candidate, in request order")
    history_length: int = Field(description="behaviours used")
    history_source: str = Field(description="request or redis")
    unknown_ids: dict[str, int] = Field(
        description="per field (item_id for the item id), the distinct values the version does "
        "not know, served with the field's default row; fields with none are left out"
    )


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
    bundle_uid: str | None = Field(description="the loaded bundle's identity (its manifest uid)")
    provider: str | None
    redis: str


class DescribedItem(BaseModel):
    item_id: str
    fields: dict[str, str] = Field(
        description="item-side field values: the request's, else the item's own when known"
    )
    title: str | None = Field(description="display title, when the bundle carries one")


class Behaviour(DescribedItem):
    position: int = Field(description="index in the history used, 0 = oldest")


class WeightedBehaviour(Behaviour):
    weight: float = Field(description="attention weight of this behaviour for the candidate")


class ExplainedCandidate(DescribedItem):
    score: float = Field(description="the CTR, equal to /v1/score's for the same request")
    behaviours: list[WeightedBehaviour] = Field(description="the history, heaviest first")


class ExplainResponse(BaseModel):
    version: str = Field(description="the model version behind every score and weight")
    pooling: str = Field(description="attention (DIN) or sum (BaseModel: every weight is 1)")
    normalised: bool = Field(description="true when the weights of a candidate sum to 1")
    history_length: int
    history_source: str
    unknown_ids: dict[str, int]
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


class CanaryShare(BaseModel):
    version: str
    percent: float = Field(description="share of users sent to the canary")


class ArmSummary(BaseModel):
    requests: int
    errors: int
    mean_score: float | None = Field(description="mean of the scores this arm served")


class VersionsResponse(BaseModel):
    active: str | None = Field(description="the version Redis points every replica at")
    canary: CanaryShare | None = Field(description="the running canary, if any")
    serving: str | None = Field(description="the active version this replica has loaded")
    serving_canary: str | None = Field(description="the canary version this replica serves")
    arms: dict[str, ArmSummary] = Field(description="this replica's requests per version")
    versions: list[VersionSummary] = Field(description="newest first, the last 20")
    activations: list[Activation] = Field(description="newest first, the last 20")


class VersionDetail(BaseModel):
    version: str
    published_at: float
    model: dict = Field(description="the model's hyper-parameters")
    metrics: dict
    row_dtype: str
    row_layout: str = Field(description="keys (a Redis string per row) or buckets (hashes)")
    tables: dict[str, int] = Field(description="rows per table")
    explainable: bool = Field(description="the graph outputs attention weights")
    item_metadata: int = Field(description="items with a title and field values record")
    demo_users: list[str] = Field(description="held-out users worth showing")
    demo_items: list[str] = Field(description="candidates worth showing")
    report: list[str] = Field(description="training report files")
    feature_schema: dict = Field(
        alias="schema",
        description="the feature schema: item, user and context fields with their dims",
    )
