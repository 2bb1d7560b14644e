"""Framework-free machinery behind :mod:`storegate.torch` and :mod:`storegate.tensorflow`.

- :class:`Segment` and :func:`chunk_bounds`: where the stored chunks of a variable lie
  among the rows of a dataset (one segment per phase; phase ``'all'`` has several).
- :class:`ChunkCache`: a bounded LRU cache of decoded chunks, sized in bytes.
- :class:`ChunkedVariable`: reads arbitrary rows of one variable with one storage call per
  run of adjacent chunks that the cache does not hold, and scatters them back in order;
  :func:`fetch_chunks` is that run-by-run read, and a :class:`ChunkSource` (the cache shared
  by DataLoader workers, :mod:`storegate.shared_cache`) may stand in for it.
- :func:`chunk_shuffled_order`, :func:`epoch_order` and :func:`shard`: the chunk-aware
  epoch permutation (of a phase's rows or a view's items) and its split over distributed ranks.
- :func:`view_chunk_bounds`: the chunks of a view's items, once sorted by stored row.

Kept apart from the torch module so that it can be tested and used without torch (the
TensorFlow path, :mod:`storegate.tensorflow`, orders and reads its epochs with it too).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from storegate.chunk_buffers import recycle

__all__ = [
    "DEFAULT_CHUNK_CACHE_BYTES",
    "DEFAULT_WINDOW",
    "LOCAL_READ_THREADS",
    "READ_THREADS",
    "ChunkCache",
    "ChunkSource",
    "ChunkedVariable",
    "Fetch",
    "MemoryVariable",
    "Segment",
    "chunk_bounds",
    "chunk_runs",
    "chunk_shuffled_order",
    "epoch_order",
    "fetch_chunks",
    "shard",
    "thread_pool",
    "view_chunk_bounds",
]

#: Bytes of decoded chunks each process keeps (per dataset) by default.
DEFAULT_CHUNK_CACHE_BYTES = 64 << 20
#: Chunks whose rows an epoch's order shuffles together by default.
DEFAULT_WINDOW = 4

#: Threads with which each process reads the chunks of one batch at once from a remote store,
#: when its ``fetch`` allows it (a ``concurrent`` attribute that is true): their requests
#: overlap, and numcodecs decodes (zstd, Blosc) outside the GIL, on every core.
READ_THREADS = 8
#: The same from local disk, where reads wait on the CPU, not the network: a thread per core
#: and one more. More threads decode no faster (2 cores: 3, 4 and 8 threads read an epoch
#: equally fast), and each keeps a malloc arena whose freed chunk buffers stay resident
#: (4 and 8 threads held about 20 MiB more than 3 over a 1.1 GB epoch with a 256 MiB cache).
LOCAL_READ_THREADS = min(READ_THREADS, (os.cpu_count() or 1) + 1)

#: ``fetch(phase, var, rows)`` returns the stored rows ``rows`` (a step-1 slice) of ``var``.
#: A fetch with a true ``concurrent`` attribute may be called from several threads at once.
Fetch = Callable[[str, str, slice], np.ndarray]


@dataclass(frozen=True)
class Segment:
    """The rows ``[start, start + rows)`` of a dataset, stored in one phase's array.

    ``chunk_rows`` is the array's rows per chunk (its inner chunk when sharded).
    """

    phase: str
    start: int
    rows: int
    chunk_rows: int


def chunk_bounds(segments: Sequence[Segment]) -> np.ndarray:
    """Dataset row offsets where chunks start, followed by the total number of rows."""
    starts = [np.arange(s.start, s.start + s.rows, s.chunk_rows, dtype=np.int64) for s in segments]
    end = segments[-1].start + segments[-1].rows if segments else 0
    return np.concatenate([*starts, np.array([end], dtype=np.int64)])


class ChunkCache:
    """Least-recently-used cache of decoded chunks, bounded by their total bytes.

    A chunk larger than ``max_bytes`` is never cached; ``max_bytes=0`` disables caching.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable) -> np.ndarray | None:
        """The cached chunk, marked as most recently used, or None."""
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: Hashable, chunk: np.ndarray) -> None:
        """Cache ``chunk``, evicting the least recently used chunks to stay within bounds."""
        if chunk.nbytes > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._nbytes -= old.nbytes
        self._items[key] = chunk
        self._nbytes += chunk.nbytes
        while self._nbytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._nbytes -= evicted.nbytes
            recycle(evicted)  # decoded into again unless something still holds it
            del evicted

    def clear(self) -> None:
        """Drop every chunk."""
        self._items.clear()
        self._nbytes = 0


