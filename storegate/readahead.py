"""Reading a pass's next chunks while the current batches are served.

A dataset that knows its pass (:mod:`storegate.passes`) knows its next batches, so it
reads their chunks ahead, in one thread of this process, while its cache serves the
batches of the current window: without it, the process stops at each window of
:class:`~storegate.torch.ChunkShuffleSampler`'s order to read and decode its chunks, and
an ordinary DataLoader with workers (which deals batch ``j`` to worker ``j % W``) brings
every worker to the next window at the same moment, each waiting for the same chunks.

Read-ahead never changes what a batch holds. The chunks are read with the store's
commit record checked after them, and enter the process's cache only from the thread that
reads batches (the cache has no lock), only if the record was still the one the cache
holds and this process wrote nothing meanwhile; otherwise they are dropped, and the batch
that needs them reads them itself (raising its own error if they cannot be read).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from storegate.backends import Backend
from storegate.loader import ChunkCache, Segment, fetch_chunks, thread_pool
from storegate.reading import fetch_from

__all__ = ["ReadAhead", "Wanted"]

#: A variable's chunks to read: its name, the segment and the chunk ids (sorted, unique).
Wanted = tuple[str, Segment, list[int]]


@dataclass(frozen=True)
class _Job:
    pid: int
    future: Future[dict[Hashable, np.ndarray] | None]
    version: str | None  # the commit record the cache held when the job began
    changes: int  # this process's writes counted then


class ReadAhead:
    """At most one read-ahead of chunks at a time, for one dataset in one process."""

    def __init__(self) -> None:
        self._job: _Job | None = None

    def busy(self) -> bool:
        """Whether a read-ahead of this process has not been adopted yet."""
        return self._job is not None and self._job.pid == os.getpid()

    def start(self, wanted: list[Wanted], backend: Backend, data_id: str, version: str | None, changes: int) -> None:
        """Read ``wanted`` in the read-ahead thread; ``version`` and ``changes``: what the cache holds now."""
        # A pool of its own size (one thread): the chunk reads it starts run in the reader pools.
        future = thread_pool(1).submit(_read, wanted, backend, data_id, version)
        self._job = _Job(os.getpid(), future, version, changes)

    def adopt(self, cache: ChunkCache, version: str | None, changes: int, needed: Callable[[], bool]) -> None:
        """Put the finished read-ahead's chunks into ``cache`` if they hold the commit ``version`` the
        cache holds and ``changes`` is still the count of this process's writes.

        A read-ahead still running is waited for when ``needed()`` (the next batch needs chunks the
        cache does not hold: they may be among those being read), and left running otherwise.
        """
        job = self._job
        if job is None or job.pid != os.getpid():
            self._job = None
            return
        if not job.future.done() and not needed():
            return
        self._job = None
        chunks = job.future.result()
        if chunks is None or job.version != version or job.changes != changes:
            return
        for key, chunk in chunks.items():
            cache.put(key, chunk)

    def __getstate__(self) -> dict[str, object]:
        return {"_job": None}  # a read of this process stays here


def _read(
    wanted: list[Wanted], backend: Backend, data_id: str, version: str | None
) -> dict[Hashable, np.ndarray] | None:
    """The chunks, keyed as the cache keys them, if the commit record after reading them is ``version``."""
    fetch = fetch_from(backend, data_id)
    try:
        chunks: dict[Hashable, np.ndarray] = {
            (var, segment.phase, cid): chunk
            for var, segment, ids in wanted
            for cid, chunk in fetch_chunks(var, segment, ids, fetch).items()
        }
        if backend.data_version(data_id) != version:
            return None
    except Exception:  # the batch that needs these chunks reads them itself and raises its own error
        return None
    return chunks
