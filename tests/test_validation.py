import socket

import httpx
import pytest

from app.main import route_path
from core.redis_conn import connect_redis
from export.publish import publish_bundle
from tests.factories import RICH_SCHEMA, synthetic_bundle
from tests.service import in_process, service_process


@pytest.fixture(scope="module")
def client(redis_server):
    """Items with shop and brand fields, users with uid (the user id), age and gender, and an
    hour of context."""
    redis_client = connect_redis(redis_server.url, timeout_s=5.0)
    publish_bundle(
        redis_client, "validation", synthetic_bundle(20, schema=RICH_SCHEMA), progress=False
    )
    redis_client.close()
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
        ({"user_id": "u", "candidates": [{"item_id": "1", "shop": "x" * 9}]}, "shop"),
        ({"user_id": "u", "candidates": [{"item_id": "1", "shop": 3}]}, "shop"),
        ({"user_id": "u", "history": [{"item_id": "1"}] * 5, "candidates": CANDS}, "history"),
        ({"user_id": "123456789", "candidates": CANDS}, "user_id"),
        ({"user_id": "u", "candidates": CANDS, "extra": 1}, "extra"),
        ({"user_id": "u", "candidates": CANDS, "user": {"age": 30}}, "age"),
        ({"user_id": "u", "candidates": CANDS, "user": ["age"]}, "user"),
        ({"user_id": "u", "candidates": CANDS, "context": {"hour": ""}}, "hour"),
    ],
)
def test_bad_input_gets_422_naming_the_field(client, payload, field):
    assert field in problem(client, payload)


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({"candidates": [*CANDS, {"item_id": "2", "shopp": "s1"}]}, ["candidates", 1, "shopp"]),
        ({"history": [{"item_id": "2", "category": "c"}]}, ["history", 0, "category"]),
        ({"user": {"agee": "age1"}}, ["user", "agee"]),
        ({"user": {"hour": "hour1"}}, ["user", "hour"]),  # a context field, not a user one
        ({"user": {"uid": "uid1"}}, ["user", "uid"]),  # the user id goes in user_id
        ({"context": {"age": "age1"}}, ["context", "age"]),
    ],
)
def test_field_names_the_version_does_not_declare_get_422_naming_them(client, payload, loc):
    body = problem(client, {"user_id": "u", "candidates": CANDS} | payload)
    (error,) = httpx.Response(422, content=body).json()["detail"]
    assert error["loc"] == ["body", *loc] and "v1" in error["msg"]


def test_declared_fields_are_accepted(client):
    payload = {
        "user_id": "uid1",
        "user": {"age": "age1", "gender": "gender0"},
        "context": {"hour": "hour2"},
        "history": [{"item_id": "s1", "shop": "shop1", "brand": "brand1"}],
        "candidates": [{"item_id": "s2", "brand": "brand3"}],
    }
    response = client.post("/v1/score", json=payload)
    assert response.status_code == 200 and response.json()["unknown_ids"] == {}


def test_rejected_requests_are_counted_per_route_and_outcome(client):
    def count(route: str, outcome: str) -> float:
        line = f'ctr_requests_total{{outcome="{outcome}",route="{route}",version=""}} '
        found = [x for x in client.get("/metrics").text.splitlines() if x.startswith(line)]
        return float(found[0].split()[-1]) if found else 0.0

    before = {k: count(*k) for k in [("score", "invalid"), ("explain", "invalid")]}
    before |= {k: count(*k) for k in [("score", "too_large"), ("explain", "too_large")]}
    problem(client, {"user_id": "u"})
    problem(client, {"user_id": "u", "candidates": CANDS, "user": {"agee": "1"}})
    problem(client, content=b"[" * 5000, status=413)
    response = client.post("/v1/explain", json={"user_id": "u", "candidates": [{"x": "1"}]})
    assert response.status_code == 422
    response = client.post("/v1/explain", content=b"[" * 5000)
    assert response.status_code == 413
    after = {k: count(*k) for k in before}
    assert after[("score", "invalid")] == before[("score", "invalid")] + 2
    assert after[("score", "too_large")] == before[("score", "too_large")] + 1
    assert after[("explain", "invalid")] == before[("explain", "invalid")] + 1
    assert after[("explain", "too_large")] == before[("explain", "too_large")] + 1


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_nan_and_infinity_where_ids_are_expected_get_422(client, number):
    body = b'{"user_id": "u", "candidates": [{"item_id": %s}]}' % number
    assert "item_id" in problem(client, content=body)


def test_malformed_json_is_a_4xx(client):
    assert "json" in problem(client, content=b'{"user_id": "u", "candidates": [').lower()


