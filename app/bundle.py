"""Loading a bundle version from Redis, refusing bad ones, and holding the active one.

A loaded bundle is immutable. The holder swaps one reference, so a request that took the
bundle at its start finishes on it even if a new version is activated meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, replace

import numpy as np

from app.scorer import Scorer, ScorerError, create_session
from core import graph, keys
from core.canary import Canary
from core.manifest import Manifest, validate_manifest
from core.redis_conn import RedisClient
from core.row_store import read_probe_digest
from core.rows import decode_rows, encode_rows
from core.schema import KINDS

log = logging.getLogger(__name__)
REFUSAL_RETRY_S = 60.0


class BundleRefused(RuntimeError):
    """The version exists but must not be served (corrupt, incomplete or incompatible)."""


@dataclass(frozen=True)
class LoadedBundle:
    version: str
    manifest: Manifest
    scorer: Scorer
    default_bytes: dict[str, bytes]  # table -> default row encoded like a stored row
    defaults: dict[str, np.ndarray]  # kind -> its fields' default rows, concatenated (D,)
    offsets: dict[str, dict[str, slice]]  # kind -> field -> its slice of the kind's vector

    @property
    def provider(self) -> str:
        return self.scorer.provider

    @property
    def uid(self) -> str:
        """The bundle's identity: a name can be published again after Redis loses its
        data, a uid cannot."""
        return self.manifest.uid


def load_version(client: RedisClient, ns: str, version: str, device: str, threads: int):
    """Read, check and warm up a version. Redis errors propagate; bad bundles are refused."""
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.manifest_key(ns, version))
    pipe.get(keys.onnx_key(ns, version))
    pipe.get(keys.uid_key(ns, version))
    raw_manifest, onnx_bytes, uid = pipe.execute()
    if raw_manifest is None or onnx_bytes is None:
        raise BundleRefused(f"{version}: manifest or ONNX missing")
    manifest = _parse_manifest(raw_manifest, version)
    if uid != manifest.uid.encode():
        raise BundleRefused(f"{version}: its uid key does not hold the manifest's uid")
    if hashlib.sha256(onnx_bytes).hexdigest() != manifest.onnx_sha256:
        raise BundleRefused(f"{version}: ONNX bytes do not match the manifest checksum")
    _check_probe_rows(client, ns, manifest)
    scorer = _make_scorer(onnx_bytes, manifest, device, threads)
    default_bytes = _default_bytes(manifest)
    schema = manifest.schema
    bundle = LoadedBundle(
        version,
        manifest,
        scorer,
        default_bytes,
        defaults={kind: _kind_default(manifest, default_bytes, kind) for kind in KINDS},
        offsets={kind: schema.offsets(kind) for kind in KINDS},
    )
    warm_up(bundle)
    return bundle


def _check_probe_rows(client: RedisClient, ns: str, manifest: Manifest) -> None:
    """The probe rows must all be present and match the manifest's checksum."""
    digest = read_probe_digest(client, ns, manifest)
    if digest is None:
        raise BundleRefused(f"{manifest.version}: probe rows are missing")
    if digest != manifest.probe_sha256:
        raise BundleRefused(f"{manifest.version}: rows do not match the manifest checksum")


def _parse_manifest(raw: bytes, version: str) -> Manifest:
    try:
        manifest = Manifest.from_json(raw)
        validate_manifest(manifest)
    except (ValueError, TypeError, KeyError) as error:
        raise BundleRefused(f"{version}: bad manifest: {error}") from error
    if manifest.version != version:
        raise BundleRefused(f"{version}: manifest names version {manifest.version}")
    return manifest


def _make_scorer(onnx_bytes: bytes, manifest: Manifest, device: str, threads: int) -> Scorer:
    try:
        session = create_session(onnx_bytes, device, threads)
        scorer = Scorer(session, manifest.onnx_output, manifest.onnx_attention)
    except ScorerError:
        raise
    except Exception as error:  # onnxruntime's parse errors have no common base class
        raise BundleRefused(f"{manifest.version}: ONNX does not load: {error}") from error
    _check_signature(scorer, manifest)
    return scorer


def _check_signature(scorer: Scorer, manifest: Manifest) -> None:
    """The graph takes exactly the schema's inputs, as wide as its rows, and has the outputs
    the manifest names."""
    expected = list(graph.input_names(manifest.schema))
    if scorer.input_names != expected or manifest.onnx_inputs != expected:
        raise BundleRefused(
            f"{manifest.version}: graph inputs {scorer.input_names} (manifest: "
            f"{manifest.onnx_inputs}), the schema needs {expected}"
        )
    wanted = [manifest.onnx_output] + ([manifest.onnx_attention] if manifest.onnx_attention else [])
    if not set(wanted) <= set(scorer.output_names):
        raise BundleRefused(
            f"{manifest.version}: graph outputs {scorer.output_names}, not {wanted}"
        )
    shapes = dict(zip(scorer.input_names, scorer.input_shapes(), strict=True))
    want = expected_shapes(manifest)
    if any(len(shapes[n]) != len(want[n]) or shapes[n][-1] != want[n][-1] for n in want):
        raise BundleRefused(f"{manifest.version}: graph inputs shaped {shapes}, expected {want}")


