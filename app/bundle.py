"""Loading a bundle version from Redis, refusing bad ones, and holding the active one.

A loaded bundle is immutable. The holder swaps one reference, so a request that took the
bundle at its start finishes on it even if a new version is activated meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from app.scorer import Scorer, ScorerError, create_session
from core import keys
from core.manifest import Manifest, read_probe_digest, validate_manifest
from core.redis_conn import RedisClient
from core.rows import encode_rows

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

    @property
    def provider(self) -> str:
        return self.scorer.provider


def load_bundle(client: RedisClient, ns: str, version: str, device: str, threads: int):
    """Read, check and warm up a version. Redis errors propagate; bad bundles are refused."""
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.manifest_key(ns, version))
    pipe.get(keys.onnx_key(ns, version))
    raw_manifest, onnx_bytes = pipe.execute()
    if raw_manifest is None or onnx_bytes is None:
        raise BundleRefused(f"{version}: manifest or ONNX missing")
    manifest = _parse_manifest(raw_manifest, version)
    if hashlib.sha256(onnx_bytes).hexdigest() != manifest.onnx_sha256:
        raise BundleRefused(f"{version}: ONNX bytes do not match the manifest checksum")
    _check_probe_rows(client, ns, manifest)
    scorer = _make_scorer(onnx_bytes, manifest, device, threads)
    bundle = LoadedBundle(version, manifest, scorer, _default_bytes(manifest))
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
    if scorer.input_names != manifest.onnx_inputs:
        raise BundleRefused(f"{manifest.version}: graph inputs {scorer.input_names}")
    wanted = [manifest.onnx_output] + ([manifest.onnx_attention] if manifest.onnx_attention else [])
    if not set(wanted) <= set(scorer.output_names):
        raise BundleRefused(
            f"{manifest.version}: graph outputs {scorer.output_names}, not {wanted}"
        )
    shapes = scorer.input_shapes()
    widths = [s[-1] for s in shapes[:2]]
    if [len(s) for s in shapes] != [3, 3, 2] or widths != [manifest.goods_dim] * 2:
        raise BundleRefused(
            f"{manifest.version}: graph inputs shaped {shapes}, rows are "
            f"{manifest.goods_dim} wide (expected (B, C, D), (B, T, D), (B, T))"
        )
    return scorer


def _default_bytes(manifest: Manifest) -> dict[str, bytes]:
    """Each table's default row, encoded exactly like its stored rows."""
    return {
        name: encode_rows(manifest.default_row(name)[None], manifest.row_dtype)[0]
        for name in manifest.tables
    }


def warm_up(bundle: LoadedBundle) -> None:
    """One real scoring call on the default rows; refuses a graph that cannot score."""
    row = bundle.manifest.default_row("item")[None, :]
    try:
        scores = bundle.scorer.score(row, row, np.ones(1, np.float32))
    except Exception as error:
        raise BundleRefused(f"{bundle.version}: warm-up failed: {error}") from error
    if scores.shape != (1,) or not np.isfinite(scores).all():
        raise BundleRefused(f"{bundle.version}: warm-up gave {scores!r}")


class BundleHolder:
    """The single reference to the active bundle, plus memory of refused versions."""

    def __init__(self) -> None:
        self._current: LoadedBundle | None = None
        self._lock = threading.Lock()
        self.refused: dict[str, tuple[str, float]] = {}  # version -> (reason, when)

    def refuse(self, version: str, reason: str) -> None:
        self.refused[version] = (reason, time.monotonic())

    def recently_refused(self, version: str) -> bool:
        """A refused version is not retried for REFUSAL_RETRY_S (no tight loop on a bad one)."""
        refused = self.refused.get(version)
        return refused is not None and time.monotonic() - refused[1] < REFUSAL_RETRY_S

    @property
    def current(self) -> LoadedBundle | None:
        return self._current

    def swap(self, bundle: LoadedBundle | None) -> LoadedBundle | None:
        with self._lock:
            previous, self._current = self._current, bundle
        return previous
