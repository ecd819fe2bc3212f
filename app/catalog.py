"""What the UI shows about published versions: metrics, publish and activation times, and the
training report files. Read from Redis on request; nothing here is on the scoring path."""

from __future__ import annotations

from core import keys
from core.canary import Canary
from core.manifest import Manifest
from core.redis_conn import RedisClient

VERSIONS_SHOWN = 20
MEDIA_TYPES = {".png": "image/png", ".md": "text/markdown; charset=utf-8"}


def versions_page(client: RedisClient, ns: str, serving: dict) -> dict:
    """The newest versions first, each with its metrics and its last activation time; the
    canary and its share; `serving`: what this replica serves and its numbers per arm."""
    listed = client.zrevrange(keys.versions_key(ns), 0, VERSIONS_SHOWN - 1, withscores=True)
    names = [name.decode() for name, _ in listed]
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.active_key(ns))
    pipe.get(keys.canary_key(ns))
    pipe.lrange(keys.activations_key(ns), 0, -1)
    for name in names:
        pipe.get(keys.manifest_key(ns, name))
    active, raw_canary, log, *manifests = pipe.execute()
    activations = [a for a in map(keys.parse_event, log) if is_activation(a)]
    active = active.decode() if active else None
    canary = Canary.from_json(raw_canary)
    return serving | {
        "active": active,
        "canary": {"version": canary.version, "percent": canary.percent} if canary else None,
        "versions": [
            summarise(name, published_at, raw, activations, active)
            for name, (_, published_at), raw in zip(names, listed, manifests, strict=True)
        ],
        "activations": activations[:VERSIONS_SHOWN],
    }


def is_activation(record: dict) -> bool:
    """A well-formed activation-log record (anything else in the list is skipped)."""
    return isinstance(record.get("version"), str) and isinstance(record.get("at"), int | float)


def summarise(name: str, published_at: float, raw, activations: list, active) -> dict:
    manifest = parse(raw)
    activated = [a["at"] for a in activations if a.get("version") == name]
    return {
        "version": name,
        "published_at": published_at,
        "activated_at": activated[0] if activated else None,
        "active": name == active,
        "pooling": manifest.model.get("pooling") if manifest else None,
        "metrics": manifest.metrics if manifest else {},
    }


def version_detail(client: RedisClient, ns: str, version: str) -> dict | None:
    """A version's manifest as the UI needs it, or None when it does not exist."""
    manifest = parse(client.get(keys.manifest_key(ns, version)))
    if manifest is None:
        return None
    return {
        "version": manifest.version,
        "published_at": manifest.created_at,
        "model": manifest.model,
        "metrics": manifest.metrics,
        "row_dtype": manifest.row_dtype,
        "row_layout": manifest.row_layout,
        "tables": {name: spec.rows for name, spec in manifest.tables.items()},
        "explainable": bool(manifest.onnx_attention),
        "item_metadata": manifest.item_metadata,
        "demo_users": manifest.demo_users,
        "demo_items": manifest.demo_items,
        "report": sorted(manifest.report),
        "schema": manifest.schema.to_dict(),
    }


def report_file(client: RedisClient, ns: str, version: str, name: str) -> bytes | None:
    """A training report file the version's manifest lists, or None."""
    manifest = parse(client.get(keys.manifest_key(ns, version)))
    if manifest is None or name not in manifest.report:
        return None
    return client.get(keys.report_key(ns, version, name))


def media_type(name: str) -> str:
    suffix = name[name.rfind(".") :] if "." in name else ""
    return MEDIA_TYPES.get(suffix, "application/octet-stream")


def parse(raw: bytes | None) -> Manifest | None:
    """The manifest, or None when it is missing or unreadable (listed without its details)."""
    if raw is None:
        return None
    try:
        manifest = Manifest.from_json(raw)
    except (ValueError, TypeError, KeyError):
        return None
    readable = isinstance(manifest.model, dict) and isinstance(manifest.metrics, dict)
    return manifest if readable else None