def test_body_over_the_limit_is_413_before_parsing(client):
    assert "body_too_large" in problem(client, content=b"[" * 5000, status=413)


@pytest.mark.parametrize("path", ["/v1/score", "/v1/explain", "/v1/events"])
def test_the_post_routes_answer_other_methods_with_405(client, path):
    """The POST routes are answered ahead of the router (app/main.py ServingApp); any other
    method still reaches the router, which names the allowed one."""
    response = client.get(path)
    assert response.status_code == 405 and response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("path", "root_path"),
    [("/v1/score", ""), ("/api/v1/score", "/api"), ("/v1/score", "/api")],
)
def test_the_post_routes_are_found_under_a_root_path(path, root_path):
    """uvicorn --root-path puts the root path in front of scope["path"]; a client of the
    ASGI app may not."""
    assert route_path({"path": path, "root_path": root_path}) == "/v1/score"


def test_unicode_ids_are_fine(client):
    response = client.post("/v1/score", json={"user_id": "ü", "candidates": [{"item_id": "広告"}]})
    assert response.status_code == 200 and response.json()["unknown_ids"] == {
        "item_id": 1,
        "uid": 1,
    }


@pytest.fixture(scope="module")
def roomy_client(redis_server, client):
    """The default 1 MB body limit, so deep nesting reaches the JSON parser."""
    with in_process(redis_server.url, "validation") as roomy:
        yield roomy


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"user_id": "u", "candidates": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ],
    ids=["arrays", "arrays-in-a-field", "objects"],
)
def test_deeply_nested_json_is_a_422_not_a_crash(roomy_client, body):
    assert "recursion limit" in problem(roomy_client, content=body)


def with_id(field: str, value: str) -> dict:
    payload = {"user_id": "u", "candidates": [{"item_id": "1"}]}
    if field == "user_id":
        payload["user_id"] = value
    elif field == "shop":
        payload["candidates"] = [{"item_id": "1", "shop": value}]
    elif field == "age":
        payload["user"] = {"age": value}
    else:
        payload["history"] = [{"item_id": value}]
    return payload


@pytest.mark.parametrize("char", ["\x7f", "\n", "\t", "\x1f", "\r"])
@pytest.mark.parametrize("field", ["user_id", "shop", "age", "history"])
def test_control_characters_in_any_id_get_422(client, char, field):
    assert field in problem(client, with_id(field, f"a{char}b"))


@pytest.mark.parametrize(
    "body",
    [
        b'{"user_id": "\\ud800x", "candidates": [{"item_id": "1"}]}',
        b'{"user_id": "u", "candidates": [{"item_id": "\\udfff"}]}',
        b'{"user_id": "\xff\xfe", "candidates": [{"item_id": "1"}]}',
        b'\xef\xbb\xbf{"user_id": "u", "candidates": [{"item_id": "1"}]}',
        b'{"user_id": "u", "candidates": [{"item_id": "1"}]} trailing',
    ],
    ids=["lone-high-surrogate", "lone-low-surrogate", "invalid-utf8", "bom", "trailing-garbage"],
)
def test_undecodable_text_is_a_422_not_a_500(client, body):
    assert "json_invalid" in problem(client, content=body)


def test_astral_and_invisible_unicode_ids_are_scored(client):
    ids = ["\U0001f600", "\u200b\u202e", "\ufeffx"]
    payload = {"user_id": "\u05d0", "candidates": [{"item_id": i} for i in ids]}
    response = client.post("/v1/score", json=payload)
    assert response.status_code == 200 and response.json()["unknown_ids"] == {
        "item_id": 3,
        "uid": 1,
    }


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def raw_post(port: int, headers: bytes, body_parts: list[bytes]) -> bytes:
    """Send a request whose body never ends, and read whatever the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n")
        for part in body_parts:
            sock.sendall(part)
        reply = b""
        while b"}" not in reply and (data := sock.recv(4096)):  # up to the end of the JSON
            reply += data
        return reply


def test_oversized_bodies_get_413_before_the_body_is_complete(redis_server, client):
    with service_process(redis_server.url, "validation", max_body_bytes=4096) as service:
        service.wait_ready()
        chunked = b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        reply = raw_post(service.port, chunked, [chunk(b"[" * 2048)] * 3)  # no last chunk
        assert reply.startswith(b"HTTP/1.1 413") and b"body_too_large" in reply
        declared = b"Content-Type: application/json\r\nContent-Length: 10000000000\r\n"
        reply = raw_post(service.port, declared, [b"{"])
        assert reply.startswith(b"HTTP/1.1 413") and b"body_too_large" in reply
