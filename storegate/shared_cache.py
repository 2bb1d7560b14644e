"""A cache of decoded chunks in shared memory, seen by every process of a DataLoader.

KappaData's ``SharedDictDataset`` keeps decoded samples in a dictionary shared by all
DataLoader workers, so that N workers decode the data once, not N times. This is that
cache for chunks: :class:`SharedChunkCache` holds decoded chunks in one shared-memory arena
(a ``multiprocessing.shared_memory`` segment, ``/dev/shm/<name>``) that every process maps,
bounded in bytes, with least-recently-used eviction; a process that needs a chunk another
one is decoding waits for it instead of decoding it again, so each chunk is decoded once
while the cache holds it, whatever the number of workers.

The arena holds, per variable, a table (one entry per chunk: empty, "being read by process
P", or the slot holding it) and fixed-size slots (one chunk each, the variable's largest).
Every read and change of the tables and slots happens under one lock (``flock`` on the
segment, plus a thread lock), and a chunk is entered in its table only once its bytes are
all in its slot, so no process ever sees a partly written chunk. ``flock`` locks are
released by the kernel when a process dies, and a chunk that a dead process was reading is
taken over by the next process that needs it, so a killed worker leaves no lock held and no
one waiting forever.

Processes. The process that makes the cache owns the segment: it unlinks it on
:meth:`SharedChunkCache.close`, when the cache is garbage-collected, or at exit
(``weakref.finalize``), and Python's resource tracker unlinks it if the owner is killed.
Other processes (forked or spawned workers: the cache pickles as its name and layout) map
the segment by its path without registering it with the resource tracker: before Python
3.13 ``SharedMemory(name)`` registers every attachment, and the tracker then unlinks the
segment, or warns about it, when a worker ends. A process that finds the segment gone
(closed by its owner) reads from the store instead: the values are the same.

The segment is fully allocated when it is made (``posix_fallocate``), so a ``/dev/shm``
too small for it (Docker's 64 MB default) is an error then, not a SIGBUS later.

The tables are made for one layout of the variables (rows, chunks, dtypes): the owner makes
one cache per dataset, and a dataset made after a write therefore never sees chunks cached
before it. :meth:`SharedChunkCache.invalidate` drops every chunk (a write seen later).
Needs Linux (``/dev/shm``); kept free of torch so it can be used and tested without it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from storegate.errors import InvalidArgumentError
from storegate.loader import ChunkedVariable, Fetch, Segment, chunk_runs, fetch_chunks
from storegate.rules import check_int

__all__ = ["NAME_PREFIX", "SHM_DIR", "CacheStats", "SharedChunkCache"]

#: Where POSIX shared memory segments live (Linux).
SHM_DIR = Path("/dev/shm")
#: Names of the segments start with this (``ls /dev/shm/storegate_*`` lists them).
NAME_PREFIX = "storegate_"
#: A process waits this long for a chunk another live process is reading, then reads it itself.
WAIT_LIMIT = 120.0
_ALIGN = 64
# A waiter looks again after 0.1, 0.2, 0.4, 0.8, then every 1 ms: a chunk takes about a
# millisecond to decode, so a longer pause would cost more than the decode it saves
# (looking costs a few microseconds under the lock).
_FIRST_PAUSE, _LAST_PAUSE = 0.0001, 0.001
_EMPTY = -1
_HEADER = 16  # int64 words: magic, generation, clock, the counters of CacheStats, then the commit
_MAGIC = 0x5347434143484531  # "SGCACHE1"
_GEN, _CLOCK, _DECODED, _HITS, _WAITS, _EVICTIONS, _TAKEOVERS, _COMMIT = range(1, 9)


@dataclass(frozen=True)
class CacheStats:
    """What every process did with a shared cache so far (counted in the arena).

    Attributes
    ----------
    decoded
        Chunks read from the store and decoded, by any process, through this cache.
    hits
        Chunks served from the arena.
    waits
        Chunks a process waited for while another process read them.
    evictions
        Chunks dropped to make room.
    takeovers
        Chunks whose reader died before it finished, read again by another process.
    """

    decoded: int
    hits: int
    waits: int
    evictions: int
    takeovers: int


@dataclass(frozen=True)
class _VarPlan:
    """Where one variable's table and slots lie in the arena."""

    var: str
    dtype: str
    row_shape: tuple[int, ...]
    firsts: dict[str, int]  # phase -> table index of its chunk 0
    n_chunks: int
    n_slots: int
    slot_bytes: int
    table: int  # offsets in the arena
    owners: int
    used: int
    data: int

    @property
    def row_bytes(self) -> int:
        return int(np.dtype(self.dtype).itemsize * int(np.prod(self.row_shape, dtype=np.int64)))


