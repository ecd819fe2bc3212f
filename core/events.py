"""The behaviour event contract, shared by producers (POST /v1/events or any writer), the
ingest worker (ctr-ingest) and the service that reads histories back.

A producer XADDs one entry per behaviour to its user's stream, fields as strings:

    user_id   raw user id                       required
    item_id   raw item id                       required
    time      unix seconds, integer or decimal  required
    event_id  the producer's id for the event   optional: makes a retried XADD harmless
    <field>   a value of an item-side field     optional: any side field a listed version's
                                                schema declares (e.g. cat)

With one partition every entry goes to `{ns}:behaviours`; with P > 1, a user's entries all go
to partition partition_of(user_id, P), so one user's events stay in one stream, in order.

The worker appends each event to the user's history list as encode_behaviour(item_id, side):
the plain item id when the event carries no side field, else the id, "\\x1f" and the side
fields as compact JSON. Ids never hold control characters, so the split is unambiguous;
decode_behaviours reads a list back.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_string
from typing import Any

from core import keys
from core.redis_conn import RedisClient

USER_ID, ITEM_ID, TIME, EVENT_ID = "user_id", "item_id", "time", "event_id"
BASE_FIELDS = frozenset({USER_ID, ITEM_ID, TIME, EVENT_ID})
REQUIRED_FIELDS = (USER_ID, ITEM_ID, TIME)
DEFAULT_GROUP = "ctr-ingest"
MAX_PARTITIONS = keys.MAX_GROUPS
SIDE_SEPARATOR = "\x1f"  # between an item id and its side fields in a history entry
_JOIN = b"\x1e"  # joins a whole history to decode it in one pass; never inside an entry
# Unicode's control characters (category Cc: C0, DEL and C1) and the line and paragraph
# separators, which split a line in logs: no id or value may hold one.
CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f\u2028\u2029"  # as regex escapes: Python, Rust, ECMA
ID_PATTERN = f"^[^{CONTROL_CHARACTERS}]*$"
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")
_NUMBER = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?")


class EventError(ValueError):
    """An entry that cannot be applied: the field at fault and why."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field, self.reason = field_name, reason


@dataclass(slots=True)
class Event:
    user_id: str
    item_id: str
    time: float  # unix seconds
    event_id: str | None = None
    side: dict[str, str] = field(default_factory=dict)

    def dedupe_id(self, stream_id: str) -> str:
        """What the worker remembers to skip a second copy: the producer's event id, else
        the stream entry id (prefixed apart, so an event id can never pass for one)."""
        return f"e:{self.event_id}" if self.event_id is not None else f"s:{stream_id}"

    def behaviour(self) -> str:
        return encode_behaviour(self.item_id, self.side)


# ---------------------------------------------------------------- streams


def partition_of(user_id: str, partitions: int) -> int:
    """The partition of a user's events: stable across processes and releases (CRC-32)."""
    return zlib.crc32(user_id.encode()) % partitions if partitions > 1 else 0


def partition_tag(partition: int, partitions: int) -> str:
    """The hash tag of partition p of P (keys.spread_tag): "p", or "p.1"... where "p" falls
    outside the p-th of P slot ranges, so the partitions spread over the masters."""
    return keys.spread_tag("", partition, partitions)


def stream_key(ns: str, partition: int, partitions: int) -> str:
    if partitions == 1:
        return keys.behaviours_key(ns)
    return keys.behaviours_partition_key(ns, partition_tag(partition, partitions))


def stream_keys(ns: str, partitions: int) -> list[str]:
    return [stream_key(ns, p, partitions) for p in range(partitions)]


def stream_for(ns: str, user_id: str, partitions: int) -> str:
    return stream_key(ns, partition_of(user_id, partitions), partitions)


