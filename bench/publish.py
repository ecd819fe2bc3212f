"""Section 5, bulk load: the exporter's row writes against redis-benchmark on the same server.

export.publish.write_rows loads N synthetic float32 item rows of the schema's width (44
values, 176 bytes, for the MovieLens example; keys named as the service names them), and
export.buckets.write_buckets the same rows in hash buckets (`--row-layout buckets`); the
reference is `redis-benchmark -t set -d <row bytes> -P 64 -n N -r N`, the server's own
pipelined SET rate with random keys. Each repeat starts from an empty server (FLUSHALL).

    python -m bench.publish [--rows 1000000] [--dim 44]
"""

from __future__ import annotations

import shutil
import subprocess
import time

from bench.common import median, rate
from bench.servers import RedisBinary, redis_binaries, redis_server
from core import keys
from core.row_store import bucket_count
from core.rows import encode_rows, row_nbytes
from export.buckets import TablePlan, verify_buckets, write_buckets
from export.publish import write_rows
from export.synthetic import synthetic_table

ROWS = 1_000_000
REPEATS = 3
DIM = 44  # the MovieLens example's item row: item_id 18 + cat 18 + year 8


def prepare_rows(n: int, dim: int) -> tuple[list[str], list[str], list[bytes], float]:
    """Ids, keys and row bytes as publish_bundle builds them, and the seconds that took."""
    ids, rows = synthetic_table(n, dim)
    started = time.perf_counter()
    row_keys = keys.row_keys("din", "v1", "item", ids.tolist())
    values = encode_rows(rows, "float32")
    return ids.tolist(), row_keys, values, time.perf_counter() - started


def time_write_rows(client, row_keys: list[str], values: list[bytes]) -> float:
    client.flushall()
    started = time.perf_counter()
    write_rows(client, row_keys, values)
    elapsed = time.perf_counter() - started
    if client.dbsize() != len(row_keys):
        raise RuntimeError(f"write_rows left {client.dbsize()} of {len(row_keys)} keys")
    return len(row_keys) / elapsed


def time_write_buckets(client, ids: list[str], values: list[bytes]) -> float:
    """Rows/s of the bucket layout, its plan (which bucket each row goes to) included."""
    client.flushall()
    started = time.perf_counter()
    plan = TablePlan.of(ids, bucket_count(len(ids), "buckets"))
    write_buckets(client, keys.row_prefix("din", "v1", "item"), plan, values)
    elapsed = time.perf_counter() - started
    if (found := verify_buckets(client, keys.row_prefix("din", "v1", "item"), plan, 0)) != len(ids):
        raise RuntimeError(f"write_buckets left {found} of {len(ids)} rows")
    return len(ids) / elapsed


def redis_benchmark_rate(port: int, n: int, row_bytes: int, pipeline: int = 64) -> float:
    """SET requests/s that redis-benchmark reaches (its default 50 connections)."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise FileNotFoundError("redis-benchmark is not on PATH")
    command = [binary, "-h", "127.0.0.1", "-p", str(port), "-t", "set", "-d", str(row_bytes)]
    command += ["-P", str(pipeline), "-n", str(n), "-r", str(n), "--csv"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        cells = [cell.strip('"') for cell in line.split(",")]
        if cells[0] == "SET":
            return float(cells[1])
    raise RuntimeError(f"no SET line in redis-benchmark output: {out!r}")


def run_publish(n: int = ROWS, dim: int = DIM, binary: RedisBinary | None = None) -> dict:
    ids, row_keys, values, prepare_s = prepare_rows(n, dim)
    row_bytes = row_nbytes(dim, "float32")
    writes, buckets, references = [], [], []
    with redis_server(binary or redis_binaries()[0]) as (server, client):
        for _ in range(REPEATS):
            writes.append(time_write_rows(client, row_keys, values))
            buckets.append(time_write_buckets(client, ids, values))
            client.flushall()
            references.append(redis_benchmark_rate(server.port, n, row_bytes))
    write, reference = median(writes), median(references)
    return {
        "rows": n,
        "row_bytes": row_bytes,
        "prepare_s": prepare_s,
        "write_rows_per_s": write,
        "write_rows_runs": writes,
        "write_buckets_per_s": median(buckets),
        "write_buckets_runs": buckets,
        "redis_benchmark_per_s": reference,
        "redis_benchmark_runs": references,
        "ratio": write / reference,
        "ratio_buckets": median(buckets) / reference,
    }


def spread(runs: list[float]) -> str:
    return f"{rate(min(runs))}-{rate(max(runs))}"


def publish_rows(result: dict) -> list[list[str]]:
    return [
        [
            "export.publish.write_rows",
            rate(result["write_rows_per_s"]),
            spread(result["write_rows_runs"]),
        ],
        [
            "export.buckets.write_buckets",
            rate(result["write_buckets_per_s"]),
            spread(result["write_buckets_runs"]),
        ],
        [
            f"redis-benchmark -t set -d {result['row_bytes']} -P 64 -r N",
            rate(result["redis_benchmark_per_s"]),
            spread(result["redis_benchmark_runs"]),
        ],
    ]


PUBLISH_HEADER = ["bulk load", "rows/s", "range"]


def publish_table(result: dict) -> tuple:
    title = (
        f"Bulk load, {result['rows']:,} rows of {result['row_bytes']} bytes "
        f"(ratio {result['ratio']:.2f})"
    )
    return title, PUBLISH_HEADER, publish_rows(result)


if __name__ == "__main__":
    import argparse

    from bench.report import print_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--dim", type=int, default=DIM)
    args = parser.parse_args()
    result = run_publish(args.rows, args.dim)
    print_table(*publish_table(result))
