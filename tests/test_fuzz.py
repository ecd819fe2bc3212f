"""Property-based fuzzing of the HTTP API with schemathesis, against a published bundle.

The schema is the app's own OpenAPI document as it serves it, with the configured limits and
the served version's field names, so every generated request that fits it must score (200),
and every other one must get a documented 4xx.
"""

from __future__ import annotations

import copy

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from app.config import Settings
from app.contract import name_fields
from app.main import create_app
from core.redis_conn import connect_redis
from core.schema import load_schema_file
from export.movielens import EXAMPLE_SCHEMA
from export.publish import publish_bundle
from tests.service import in_process

NS = "fuzz"
LIMITS = {"max_candidates": 40, "max_history": 20, "max_id_length": 16, "max_body_bytes": 65536}
DOCUMENT = create_app(Settings(namespace=NS, **LIMITS)).openapi()  # no version served yet
SERVED = copy.deepcopy(DOCUMENT)  # as it is while v1, of the example schema, is served
name_fields(SERVED["components"]["schemas"], load_schema_file(EXAMPLE_SCHEMA).features, "v1")
schema = schemathesis.openapi.from_dict(SERVED)


@pytest.fixture(scope="module")
def fuzz_client(redis_server, bundle):
    client = connect_redis(redis_server.url, timeout_s=5.0)
    publish_bundle(client, NS, bundle, progress=False)
    client.close()
    with in_process(redis_server.url, NS, **LIMITS) as test_client:
        yield test_client


def test_the_fuzzed_document_is_the_one_served(fuzz_client):
    assert fuzz_client.get("/openapi.json").json() == SERVED


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_answers_generated_requests_as_documented_and_never_5xx(case, fuzz_client):
    response = fuzz_client.request(**case.as_transport_kwargs(base_url="http://testserver"))
    case.validate_response(response)
