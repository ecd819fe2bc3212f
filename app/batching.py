"""Micro-batching: concurrent requests share one session run, never across versions.

Requests fetch their rows in their own threads, then queue for inference. A runner takes what
is queued (waiting at most `wait_s` for company), groups it by bundle version, pads each group
to its largest C and T, stacks the user and context rows, and runs it as one batch. Padded
candidates are dropped; padded behaviours are masked, so each user's scores are those of a
batch of one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import anyio
import numpy as np

from app.metrics import Metrics
from app.pipeline import Prepared
from core import graph


@dataclass
class _Job:
    prepared: Prepared
    done: asyncio.Future = field(repr=False)


def pad_batch(jobs: list[Prepared]) -> dict[str, np.ndarray]:
    """Feeds for B users: candidates (B, Cmax, Di), history (B, Tmax, Di) and history_mask
    (B, Tmax) zero padded; user (B, Du) and context (B, Dc) stacked."""
    c_max = max(j.n_candidates for j in jobs)
    t_max = max(len(j.inputs[graph.MASK]) for j in jobs)
    feeds = {
        graph.CANDIDATES: pad([j.inputs[graph.CANDIDATES] for j in jobs], c_max),
        graph.HISTORY: pad([j.inputs[graph.HISTORY] for j in jobs], t_max),
        graph.MASK: pad([j.inputs[graph.MASK] for j in jobs], t_max),
    }
    for name in jobs[0].bundle.scorer.input_names:
        if name not in feeds:
            feeds[name] = np.stack([j.inputs[name] for j in jobs])
    return feeds


def pad(arrays: list[np.ndarray], length: int) -> np.ndarray:
    """(B, length, ...) zeros with each array in its own row's first positions."""
    out = np.zeros((len(arrays), length, *arrays[0].shape[1:]), np.float32)
    for b, array in enumerate(arrays):
        out[b, : len(array)] = array
    return out


def run_group(jobs: list[Prepared]) -> list[np.ndarray]:
    scores = jobs[0].bundle.scorer.score_batch(pad_batch(jobs))  # (B, Cmax)
    return [scores[b, : job.n_candidates] for b, job in enumerate(jobs)]


class MicroBatcher:
    def __init__(self, metrics: Metrics, max_requests: int, wait_s: float, runners: int) -> None:
        self.metrics, self.max_requests, self.wait_s = metrics, max_requests, wait_s
        self.runners = runners
        self._queue: asyncio.Queue[_Job] | None = None
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self.runners)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def score(self, prepared: Prepared) -> np.ndarray:
        job = _Job(prepared, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        return await job.done

    async def _run(self) -> None:
        while True:
            jobs = await self._collect()
            self.metrics.batch_size.observe(len(jobs))
            for version_jobs in _by_version(jobs):
                await self._run_version(version_jobs)

    async def _collect(self) -> list[_Job]:
        jobs = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while len(jobs) < self.max_requests:
            if not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                continue
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        return jobs

    async def _run_version(self, jobs: list[_Job]) -> None:
        try:
            results = await anyio.to_thread.run_sync(run_group, [j.prepared for j in jobs])
        except Exception as error:  # every waiting request gets the failure, none hangs
            for job in jobs:
                if not job.done.done():
                    job.done.set_exception(error)
            return
        for job, scores in zip(jobs, results, strict=True):
            if not job.done.done():
                job.done.set_result(scores)


def _by_version(jobs: list[_Job]) -> list[list[_Job]]:
    groups: dict[str, list[_Job]] = {}
    for job in jobs:
        groups.setdefault(job.prepared.bundle.version, []).append(job)
    return list(groups.values())
