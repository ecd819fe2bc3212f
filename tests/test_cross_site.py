"""No cross-site writes: the POST routes read only application/json (a page's text/plain
or form POST needs no CORS preflight), no CORS origin is allowed unless configured, an
optional bearer token guards events and the version registry, ids refuse every control
character. In-process, against the suite's redis-server."""

from __future__ import annotations

import pytest

from tests.service import in_process

EVENT = {"events": [{"user_id": "u1", "item_id": "i1", "time": 1_733_059_200, "event_id": "e1"}]}
SCORE = {"user_id": "u", "candidates": [{"item_id": "1"}]}


@pytest.fixture
def service(redis_server, ns):
    with in_process(redis_server.url, ns, ready=False) as client:
        yield client


@pytest.mark.parametrize("path", ["/v1/score", "/v1/explain", "/v1/events"])
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None],
)
def test_a_post_that_is_not_json_gets_415(service, path, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = service.post(path, content=b'{"user_id": "u"}', headers=headers)
    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported_media_type"
    assert response.json()["loc"] == ["header", "content-type"]


def test_json_with_a_utf8_charset_is_read(service):
    headers = {"content-type": "application/json; charset=UTF-8"}
    response = service.post("/v1/score", content=b"{}", headers=headers)
    assert response.status_code == 422  # read and validated, not refused unread


def test_no_origin_is_allowed_by_default(service):
    preflight = service.options(
        "/v1/events",
        headers={"origin": "https://elsewhere.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_a_configured_origin_is_allowed_and_no_other(redis_server, ns):
    allowed = "https://shop.example"
    with in_process(redis_server.url, ns, ready=False, cors_origins=[allowed]) as client:
        ask = {"access-control-request-method": "POST"}
        ok = client.options("/v1/score", headers={"origin": allowed} | ask)
        assert ok.headers["access-control-allow-origin"] == allowed
        other = client.options("/v1/score", headers={"origin": "https://evil.example"} | ask)
        assert "access-control-allow-origin" not in other.headers
        posted = client.post("/v1/score", json=SCORE, headers={"origin": allowed})
        assert posted.headers["access-control-allow-origin"] == allowed


def test_the_token_guards_events_and_versions_only(redis_server, ns):
    with in_process(redis_server.url, ns, ready=False, api_token="s3cret") as client:
        for method, path in (("POST", "/v1/events"), ("GET", "/v1/versions")):
            bare = client.request(method, path, json=EVENT)
            assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"
            wrong = client.request(method, path, json=EVENT, headers={"authorization": "Bearer x"})
            assert wrong.status_code == 401
        good = {"authorization": "Bearer s3cret"}
        assert client.post("/v1/events", json=EVENT, headers=good).status_code == 202
        assert client.get("/v1/versions", headers=good).status_code == 200
        assert client.get("/healthz").status_code == 200  # probes stay open


@pytest.mark.parametrize("character", ["\u0085", "\u2028", "\u2029", "\x9f", "\x7f", "\x00"])
def test_ids_with_a_control_character_get_422(service, character):
    event = {"events": [EVENT["events"][0] | {"item_id": f"i{character}1"}]}
    refused_event = service.post("/v1/events", json=event)
    assert refused_event.status_code == 422, refused_event.text
    assert "item_id" in refused_event.text
    score = SCORE | {"user_id": f"u{character}"}
    refused_score = service.post("/v1/score", json=score)
    assert refused_score.status_code == 422 and "user_id" in refused_score.text