class _Views:
    """This process's mapping of the arena and numpy views of its parts."""

    def __init__(self, path: Path, plans: dict[str, _VarPlan], size: int) -> None:
        self.fd = os.open(path, os.O_RDWR)
        try:
            self.map = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise
        self.header = np.ndarray((_HEADER,), np.int64, self.map, 0)
        self.tables = {v: np.ndarray((p.n_chunks,), np.int64, self.map, p.table) for v, p in plans.items()}
        self.owners = {v: np.ndarray((p.n_slots,), np.int64, self.map, p.owners) for v, p in plans.items()}
        self.used = {v: np.ndarray((p.n_slots,), np.int64, self.map, p.used) for v, p in plans.items()}
        self.slots = {v: np.ndarray((p.n_slots, p.slot_bytes), np.uint8, self.map, p.data) for v, p in plans.items()}
        self.thread_lock = threading.Lock()

    def __del__(self) -> None:
        # In a forked child this closes its copy of the descriptor only: the parent keeps its lock.
        with contextlib.suppress(OSError):
            os.close(self.fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self.thread_lock:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)


class SharedChunkCache:
    """Decoded chunks of some variables, in shared memory seen by every DataLoader worker.

    Parameters
    ----------
    variables
        The chunked variables to cache (their segments give the chunks and their layout).
        A variable of object dtype, or whose chunk is larger than its share of
        ``max_bytes``, is not cached: its chunks are read from the store each time.
    max_bytes
        Bound of the decoded chunks held, in bytes (the arena also holds a table of 8 bytes
        per chunk and 16 per slot). The bound is shared out so that every variable holds about the same
        number of rows, and the arena is never larger than the variables' decoded data.

    Raises
    ------
    InvalidArgumentError
        ``max_bytes`` is not a positive int, there is no ``/dev/shm`` (not Linux), or it
        has no room for the arena.

    Notes
    -----
    Behaviour from KappaData's ``SharedDictDataset`` (an in-memory cache shared by all
    workers); see the module docstring for the processes, the lock and the lifetime.
    """

    def __init__(self, variables: Sequence[ChunkedVariable], max_bytes: int) -> None:
        max_bytes = check_int("max_bytes", max_bytes, minimum=1)
        if not SHM_DIR.is_dir():
            raise InvalidArgumentError(
                f"a shared chunk cache needs POSIX shared memory in {SHM_DIR} (Linux). Got no such folder "
                "instead. Leave shared_cache_bytes at 0 (each worker keeps its own cache)."
            )
        self.max_bytes = max_bytes
        self._plans, self._size = _plan(variables, max_bytes)
        # Registered with the resource tracker: unlinked even if this process is killed.
        segment = shared_memory.SharedMemory(f"{NAME_PREFIX}{secrets.token_hex(8)}", create=True, size=self._size)
        self._name = segment.name.lstrip("/")
        segment.close()  # every process, this one too, maps it through _Views
        self._owner = os.getpid()
        self._finalizer: Callable[[], Any] = weakref.finalize(self, _unlink, segment, self._owner)
        self._closed = False
        try:
            self._views: _Views | None = _empty_arena(SHM_DIR / self._name, self._plans, self._size)
        except BaseException:
            self._finalizer()
            raise
        self._pid: int | None = self._owner
        self._commit = 0  # the commit this process reads (see expect)

    # --- reading -------------------------------------------------------------------------

    def expect(self, commit: int) -> None:
        """Say which commit this process reads from now on (a key of its commit record, an int).

        A chunk this process reads enters the arena only while the arena holds chunks of that
        commit (set by this process's or another one's :meth:`invalidate` since): a process
        that has not yet seen a commit reads the data as of its own, older record, and its
        chunks would otherwise sit beside the new commit's for every other process to take.
        """
        self._commit = int(commit)

    def chunks(self, var: str, segment: Segment, ids: Sequence[int], fetch: Fetch) -> dict[int, np.ndarray]:
        """Decoded chunks ``ids`` (sorted, unique) of ``segment`` of ``var``, each a new array.

        Chunks in the arena are copied out; those no process holds or reads are read with
        ``fetch`` (one call per run of adjacent chunks) and entered; those another process is
        reading are waited for.
        """
        plan = self._plans.get(var)
        views = self._attached()
        if plan is None or plan.n_slots == 0 or views is None:
            return self._read_direct(views, var, segment, ids, fetch)
        first = plan.firsts[segment.phase]
        found: dict[int, np.ndarray] = {}
        pending, counted = list(ids), set[int]()
        deadline = time.monotonic() + WAIT_LIMIT
        pause = _FIRST_PAUSE
        while True:
            asked = pending
            claimed, pending, generation = self._take(views, plan, segment, first, pending, found, counted)
            if generation < 0:  # the arena holds another commit than this process reads
                found.update(self._read_direct(views, var, segment, asked, fetch))
                return found
            if claimed:
                self._load(views, plan, segment, first, claimed, generation, fetch, found)
            if not pending:
                return found
            if time.monotonic() > deadline:  # a live reader that never finishes: read them here
                found.update(self._read_direct(views, var, segment, pending, fetch))
                return found
            time.sleep(pause)
            pause = min(pause * 2, _LAST_PAUSE)

    def _take(
        self,
        views: _Views,
        plan: _VarPlan,
        segment: Segment,
        first: int,
        ids: list[int],
        found: dict[int, np.ndarray],
        counted: set[int],
    ) -> tuple[list[int], list[int], int]:
        """Under the lock: copy out the chunks held, claim those no live process reads.

        Returns the claimed ids, the ids another process is reading (``counted`` collects
        those already counted as waits), and the generation: -1 (and nothing taken or claimed)
        when the arena holds chunks of another commit than the one this process reads.
        """
        claimed, waiting = [], []
        table, header = views.tables[plan.var], views.header
        me = _reading_mark(os.getpid())
        with views.locked():
            if int(header[_COMMIT]) != self._commit:
                return [], [], -1
            for cid in ids:
                entry = int(table[first + cid])
                if entry >= 0:
                    found[cid] = self._copy_out(views, plan, segment, cid, entry)
                    header[_HITS] += 1
                elif entry == _EMPTY or not _alive(_reader_of(entry)):
                    header[_TAKEOVERS] += int(entry != _EMPTY)
                    table[first + cid] = me
                    claimed.append(cid)
                else:
                    waiting.append(cid)
            header[_WAITS] += len(set(waiting) - counted)
            counted.update(waiting)
            return claimed, waiting, int(header[_GEN])

    def _copy_out(self, views: _Views, plan: _VarPlan, segment: Segment, cid: int, slot: int) -> np.ndarray:
        header = views.header
        header[_CLOCK] += 1
        views.used[plan.var][slot] = header[_CLOCK]
        rows = _chunk_len(segment, cid)
        raw = views.slots[plan.var][slot, : rows * plan.row_bytes]
        return raw.view(plan.dtype).reshape((rows, *plan.row_shape)).copy()

    def _load(
        self,
        views: _Views,
        plan: _VarPlan,
        segment: Segment,
        first: int,
        claimed: list[int],
        generation: int,
        fetch: Fetch,
        found: dict[int, np.ndarray],
    ) -> None:
        """Read the claimed chunks, one fetch per run, and enter each run as it arrives."""
        left = list(claimed)
        try:
            for lo, hi in chunk_runs(np.asarray(claimed, dtype=np.int64)):
                run = list(range(lo, hi + 1))
                chunks = fetch_chunks(plan.var, segment, run, fetch)
                with views.locked():
                    views.header[_DECODED] += len(run)
                    for cid in run:
                        self._enter(views, plan, first + cid, chunks[cid], generation)
                found.update(chunks)
                left = [cid for cid in left if cid > hi]
        finally:
            if left:  # a failed read: give the claims up so others do not wait for them
                self._release(views, plan, first, left)

    def _enter(self, views: _Views, plan: _VarPlan, index: int, chunk: np.ndarray, generation: int) -> None:
        """Under the lock: put a chunk in the least recently used slot, then list it (last)."""
        table, header = views.tables[plan.var], views.header
        if int(header[_GEN]) != generation or int(table[index]) >= 0:
            return  # the cache was invalidated since the claim, or someone entered it already
        if int(header[_COMMIT]) != self._commit:
            table[index] = _EMPTY  # of another commit than the arena's: the claim is given up, nothing enters
            return
        owners, used = views.owners[plan.var], views.used[plan.var]
        slot = int(np.argmin(used))
        old = int(owners[slot])
        if old >= 0:
            if int(table[old]) == slot:
                table[old] = _EMPTY
            header[_EVICTIONS] += 1
        owners[slot] = _EMPTY
        raw = np.ascontiguousarray(chunk).reshape(-1).view(np.uint8)
        views.slots[plan.var][slot, : raw.shape[0]] = raw
        header[_CLOCK] += 1
        owners[slot], used[slot] = index, header[_CLOCK]
        table[index] = slot  # written last: the chunk is whole before anyone can find it

    def _release(self, views: _Views, plan: _VarPlan, first: int, ids: list[int]) -> None:
        table, me = views.tables[plan.var], _reading_mark(os.getpid())
        with views.locked():
            for cid in ids:
                if int(table[first + cid]) == me:
                    table[first + cid] = _EMPTY

    def _read_direct(
        self, views: _Views | None, var: str, segment: Segment, ids: Sequence[int], fetch: Fetch
    ) -> dict[int, np.ndarray]:
        """Chunks read from the store without the arena (not cached, or the cache is closed)."""
        chunks = fetch_chunks(var, segment, ids, fetch)
        if views is not None:
            with views.locked():
                views.header[_DECODED] += len(chunks)
        return chunks

    # --- the arena in this process ---------------------------------------------------------

    def _attached(self) -> _Views | None:
        """This process's views of the arena (mapped anew after a fork); None once closed."""
        if self._closed:
            return None
        if self._pid != os.getpid():
            # A forked child must not use the parent's descriptor: flock locks belong to it.
            self._views, self._pid = None, os.getpid()
            try:
                self._views = _Views(SHM_DIR / self._name, self._plans, self._size)
            except FileNotFoundError:  # the owner closed the cache: read from the store
                self._closed = True
        return self._views

    @property
    def name(self) -> str:
        """The segment's name (``/dev/shm/<name>``)."""
        return self._name

    @property
    def nbytes(self) -> int:
        """Bytes of the arena: the slots and the tables."""
        return self._size

    @property
    def capacity(self) -> dict[str, int]:
        """Chunks each cached variable can hold at once (a variable left out reads the store)."""
        return {var: plan.n_slots for var, plan in self._plans.items() if plan.n_slots}

    @property
    def held_bytes(self) -> int:
        """Bytes of the slots that hold decoded chunks: at most ``max_bytes``."""
        return sum(plan.n_slots * plan.slot_bytes for plan in self._plans.values())

    @property
    def closed(self) -> bool:
        """True after :meth:`close` (then every chunk is read from the store)."""
        return self._closed

    def stats(self) -> CacheStats:
        """The counters of every process so far (zeros once closed)."""
        views = self._attached()
        if views is None:
            return CacheStats(0, 0, 0, 0, 0)
        with views.locked():
            h = views.header.tolist()
        return CacheStats(h[_DECODED], h[_HITS], h[_WAITS], h[_EVICTIONS], h[_TAKEOVERS])

    def invalidate(self) -> None:
        """Drop every chunk, for every process (call it when the data changed): the arena holds
        chunks of the commit this process expects (:meth:`expect`)."""
        views = self._attached()
        if views is None:
            return
        with views.locked():
            views.header[_GEN] += 1
            views.header[_COMMIT] = self._commit
            for var in self._plans:
                views.tables[var][:] = _EMPTY
                views.owners[var][:] = _EMPTY
                views.used[var][:] = -1

    def close(self) -> None:
        """Stop using the arena in this process; in the owner, unlink it (others then read the store)."""
        self._closed, self._views = True, None
        if os.getpid() == self._owner:
            self._finalizer()

    def __getstate__(self) -> dict[str, Any]:
        # The name and the layout cross into a worker; the mapping and the finalizer stay home.
        state = self.__dict__.copy()
        state.update(_views=None, _pid=None, _finalizer=_no_op)
        return state

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"/dev/shm/{self._name}"
        return f"SharedChunkCache({sorted(self._plans)}, max_bytes={self.max_bytes}, {state})"


