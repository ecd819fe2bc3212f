"""Follows the active pointer and the canary: pub/sub for speed, polling as the fallback for
lost messages.

Runs in its own thread, so loading and warming a new bundle never blocks a request. A version
that fails to load is refused, and not retried for REFUSAL_RETRY_S; the old bundle keeps
serving.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from app.arms import ArmStats
from app.bundle import BundleHolder, LoadedBundle, load_version
from app.cache import RowCache
from app.metrics import Metrics
from core import keys
from core.canary import Canary, end_canary
from core.redis_conn import REDIS_ERRORS, RedisClient, RedisTooOld, require_redis_version
from core.row_store import VersionMissing, check_uid

log = logging.getLogger(__name__)
RETRY_S = 0.2


class BundleWatcher:
    def __init__(
        self,
        client: RedisClient,
        ns: str,
        holder: BundleHolder,
        cache: RowCache,
        metrics: Metrics,
        *,
        device: str,
        threads: int,
        poll_interval_s: float,
    ) -> None:
        self.client, self.ns, self.holder, self.cache = client, ns, holder, cache
        self.metrics = metrics
        self.device, self.threads, self.poll_interval_s = device, threads, poll_interval_s
        self.use_pubsub = True
        self.arms: ArmStats | None = None  # this replica's numbers per version, for guards
        self.server_refused: str | None = None  # why Redis itself is refused (too old)
        self._stop = threading.Event()
        self._wake = threading.Event()  # look at the pointers now (a request dropped a bundle)
        self._rows_epoch: dict[str, bytes | None] = {}
        self._thread = threading.Thread(target=self._run, name="bundle-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            pubsub = None
            try:
                self._check_server()
                pubsub = self._subscribe() if self.use_pubsub else None
                while not self._stop.is_set():
                    self._wake.clear()
                    self.check_pointer()
                    self._listen(pubsub, until=time.monotonic() + self.poll_interval_s)
            except RedisTooOld:
                self._stop.wait(self.poll_interval_s)  # loads nothing until it is upgraded
            except REDIS_ERRORS as error:
                self.metrics.redis_errors.labels(op="watch").inc()
                log.warning("watcher lost Redis: %s", type(error).__name__)
                self._stop.wait(RETRY_S)
            except Exception:  # the watcher must outlive any bug or odd message
                log.exception("watcher error")
                self._stop.wait(RETRY_S)
            finally:
                _close(pubsub)

    def _check_server(self) -> None:
        """Each (re)connection checks the server's version; a refusal is logged once."""
        try:
            require_redis_version(self.client)
        except RedisTooOld as error:
            if self.server_refused != str(error):
                log.error("%s; serving nothing until it is upgraded", error)
            self.server_refused = str(error)
            raise
        self.server_refused = None

    def _subscribe(self):
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(keys.events_channel(self.ns))
        self.cache.clear()  # row updates announced while we were not listening are unknown
        return pubsub

    def _listen(self, pubsub, until: float) -> None:
        while not self._wake.is_set() and (left := until - time.monotonic()) > 0:
            if pubsub is None:
                self._wake.wait(left)
                self.check_rows_epoch()
                return
            message = pubsub.get_message(timeout=min(left, 0.5))
            if message and message.get("type") == "message":
                self.handle_event(keys.parse_event(message["data"]))

    def check_rows_epoch(self) -> None:
        """Without pub/sub, notice row updates by polling the version's update counter."""
        current = self.holder.current
        if current is None:
            return
        epoch = self.client.get(keys.rows_epoch_key(self.ns, current.version))
        if current.version not in self._rows_epoch or epoch != self._rows_epoch[current.version]:
            self.cache.clear()  # the first look, or rows changed since the last one
        self._rows_epoch = {current.version: epoch}

    def handle_event(self, event: dict) -> None:
        try:
            self._handle(event)
        except (KeyError, TypeError, ValueError, AttributeError):
            log.warning("ignored a malformed event: %.200s", event)

    def _handle(self, event: dict) -> None:
        if event["kind"] in ("activated", "canary"):
            self.check_pointer()
        elif event["kind"] == "rows-updated":
            dropped = self.cache.invalidate(event["version"], event["table"], event["ids"])
            self.metrics.row_invalidations.inc(dropped)
            log.info(
                "rows updated",
                extra={
                    "version": event["version"],
                    "table": event["table"],
                    "rows": len(event["ids"]),
                },
            )

    def check_pointer(self) -> None:
        """Load the versions the pointers name (active, canary), unless already served or
        recently refused; end the canary when its own guards say so."""
        serving = self.holder.serving
        pipe = self.client.pipeline(transaction=False)
        pipe.get(keys.active_key(self.ns))
        pipe.get(keys.canary_key(self.ns))
        for bundle in (serving.active, serving.canary):
            pipe.get(keys.uid_key(self.ns, bundle.version if bundle else "-"))
        raw, raw_canary, active_uid, canary_uid = pipe.execute()
        for bundle, uid in ((serving.active, active_uid), (serving.canary, canary_uid)):
            try:
                if bundle is not None:
                    check_uid(bundle.manifest, uid)
            except VersionMissing as missing:
                self.drop(bundle, missing.why)
        current = self.holder.current
        version = raw.decode() if raw else None
        if version and not (current and current.version == version):
            self._activate(version)
        self._follow_canary(Canary.from_json(raw_canary))

    def _activate(self, version: str) -> None:
        started, canary = time.monotonic(), self.holder.serving.canary
        if canary is not None and canary.version == version:  # a promotion: already loaded
            self._serve(canary, started)
        elif not self.holder.recently_refused(version):
            bundle = self._try_load(version)
            if bundle is not None:
                self._serve(bundle, started)

    def _follow_canary(self, split: Canary | None) -> None:
        serving = self.holder.serving
        if split is None or (serving.active and split.version == serving.active.version):
            self.holder.set_canary(None, None)
        elif serving.canary is not None and serving.canary.version == split.version:
            self._guard(split)
            self.holder.set_canary(serving.canary, split)  # the share may have changed
        elif not self.holder.recently_refused(split.version):
            bundle = self._try_load(split.version)
            self.holder.set_canary(bundle, split)  # a refused canary: all on the active one
            if bundle is not None:
                log.info("canary %s on %s%% of users", split.version, split.percent)
        self.cache.drop_other_versions(self.holder.versions())

    def _guard(self, split: Canary) -> None:
        reason = self.arms.breach(split) if self.arms else None
        if reason is not None and end_canary(self.client, self.ns):
            log.error("aborted canary %s: %s", split.version, reason)

    def drop(self, bundle: LoadedBundle, why: str) -> None:
        """Stop serving a bundle whose rows are not in Redis (deleted, lost with Redis's data,
        or a later bundle published under its name), rather than score default rows or
        another bundle's rows. Requests call it the moment a fetch finds that out."""
        if not self.holder.discard(bundle):
            return  # dropped already, by another request or the watcher
        self.cache.clear()
        self._wake.set()  # a bundle published under its name loads now, not at the next poll
        self.metrics.dropped_versions.inc()
        log.error(
            "version %s (%s) %s; not serving it until it loads again",
            bundle.version,
            bundle.uid[:12],
            why,
        )

    def _try_load(self, version: str) -> LoadedBundle | None:
        """The checked, warmed-up bundle, or None when the version is refused."""
        try:
            return load_version(self.client, self.ns, version, self.device, self.threads)
        except REDIS_ERRORS:
            raise
        except Exception as error:  # anything else about this version: refuse it
            self.holder.refuse(version, str(error))
            self.metrics.refusals.inc()
            log.error("refused bundle %s: %s", version, error)
            return None

    def _serve(self, bundle: LoadedBundle, started: float) -> None:
        previous = self.holder.swap(bundle)
        self.cache.drop_other_versions(self.holder.versions())
        self.metrics.swaps.inc()
        self.metrics.model.info({"version": bundle.version, "provider": bundle.provider})
        log.info(
            "serving %s (was %s), loaded in %.0f ms on %s",
            bundle.version,
            previous.version if previous else None,
            1000 * (time.monotonic() - started),
            bundle.provider,
        )


def _close(pubsub) -> None:
    if pubsub is None:
        return
    with contextlib.suppress(*REDIS_ERRORS):
        pubsub.close()
