"""The Redis key scheme of a model bundle. Every key is built here and nowhere else.

{ns}:active                  the version the service follows
{ns}:canary                  JSON of the running canary: version, percent, salt, guards
{ns}:previous                the version active before the current one (gc keeps it)
{ns}:versions                sorted set of complete versions (score = publish time)
{ns}:seq                     counter that names new versions v1, v2, ...
{ns}:events                  pub/sub channel, JSON events: activated, canary, rows-updated
{ns}:activations             list of JSON {"version", "at"}, newest first, the last 100
{ns}:{v}:manifest            JSON manifest, written last: its presence means "complete"
{ns}:{v}:onnx                the dense graph as ONNX bytes
{ns}:{v}:lease               set while a writer is publishing {v}; expires if it dies
{ns}:{v}:uid                 the version's identity (the manifest's uid), read with every
                             row fetch: gone or different means the rows are not this bundle's
{ns}:{v}:rows-epoch          counter bumped by every row update of {v}
{ns}:{v}:item:{raw id}       an item row: its item-side fields' embeddings, concatenated
{ns}:{v}:f:{field}:{value}   one field's embedding row (side-field overrides, user, context)
{ns}:{v}:{table}:{<g>}:{id}  the same rows when published in G slot groups (--row-groups G):
                             <g> is the tag of group CRC-32(id) mod G, see spread_tag
{ns}:{v}:{table}:b:{n}       with --row-layout buckets: hash bucket n of a table's B buckets,
                             field = raw id, value = the row; a row lives in bucket
                             CRC-32(id) mod B (B is in the manifest, per table)
{ns}:{v}:{table}:{<g>}:b:{n} the same in G slot groups: <g> is the tag of group n mod G
{ns}:{v}:meta:item:{raw id}  JSON {"title", "category"} of an item, shown by explanations
{ns}:{v}:report:{file}       a file of the training report (report.png, report.md)
{ns}:user:{<tag>}:hist       a user's recent behaviours, oldest first (encoded by
                             core/events.py), not versioned
{ns}:user:{<tag>}:profile    hash of the user's raw profile values, not versioned
{ns}:user:{<tag>}:seen       sorted set of the user's last applied event ids, scored by event
                             time: the ingest worker's dedupe window
{ns}:behaviours              the behaviour event stream (producers XADD, ctr-ingest reads)
{ns}:behaviours:{<tag>}      one partition of that stream, when there are several
{ns}:behaviours:dead         dead-letter stream: refused or late events, each with a reason

In {<tag>} the braces are literal: a Redis Cluster hash tag. Per-user keys carry the user id
as their tag, so one user's history, profile and seen set share a hash slot and one Lua
script may touch all three. The tag is the raw id with "%" written "%25" and "}" written
"%7D": Redis ends a tag at the first "}", so an id holding one would otherwise leave a
shorter tag (or an empty one, which hashes the whole key and splits the user's keys over
slots). "{" stays as it is: inside a tag it means nothing. Ids are never empty (the API
refuses them), so neither is the tag. A namespace holding braces would supply the tag
itself and put every user on one slot: keep namespaces free of braces.

Rows are one key per row by default, so on a cluster one request's 150 rows fall in about
as many slots (one MGET each). A version published with G row groups tags each row with one of G
tags, spread evenly over the slot ranges (spread_tag), so a request touches at most G slots,
about G / masters per node. The price is balance: all rows of a group share one slot, so the
cluster can move rows between nodes only a whole group at a time. Hash buckets
(core/row_store.py) are tagged the same way, a whole bucket to one group.
"""

import functools
import json
import zlib

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

ITEM_TABLE = "item"
MAX_GROUPS = 1024  # stream partitions or row groups


def field_table(field: str) -> str:
    """The table of one field's own embeddings; rows live at {ns}:{v}:f:{field}:{value}."""
    return f"f:{field}"


def active_key(ns: str) -> str:
    return f"{ns}:active"


def canary_key(ns: str) -> str:
    """JSON {"version", "percent", "salt", guards}: the version a share of users is sent to."""
    return f"{ns}:canary"


def previous_key(ns: str) -> str:
    return f"{ns}:previous"


def activations_key(ns: str) -> str:
    return f"{ns}:activations"


def versions_key(ns: str) -> str:
    return f"{ns}:versions"


def sequence_key(ns: str) -> str:
    return f"{ns}:seq"


def events_channel(ns: str) -> str:
    return f"{ns}:events"


def manifest_key(ns: str, version: str) -> str:
    return f"{ns}:{version}:manifest"


def onnx_key(ns: str, version: str) -> str:
    return f"{ns}:{version}:onnx"


def lease_key(ns: str, version: str) -> str:
    return f"{ns}:{version}:lease"


def uid_key(ns: str, version: str) -> str:
    """The bundle identity of a version name, written just before its manifest."""
    return f"{ns}:{version}:uid"


def rows_epoch_key(ns: str, version: str) -> str:
    """Incremented by every row update of a version; replicas poll it as a fallback."""
    return f"{ns}:{version}:rows-epoch"


def row_prefix(ns: str, version: str, table: str) -> str:
    return f"{ns}:{version}:{table}:"


def row_key(ns: str, version: str, table: str, raw_id: str, groups: int = 0) -> str:
    return row_keys(ns, version, table, [raw_id], groups)[0]