# --- making the arena -------------------------------------------------------------------------


def _plan(variables: Sequence[ChunkedVariable], max_bytes: int) -> tuple[dict[str, _VarPlan], int]:
    """Each variable's place in the arena, and the arena's size."""
    cached = [v for v in variables if not v.dtype.hasobject and sum(s.rows for s in v.segments) > 0]
    rows = _rows_held(cached, max_bytes)
    plans, offset = {}, _HEADER * 8
    for v in sorted(cached, key=lambda v: v.var):
        firsts, n_chunks = {}, 0
        for segment in v.segments:
            firsts[segment.phase] = n_chunks
            n_chunks += -(-segment.rows // segment.chunk_rows)
        n_slots = _slots(v, rows)
        table = offset
        owners = table + 8 * n_chunks
        used = owners + 8 * n_slots
        data = _aligned(used + 8 * n_slots)
        slot_bytes = _slot_bytes(v)
        plans[v.var] = _VarPlan(
            v.var, v.dtype.str, v.row_shape, firsts, n_chunks, n_slots, slot_bytes, table, owners, used, data
        )
        offset = _aligned(data + n_slots * slot_bytes)
    return plans, max(offset, _ALIGN)


def _slot_bytes(v: ChunkedVariable) -> int:
    return _aligned(max(max(s.chunk_rows, 1) * v.row_bytes for s in v.segments))


def _slots(v: ChunkedVariable, rows: int) -> int:
    """Slots that hold ``rows`` rows of ``v`` wherever they start (never more than its chunks)."""
    n_chunks = sum(-(-s.rows // s.chunk_rows) for s in v.segments)
    per_chunk = min(s.chunk_rows for s in v.segments)
    return 0 if rows <= 0 else min(n_chunks, -(-rows // per_chunk))


def _rows_held(variables: Sequence[ChunkedVariable], max_bytes: int) -> int:
    """The most rows that every variable can hold within ``max_bytes`` (a binary search)."""
    lo, hi = 0, max((sum(s.rows for s in v.segments) for v in variables), default=0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(_slots(v, mid) * _slot_bytes(v) for v in variables) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _empty_arena(path: Path, plans: dict[str, _VarPlan], size: int) -> _Views:
    """Reserve the new segment's memory and empty its tables."""
    _reserve(path, size)
    views = _Views(path, plans, size)
    views.header[0] = _MAGIC
    for var in plans:
        views.tables[var][:] = _EMPTY
        views.owners[var][:] = _EMPTY
        views.used[var][:] = -1
    return views


def _reserve(path: Path, size: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.ENOMEM):
            raise
        free = os.statvfs(SHM_DIR)
        raise InvalidArgumentError(
            f"shared_cache_bytes must fit in {SHM_DIR}: the cache needs {size:,} bytes there. Got "
            f"{free.f_bavail * free.f_frsize:,} bytes free instead. Use a smaller shared_cache_bytes, or give "
            "the machine more shared memory (Docker: --shm-size)."
        ) from exc
    finally:
        os.close(fd)


def _unlink(segment: shared_memory.SharedMemory, owner: int) -> None:
    # A forked child holds a copy of this finalizer: only the owner removes the segment.
    if os.getpid() == owner:
        with contextlib.suppress(FileNotFoundError):
            segment.unlink()


def _no_op() -> None:
    """The finalizer of a cache unpickled in another process: the owner unlinks, not it."""


# --- the table entries ------------------------------------------------------------------------


def _reading_mark(pid: int) -> int:
    """The table entry of a chunk that process ``pid`` is reading (negative, below _EMPTY)."""
    return -2 - pid


def _reader_of(entry: int) -> int:
    return -2 - entry


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _chunk_len(segment: Segment, cid: int) -> int:
    return min(segment.chunk_rows, segment.rows - cid * segment.chunk_rows)
