"""Live histories from the behaviour stream: the event contract, the worker applying events
(in process and as killed and restarted processes), dead letters, Redis Cluster partitions,
and POST /v1/events' handler.

pytest -q tests/test_ingest.py
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from redis.crc import key_slot

from app.events import handle_events
from app.metrics import Metrics
from core import events, keys
from core.manifest import Manifest
from core.redis_conn import RedisClient, connect_redis
from core.schema import two_field_schema
from devtools.local_redis import LocalRedis, free_port, stop_process
from ingest.config import IngestSettings
from ingest.metrics import serve_http
from ingest.worker import EVENTS_PER_CALL, StreamConsumer, Worker, plan_calls, read_limits

ROOT = Path(__file__).resolve().parent.parent
MAX_HISTORY = 150  # of the published test version: longer than any test user's events
DAY_S = 86_400


# ---------------------------------------------------------------- helpers


def publish_version(client: RedisClient, ns: str, version: str = "v1", max_history=MAX_HISTORY):
    """A listed version whose schema has one item-side field, cat (no rows: the worker reads
    only the manifest)."""
    schema = two_field_schema(max_history=max_history)
    manifest = Manifest(version, time.time(), "float32", {}, schema, "", [], "")
    client.set(keys.manifest_key(ns, version), manifest.to_json())
    client.zadd(keys.versions_key(ns), {version: time.time()})
    return manifest


def worker_settings(url: str, ns: str, **overrides) -> IngestSettings:
    base = {"redis_url": url, "namespace": ns, "ingest_metrics_port": 0, "ingest_block_ms": 100}
    return IngestSettings(**base | overrides)


def workload(n_users: int, per_user: int, seed: int = 0) -> list[dict[str, str]]:
    """Each user's events in time order, users interleaved at random; every third event
    carries a category, every event an event id."""
    rng = random.Random(seed)
    queues = {f"u{u}": [] for u in range(n_users)}
    for user, queue in queues.items():
        for k in range(per_user):
            side = {"cat": f"c{k % 5}"} if k % 3 == 0 else {}
            item = f"i{rng.randrange(1000)}"
            queue.append(events.event_fields(user, item, 1_700_000_000 + k, f"{user}-{k}", side))
    ordered = []
    while queues:
        user = rng.choice(list(queues))
        ordered.append(queues[user].pop(0))
        if not queues[user]:
            del queues[user]
    return ordered


def expected_histories(sent: list[dict[str, str]], max_history: int = MAX_HISTORY) -> dict:
    """Each event once, in time order, the last max_history kept."""
    by_user: dict[str, list[tuple[float, str]]] = {}
    for fields in {f.get("event_id", id(f)): f for f in sent}.values():
        side = {k: v for k, v in fields.items() if k not in events.BASE_FIELDS}
        entry = events.encode_behaviour(fields["item_id"], side)
        by_user.setdefault(fields["user_id"], []).append((float(fields["time"]), entry))
    return {u: [e for _, e in sorted(rows)][-max_history:] for u, rows in by_user.items()}


def stored_histories(client: RedisClient, ns: str, users) -> dict[str, list[str]]:
    users = sorted(users)
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.lrange(keys.history_key(ns, user), 0, -1)
    return {u: [e.decode() for e in rows] for u, rows in zip(users, pipe.execute(), strict=True)}


def applied_count(client: RedisClient, ns: str, users) -> int:
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.llen(keys.history_key(ns, user))
    return sum(pipe.execute())


def group_state(client: RedisClient, stream: str, group: str = events.DEFAULT_GROUP) -> dict:
    [info] = [g for g in client.xinfo_groups(stream) if g["name"].decode() == group]
    return info


def drained(client: RedisClient, streams: list[str]) -> bool:
    """Every entry delivered to the group and acknowledged."""
    try:
        states = [group_state(client, stream) for stream in streams]
    except ValueError:  # no group yet
        return False
    return all(s["pending"] == 0 and s["lag"] == 0 for s in states)


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting until {what}")
        time.sleep(0.005)


def dead_letters(client: RedisClient, ns: str) -> list[dict[str, str]]:
    rows = client.xrange(keys.dead_letter_key(ns))
    return [
        {k.decode(): v.decode(errors="replace") for k, v in fields.items()} for _, fields in rows
    ]


def sample(worker: Worker, name: str, **labels) -> float:
    return worker.metrics.registry.get_sample_value(name, labels or None) or 0.0


@contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """The worker's real loops on threads of this process."""
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(timeout=30)


