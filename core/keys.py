"""The Redis key scheme of a model bundle. Every key is built here and nowhere else.

{ns}:active                  the version the service follows
{ns}:versions                sorted set of complete versions (score = publish time)
{ns}:seq                     counter that names new versions v1, v2, ...
{ns}:events                  pub/sub channel, JSON events: activated, rows-updated
{ns}:activations             list of JSON {"version", "at"}, newest first, the last 100
{ns}:{v}:manifest            JSON manifest, written last: its presence means "complete"
{ns}:{v}:onnx                the dense graph as ONNX bytes
{ns}:{v}:lease               set while a writer is publishing {v}; expires if it dies
{ns}:{v}:rows-epoch          counter bumped by every row update of {v}
{ns}:{v}:{table}:{raw id}    one embedding row, little-endian float32 or float16
{ns}:{v}:meta:item:{raw id}  JSON {"title", "category"} of an item, shown by explanations
{ns}:{v}:report:{file}       a file of the training report (report.png, report.md)
{ns}:user:{raw id}:hist      a user's recent behaviours (raw item ids), not versioned
"""

import json

TABLES = ("item", "cat")


def active_key(ns: str) -> str:
    return f"{ns}:active"


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


def rows_epoch_key(ns: str, version: str) -> str:
    """Incremented by every row update of a version; replicas poll it as a fallback."""
    return f"{ns}:{version}:rows-epoch"


def row_prefix(ns: str, version: str, table: str) -> str:
    return f"{ns}:{version}:{table}:"


def row_key(ns: str, version: str, table: str, raw_id: str) -> str:
    return f"{ns}:{version}:{table}:{raw_id}"


def row_keys(ns: str, version: str, table: str, raw_ids: list[str]) -> list[str]:
    prefix = row_prefix(ns, version, table)
    return [prefix + raw_id for raw_id in raw_ids]


def item_meta_keys(ns: str, version: str, raw_ids: list[str]) -> list[str]:
    prefix = f"{ns}:{version}:meta:item:"
    return [prefix + raw_id for raw_id in raw_ids]


def report_key(ns: str, version: str, file_name: str) -> str:
    return f"{ns}:{version}:report:{file_name}"


def history_key(ns: str, user_id: str) -> str:
    return f"{ns}:user:{user_id}:hist"


def version_pattern(ns: str, version: str) -> str:
    """SCAN pattern matching every key of one version."""
    return f"{ns}:{version}:*"


def activated_event(version: str) -> str:
    return json.dumps({"kind": "activated", "version": version})


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