def chunk_runs(ids: np.ndarray) -> list[tuple[int, int]]:
    """Sorted unique chunk ids as runs of adjacent ids ``(first, last)``."""
    if ids.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    firsts = np.concatenate([ids[:1], ids[breaks]])
    lasts = np.concatenate([ids[breaks - 1], ids[-1:]])
    return [(int(a), int(b)) for a, b in zip(firsts, lasts, strict=True)]


def fetch_chunks(var: str, segment: Segment, ids: Sequence[int], fetch: Fetch) -> dict[int, np.ndarray]:
    """Decoded chunks ``ids`` (sorted, unique) of one segment of ``var``.

    When ``fetch`` allows it, each chunk is one ``fetch``, and they are read at once in
    :data:`READ_THREADS` threads from a remote store, :data:`LOCAL_READ_THREADS` from local
    disk (a backend may then decode each in the thread that asked for it: see
    ``storegate.backends.zarr_direct``); otherwise one ``fetch`` per run of adjacent ids.
    """
    found: dict[int, np.ndarray] = {}
    size = segment.chunk_rows
    wanted = np.asarray(ids, dtype=np.int64)
    runs = [(cid, cid) for cid in wanted.tolist()] if getattr(fetch, "concurrent", False) else chunk_runs(wanted)
    blocks = _read_runs(
        fetch, segment.phase, var, [slice(a * size, min((b + 1) * size, segment.rows), 1) for a, b in runs]
    )
    for (first, last), block in zip(runs, blocks, strict=True):
        if first == last:
            found[first] = block  # the array read for it alone (no view keeping a longer read alive)
            continue
        for cid in range(first, last + 1):
            found[cid] = block[(cid - first) * size : (cid - first + 1) * size]
    return found


def _read_runs(fetch: Fetch, phase: str, var: str, runs: list[slice]) -> list[np.ndarray]:
    if len(runs) < 2 or not getattr(fetch, "concurrent", False):
        return [fetch(phase, var, rows) for rows in runs]
    threads = READ_THREADS if getattr(fetch, "remote", False) else LOCAL_READ_THREADS
    return list(thread_pool(threads).map(lambda rows: fetch(phase, var, rows), runs))


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _pools_lock
    _pools_lock = threading.Lock()  # another thread of the parent may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


def thread_pool(threads: int) -> ThreadPoolExecutor:
    """This process's pool of ``threads`` reader threads (a forked DataLoader worker makes its
    own: threads do not survive a fork). Pools of different sizes are different pools: a task
    of one may wait on tasks of another."""
    key = (os.getpid(), threads)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            for old in [k for k in _pools if k[0] != key[0]]:
                del _pools[old]  # a parent's pool, copied by fork without its threads
            pool = _pools[key] = ThreadPoolExecutor(threads, thread_name_prefix="storegate-read")
        return pool


class ChunkSource(Protocol):
    """Where :class:`ChunkedVariable` gets the chunks its own cache does not hold.

    :func:`fetch_chunks` reads them from the store; a shared cache serves them from memory
    that several processes see, and reads (through ``fetch``) only those no process holds.
    """

    def chunks(self, var: str, segment: Segment, ids: Sequence[int], fetch: Fetch) -> dict[int, np.ndarray]:
        """Decoded chunks ``ids`` (sorted, unique) of ``segment`` of ``var``, as arrays this caller may keep."""


