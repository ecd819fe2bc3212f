"""The ingest worker: reads behaviour events from the streams as a member of a consumer group
and applies each user's events of a batch to their history atomically, in one Lua script call.

    ctr-ingest            # or: python -m ingest.cli; settings: ingest/config.py (CTR_*)

A batch is acknowledged only once applied, so a worker that dies leaves its batch pending:
read back at once by the same consumer name, claimed by another worker once idle for
CTR_INGEST_CLAIM_IDLE_MS. Applying twice is harmless (the script skips event ids it has
seen), and an event that arrives after newer ones is put in its place by time, so any number
of workers, restarts and claims give each user the same history.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import hiredis
import numpy as np
import redis
from redis.crc import key_slot

from app.metrics import observe_many
from core import keys
from core.events import (
    Event,
    EventError,
    decode_fields,
    decode_pairs,
    pairs_dict,
    stream_id_ms,
    stream_keys,
    validate_values,
)
from core.manifest import Manifest
from core.redis_conn import (
    REDIS_ERRORS,
    RedisClient,
    RedisTooOld,
    connect_redis,
    is_cluster,
    require_redis_version,
)
from ingest.config import IngestSettings
from ingest.metrics import Heartbeat, IngestMetrics, group_lag, record_lag

log = logging.getLogger(__name__)
BACKOFF_S = (0.05, 5.0)  # first and longest wait after a Redis error
STATS_INTERVAL_S = 2.0
EVENTS_PER_CALL = 32  # bounds how long one call holds Redis: the service's reads wait behind it
TTL_CHECKS_KEPT = 200_000  # users whose last TTL check a worker remembers

# One call applies the batches of one or more users (of one hash slot on a cluster).
# KEYS: per user, history, seen, profile. ARGV: max_history, dedupe window, ttl_s, then per
# user the count n of its events, whether to check its TTL (1 or 0), and n triples (dedupe
# id, time, history entry), oldest first. Returns, for each user with a duplicate or a late
# event, {its position among the call's users, duplicate ids, late ids}.
#
# An event is late when the user's window is full and the event is no newer than the
# window's oldest: its id may have left the window, so applying it could apply it twice.
# An event newer than every applied one is appended (one RPUSH and one ZADD per user). Any
# other goes where its time puts it: the events after it are the list's last ones, as many
# as the window holds with a later time.
#
# Every redis.call costs about a microsecond of its own, so the common case makes few: a
# user's events newer than every applied one cannot repeat an applied event (a repeat
# carries its first copy's time), so they need no lookup. They are added to the window with
# ZADD NX, which also catches an id reused with a newer time (one ZMSCORE then says which),
# and appended with one RPUSH. Only an event that is not newer reads the window: its id
# (ZSCORE) and, when the window is full, its oldest score. The window is trimmed with the
# history, once the history is full.
APPLY_LUA = """
local max_history, window, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