def row_keys(
    ns: str, version: str, table: str, raw_ids: list[str], groups: int = 0, buckets: int = 0
) -> list[str]:
    """The key holding each row of one table: the row itself, or with `buckets` (the table's
    bucket count) the hash whose field raw_id holds it; `groups` is the version's
    row_groups (0: untagged)."""
    prefix = row_prefix(ns, version, table)
    if buckets:
        return bucket_keys(prefix, bucket_numbers(raw_ids, buckets), groups)
    if not groups:
        return [prefix + raw_id for raw_id in raw_ids]
    tags = row_group_tags(groups)
    return [f"{prefix}{tags[zlib.crc32(i.encode()) % groups]}:{i}" for i in raw_ids]


def bucket_numbers(raw_ids: list[str], buckets: int) -> list[int]:
    """The bucket of each row of a table published in `buckets` buckets: CRC-32(id) mod B."""
    return [zlib.crc32(i.encode()) % buckets for i in raw_ids]


def bucket_keys(prefix: str, numbers: list[int], groups: int = 0) -> list[str]:
    """The keys of hash buckets `numbers` under a table's row prefix."""
    if not groups:
        return [f"{prefix}b:{n}" for n in numbers]
    tags = row_group_tags(groups)
    return [f"{prefix}{tags[n % groups]}:b:{n}" for n in numbers]


@functools.cache
def row_group_tags(groups: int) -> tuple[str, ...]:
    """ "{r0}", "{r1}"...: the hash tags of G row groups, each in its own slot range."""
    return tuple(f"{{{spread_tag('r', g, groups)}}}" for g in range(groups))


@functools.cache
def spread_tag(prefix: str, index: int, count: int) -> str:
    """The hash tag of group `index` of `count`: the first of prefix + "i", prefix + "i.1",
    prefix + "i.2"... whose slot falls in the index-th of `count` equal slot ranges, so on a
    cluster whose slots are split evenly (as `redis-cli --cluster create` does) the groups
    spread evenly over the masters."""
    if not 0 <= index < count <= MAX_GROUPS:
        raise ValueError(f"group {index} of {count} (at most {MAX_GROUPS})")
    low = REDIS_CLUSTER_HASH_SLOTS * index // count
    high = REDIS_CLUSTER_HASH_SLOTS * (index + 1) // count
    names = (f"{prefix}{index}" if n == 0 else f"{prefix}{index}.{n}" for n in range(1 << 20))
    return next(tag for tag in names if low <= key_slot(tag.encode()) < high)


def item_meta_keys(ns: str, version: str, raw_ids: list[str]) -> list[str]:
    prefix = f"{ns}:{version}:meta:item:"
    return [prefix + raw_id for raw_id in raw_ids]


def report_key(ns: str, version: str, file_name: str) -> str:
    return f"{ns}:{version}:report:{file_name}"


def user_tag(user_id: str) -> str:
    """The user id as a hash tag's content: "%" and "}" percent-encoded (see above)."""
    if "%" not in user_id and "}" not in user_id:
        return user_id
    return user_id.replace("%", "%25").replace("}", "%7D")


def _user_prefix(ns: str, user_id: str) -> str:
    return f"{ns}:user:{{{user_tag(user_id)}}}:"


def history_key(ns: str, user_id: str) -> str:
    return _user_prefix(ns, user_id) + "hist"


def profile_key(ns: str, user_id: str) -> str:
    return _user_prefix(ns, user_id) + "profile"


def seen_key(ns: str, user_id: str) -> str:
    """The ingest worker's dedupe window of one user: event ids scored by event time."""
    return _user_prefix(ns, user_id) + "seen"


def user_keys(ns: str, user_id: str) -> tuple[str, str, str]:
    """(history, seen, profile) of one user, which share a hash slot."""
    prefix = _user_prefix(ns, user_id)
    return prefix + "hist", prefix + "seen", prefix + "profile"


def behaviours_key(ns: str) -> str:
    """The one behaviour stream; core/events.py names the partitions when there are more."""
    return f"{ns}:behaviours"


def behaviours_partition_key(ns: str, tag: str) -> str:
    """A partition of the behaviour stream; `tag` (core/events.py) picks its hash slot."""
    return f"{ns}:behaviours:{{{tag}}}"


def dead_letter_key(ns: str) -> str:
    return f"{ns}:behaviours:dead"


def version_pattern(ns: str, version: str) -> str:
    """SCAN pattern matching every key of one version."""
    return f"{ns}:{version}:*"


def activated_event(version: str) -> str:
    return json.dumps({"kind": "activated", "version": version})


def canary_event(version: str | None) -> str:
    """The canary changed (None: removed); replicas re-read the canary key."""
    return json.dumps({"kind": "canary", "version": version})


def activation_record(version: str, at: float) -> str:
    return json.dumps({"version": version, "at": at})


def rows_updated_event(version: str, table: str, raw_ids: list[str]) -> str:
    return json.dumps({"kind": "rows-updated", "version": version, "table": table, "ids": raw_ids})


def parse_event(message: str | bytes) -> dict:
    """Decode an events-channel message; an unreadable one becomes {"kind": "unknown"}."""
    try:
        event = json.loads(message)
    except ValueError:
        return {"kind": "unknown"}
    return event if isinstance(event, dict) else {"kind": "unknown"}