class WorkerProcess:
    """`python -m ingest.cli` with CTR_* settings; its log goes to a file shown on failure."""

    def __init__(self, url: str, ns: str, log_dir: Path, **settings) -> None:
        self.metrics_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}
        env |= {"CTR_REDIS_URL": url, "CTR_NAMESPACE": ns, "CTR_LOG_LEVEL": "WARNING"}
        defaults = {"ingest_batch": 100, "ingest_block_ms": 200, "ingest_claim_idle_ms": 500}
        defaults |= {"redis_timeout_s": 0.5, "ingest_metrics_port": self.metrics_port}
        env |= {f"CTR_{k.upper()}": str(v) for k, v in (defaults | settings).items()}
        self.env, self.log_path = env, log_dir / f"ingest-{self.metrics_port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child writes to it)
        command = [sys.executable, "-m", "ingest.cli"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=log)
        return self

    def get(self, path: str) -> str | None:
        try:
            url = f"http://127.0.0.1:{self.metrics_port}{path}"
            return urllib.request.urlopen(url, timeout=1).read().decode()
        except OSError:
            return None

    def healthy(self) -> bool:
        return self.get("/healthz") is not None

    def applied(self) -> float:
        """ctr_ingest_events_total as its /metrics says; 0 until it answers."""
        lines = (self.get("/metrics") or "").splitlines()
        found = [x for x in lines if x.startswith("ctr_ingest_events_total")]
        return float(found[0].split()[-1]) if found else 0.0

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        stop_process(self.process, timeout_s=10)

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]


@pytest.fixture
def processes(tmp_path):
    started: list[WorkerProcess] = []

    def start(url: str, ns: str, **settings) -> WorkerProcess:
        started.append(WorkerProcess(url, ns, tmp_path, **settings).start())
        return started[-1]

    yield start
    for process in started:
        process.stop()


# ---------------------------------------------------------------- the contract


def test_history_entries_round_trip_with_and_without_side_fields():
    entries = [events.encode_behaviour("i1", {}), events.encode_behaviour("i2", {"cat": "A"})]
    assert entries == ["i1", 'i2\x1f{"cat":"A"}']
    raw = [e.encode() for e in entries]
    assert events.decode_behaviours(raw) == (["i1", "i2"], [{}, {"cat": "A"}])
    assert events.decode_behaviours([b"a", b"b"]) == (["a", "b"], [{}, {}])
    assert events.decode_behaviours([]) == ([], [])
    assert events.decode_behaviours([b"x\x1fnot json"]) == (["x"], [{}])


@pytest.mark.parametrize(
    "side", [{"cat": "A"}, {"b": 'say "hi"', "a": "é\\\n\u2028"}, {"z": "1", "y": "😀"}]
)
def test_side_fields_are_encoded_as_compact_json_with_sorted_keys(side):
    expected = json.dumps(side, separators=(",", ":"), sort_keys=True)
    assert events.encode_behaviour("i", side) == "i\x1f" + expected
    assert events.decode_behaviour(events.encode_behaviour("i", side)) == ("i", side)


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"item_id": "i", "time": "1"}, "user_id", "missing"),
        ({"user_id": "u", "item_id": "i", "time": "soon"}, "time", "not a non-negative"),
        ({"user_id": "u", "item_id": "i", "time": "-3"}, "time", "not a non-negative"),
        ({"user_id": "u", "item_id": "i" * 9, "time": "1"}, "item_id", "longer than 8"),
        ({"user_id": "u\x07", "item_id": "i", "time": "1"}, "user_id", "control character"),
        ({"user_id": "u", "item_id": "i", "time": "1", "colour": "red"}, "colour", "unknown"),
        ({"user_id": "u", "item_id": "", "time": "1"}, "item_id", "empty"),
        ({b"user_id": b"\xff", b"item_id": b"i", b"time": b"1"}, "user_id", "not UTF-8"),
    ],
)
def test_invalid_events_name_the_field_and_the_reason(fields, field, reason):
    with pytest.raises(events.EventError) as error:
        events.validate_event(fields, {"cat"}, max_id_length=8)
    assert error.value.field == field
    assert reason in error.value.reason


