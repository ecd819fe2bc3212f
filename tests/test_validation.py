import pytest

from export.publish import publish_bundle
from tests.service import in_process


@pytest.fixture(scope="module")
def client(redis_server, bundle):
    import redis

    publish_bundle(redis.Redis.from_url(redis_server.url), "validation", bundle, progress=False)
    with in_process(
        redis_server.url,
        "validation",
        max_candidates=5,
        max_history=4,
        max_id_length=8,
        max_body_bytes=4096,
    ) as client:
        yield client


def problem(client, payload=None, content=None, status=422) -> str:
    response = client.post(
        "/v1/score", json=payload, content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    return response.text


CANDS = [{"item_id": "1"}]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"candidates": CANDS}, "user_id"),
        ({"user_id": 5, "candidates": CANDS}, "user_id"),
        ({"user_id": "", "candidates": CANDS}, "user_id"),
        ({"user_id": "u"}, "candidates"),
        ({"user_id": "u", "candidates": []}, "candidates"),
        ({"user_id": "u", "candidates": [{"item_id": "1"}] * 6}, "candidates"),
        ({"user_id": "u", "candidates": "1"}, "candidates"),
        ({"user_id": "u", "candidates": [{"item_id": 1}]}, "item_id"),
        ({"user_id": "u", "candidates": [{"item_id": "123456789"}]}, "item_id"),
        ({"user_id": "u", "candidates": [{"item_id": "a\x00b"}]}, "item_id"),
        ({"user_id": "u", "candidates": [{"item_id": "1", "category": "x" * 9}]}, "category"),
        ({"user_id": "u", "history": [{"item_id": "1"}] * 5, "candidates": CANDS}, "history"),
        ({"user_id": "123456789", "candidates": CANDS}, "user_id"),
        ({"user_id": "u", "candidates": CANDS, "extra": 1}, "extra"),
    ],
)
def test_bad_input_gets_422_naming_the_field(client, payload, field):
    assert field in problem(client, payload)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_nan_and_infinity_where_ids_are_expected_get_422(client, number):
    body = b'{"user_id": "u", "candidates": [{"item_id": %s}]}' % number
    assert "item_id" in problem(client, content=body)


def test_malformed_json_is_a_4xx(client):
    assert "json" in problem(client, content=b'{"user_id": "u", "candidates": [').lower()


def test_body_over_the_limit_is_413_before_parsing(client):
    assert "body_too_large" in problem(client, content=b"[" * 5000, status=413)


def test_unicode_ids_are_fine(client):
    response = client.post("/v1/score", json={"user_id": "ü", "candidates": [{"item_id": "広告"}]})
    assert response.status_code == 200 and response.json()["unknown_ids"] == 1