@dataclass(frozen=True)
class MemoryVariable:
    """A variable held in memory: any rows are one numpy fancy-indexing call."""

    array: np.ndarray

    @property
    def bounds(self) -> np.ndarray:
        # Random access is cheap in memory, so every row is its own "chunk".
        return np.arange(self.array.shape[0] + 1, dtype=np.int64)

    def read(
        self, rows: np.ndarray, fetch: Fetch | None, cache: ChunkCache, source: ChunkSource | None = None
    ) -> np.ndarray:
        """Rows ``rows`` in that order, as a new array."""
        return np.asarray(self.array[rows])


@dataclass(frozen=True)
class ChunkedVariable:
    """A variable stored in chunks, read by whole chunks through ``fetch``."""

    var: str
    segments: tuple[Segment, ...]
    dtype: np.dtype
    row_shape: tuple[int, ...]

    @property
    def bounds(self) -> np.ndarray:
        """Chunk starts over the dataset's rows, then the number of rows."""
        return chunk_bounds(self.segments)

    @property
    def row_bytes(self) -> int:
        """Bytes of one decoded row."""
        return self.dtype.itemsize * int(np.prod(self.row_shape, dtype=np.int64))

    @property
    def chunk_bytes(self) -> int:
        """Bytes of the largest decoded chunk."""
        return max((s.chunk_rows for s in self.segments), default=0) * self.row_bytes

    def cached(self, rows: np.ndarray, cache: ChunkCache) -> bool:
        """Whether ``cache`` holds every chunk that rows ``rows`` lie in (a read of them would not touch the store)."""
        return not self.missing(rows, cache)

    def chunks(self, rows: np.ndarray) -> list[tuple[Segment, list[int]]]:
        """The chunks that rows ``rows`` lie in: per segment that holds some, sorted ids."""
        out = []
        for segment in self.segments:
            local = rows[(rows >= segment.start) & (rows < segment.start + segment.rows)] - segment.start
            if local.size:
                out.append((segment, np.unique(local // segment.chunk_rows).tolist()))
        return out

    def missing(self, rows: np.ndarray, cache: ChunkCache) -> list[tuple[Segment, list[int]]]:
        """The chunks that rows ``rows`` lie in and ``cache`` does not hold: per segment, sorted ids."""
        out = []
        for segment, ids in self.chunks(rows):
            ids = [cid for cid in ids if (self.var, segment.phase, cid) not in cache]
            if ids:
                out.append((segment, ids))
        return out

    def read(
        self, rows: np.ndarray, fetch: Fetch | None, cache: ChunkCache, source: ChunkSource | None = None
    ) -> np.ndarray:
        """Rows ``rows`` (in range, any order, repeats allowed) in that order, as a new array.

        Each needed chunk is fetched at most once: the cache serves chunks it holds, and the
        others come from ``source`` (a shared cache), or else are read with one ``fetch``
        call per run of adjacent chunks.
        """
        if fetch is None:
            raise ValueError("fetch must be given to read a chunked variable. Got None instead.")
        out = np.empty((rows.shape[0], *self.row_shape), dtype=self.dtype)
        if len(self.segments) == 1:
            self._read_segment(self.segments[0], rows, np.arange(rows.shape[0]), out, fetch, cache, source)
            return out
        for segment in self.segments:
            positions = np.flatnonzero((rows >= segment.start) & (rows < segment.start + segment.rows))
            if positions.size:
                self._read_segment(segment, rows[positions], positions, out, fetch, cache, source)
        return out

    def _read_segment(
        self,
        segment: Segment,
        rows: np.ndarray,
        positions: np.ndarray,
        out: np.ndarray,
        fetch: Fetch,
        cache: ChunkCache,
        source: ChunkSource | None,
    ) -> None:
        local = rows - segment.start
        ids = local // segment.chunk_rows
        order = np.argsort(ids, kind="stable")
        unique, firsts, counts = np.unique(ids[order], return_index=True, return_counts=True)
        chunks = self._chunks(segment, unique, fetch, cache, source)
        for cid, first, count in zip(unique.tolist(), firsts.tolist(), counts.tolist(), strict=True):
            picked = order[first : first + count]
            out[positions[picked]] = chunks[cid][local[picked] - cid * segment.chunk_rows]

    def _chunks(
        self, segment: Segment, ids: np.ndarray, fetch: Fetch, cache: ChunkCache, source: ChunkSource | None
    ) -> dict[int, np.ndarray]:
        """Decoded chunks ``ids`` of a segment: from the cache, else from ``source`` or the store."""
        found: dict[int, np.ndarray] = {}
        missing = []
        for cid in ids.tolist():
            chunk = cache.get((self.var, segment.phase, cid))
            if chunk is None:
                missing.append(cid)
            else:
                found[cid] = chunk
        if not missing:
            return found
        fetched = (
            fetch_chunks(self.var, segment, missing, fetch)
            if source is None
            else source.chunks(self.var, segment, missing, fetch)
        )
        for cid, chunk in fetched.items():
            found[cid] = chunk
            cache.put((self.var, segment.phase, cid), chunk)
        return found


def chunk_shuffled_order(bounds: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``range(bounds[-1])`` that stays near chunk order.

    The chunks (``[bounds[i], bounds[i + 1])``) are put in a random order; the rows of each
    run of ``window`` consecutive chunks of that order are then shuffled together.
    """
    sizes = np.diff(bounds)
    order = rng.permutation(sizes.shape[0])
    lengths = sizes[order]
    total = int(lengths.sum())
    # Row r of the k-th permuted chunk is bounds[order[k]] + r: build all of them at once.
    shift = bounds[:-1][order] - (np.cumsum(lengths) - lengths)
    rows = np.repeat(shift, lengths) + np.arange(total, dtype=np.int64)
    windows = np.repeat(np.arange(order.shape[0]) // window, lengths)
    return rows[np.lexsort((rng.random(total), windows))]


def epoch_order(bounds: np.ndarray, items: np.ndarray | None, seed: int, epoch: int, window: int) -> np.ndarray:
    """Epoch ``epoch``'s chunk-aware order of a dataset, reproducible from ``seed`` and ``epoch``.

    ``bounds`` are the dataset's chunk bounds; ``items`` its items sorted by stored row
    (a view's ``chunk_order``), or None when item ``i`` is stored row ``i``.
    """
    rng = np.random.default_rng([seed, epoch])
    order = chunk_shuffled_order(bounds, window, rng)
    return order if items is None else items[order]


def view_chunk_bounds(stored_bounds: np.ndarray, view_rows: np.ndarray) -> np.ndarray:
    """Chunk bounds of a view's items once sorted by the stored row they read.

    ``stored_bounds`` are the stored rows where chunks start, then the number of stored
    rows; ``view_rows`` the stored row of each item. The result holds positions in the
    sorted items (``np.argsort(view_rows, kind="stable")``) where another chunk starts, then
    the number of items, so that the items of one chunk lie between two bounds.
    """
    rows = np.sort(view_rows, kind="stable")
    chunks = np.searchsorted(stored_bounds, rows, side="right")
    starts = np.flatnonzero(np.diff(chunks) != 0) + 1
    return np.concatenate([np.zeros(1, dtype=np.int64), starts, np.array([rows.shape[0]], dtype=np.int64)])


def shard(order: np.ndarray, num_replicas: int, rank: int, drop_last: bool) -> np.ndarray:
    """Rank ``rank``'s contiguous share of an epoch ``order``.

    Every rank gets the same count. With ``drop_last`` the last ``len % num_replicas``
    rows of the epoch are left out; otherwise the epoch is padded by repeating its first
    rows (as torch's DistributedSampler does), and those repeats are the only overlap.
    """
    n = order.shape[0]
    per_rank = n // num_replicas if drop_last else -(-n // num_replicas)
    padding = per_rank * num_replicas - n
    if padding > 0:
        order = np.concatenate([order, np.resize(order, padding)])
    return order[rank * per_rank : (rank + 1) * per_rank]