def test_valid_event_reads_bytes_and_keeps_declared_side_fields():
    fields = {b"user_id": b"u", b"item_id": b"i", b"time": b"1733059200.25", b"cat": b"A"}
    event = events.validate_event(fields, {"cat"}, max_id_length=8)
    assert event == events.Event("u", "i", 1733059200.25, None, {"cat": "A"})
    assert event.dedupe_id("5-1") == "s:5-1"
    assert events.Event("u", "i", 1.0, "e7").dedupe_id("5-1") == "e:e7"


def test_partitions_keep_a_user_in_one_stream_and_spread_over_slot_ranges():
    assert events.stream_keys("din", 1) == ["din:behaviours"]
    streams = events.stream_keys("din", 3)
    thirds = [key_slot(s.encode()) * 3 // 16384 for s in streams]
    assert thirds == [0, 1, 2]
    assert {events.stream_for("din", "u42", 3) for _ in range(3)} == {
        streams[events.partition_of("u42", 3)]
    }
    assert events.partition_of("u42", 3) == events.partition_of("u42", 3) < 3


def test_event_fields_write_whole_seconds_as_integers():
    assert events.event_fields("u", "i", 1733059200)["time"] == "1733059200"
    assert events.event_fields("u", "i", 1733059200.0)["time"] == "1733059200"
    assert events.event_fields("u", "i", 0.5, "e", {"cat": "A"}) == {
        "user_id": "u",
        "item_id": "i",
        "time": "0.5",
        "event_id": "e",
        "cat": "A",
    }


def test_script_calls_never_split_a_user_nor_mix_hash_slots():
    by_user = {"a": [1] * 40, "b": [1] * 10, "c": [1] * 10, "d": [1] * 5, "e": [1] * 30}
    group = {"a": 0, "b": 0, "c": 0, "d": 1, "e": 0}.__getitem__
    calls = plan_calls(by_user, group)
    assert sorted(u for call in calls for u in call) == sorted(by_user)
    assert all(len({group(u) for u in call}) == 1 for call in calls)
    for call in calls:
        assert sum(len(by_user[u]) for u in call) <= EVENTS_PER_CALL or len(call) == 1


# ---------------------------------------------------------------- applying, in process


@pytest.mark.parametrize("partitions", [1, 3])
def test_events_reach_the_history_in_time_order_with_every_user_key_expiring(
    redis_client, redis_server, ns, partitions
):
    publish_version(redis_client, ns)
    redis_client.hset(keys.profile_key(ns, "u1"), mapping={"age": "25"})
    sent = workload(n_users=3, per_user=20)
    settings = {"history_ttl_s": 3600, "stream_partitions": partitions}
    worker = Worker(worker_settings(redis_server.url, ns, **settings))
    with running(worker):
        events.add_events(redis_client, ns, sent, partitions)
        users = {"u0", "u1", "u2"}
        wait_until(lambda: applied_count(redis_client, ns, users) == len(sent), "applied")
    assert stored_histories(redis_client, ns, users) == expected_histories(sent)
    for key in (keys.history_key, keys.seen_key, keys.profile_key):
        assert 3500 < redis_client.ttl(key(ns, "u1")) <= 3600
    assert sample(worker, "ctr_ingest_events_total") == len(sent)
    assert sample(worker, "ctr_ingest_apply_delay_seconds_count") == len(sent)


def test_a_worker_checks_a_users_ttl_once_per_thirtieth_of_it(redis_client, redis_server, ns):
    publish_version(redis_client, ns)
    settings = worker_settings(redis_server.url, ns, history_ttl_s=3000)
    worker = Worker(settings)
    events.add_events(redis_client, ns, [events.event_fields("u", "i1", 1)], 1)
    worker.drain()
    history = keys.history_key(ns, "u")
    assert 2900 < redis_client.ttl(history) <= 3000
    redis_client.expire(history, 2850)  # as if 150 s had passed: below 29/30 of the TTL
    events.add_events(redis_client, ns, [events.event_fields("u", "i2", 2)], 1)
    worker.drain()  # checked 100 s ago (in its own memory): not checked again
    assert redis_client.ttl(history) <= 2850
    worker.applier.checked.deadlines["u"] = 0.0  # 100 s (a thirtieth) later
    events.add_events(redis_client, ns, [events.event_fields("u", "i3", 3)], 1)
    worker.drain()
    assert 2900 < redis_client.ttl(history) <= 3000
    assert stored_histories(redis_client, ns, ["u"])["u"] == ["i1", "i2", "i3"]


def test_history_is_trimmed_to_the_longest_max_history_of_the_listed_versions(
    redis_client, redis_server, ns
):
    settings = worker_settings(redis_server.url, ns, ingest_max_history_fallback=7)
    assert read_limits(redis_client, ns, 7).max_history == 7  # nothing listed yet
    publish_version(redis_client, ns, "v1", max_history=4)
    publish_version(redis_client, ns, "v2", max_history=6)
    assert read_limits(redis_client, ns, 7).max_history == 6
    sent = [events.event_fields("u", f"i{k}", k, f"e{k}") for k in range(10)]
    events.add_events(redis_client, ns, sent, 1)
    assert Worker(settings).drain() == 10
    assert stored_histories(redis_client, ns, ["u"])["u"] == [f"i{k}" for k in range(4, 10)]


def test_duplicates_by_event_id_and_by_redelivery_are_skipped_and_counted(
    redis_client, redis_server, ns
):
    publish_version(redis_client, ns)
    first = [events.event_fields("u", f"i{k}", k, f"e{k}") for k in range(3)]
    events.add_events(redis_client, ns, first, 1)
    worker = Worker(worker_settings(redis_server.url, ns, ingest_claim_idle_ms=1))
    assert worker.drain() == 3
    again = [first[1], events.event_fields("u", "i3", 3), first[1]]  # e1 twice more
    events.add_events(redis_client, ns, again, 1)
    # A consumer reads the next entries, applies them and dies before acknowledging:
    stream = events.stream_key(ns, 0, 1)
    reply = redis_client.xreadgroup(events.DEFAULT_GROUP, "dies", {stream: ">"})
    worker.applier.apply(worker.prepare(reply[0][1]))  # applied, never acked
    wait_until(lambda: idle_ms(redis_client, stream) > 1, "the entries are claimable")
    assert worker.drain() == 3  # claimed from the dead consumer and applied again
    assert stored_histories(redis_client, ns, ["u"])["u"] == ["i0", "i1", "i2", "i3"]
    assert sample(worker, "ctr_ingest_duplicates_total") == 3  # e1, e1 and the redelivered i3
    assert group_state(redis_client, stream)["pending"] == 0


def test_an_event_id_sent_again_with_a_newer_time_is_still_a_duplicate(
    redis_client, redis_server, ns
):
    publish_version(redis_client, ns)
    worker = Worker(worker_settings(redis_server.url, ns))
    events.add_events(redis_client, ns, [events.event_fields("u", "i1", 1, "e1")], 1)
    assert worker.drain() == 1
    again = [events.event_fields("u", "i2", 2, "e2"), events.event_fields("u", "i9", 9, "e1")]
    events.add_events(redis_client, ns, again, 1)
    assert worker.drain() == 2
    assert stored_histories(redis_client, ns, ["u"])["u"] == ["i1", "i2"]
    assert sample(worker, "ctr_ingest_duplicates_total") == 1


def test_a_user_with_thousands_of_events_in_one_batch_gets_each_once(
    redis_client, redis_server, ns
):
    publish_version(redis_client, ns, "v1", max_history=3000)
    worker = Worker(worker_settings(redis_server.url, ns, ingest_batch=3000))
    sent = [events.event_fields("u", f"i{k}", k, f"e{k}") for k in range(2100)]
    sent.append(events.event_fields("u", "again", 5000, "e7"))  # past Lua's 1000-value chunks
    events.add_events(redis_client, ns, sent, 1)
    assert worker.drain() == len(sent)
    assert stored_histories(redis_client, ns, ["u"])["u"] == [f"i{k}" for k in range(2100)]
    assert sample(worker, "ctr_ingest_duplicates_total") == 1


def test_each_batch_reads_the_next_and_acks_the_last_in_its_round_trip(
    redis_client, redis_server, ns
):
    publish_version(redis_client, ns)
    sent = [events.event_fields(f"u{k % 7}", f"i{k}", k) for k in range(30)]
    events.add_events(redis_client, ns, sent, 1)
    worker = Worker(worker_settings(redis_server.url, ns, ingest_batch=10))
    [stream] = worker.streams
    consumer = StreamConsumer(worker, stream)
    consumer.ensure_group()
    assert consumer.step(None) == 0  # its own backlog, empty: from now on, new entries
    applied, read_ahead, pending = [], [], []
    for _ in range(3):
        assert consumer.step(None) == 10
        applied.append(sample(worker, "ctr_ingest_events_total"))
        read_ahead.append(len(consumer.ready.batch.ids) if consumer.ready else 0)
        pending.append(group_state(redis_client, stream)["pending"])
    assert applied == [10, 20, 30] and read_ahead == [10, 10, 0]
    assert pending == [20, 20, 10]  # the batch read ahead and the one applied, acked next
    assert consumer.step(None) == 0  # nothing more: the last ack goes before the read
    assert group_state(redis_client, stream)["pending"] == 0
    expected = {f"u{u}": [f"i{k}" for k in range(u, 30, 7)] for u in range(7)}
    assert stored_histories(redis_client, ns, expected) == expected


def idle_ms(client: RedisClient, stream: str) -> int:
    pending = client.xpending_range(stream, events.DEFAULT_GROUP, "-", "+", 100)
    return min(p["time_since_delivered"] for p in pending)


def test_late_events_are_placed_by_time_until_older_than_the_dedupe_window(
    redis_client, redis_server, ns
):
    publish_version(redis_client, ns)
    worker = Worker(worker_settings(redis_server.url, ns, dedupe_window=3))
    sent = [events.event_fields("u", f"i{t}", t) for t in (10, 11, 12, 13)]
    events.add_events(redis_client, ns, sent, 1)
    worker.drain()  # the window's newest three: 11, 12, 13
    late = [events.event_fields("u", "i12.5", 12.5), events.event_fields("u", "i5", 5)]
    events.add_events(redis_client, ns, late, 1)
    worker.drain()
    history = stored_histories(redis_client, ns, ["u"])["u"]
    assert history == ["i10", "i11", "i12", "i12.5", "i13"]
    [dead] = dead_letters(redis_client, ns)
    assert dead["reason"] == "late" and dead["item_id"] == "i5"
    assert dead["source"].startswith(events.stream_key(ns, 0, 1))
    assert sample(worker, "ctr_ingest_late_total") == 1
    assert sample(worker, "ctr_ingest_dead_letters_total", reason="late") == 1


@pytest.mark.parametrize("max_history", [MAX_HISTORY, 20])
def test_events_in_any_arrival_order_and_batching_give_the_time_ordered_history(
    redis_client, redis_server, ns, max_history
):
    publish_version(redis_client, ns, max_history=max_history)
    sent = workload(n_users=4, per_user=60, seed=3)
    arrival = random.Random(5).sample(sent, len(sent))  # every user's events shuffled
    arrival += random.Random(6).sample(sent, 40)  # and 40 of them sent again
    worker = Worker(worker_settings(redis_server.url, ns, ingest_batch=7))
    for start in range(0, len(arrival), 50):
        events.add_events(redis_client, ns, arrival[start : start + 50], 1)
        worker.drain()
    expected = expected_histories(sent, max_history)
    assert stored_histories(redis_client, ns, expected) == expected
    assert sample(worker, "ctr_ingest_duplicates_total") == 40
    assert sample(worker, "ctr_ingest_events_total") == len(sent)


@pytest.mark.parametrize("batch", [100, 2])  # 2: most entries arrive read ahead, raw
def test_malformed_entries_are_dead_lettered_and_the_rest_of_the_batch_applied(
    redis_client, redis_server, ns, batch
):
    publish_version(redis_client, ns)
    good = [events.event_fields("u", f"i{k}", k, side={"cat": "A"}) for k in range(3)]
    bad = [
        {"item_id": "i", "time": "1"},
        {"user_id": "u", "item_id": "i", "time": "yesterday"},
        {"user_id": "u", "item_id": "i" * 65, "time": "1"},
        {"user_id": "u", "item_id": "i", "time": "1", "colour": "red"},
        {"user_id": "u", "item_id": b"\xff\xfe", "time": "1"},
    ]
    events.add_events(redis_client, ns, [good[0], *bad[:2], good[1], *bad[2:], good[2]], 1)
    worker = Worker(worker_settings(redis_server.url, ns, ingest_batch=batch))
    assert worker.drain() == 8
    expected = [f'i{k}\x1f{{"cat":"A"}}' for k in range(3)]
    assert stored_histories(redis_client, ns, ["u"])["u"] == expected
    reasons = [d["reason"] for d in dead_letters(redis_client, ns)]
    assert reasons == [
        "invalid: user_id: missing",
        "invalid: time: not a non-negative number of unix seconds",
        "invalid: item_id: longer than 64 characters",
        "invalid: colour: unknown field",
        "invalid: item_id: not UTF-8",
    ]
    assert dead_letters(redis_client, ns)[3]["colour"] == "red"  # the original fields kept
    assert sample(worker, "ctr_ingest_dead_letters_total", reason="invalid") == 5
    assert group_state(redis_client, events.stream_key(ns, 0, 1))["pending"] == 0


def test_a_history_of_the_wrong_type_dead_letters_its_events_and_spares_the_others(
    redis_client, redis_server, ns
):
    publish_version(redis_client, ns)
    redis_client.set(keys.history_key(ns, "broken"), "not a list")
    sent = [events.event_fields(u, "i", 1) for u in ("broken", "fine")]
    events.add_events(redis_client, ns, sent, 1)
    worker = Worker(worker_settings(redis_server.url, ns))
    assert worker.drain() == 2
    assert stored_histories(redis_client, ns, ["fine"])["fine"] == ["i"]
    [dead] = dead_letters(redis_client, ns)
    assert dead["user_id"] == "broken" and dead["reason"].startswith("unappliable: WRONGTYPE")


def test_lag_is_measured_in_entries_and_seconds_and_served_with_health(
    redis_client, redis_server, ns
):
    publish_version(redis_client, ns)
    worker = Worker(worker_settings(redis_server.url, ns))
    stream = events.stream_key(ns, 0, 1)
    worker.drain()  # creates the group
    minute_ago_ms = int(time.time() * 1000) - 60_000
    for k in range(4):  # XADDed a minute ago, as their ids say
        redis_client.xadd(stream, events.event_fields("u", "i", k), id=f"{minute_ago_ms}-{k}")
    worker.tend_streams()
    assert sample(worker, "ctr_ingest_lag_entries", stream=stream) == 4
    assert 60 <= sample(worker, "ctr_ingest_lag_seconds", stream=stream) < 120
    server = serve_http(0, worker.metrics.registry, worker.alive)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert urllib.request.urlopen(base + "/healthz").status == 200
        assert b"ctr_ingest_lag_entries" in urllib.request.urlopen(base + "/metrics").read()
    finally:
        server.shutdown()
    worker.drain()
    worker.tend_streams()
    assert sample(worker, "ctr_ingest_lag_entries", stream=stream) == 0
    assert sample(worker, "ctr_ingest_lag_seconds", stream=stream) == 0


# ---------------------------------------------------------------- crashes, as processes

N_USERS, PER_USER = 50, 100


def prefill(client: RedisClient, ns: str, partitions: int = 1) -> list[dict[str, str]]:
    publish_version(client, ns)
    sent = workload(N_USERS, PER_USER)
    events.add_events(client, ns, sent, partitions)
    return sent


def assert_exactly_once_in_order(client: RedisClient, ns: str, sent, partitions: int = 1):
    streams = events.stream_keys(ns, partitions)
    wait_until(lambda: drained(client, streams), "every entry is acknowledged")
    expected = expected_histories(sent)
    assert stored_histories(client, ns, expected) == expected
    assert dead_letters(client, ns) == []


def kill_mid_batch(client, ns, start: Callable[[], WorkerProcess], users) -> None:
    """Start a worker and SIGKILL it once it has applied part of the backlog, until one dies
    holding a batch it has not acknowledged (a kill can land between two batches)."""
    stream = events.stream_key(ns, 0, 1)
    for attempt in range(5):  # noqa: B007 (named in the failure)
        worker = start()
        done = applied_count(client, ns, users)
        wait_until(lambda d=done: applied_count(client, ns, users) > d + 200, "progress")
        worker.kill()
        if group_state(client, stream)["pending"]:
            return
    raise AssertionError(f"no kill landed mid-batch in {attempt + 1} tries")


def test_worker_killed_mid_batch_loses_nothing_and_applies_nothing_twice(
    redis_client, redis_server, ns, processes
):
    sent = prefill(redis_client, ns)
    users = {f["user_id"] for f in sent}
    kill_mid_batch(redis_client, ns, lambda: processes(redis_server.url, ns), users)
    assert applied_count(redis_client, ns, users) < len(sent)
    processes(redis_server.url, ns)  # another name: claims the dead one's batch once idle
    assert_exactly_once_in_order(redis_client, ns, sent)
    stream = events.stream_key(ns, 0, 1)
    consumers = lambda: redis_client.xinfo_consumers(stream, events.DEFAULT_GROUP)  # noqa: E731
    wait_until(lambda: len(consumers()) == 1, "the dead consumers are forgotten")


def test_sigterm_finishes_the_batch_and_exits_cleanly(redis_client, redis_server, ns, processes):
    sent = prefill(redis_client, ns)
    worker = processes(redis_server.url, ns)
    wait_until(lambda: worker.applied() > 0, "the worker applies")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=30) == 0, worker.log()
    stream = events.stream_key(ns, 0, 1)
    assert group_state(redis_client, stream)["pending"] == 0  # its last batch acknowledged
    processes(redis_server.url, ns)
    assert_exactly_once_in_order(redis_client, ns, sent)


