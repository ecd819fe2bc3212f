"""The body-size limit: 413 before parsing, and before the whole body has even arrived."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ROUTES = {
    "/v1/score": "score",
    "/v1/explain": "explain",
    "/v1/events": "events",
}  # the ctr_requests_total route label


class BodySizeLimit:
    """Answers 413 once a body passes max_bytes, without reading the rest of it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(scope, send)
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._too_large(scope, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        count_too_large(scope)
        body = b'{"error":"body_too_large","detail":"request body exceeds %d bytes"}' % (
            self.max_bytes
        )
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


def count_too_large(scope: Scope) -> None:
    state = getattr(scope["app"].state, "ctr", None)  # absent only before the lifespan ran
    if state is not None:
        route = ROUTES.get(scope["path"], "other")
        state.metrics.requests.labels(route=route, outcome="too_large", version="").inc()
