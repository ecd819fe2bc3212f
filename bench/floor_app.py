"""The least a scoring service can be on this stack: uvicorn, and onnxruntime's session.run on
tensors built once at start-up, with nothing between them (no parsing, no Redis, no metrics).

bench/http_floor.py starts it as its own uvicorn process and times it with the same load
generator and request bodies as the real service, so the two HTTP figures differ only by what
the service does per request. FLOOR_GRAPH and FLOOR_FEEDS name the graph and an .npz of its
feeds; FLOOR_MODE is `hop` (session.run on a worker thread, as the service runs it) or
`inline` (on the event loop thread).
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson

from app.scorer import create_session

session = create_session(Path(os.environ["FLOOR_GRAPH"]).read_bytes(), "cpu", threads=1)
feeds = dict(np.load(os.environ["FLOOR_FEEDS"]))
output = session.get_outputs()[0].name
inline = os.environ.get("FLOOR_MODE", "hop") == "inline"
workers = ThreadPoolExecutor(4, thread_name_prefix="score")  # as many as the service's default
HEADERS = [(b"content-type", b"application/json")]


def scores() -> bytes:
    return orjson.dumps({"scores": session.run([output], feeds)[0][0].tolist()})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        return await send({"type": "lifespan.shutdown.complete"})
    more = True
    while more:  # the body is read, as the service reads it, and ignored
        more = (await receive()).get("more_body", False)
    if inline:
        body = scores()
    else:
        body = await asyncio.get_running_loop().run_in_executor(workers, scores)
    length = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS + length})
    await send({"type": "http.response.body", "body": body})
