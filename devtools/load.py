"""Closed-loop load for the hot-swap, canary, ops and fault checks: a few threads, each
sending requests back to back until the `with` block ends.

    class Load(ClientThreads):
        def client(self, k):            # thread k's loop
            while not self.stop.is_set():
                ...
    with Load(8) as load:
        ...                             # the threads run meanwhile; joined on exit
"""

from __future__ import annotations

import threading


class ClientThreads:
    """`count` threads running `self.client(k)`; `stop` is set, and every thread joined, when
    the block ends."""

    def __init__(self, count: int) -> None:
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(k,)) for k in range(count)]

    def client(self, k: int) -> None:
        raise NotImplementedError

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
