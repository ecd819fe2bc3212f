"""The end-to-end demo: Redis, MovieLens-100K under its example feature schema, samples,
train, export, publish, live histories, serve, one scored and one explained request.

make demo            # or: python -m scripts.demo --port 8000
make stop            # stops the service and Redis it left running
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from app.requests import EXAMPLE_REQUEST
from devtools.local_redis import LocalRedis, free_port
from devtools.local_service import LocalService
from export.movielens import prepare_movielens

RUN_DIR = Path(".run")
NAMESPACE = "din"


def start_redis() -> str:
    server = LocalRedis(port=free_port(), workdir=RUN_DIR).start(detached=True)
    (RUN_DIR / "redis.pid").write_text(str(server.process.pid))
    print(f"redis-server {server.url} (pid {server.process.pid})")
    return server.url


def train_and_publish(redis_url: str) -> None:
    """Exactly what a user runs with their own log, on the MovieLens example schema."""
    schema = prepare_movielens(Path("data"))
    print(f"feature schema: {schema} (a copy of examples/movielens-100k.yaml)")
    command = [sys.executable, "-m", "export.cli", "run", "--schema", str(schema)]
    subprocess.run([*command, "--redis-url", redis_url, "--namespace", NAMESPACE], check=True)


def start_service(redis_url: str, port: int) -> None:
    log_path = RUN_DIR / "service.log"
    service = LocalService(
        redis_url, NAMESPACE, port=port, log_path=log_path, detached=True, log_level="INFO"
    ).start()
    (RUN_DIR / "service.pid").write_text(str(service.process.pid))
    service.wait_ready()
    print(f"service {service.url} (pid {service.process.pid}, log {log_path})")


def show_request(port: int) -> None:
    body = json.dumps(EXAMPLE_REQUEST)
    print("\nScore three candidate movies for user 196 (profile and context given):\n")
    print(
        f"  curl -s -X POST http://127.0.0.1:{port}/v1/score \\\n"
        f"       -H 'content-type: application/json' \\\n       -d '{body}'\n"
    )
    answer = httpx.post(f"http://127.0.0.1:{port}/v1/score", json=EXAMPLE_REQUEST, timeout=5)
    print(json.dumps(answer.json(), indent=2))
    show_explanation(port)
    print(f"\nSee it: http://127.0.0.1:{port}/ui   (bars, attention heatmap, training report)")
    print(f"Docs: http://127.0.0.1:{port}/docs   Metrics: http://127.0.0.1:{port}/metrics")
    print("Training report: artifacts/bundle/report.png and report.md")
    print("Stop everything with: make stop")


def show_explanation(port: int, top: int = 3) -> None:
    """The same request through /v1/explain: the behaviours that weighed most per candidate."""
    answer = httpx.post(f"http://127.0.0.1:{port}/v1/explain", json=EXAMPLE_REQUEST, timeout=5)
    print(f"\nWhy (POST /v1/explain): the {top} past movies that weighed most for each candidate")
    for candidate in answer.json()["candidates"]:
        name = candidate["title"] or candidate["item_id"]
        heaviest = ", ".join(b["title"] or b["item_id"] for b in candidate["behaviours"][:top])
        fields = ", ".join(f"{k}={v}" for k, v in candidate["fields"].items())
        print(f"  {name} [{fields}] ({candidate['score']:.3f}): {heaviest}")


def stop() -> None:
    for name in ("service", "redis"):
        pid_file = RUN_DIR / f"{name}.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
                print(f"stopped {name}")
            except ProcessLookupError:
                pass
            pid_file.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stop", action="store_true", help="stop a running demo")
    args = parser.parse_args()
    stop()
    if args.stop:
        return
    RUN_DIR.mkdir(exist_ok=True)
    redis_url = start_redis()
    train_and_publish(redis_url)
    start_service(redis_url, args.port)
    show_request(args.port)


if __name__ == "__main__":
    main()
