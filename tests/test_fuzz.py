"""Property-based fuzzing of the HTTP API with schemathesis, against a published bundle.

The schema is the app's own OpenAPI document, which carries the configured limits, so every
generated request that fits it must score (200), and every other one must get a documented 4xx.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from app.config import Settings
from app.main import create_app
from core.redis_conn import connect_redis
from export.publish import publish_bundle
from tests.service import in_process

NS = "fuzz"
LIMITS = {"max_candidates": 40, "max_history": 20, "max_id_length": 16, "max_body_bytes": 65536}
schema = schemathesis.openapi.from_dict(create_app(Settings(namespace=NS, **LIMITS)).openapi())


@pytest.fixture(scope="module")
def fuzz_client(redis_server, bundle):
    client = connect_redis(redis_server.url, timeout_s=5.0)
    publish_bundle(client, NS, bundle, progress=False)
    client.close()
    with in_process(redis_server.url, NS, **LIMITS) as test_client:
        yield test_client


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_answers_generated_requests_as_documented_and_never_5xx(case, fuzz_client):
    response = fuzz_client.request(**case.as_transport_kwargs(base_url="http://testserver"))
    case.validate_response(response)