def expected_shapes(manifest: Manifest) -> dict[str, tuple]:
    """Each input's rank and row width (None: a dynamic axis whose size is not checked)."""
    schema = manifest.schema
    shapes = {
        graph.CANDIDATES: ("B", "C", schema.item_dim),
        graph.HISTORY: ("B", "T", schema.item_dim),
        graph.MASK: ("B", "T"),
        graph.USER: ("B", schema.user_dim),
        graph.CONTEXT: ("B", schema.context_dim),
    }
    return {name: shapes[name] for name in graph.input_names(schema)}


def _default_bytes(manifest: Manifest) -> dict[str, bytes]:
    """Each table's default row, encoded exactly like its stored rows."""
    return {
        name: encode_rows(manifest.default_row(name)[None], manifest.row_dtype)[0]
        for name in manifest.tables
    }


def _kind_default(manifest: Manifest, default_bytes: dict[str, bytes], kind: str) -> np.ndarray:
    """A kind's vector with every field at its default row, decoded from the stored encoding,
    so an absent value and an unknown one give the same vector."""
    rows = [
        decode_rows([default_bytes[table]], manifest.row_dtype, manifest.tables[table].dim)[0]
        for table in kind_tables(manifest, kind)
    ]
    return np.concatenate(rows) if rows else np.zeros(0, np.float32)


def kind_tables(manifest: Manifest, kind: str) -> list[str]:
    """The tables whose rows make up a kind's vector, in order."""
    if kind == "item":
        return [keys.ITEM_TABLE]
    return [keys.field_table(f.name) for f in manifest.schema.fields_of(kind)]


def warm_up(bundle: LoadedBundle) -> None:
    """One real scoring call on default rows for every input; refuses a graph that cannot
    score."""
    item = bundle.defaults["item"][None, :]  # (1, Di)
    inputs = {
        graph.CANDIDATES: item,
        graph.HISTORY: item,
        graph.MASK: np.ones(1, np.float32),
        graph.USER: bundle.defaults["user"],
        graph.CONTEXT: bundle.defaults["context"],
    }
    try:
        scores = bundle.scorer.score(inputs)
    except Exception as error:
        raise BundleRefused(f"{bundle.version}: warm-up failed: {error}") from error
    if scores.shape != (1,) or not np.isfinite(scores).all():
        raise BundleRefused(f"{bundle.version}: warm-up gave {scores!r}")


@dataclass(frozen=True)
class Serving:
    """What a replica serves at one instant: the active version and, when a canary runs and
    has loaded, the canary version with its assignment. Replaced whole, never changed."""

    active: LoadedBundle | None = None
    canary: LoadedBundle | None = None
    split: Canary | None = None


class BundleHolder:
    """The single reference to what is served, plus memory of refused versions."""

    def __init__(self) -> None:
        self._serving = Serving()
        self._lock = threading.Lock()
        self.refused: dict[str, tuple[str, float]] = {}  # version -> (reason, when)

    def refuse(self, version: str, reason: str) -> None:
        self.refused[version] = (reason, time.monotonic())

    def recently_refused(self, version: str) -> bool:
        """A refused version is not retried for REFUSAL_RETRY_S (no tight loop on a bad one)."""
        refused = self.refused.get(version)
        return refused is not None and time.monotonic() - refused[1] < REFUSAL_RETRY_S

    @property
    def serving(self) -> Serving:
        return self._serving

    @property
    def current(self) -> LoadedBundle | None:
        """The active version's bundle."""
        return self._serving.active

    def choose(self, user_id: str) -> LoadedBundle | None:
        """The bundle this user's request runs on: one read of the snapshot, so the choice
        and the bundle always belong together."""
        serving = self._serving
        if serving.canary is not None and serving.split.takes(user_id):
            return serving.canary
        return serving.active

    def swap(self, bundle: LoadedBundle | None) -> LoadedBundle | None:
        """Serve `bundle` as the active version; the canary, if any, stays."""
        with self._lock:
            previous = self._serving.active
            self._serving = replace(self._serving, active=bundle)
        return previous

    def set_canary(self, bundle: LoadedBundle | None, split: Canary | None) -> None:
        with self._lock:
            self._serving = replace(self._serving, canary=bundle, split=split if bundle else None)

    def discard(self, bundle: LoadedBundle) -> bool:
        """Stop serving this very bundle (as active or canary); False when it is not served."""
        with self._lock:
            serving = self._serving
            if serving.active is bundle:
                self._serving = replace(serving, active=None)
            elif serving.canary is bundle:
                self._serving = replace(serving, canary=None, split=None)
            else:
                return False
        return True

    def versions(self) -> set[str]:
        serving = self._serving
        return {b.version for b in (serving.active, serving.canary) if b is not None}