def event_fields(
    user_id: str,
    item_id: str,
    time: float,
    event_id: str | None = None,
    side: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The entry fields of one event, as a producer XADDs them."""
    fields = {USER_ID: user_id, ITEM_ID: item_id, TIME: format_time(time)}
    if event_id is not None:
        fields[EVENT_ID] = event_id
    return fields | dict(side or {})


def format_time(time: float) -> str:
    """A whole number of seconds is written as an integer ("1733059200"); a fraction keeps
    every digit (repr)."""
    time = float(time)
    return str(int(time)) if time.is_integer() else repr(time)


def add_events(
    client: RedisClient, ns: str, events: Iterable[Mapping[str, str]], partitions: int
) -> int:
    """XADD each event's fields to its user's stream in one pipelined round trip (one per
    node on a cluster); durable in the stream once this returns. Returns the count."""
    pipe = client.pipeline(transaction=False)
    count = 0
    for fields in events:
        pipe.xadd(stream_for(ns, fields.get(USER_ID, ""), partitions), dict(fields))
        count += 1
    if count:
        pipe.execute()
    return count


def stream_id_ms(stream_id: str | bytes) -> int:
    """The XADD time of an entry, in unix milliseconds: the first part of its id."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.partition("-")[0])


# ---------------------------------------------------------------- validation


def validate_event(
    fields: Mapping[Any, Any], side_fields: set[str] | frozenset[str], max_id_length: int
) -> Event:
    """The event in one stream entry (str or bytes names and values), or EventError naming
    the first problem: a missing or unknown field, a bad id or value, a time that is not a
    non-negative number. The worker validates every entry here: the common case is one
    pass with no per-field calls, and the field-by-field checks run only to name a fault."""
    return validate_values(decode_fields(fields), side_fields, max_id_length)


def validate_values(
    values: dict[str, str], side_fields: set[str] | frozenset[str], max_id_length: int
) -> Event:
    """validate_event of fields already decoded to text."""
    try:
        user_id, item_id, raw_time = values[USER_ID], values[ITEM_ID], values[TIME]
    except KeyError:
        raise EventError(next(n for n in REQUIRED_FIELDS if n not in values), "missing") from None
    event_id = values.get(EVENT_ID)
    side = {}
    if len(values) > 3 + (event_id is not None):
        side = {name: value for name, value in values.items() if name not in BASE_FIELDS}
        if not side.keys() <= side_fields:
            raise EventError(min(side.keys() - side_fields), "unknown field")
    check_ids(values, max_id_length)
    return Event(user_id, item_id, parse_time(raw_time), event_id, side)


def decode_pairs(flat: list[bytes]) -> dict[str, str]:
    """The fields of a stream entry as Redis sends them, [name, value, name, value...], as
    text in one pass (EventError naming a field that is not UTF-8)."""
    pairs = iter(flat)
    try:
        return {name.decode(): value.decode() for name, value in zip(pairs, pairs, strict=True)}
    except UnicodeDecodeError:
        return decode_fields(pairs_dict(flat))


def pairs_dict(flat: list) -> dict:
    """[name, value, name, value...] as {name: value}, the values left as they are."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def decode_fields(fields: Mapping[Any, Any]) -> dict[str, str]:
    try:  # bytes from Redis: one comprehension; str (tests, the API) or bad UTF-8 below
        return {name.decode(): value.decode() for name, value in fields.items()}
    except (AttributeError, UnicodeDecodeError):
        values = {}
        for raw_name, raw_value in fields.items():
            name = _text(raw_name, "field name")
            values[name] = _text(raw_value, name)
        return values


def check_ids(values: dict[str, str], max_id_length: int) -> None:
    """Every value but the time non-empty, short enough, free of control characters: checked
    at once (the time with them: it can only make the quick check fail), then one by one
    only to name the field at fault."""
    texts = values.values()
    joined = "".join(texts)
    short = len(joined) <= max_id_length or max(map(len, texts)) <= max_id_length
    if short and "" not in texts and not _CONTROL.search(joined):
        return
    for name, value in values.items():
        if name != TIME:
            check_id(name, value, max_id_length)


def check_id(name: str, value: str, max_id_length: int) -> None:
    if not value:
        raise EventError(name, "empty")
    if len(value) > max_id_length:
        raise EventError(name, f"longer than {max_id_length} characters")
    if _CONTROL.search(value):
        raise EventError(name, "holds a control character")


def parse_time(value: str) -> float:
    if not _NUMBER.fullmatch(value):
        raise EventError(TIME, "not a non-negative number of unix seconds")
    time = float(value)
    if not math.isfinite(time):
        raise EventError(TIME, "not finite")
    return time


def _text(value: Any, name: str) -> str:
    if not isinstance(value, bytes):
        return str(value)
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise EventError(name, "not UTF-8") from None


# ---------------------------------------------------------------- history entries


def encode_behaviour(item_id: str, side: Mapping[str, str]) -> str:
    """The history entry of one behaviour. The side fields are compact JSON with sorted keys
    (what json.dumps(side, separators=(",", ":"), sort_keys=True) writes), built from the
    json module's C string encoder: the worker encodes every event that carries one."""
    if not side:
        return item_id
    pairs = (_json_string(name) + ":" + _json_string(side[name]) for name in sorted(side))
    return item_id + SIDE_SEPARATOR + "{" + ",".join(pairs) + "}"


def decode_behaviours(entries: list[bytes]) -> tuple[list[str], list[dict[str, str]]]:
    """Item ids and per-behaviour side fields of a stored history, oldest first. A history
    with no side fields (the common case) decodes in one pass over joined bytes."""
    if not entries:
        return [], []
    joined = _JOIN.join(entries)
    if SIDE_SEPARATOR.encode() not in joined:
        ids = joined.decode().split(_JOIN.decode())
        if len(ids) == len(entries):  # else an entry held the joiner: decode one by one
            return ids, [{} for _ in ids]
    decoded = [decode_behaviour(entry) for entry in entries]
    return [item for item, _ in decoded], [side for _, side in decoded]


def decode_behaviour(entry: bytes | str) -> tuple[str, dict[str, str]]:
    """One entry; side fields that do not read as a JSON object of strings are dropped."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    item_id, separator, rest = text.partition(SIDE_SEPARATOR)
    if not separator:
        return item_id, {}
    try:
        side = json.loads(rest)
    except ValueError:
        return item_id, {}
    if not isinstance(side, dict) or not all(isinstance(v, str) for v in side.values()):
        return item_id, {}
    return item_id, side
