"""A small keep-alive HTTP/1.1 load generator: one asyncio connection per concurrent client,
pre-built request bytes, each answer read by its Content-Length.

    latencies, seconds, errors = asyncio.run(run_load(port, requests, concurrency=8, total=640))
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np


def score_body(history: list[str], candidates: list[str], user_id: str = "gpucheck") -> bytes:
    """A /v1/score body with an explicit history (so T is exactly len(history))."""
    body = {
        "user_id": user_id,
        "history": [{"item_id": i} for i in history],
        "candidates": [{"item_id": i} for i in candidates],
    }
    return json.dumps(body).encode()


def random_bodies(item_ids: np.ndarray, n: int, t: int, c: int, seed: int = 4) -> list[bytes]:
    """n bodies of t behaviours and c candidates, all distinct items within a body."""
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(n):
        chosen = rng.choice(item_ids, size=t + c, replace=False).astype(str).tolist()
        bodies.append(score_body(chosen[:t], chosen[t:]))
    return bodies


def raw_request(port: int, body: bytes, path: str = "/v1/score") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError(f"no Content-Length in {head[:200]!r}")


async def probe(port: int, request: bytes) -> tuple[int, dict]:
    """One request on its own connection: (status code, JSON body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.readexactly(content_length(head))
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def one_connection(port: int, requests: list[bytes], first: int, n: int, out: list) -> int:
    """n requests in turn on one connection; their latencies go to `out`; returns the errors."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors = 0
    try:
        for i in range(first, first + n):
            started = time.perf_counter()
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(content_length(head))
            out.append(time.perf_counter() - started)
            errors += not head.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
    return errors


async def run_load(port: int, requests: list[bytes], concurrency: int, total: int):
    """(latencies in s, wall seconds, non-200 answers) of `total` requests on `concurrency`
    connections."""
    latencies: list[float] = []
    each = max(total // concurrency, 1)
    started = time.perf_counter()
    errors = await asyncio.gather(
        *(one_connection(port, requests, k * 7, each, latencies) for k in range(concurrency))
    )
    return np.array(latencies), time.perf_counter() - started, sum(errors)


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