def test_redis_killed_and_restarted_mid_stream_loses_nothing(ns, processes, tmp_path):
    aof = ["--appendonly", "yes", "--appendfsync", "always"]
    server = LocalRedis(workdir=tmp_path / "redis", extra_args=aof).start()
    client = connect_redis(server.url, timeout_s=5.0)
    try:
        sent = prefill(client, ns)
        users = {f["user_id"] for f in sent}
        worker = processes(server.url, ns)
        wait_until(lambda: applied_count(client, ns, users) > len(sent) // 4, "progress")
        before_kill = applied_count(client, ns, users)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        server.start()
        assert before_kill < len(sent)
        assert_exactly_once_in_order(client, ns, sent)
        assert worker.process.poll() is None, worker.log()
    finally:
        client.close()
        server.stop()


def test_two_workers_in_one_group_share_the_stream_and_survive_one_killed(
    redis_client, redis_server, ns, processes
):
    publish_version(redis_client, ns)
    one, two = (processes(redis_server.url, ns, ingest_batch=50) for _ in range(2))
    wait_until(lambda: one.healthy() and two.healthy(), "both workers are up")
    sent = workload(N_USERS, PER_USER)
    events.add_events(redis_client, ns, sent, 1)  # both wait on the stream: both get entries
    wait_until(lambda: one.applied() > 0 and two.applied() > 0, "both workers apply")
    one.kill()
    assert_exactly_once_in_order(redis_client, ns, sent)
    assert two.process.poll() is None, two.log()


# ---------------------------------------------------------------- Redis Cluster


def test_cluster_partitions_land_on_every_node_and_histories_and_profiles_work(
    cluster, cluster_client, ns
):
    sent = prefill(cluster_client, ns, partitions=3)
    users = sorted({f["user_id"] for f in sent})
    for user in users:
        cluster_client.hset(keys.profile_key(ns, user), mapping={"age": "30"})
    streams = events.stream_keys(ns, 3)
    owners = {cluster_client.get_node_from_key(stream).port for stream in streams}
    assert owners == {node.port for node in cluster.nodes}
    assert all(cluster_client.xlen(stream) for stream in streams)
    worker = Worker(worker_settings(cluster.url, ns, redis_cluster=True, stream_partitions=3))
    assert worker.drain() == len(sent)
    assert_exactly_once_in_order(cluster_client, ns, sent, partitions=3)
    assert cluster_client.hgetall(keys.profile_key(ns, users[0])) == {b"age": b"30"}
    assert cluster_client.ttl(keys.profile_key(ns, users[0])) > 0


# ---------------------------------------------------------------- POST /v1/events


def events_state(client: RedisClient, ns: str, manifest: Manifest | None, **settings):
    """What handle_events reads of the service state, with a real client and manifest."""
    config = {"namespace": ns, "max_id_length": 16, "max_events": 3, "stream_partitions": 1}
    config |= {"request_timeout_s": 2.0} | settings
    served = None if manifest is None else SimpleNamespace(version="v1", manifest=manifest)
    return SimpleNamespace(
        settings=SimpleNamespace(**config),
        holder=SimpleNamespace(current=served),
        client=client,
        metrics=Metrics(),
    )


def post(state, body) -> tuple[int, dict, dict]:
    status, raw, headers = asyncio.run(handle_events(state, json.dumps(body).encode()))
    return status, json.loads(raw), headers


def test_posted_events_are_accepted_then_applied(redis_client, redis_server, ns):
    state = events_state(redis_client, ns, publish_version(redis_client, ns))
    body = {
        "events": [
            {"user_id": "u", "item_id": "i1", "time": 1733059200, "event_id": "e1"},
            {"user_id": "u", "item_id": "i2", "time": 1733059201.5, "cat": "A"},
        ]
    }
    assert post(state, body) == (202, {"accepted": 2}, {})
    Worker(worker_settings(redis_server.url, ns)).drain()
    assert stored_histories(redis_client, ns, ["u"])["u"] == ["i1", 'i2\x1f{"cat":"A"}']


@pytest.mark.parametrize(
    ("event", "loc"),
    [
        ({"user_id": "u", "item_id": "i", "time": 1, "colour": "red"}, [0, "colour"]),
        ({"user_id": "u", "item_id": "i", "time": "1"}, [0, "time"]),
        ({"user_id": "u", "item_id": "i" * 17, "time": 1}, [0, "item_id"]),
        ({"user_id": "u\n", "item_id": "i", "time": 1}, [0, "user_id"]),
        ({"item_id": "i", "time": 1}, [0, "user_id"]),
    ],
)
def test_invalid_events_are_refused_naming_the_field(redis_client, ns, event, loc):
    state = events_state(redis_client, ns, publish_version(redis_client, ns))
    status, body, _ = post(state, {"events": [event]})
    assert status == 422
    assert body["error"] == "invalid_request"
    assert ["body", "events", *loc] in [d["loc"] for d in body["detail"]]
    assert not redis_client.exists(events.stream_key(ns, 0, 1))


def test_too_many_events_are_refused_naming_events(redis_client, ns):
    state = events_state(redis_client, ns, publish_version(redis_client, ns))
    one = {"user_id": "u", "item_id": "i", "time": 1}
    status, body, _ = post(state, {"events": [one] * 4})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "events"]


