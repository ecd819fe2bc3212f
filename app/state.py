"""The heavy objects of one process, built once in the lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from app.arms import ArmStats
from app.batching import MicroBatcher
from app.bundle import BundleHolder
from app.cache import RowCache
from app.config import Settings
from app.features import RowFetcher
from app.metrics import Metrics
from app.pipeline import ScoringService
from app.requests import RequestModels
from app.watcher import BundleWatcher
from core.redis_conn import RedisClient, connect_redis

BATCH_RUNNERS = 2  # batches in flight at once: one runs while the next one gathers


T = TypeVar("T")


@dataclass
class AppState:
    settings: Settings
    models: RequestModels
    client: RedisClient
    holder: BundleHolder
    cache: RowCache
    metrics: Metrics
    service: ScoringService
    watcher: BundleWatcher
    batcher: MicroBatcher
    workers: ThreadPoolExecutor
    arms: ArmStats

    async def in_worker(self, function: Callable[..., T], *args) -> T:
        """Run blocking work on the worker threads. A caller that gives up (its deadline)
        leaves the thread to finish alone; the event loop never waits on it."""
        return await asyncio.get_running_loop().run_in_executor(self.workers, function, *args)

    def batching_now(self) -> bool:
        mode = self.settings.batching
        bundle = self.holder.current
        return mode == "on" or (mode == "auto" and bundle is not None and bundle.provider == "cuda")


def build_state(settings: Settings, models: RequestModels) -> AppState:
    client = connect_redis(
        settings.redis_url,
        cluster=settings.redis_cluster,
        password=settings.password(),
        timeout_s=settings.redis_timeout_s,
    )
    holder, cache, metrics = BundleHolder(), RowCache(settings.cache_rows), Metrics()
    service = ScoringService(
        settings, holder, RowFetcher(client, settings.namespace, cache), metrics
    )
    watcher = BundleWatcher(
        client,
        settings.namespace,
        holder,
        cache,
        metrics,
        device=settings.device,
        threads=settings.ort_threads,
        poll_interval_s=settings.poll_interval_s,
    )
    watcher.use_pubsub = settings.pubsub
    batcher = MicroBatcher(
        metrics, settings.batch_max_requests, settings.batch_wait_ms / 1000, runners=BATCH_RUNNERS
    )
    workers = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="score")
    watcher.arms = arms = ArmStats()
    return AppState(
        settings, models, client, holder, cache, metrics, service, watcher, batcher, workers, arms
    )


def close_state(state: AppState) -> None:
    state.watcher.stop()
    state.workers.shutdown(wait=False, cancel_futures=True)
    state.client.close()