local function push(command, key, values)
  local reply = 0
  for i = 1, #values, 1000 do
    reply = redis.call(command, key, unpack(values, i, math.min(i + 999, #values)))
  end
  return reply
end

local function insert(history, entry, newer)
  local length = redis.call('LLEN', history)
  if newer >= length then return redis.call('LPUSH', history, entry) end
  local tail = redis.call('LRANGE', history, -newer, -1)
  redis.call('LTRIM', history, 0, -newer - 1)
  redis.call('RPUSH', history, entry)
  return push('RPUSH', history, tail)
end

local function score_at(seen, rank)
  local found = redis.call('ZRANGE', seen, rank, rank, 'WITHSCORES')
  return found[2] and tonumber(found[2])
end

local function window_floor(seen)
  -- the oldest score of a full window (it may hold more than `window` ids between trims)
  if redis.call('ZCARD', seen) < window then return false end
  return score_at(seen, -window)
end

local function refresh_ttl(history, seen, profile)
  -- once the history's TTL has run down by a thirtieth, not on every batch: one call, not three
  if ttl > 0 and redis.call('TTL', history) < ttl - math.floor(ttl / 30) then
    redis.call('EXPIRE', history, ttl)
    redis.call('EXPIRE', seen, ttl)
    redis.call('EXPIRE', profile, ttl)
  end
end

-- Appends the pending newer events (their ARGV positions): those whose id ZADD NX finds
-- already in the window are duplicates (their stored score is older than their time), the
-- others go to the list. A history that is not a list fails the RPUSH: the ids just added
-- leave the window again, so the error reply leaves the user as it was.
local function append(history, seen, pending, duplicates)
  local scored = {}
  for k, i in ipairs(pending) do
    scored[2 * k - 1], scored[2 * k] = ARGV[i + 1], ARGV[i]
  end
  local added = 0
  for i = 1, #scored, 1000 do
    added = added + redis.call('ZADD', seen, 'NX', unpack(scored, i, math.min(i + 999, #scored)))
  end
  local entries, ids = {}, {}
  if added == #pending then
    for k, i in ipairs(pending) do entries[k], ids[k] = ARGV[i + 2], ARGV[i] end
  else
    local all = {}
    for k, i in ipairs(pending) do all[k] = ARGV[i] end
    local stored = {}
    for i = 1, #all, 1000 do
      local scores = redis.call('ZMSCORE', seen, unpack(all, i, math.min(i + 999, #all)))
      for _, score in ipairs(scores) do stored[#stored + 1] = score end
    end
    for k, i in ipairs(pending) do
      if tonumber(stored[k]) == tonumber(ARGV[i + 1]) then
        entries[#entries + 1], ids[#ids + 1] = ARGV[i + 2], ARGV[i]
      else
        duplicates[#duplicates + 1] = ARGV[i]
      end
    end
  end
  if #entries == 0 then return nil end
  local length = redis.pcall('RPUSH', history, unpack(entries, 1, math.min(1000, #entries)))
  if type(length) == 'table' and length.err then
    push('ZREM', seen, ids)
    error(length)
  end
  if #entries > 1000 then
    local rest = {}
    for k = 1001, #entries do rest[k - 1000] = entries[k] end
    length = push('RPUSH', history, rest)
  end
  return length
end

local function apply_user(history, seen, profile, first, n, check_ttl)
  local newest = score_at(seen, -1)
  local floor = nil  -- read on the first event that is not newer than every applied one
  local duplicates, late, pending, batch = {}, {}, {}, {}
  local length = 0
  for i = first, first + 3 * (n - 1), 3 do
    local id, time, entry = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
    if batch[id] then
      duplicates[#duplicates + 1] = id
    elseif newest == nil or time > newest then
      pending[#pending + 1] = i
      newest, batch[id] = time, true
    elseif redis.call('ZSCORE', seen, id) then
      duplicates[#duplicates + 1] = id
    else
      if floor == nil then floor = window_floor(seen) end
      if floor and time <= floor then
        late[#late + 1] = id
      else
        if #pending > 0 then length = append(history, seen, pending, duplicates) or length end
        pending = {}
        length = insert(history, entry, redis.call('ZCOUNT', seen, '(' .. ARGV[i + 1], '+inf'))
        redis.call('ZADD', seen, ARGV[i + 1], id)
        newest, batch[id] = math.max(newest, time), true
      end
    end
  end
  if #pending > 0 then length = append(history, seen, pending, duplicates) or length end
  if length > max_history then
    redis.call('LTRIM', history, -max_history, -1)
    redis.call('ZREMRANGEBYRANK', seen, 0, -window - 1)
  end
  if check_ttl then refresh_ttl(history, seen, profile) end
  return duplicates, late
end

-- Only users with a duplicate or a late event are answered for: {position, ids, ids}.
local replies, at, position = {}, 4, 0
for k = 1, #KEYS, 3 do
  local n, check_ttl = tonumber(ARGV[at]), ARGV[at + 1] == '1'
  local duplicates, late = apply_user(KEYS[k], KEYS[k + 1], KEYS[k + 2], at + 2, n, check_ttl)
  position = position + 1
  if #duplicates > 0 or #late > 0 then
    replies[#replies + 1] = {position, duplicates, late}
  end
  at = at + 2 + 3 * n
end
return replies
"""


@dataclass(frozen=True)
class Limits:
    """What the listed versions ask of histories: the longest max_history, and every item-side
    field any of them declares (an event may carry those)."""

    max_history: int
    side_fields: frozenset[str]


def read_limits(client: RedisClient, ns: str, fallback: int) -> Limits:
    versions = [v.decode() for v in client.zrange(keys.versions_key(ns), 0, -1)]
    manifest_keys = [keys.manifest_key(ns, v) for v in versions]
    raw = (client.mget_nonatomic if is_cluster(client) else client.mget)(manifest_keys)
    manifests = [m for m in map(_manifest, raw) if m is not None]
    if not manifests:
        return Limits(fallback, frozenset())
    sides = frozenset(f.name for m in manifests for f in m.schema.side_fields)
    return Limits(max(m.max_history for m in manifests), sides)


def _manifest(raw: bytes | None) -> Manifest | None:
    try:
        return None if raw is None else Manifest.from_json(raw)
    except ValueError as error:  # a version this worker cannot read does not stop the others
        log.warning("skipping an unreadable manifest: %s", error)
        return None


@dataclass(slots=True)
class Entry:
    """A valid entry waiting to be applied."""

    stream_id: str
    fields: dict
    event: Event
    xadd_ms: int = field(init=False)  # the first part of the stream id: when it was XADDed

    def __post_init__(self) -> None:
        self.xadd_ms = stream_id_ms(self.stream_id)

    @property
    def order(self) -> tuple[float, int, int]:
        return self.event.time, self.xadd_ms, int(self.stream_id.partition("-")[2])


@dataclass
class Batch:
    ids: list[str] = field(default_factory=list)  # every entry read, acknowledged once applied
    by_user: dict[str, list[Entry]] = field(default_factory=lambda: defaultdict(list))
    dead: list[tuple[str, dict, str]] = field(default_factory=list)  # (id, fields, reason)


def parse_batch(entries: list, limits: Limits, max_id_length: int) -> Batch:
    """Valid entries grouped by user, each user's sorted by (time, stream id); the others
    bound for the dead-letter stream with their reason."""
    batch = Batch()
    for raw_id, fields in entries:
        stream_id = raw_id.decode()
        batch.ids.append(stream_id)
        if not fields:  # trimmed from the stream while pending: nothing left to apply
            continue
        flat = type(fields) is list  # Redis's own [name, value...] (read ahead), else a dict
        try:
            values = decode_pairs(fields) if flat else decode_fields(fields)
            event = validate_values(values, limits.side_fields, max_id_length)
        except EventError as error:
            original = pairs_dict(fields) if flat else fields
            batch.dead.append((stream_id, original, f"invalid: {error}"))
            continue
        batch.by_user[event.user_id].append(Entry(stream_id, values, event))
    for user_entries in batch.by_user.values():
        if len(user_entries) > 1:
            user_entries.sort(key=lambda entry: entry.order)
    return batch


@dataclass
class Applied:
    applied: list[Entry] = field(default_factory=list)
    duplicates: int = 0
    dead: list[tuple[str, dict, str]] = field(default_factory=list)


@dataclass
class Prepared:
    """A parsed batch with its script calls built, ready to send."""

    batch: Batch
    max_history: int
    calls: list[list[str]]  # users per script call
    commands: list[tuple]  # the EVALSHA of each call
    checked: list[list[str]]  # per call, the users whose TTL it checks
    packed: bytes = b""  # the commands in the wire format (one node), packed ahead of sending


@dataclass
class ReadAhead:
    """Commands sent ahead of a batch's script calls in the same round trip (the previous
    batch's ack, the next batch's read); their replies are handed to on_replies while Redis
    is still running the scripts."""

    commands: tuple[tuple, ...]
    on_replies: Callable[[list], None]


class RecentlyChecked:
    """The users whose TTL this worker checked (and so left at 29/30 of CTR_HISTORY_TTL_S or
    more) within the last `period_s`, the most recent `capacity` of them. Their next batches
    skip the check, one redis.call per user: their keys then expire between 28/30 and all of
    the TTL after their last event. A user forgotten early is only checked again."""

    def __init__(self, period_s: float, capacity: int) -> None:
        self.period_s, self.capacity = period_s, capacity
        self.deadlines: OrderedDict[str, float] = OrderedDict()

    def due(self, users: list[str]) -> list[str]:
        now, deadlines = time.monotonic(), self.deadlines
        return [user for user in users if deadlines.get(user, now) <= now]

    def add(self, users: list[str]) -> None:
        deadline = time.monotonic() + self.period_s
        for user in users:
            self.deadlines[user] = deadline
            self.deadlines.move_to_end(user)
        while len(self.deadlines) > self.capacity:
            self.deadlines.popitem(last=False)


class Applier:
    """Runs the apply script for every user of a batch in one pipelined round trip (one per
    node on a cluster), each call covering up to EVENTS_PER_CALL events of users that share
    a hash slot. On one node, the previous batch's ack and the next batch's read may go first
    in the same round trip (ReadAhead), so that the worker parses the next batch while Redis
    applies this one."""

    def __init__(self, client: RedisClient, settings: IngestSettings) -> None:
        self.client, self.settings = client, settings
        self.script = client.register_script(APPLY_LUA)
        self.cluster = is_cluster(client)
        self.checked = RecentlyChecked(settings.history_ttl_s / 30, TTL_CHECKS_KEPT)

    def prepare(self, batch: Batch, max_history: int) -> Prepared:
        calls = plan_calls(batch.by_user, self._group_of)
        commands, checked = self._commands(calls, batch, max_history)
        # hiredis packs a whole command in C (redis-py's own packing walks every argument);
        # done here, it runs while Redis applies the batch before
        packed = b"" if self.cluster else b"".join(map(hiredis.pack_command, commands))
        return Prepared(batch, max_history, calls, commands, checked, packed)

    def apply(self, prepared: Prepared, ahead: ReadAhead | None = None) -> Applied:
        result = Applied()
        replies = self._send(prepared.commands, ahead, prepared.packed)
        self._settle(prepared.calls, prepared.checked, replies, prepared, result)
        return result

    def _group_of(self, user: str) -> int:
        """Users that one call may cover together: on a cluster, those of one hash slot."""
        key = keys.history_key(self.settings.namespace, user)
        return key_slot(key.encode()) if self.cluster else 0

    def _settle(self, calls, checked, replies, prepared: Prepared, result: Applied, depth=0):
        retry, loaded = [], False
        for users, due, reply in zip(calls, checked, replies, strict=True):
            if isinstance(reply, redis.exceptions.NoScriptError) and depth < 2:
                loaded = loaded or bool(self.client.script_load(APPLY_LUA))  # an empty cache
                retry.append(users)
            elif isinstance(reply, redis.exceptions.ResponseError) and len(users) > 1:
                retry += [[user] for user in users]  # one at a time, to find the user at fault
            else:
                self._collect(result, prepared.batch, users, reply)
                self.checked.add(due)
        if retry:  # users applied before a failure count as duplicates the second time
            commands, due = self._commands(retry, prepared.batch, prepared.max_history)
            replies = self._send(commands)
            self._settle(retry, due, replies, prepared, result, depth + 1)

    def _commands(self, calls, batch: Batch, max_history: int) -> tuple[list, list]:
        """The EVALSHA of each call, and per call the users whose TTL it checks: those this
        worker has not checked within the last CTR_HISTORY_TTL_S / 30."""
        commands, checked = [], []
        for users in calls:
            due = self.checked.due(users)
            commands.append(self._command(users, batch, max_history, set(due)))
            checked.append(due)
        return commands, checked

    def _command(self, users: list[str], batch: Batch, max_history: int, due: set) -> tuple:
        s, ns = self.settings, self.settings.namespace
        user_keys, arguments = [], [max_history, s.dedupe_window, s.history_ttl_s]
        for user in users:
            user_keys += keys.user_keys(ns, user)
            entries = batch.by_user[user]
            arguments += (len(entries), 1 if user in due else 0)
            for entry in entries:  # the script's triples: dedupe id, time, history entry
                event = entry.event
                dedupe = event.dedupe_id(entry.stream_id)
                arguments += (dedupe, repr(event.time), event.behaviour())
        return ("EVALSHA", self.script.sha, len(user_keys), *user_keys, *arguments)

    def _send(self, commands: list[tuple], ahead: ReadAhead | None = None, packed=b"") -> list:
        """Each command's reply, errors as values. EVALSHA by name: redis-py refuses its
        evalsha method in a cluster pipeline."""
        if ahead is not None:
            if self.cluster:
                raise ValueError("a read-ahead needs one node")
            return self._send_behind(ahead, commands, packed)
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute(raise_on_error=False)

    def _send_behind(self, ahead: ReadAhead, commands: list[tuple], packed: bytes) -> list:
        """One round trip on one connection: the read-ahead's commands first, then the
        scripts. Their replies are handled as soon as they arrive, before the scripts'
        replies are read. Any failure drops the connection, so no reply is left unread."""
        pool = self.client.connection_pool
        connection = pool.get_connection()
        try:
            first = b"".join(map(hiredis.pack_command, ahead.commands))
            connection.send_packed_command([first, packed])
            ahead.on_replies([self._reply(connection) for _ in ahead.commands])
            return [self._reply(connection, command[0]) for command in commands]
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)

    def _reply(self, connection, command_name: str | None = None):
        """The next reply; with no command name, as Redis sent it (no redis-py callback)."""
        try:
            if command_name is None:
                return connection.read_response()
            return self.client.parse_response(connection, command_name)
        except redis.exceptions.ResponseError as error:  # an error reply, not a lost link
            return error

    @staticmethod
    def _collect(result: Applied, batch: Batch, users: list[str], reply) -> None:
        if isinstance(reply, redis.exceptions.ResponseError) and "WRONGTYPE" in str(reply):
            [user] = users
            dead = [(e.stream_id, e.fields, f"unappliable: {reply}") for e in batch.by_user[user]]
            result.dead += dead
            return
        if isinstance(reply, Exception):
            raise reply
        flagged = {position: (duplicates, late) for position, duplicates, late in reply}
        for position, user in enumerate(users, 1):
            entries = batch.by_user[user]
            if position in flagged:
                _sort_out(result, entries, *flagged[position])
            else:
                result.applied += entries


def plan_calls(by_user: dict[str, list[Entry]], group_of) -> list[list[str]]:
    """Users in calls of at most EVENTS_PER_CALL events (a user's batch is never split), each
    call within one group: a script call holds Redis for its whole run."""
    groups: dict[int, list[str]] = defaultdict(list)
    for user in by_user:
        groups[group_of(user)].append(user)
    calls = []
    for users in groups.values():
        call, events = [], 0
        for user in users:
            if call and events + len(by_user[user]) > EVENTS_PER_CALL:
                calls.append(call)
                call, events = [], 0
            call.append(user)
            events += len(by_user[user])
        calls.append(call)
    return calls


def _sort_out(result: Applied, entries: list[Entry], duplicates: list, late: list) -> None:
    """Which of a user's entries were applied, given the ids the script skipped."""
    repeats = Counter(member.decode() for member in duplicates)
    late_ids = {member.decode() for member in late}
    result.duplicates += repeats.total()
    applied = []
    for entry in reversed(entries):  # of one id, the copies after the first are the repeats
        member = entry.event.dedupe_id(entry.stream_id)
        if member in late_ids:
            result.dead.append((entry.stream_id, entry.fields, "late"))
        elif repeats[member]:
            repeats[member] -= 1
        else:
            applied.append(entry)
    result.applied += reversed(applied)


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


class Worker:
    """One ctr-ingest process: a consumer loop per stream partition, each on its own thread,
    and the lag metrics on the calling thread."""

    def __init__(
        self,
        settings: IngestSettings,
        client: RedisClient | None = None,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.settings = settings
        block_s = settings.ingest_block_ms / 1000
        self.client = client or connect_redis(
            settings.redis_url,
            cluster=settings.redis_cluster,
            password=settings.password(),
            timeout_s=settings.redis_timeout_s + block_s,  # a blocking read must not time out
        )
        self.metrics = metrics or IngestMetrics()
        self.applier = Applier(self.client, settings)
        self.streams = stream_keys(settings.namespace, settings.stream_partitions)
        self.heartbeat = Heartbeat(
            max(60.0, 3 * (block_s + settings.redis_timeout_s) + BACKOFF_S[1])
        )
        self.failed = False  # a consumer loop died of something other than Redis
        self.limits: Limits | None = None  # nothing is applied before the manifests are read
        self._limits_read_at = float("-inf")
        self._limits_lock = threading.Lock()

    # ------------------------------------------------------------ one batch

    def current_limits(self) -> Limits:
        """The listed versions' limits, re-read every CTR_INGEST_REFRESH_S by one thread."""
        with self._limits_lock:
            if time.monotonic() - self._limits_read_at >= self.settings.ingest_refresh_s:
                s = self.settings
                self.limits = read_limits(self.client, s.namespace, s.ingest_max_history_fallback)
                self._limits_read_at = time.monotonic()
            return self.limits

    def prepare(self, entries: list) -> Prepared:
        limits = self.current_limits()
        batch = parse_batch(entries, limits, self.settings.max_id_length)
        return self.applier.prepare(batch, limits.max_history)

    def handle(
        self, stream: str, prepared: Prepared, ahead: ReadAhead | None = None, defer_ack=False
    ) -> list[str]:
        """Apply a batch read from `stream` (with `ahead` in the same round trip), dead-letter
        what cannot be applied, then ack. With defer_ack, a batch with nothing to dead-letter
        is not acked here: its ids are returned, for the next round trip to ack."""
        batch = prepared.batch
        result = self.applier.apply(prepared, ahead)
        dead = batch.dead + result.dead
        if dead:
            self._dead_letter(stream, dead)
        unacked = batch.ids if defer_ack and not dead else []
        if batch.ids and not unacked:
            self.ack(stream, batch.ids)
        self._count(result, dead)
        return unacked

    def ack(self, stream: str, ids: list[str]) -> None:
        self.client.xack(stream, self.settings.ingest_group, *ids)

    def _dead_letter(self, stream: str, dead: list[tuple[str, dict, str]]) -> None:
        """Before the ack, in its own round trip: on a cluster the dead-letter stream may live
        on another node, and an ack must never land without it."""
        pipe = self.client.pipeline(transaction=False)
        target, maxlen = (
            keys.dead_letter_key(self.settings.namespace),
            self.settings.ingest_dead_letter_maxlen,
        )
        for stream_id, fields, reason in dead:
            record = {_bytes(k): v for k, v in fields.items()}
            record |= {b"reason": reason.encode(), b"source": f"{stream} {stream_id}".encode()}
            pipe.xadd(target, record, maxlen=maxlen, approximate=True)
        pipe.execute()

    def _count(self, result: Applied, dead: list[tuple[str, dict, str]]) -> None:
        m, now_ms = self.metrics, time.time() * 1000
        m.applied.inc(len(result.applied))
        m.duplicates.inc(result.duplicates)
        for _, _, reason in dead:
            m.dead_letters.labels(reason=reason.partition(":")[0]).inc()
            if reason == "late":
                m.late.inc()
        if result.applied:
            xadd_ms = np.fromiter((e.xadd_ms for e in result.applied), float, len(result.applied))
            observe_many(m.apply_delay, np.maximum(now_ms - xadd_ms, 0.0) / 1000)

    # ------------------------------------------------------------ the loops

    def alive(self) -> bool:
        return self.heartbeat.alive()

    def run(self, stop: threading.Event) -> None:
        """Consume every stream until `stop` is set (each loop ends after its batch); record
        the lag and trim acknowledged entries every STATS_INTERVAL_S meanwhile."""
        consumers = [StreamConsumer(self, stream) for stream in self.streams]
        threads = [
            threading.Thread(target=c.run, args=(stop,), name=f"ingest {c.stream}")
            for c in consumers
        ]
        for thread in threads:
            thread.start()
        while not stop.wait(STATS_INTERVAL_S):
            self.tend_streams()
        for thread in threads:
            thread.join()

    def drain(self) -> int:
        """Apply everything the streams hold now, without blocking (tests, benchmarks)."""
        consumers = [StreamConsumer(self, stream) for stream in self.streams]
        for consumer in consumers:
            consumer.ensure_group()
        total = 0
        while True:
            reading_backlog = any(consumer.own_backlog for consumer in consumers)
            handled = sum(consumer.step(block_ms=None) for consumer in consumers)
            total += handled
            if not handled and not reading_backlog:
                break
        for consumer in consumers:
            consumer.flush_acks()
        return total

    def tend_streams(self) -> None:
        for stream in self.streams:
            try:
                self._tend(stream)
            except REDIS_ERRORS as error:
                self.metrics.redis_errors.labels(op="lag").inc()
                log.warning("reading the lag of %s failed: %s", stream, error)

    def _tend(self, stream: str) -> None:
        groups = self.client.xinfo_groups(stream)
        ours = [g for g in groups if _text(g["name"]) == self.settings.ingest_group]
        if ours:
            lag = group_lag(self.client, stream, ours[0])
            record_lag(self.metrics, stream, lag, int(time.time() * 1000))
        trim_acknowledged(self.client, stream, groups)


def trim_acknowledged(client: RedisClient, stream: str, groups: list[dict]) -> None:
    """Drop entries every group has acknowledged: those before each group's oldest pending
    entry, or before its last delivered one when none is pending. Approximate (~), so Redis
    frees whole nodes only."""
    if not groups:
        return
    floor = min(_oldest_unacked(client, stream, group) for group in groups)
    client.xtrim(stream, minid=floor, approximate=True)


def _oldest_unacked(client: RedisClient, stream: str, group: dict) -> str:
    oldest = None
    if group["pending"]:  # None if acknowledged since XINFO answered
        oldest = client.xpending(stream, _text(group["name"]))["min"]
    return _text(oldest or group["last-delivered-id"])


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StreamConsumer:
    """The loop of one stream: this consumer's own unacknowledged entries first (a restart
    under the same name), entries claimed from consumers idle too long, then new entries.

    Reading new entries, each batch's round trip also acks the batch before it and reads the
    next one (ReadAhead, one node only), which is parsed while Redis applies the batch: the
    worker's Python and Redis then work at the same time instead of in turns. The next batch
    is pending for this consumer from that read on, exactly as if read on its own, and an
    applied batch stays pending until that ack lands, so a crash loses nothing (what it
    leaves pending is applied again, as duplicates)."""

    def __init__(self, worker: Worker, stream: str) -> None:
        self.worker, self.stream, self.client = worker, stream, worker.client
        s = worker.settings
        self.group, self.name, self.count = s.ingest_group, s.ingest_consumer, s.ingest_batch
        self.claim_idle_ms = s.ingest_claim_idle_ms
        self.forget_idle_ms = s.ingest_claim_idle_ms + s.ingest_block_ms
        self.has_group = False
        self.own_backlog = True
        self.claim_cursor = "0-0"
        self.next_claim = 0.0
        self.ready: Prepared | None = None  # the batch read ahead, parsed
        self.unacked: list[str] = []  # applied, acked by the next round trip

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: Redis errors are waited out; anything else stops the whole worker
        (its process exits non-zero, to be restarted) rather than leave a stream unread."""
        try:
            self._loop(stop)
        except RedisTooOld as error:
            log.error("%s", error)
            self.worker.failed = True
            stop.set()
        except Exception:
            log.exception("%s: the consumer loop failed", self.stream)
            self.worker.failed = True
            stop.set()

    def _loop(self, stop: threading.Event) -> None:
        delay, heartbeat = BACKOFF_S[0], self.worker.heartbeat
        while not stop.is_set():
            heartbeat.beat(self.stream)
            try:
                if not self.has_group:
                    self.ensure_group()
                self.step(self.worker.settings.ingest_block_ms)
                delay = BACKOFF_S[0]
            except REDIS_ERRORS as error:
                self._failed(error)
                stop.wait(delay)
                delay = min(2 * delay, BACKOFF_S[1])
        self._finish()

    def _finish(self) -> None:
        """Stopping: apply the batch read ahead too and ack, so nothing stays pending."""
        try:
            if self.ready is not None:
                self.step(None, read_ahead=False)
            self.flush_acks()
        except REDIS_ERRORS as error:  # left pending: read back at the next start
            self._failed(error)

    def flush_acks(self) -> None:
        if self.unacked:
            self.worker.ack(self.stream, self.unacked)
            self.unacked = []

    def step(self, block_ms: int | None, read_ahead: bool = True) -> int:
        """Handle one batch: the one read ahead, else claimed, else read (waiting up to
        block_ms; None: no wait)."""
        prepared, self.ready = self.ready, None
        if prepared is None:
            self.flush_acks()  # before a read that may wait: nothing applied stays pending
            entries = self.claim() or self.read(block_ms)
            if not entries:
                return 0
            prepared = self.worker.prepare(entries)
        ahead = self._read_ahead() if read_ahead else None
        if ahead is None:
            self.flush_acks()  # else the ids before ride in `ahead`'s round trip
        deferred = ahead is not None
        self.unacked = self.worker.handle(self.stream, prepared, ahead, defer_ack=deferred)
        return len(prepared.batch.ids)

    def _read_ahead(self) -> ReadAhead | None:
        """The previous batch's ack and the next read, unless on a cluster (the stream's
        node is not the scripts'), reading this consumer's own backlog or a claim is due
        (those go first, on their own)."""
        if self.worker.applier.cluster or self.own_backlog or time.monotonic() >= self.next_claim:
            return None
        read = ("XREADGROUP", "GROUP", self.group, self.name, "COUNT", self.count)
        commands = [(*read, "STREAMS", self.stream, ">")]
        if self.unacked:
            commands.insert(0, ("XACK", self.stream, self.group, *self.unacked))
        return ReadAhead(tuple(commands), self._read_ahead_replies)

    def _read_ahead_replies(self, replies: list) -> None:
        """Raw replies: the ack's count, then the read's entries [[id, [name, value...]]...]
        under the stream's name ({stream: entries} in RESP3, [[stream, entries]] in RESP2),
        or nothing new."""
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        read = replies[-1]
        if not read:
            entries = []
        else:
            entries = next(iter(read.values())) if isinstance(read, dict) else read[0][1]
        self.ready = self.worker.prepare(entries) if entries else None

    def ensure_group(self) -> None:
        """From the stream's first entry: events XADDed before any worker ran are applied.
        The first contact with a server also checks its version (the worker's Lua and lag
        metrics need Redis 7)."""
        require_redis_version(self.client)
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self.has_group = True

    def read(self, block_ms: int | None) -> list:
        start = "0" if self.own_backlog else ">"
        block = None if self.own_backlog else block_ms
        reply = self.client.xreadgroup(
            self.group, self.name, {self.stream: start}, count=self.count, block=block
        )
        entries = reply[0][1] if reply else []
        if self.own_backlog and not entries:
            self.own_backlog = False
        return entries

    def claim(self) -> list:
        """Entries idle past CTR_INGEST_CLAIM_IDLE_MS (their consumer died), a batch at a
        time; after each full pass, forget consumers that left nothing pending."""
        if time.monotonic() < self.next_claim:
            return []
        reply = self.client.xautoclaim(
            self.stream, self.group, self.name, self.claim_idle_ms, self.claim_cursor, self.count
        )
        self.claim_cursor = _text(reply[0])
        if self.claim_cursor == "0-0":
            self.next_claim = time.monotonic() + self.claim_idle_ms / 2000
            self._forget_idle_consumers()
        return reply[1]

    def _forget_idle_consumers(self) -> None:
        for consumer in self.client.xinfo_consumers(self.stream, self.group):
            name = _text(consumer["name"])
            idle = consumer["idle"] > self.forget_idle_ms
            if idle and not consumer["pending"] and name != self.name:
                self.client.xgroup_delconsumer(self.stream, self.group, name)

    def _failed(self, error: Exception) -> None:
        """Whatever was read and not acknowledged is read back from the start; a deleted
        stream or group (a flushed Redis) is created again."""
        self.own_backlog, self.ready, self.unacked = True, None, []
        self.has_group = self.has_group and "NOGROUP" not in str(error)
        self.worker.metrics.redis_errors.labels(op="consume").inc()
        log.warning("%s: %s: %s, backing off", self.stream, type(error).__name__, error)