def test_events_while_redis_is_down_get_503_with_retry_after(ns):
    down = connect_redis(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    state = events_state(down, ns, None)
    one = {"user_id": "u", "item_id": "i", "time": 1}
    status, body, headers = post(state, {"events": [one]})
    assert (status, body["error"], headers) == (503, "redis_unavailable", {"Retry-After": "1"})


def test_side_fields_before_any_version_is_served_get_503_no_model(redis_client, ns):
    state = events_state(redis_client, ns, None)
    plain = {"user_id": "u", "item_id": "i", "time": 1}
    assert post(state, {"events": [plain]})[0] == 202
    status, body, _ = post(state, {"events": [plain | {"cat": "A"}]})
    assert (status, body["error"]) == (503, "no_model")


def test_posted_events_spread_over_cluster_partitions(cluster, cluster_client, ns):
    manifest = publish_version(cluster_client, ns)
    state = events_state(cluster_client, ns, manifest, stream_partitions=3, max_events=100)
    body = {"events": [{"user_id": f"u{k}", "item_id": "i", "time": k} for k in range(30)]}
    assert post(state, body)[:2] == (202, {"accepted": 30})
    added = [cluster_client.xlen(s) for s in events.stream_keys(ns, 3)]
    assert sum(added) == 30 and all(added)
