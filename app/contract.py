"""The OpenAPI document: the mounted routes plus the contracts of POST /v1/score and /v1/explain,
whose request models come from the settings (app/requests.py), with the field names of the
version being served.

The scoring routes themselves are plain ASGI JsonEndpoints (app/api.py), which skip the
framework's per-request work (request objects, dependency solving), about a tenth of a score
request; the routes below exist for the document only.
"""

# No `from __future__ import annotations` here: FastAPI reads the body type of the routes
# below from their annotations, which name models built at run time.

import copy

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi

from app.requests import RequestModels
from app.schemas import ErrorResponse, ExplainResponse, ScoreResponse, ValidationErrorResponse
from core.schema import FeatureSchema

UNAVAILABLE = {503: {"model": ErrorResponse, "description": "Redis or the model is unavailable"}}
REJECTED = {
    413: {"model": ErrorResponse, "description": "the body is over CTR_MAX_BODY_BYTES"},
    415: {"model": ErrorResponse, "description": "Content-Type is not application/json"},
    422: {
        "model": ValidationErrorResponse,
        "description": "a field is malformed, over a limit, or not in the served version's schema",
    },
}
NO_ATTENTION = {409: {"model": ErrorResponse, "description": "the version has no attention"}}


def contract_routes(models: RequestModels) -> APIRouter:
    router = APIRouter()
    score_body, explain_body = models.score, models.explain

    @router.post("/v1/score", response_model=ScoreResponse, responses=UNAVAILABLE | REJECTED)
    async def score(body: score_body) -> ScoreResponse:
        """Score candidate ads for a user with the active model version."""
        raise NotImplementedError("served by JsonEndpoint(handle_score)")

    @router.post(
        "/v1/explain",
        response_model=ExplainResponse,
        responses=UNAVAILABLE | REJECTED | NO_ATTENTION,
    )
    async def explain(body: explain_body) -> ExplainResponse:
        """Score candidates and rank, for each, the user's behaviours by attention weight."""
        raise NotImplementedError("served by JsonEndpoint(handle_explain)")

    return router


class OpenApiDocument:
    """app.openapi: built once, then once more per served version to name its fields."""

    def __init__(self, app: FastAPI, contract: APIRouter) -> None:
        self.app, self.contract = app, contract
        self._by_version: tuple[str | None, dict] | None = None

    def __call__(self) -> dict:
        if self.app.openapi_schema is None:
            routes = [*self.app.routes, *self.contract.routes]
            self.app.openapi_schema = get_openapi(
                title=self.app.title, version=self.app.version, routes=routes
            )
        state = getattr(self.app.state, "ctr", None)
        bundle = state.holder.current if state is not None else None
        if bundle is None:
            return self.app.openapi_schema
        if self._by_version is None or self._by_version[0] != bundle.version:
            document = copy.deepcopy(self.app.openapi_schema)
            name_fields(document["components"]["schemas"], bundle.manifest.schema, bundle.version)
            self._by_version = (bundle.version, document)
        return self._by_version[1]


def name_fields(schemas: dict, schema: FeatureSchema, version: str) -> None:
    """Name the served version's fields and only those: what this replica accepts until the
    next swap (the models accept any names; the service checks them per request)."""
    raw_id = schemas["Item"]["additionalProperties"]  # the id constraints every value meets
    item = schemas["Item"]
    item["properties"] |= described(schema.side_fields, raw_id, version)
    item["additionalProperties"] = False
    for request in ("ScoreRequest", "ExplainRequest"):
        for key, specs in (("user", schema.profile_fields), ("context", schema.context)):
            field = schemas[request]["properties"][key]
            field["properties"] = described(specs, raw_id, version)
            field["additionalProperties"] = False


def described(specs, raw_id: dict, version: str) -> dict:
    return {
        spec.name: raw_id | {"description": f"a field of {version} ({spec.dim}-dim embedding)"}
        for spec in specs
    }
