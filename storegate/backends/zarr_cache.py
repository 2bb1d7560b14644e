"""Decoded chunks kept by the zarr backend, so that small reads skip zarr's codecs (issue 12, item 3).

A random row of a variable stored in 1 MiB chunks costs a whole chunk's decoding (about
3 ms); a row of a chunk already decoded costs a copy. :class:`DecodedChunks` keeps the
chunks that small reads decoded, in a :class:`storegate.loader.ChunkCache` (the loader's
cache class, sized by the same ``chunk_cache_bytes`` knob), and serves later small reads
from them.

What is cached is only ever what the last commit holds:

- every chunk is tagged with the text of the data_id's commit record it was read under,
  and a read goes by the record its call checks (see ``ZarrBackend.start_read``): a
  record of another text (another process, or another handle of this process, committed;
  a rewrite in place flagged it) drops every cached chunk first. The tag also holds
  :attr:`DecodedChunks.generation`, which every write of the backend's own moves on: a
  read that raced a write of its own handle (another thread) can never tag what it read
  with a record the handle goes by afterwards, even one put back byte for byte (an undone
  commit);
- a chunk holds only the committed rows (rows past the last commit stay unread);
- the backend drops the cache when it writes, refreshes or deletes the data_id, and reads
  past it while a call of its own writes the data_id or another call rewrites it in place.

Which reads use it: those whose chunks hold at most a quarter of the cache's bytes (one
row, a few rows, a short slice). A single row's chunk is kept from its second read on (a
doorkeeper, as TinyLFU's): the first read of a chunk reads just its row as the backend's
plain read does (no copy into the cache, no fresh pages; on local disk decoded in the
calling thread, see :mod:`storegate.backends.zarr_direct`), so rows read once, as in a
random scan, are never slower for the cache, and a working set read again is served from
memory. Larger reads (a whole phase) go to the store and leave the cache as it is, so that a
scan does not flush the rows a random-access loop keeps reading. DataLoader workers read whole chunk runs through
their own caches (:mod:`storegate.loader`) and never through this one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable

import numpy as np

from storegate.indexing import Inner, Selection
from storegate.loader import ChunkCache, chunk_runs

__all__ = ["CACHED_SHARE", "DecodedChunks"]

#: A read uses the cache when the chunks it touches hold at most this share of the cache.
CACHED_SHARE = 4
#: Chunks remembered as read once (the doorkeeper); forgotten all at once past this many.
SEEN_LIMIT = 1 << 16

#: ``read(start, stop)``: the committed rows among ``[start, stop)`` of a variable, decoded, native byte order.
ReadRows = Callable[[int, int], np.ndarray]


class DecodedChunks:
    """Decoded whole-row chunks of one backend's variables, bounded in bytes, safe across threads.

    Parameters
    ----------
    max_bytes
        Bytes of decoded chunks kept; ``0`` keeps none (every read goes to the store).
    """

    def __init__(self, max_bytes: int) -> None:
        self.chunks = ChunkCache(max_bytes)
        self._lock = threading.Lock()
        # The tag (commit record, generation) the cached chunks of each data_id were read under.
        self._tags: dict[str, Hashable] = {}
        # Chunks a single-row read touched once, not cached yet (the doorkeeper).
        self._seen: set[tuple[str, str, str, int]] = set()
        #: Moved on by every :meth:`drop`: part of the tags of the reads begun since.
        self.generation = 0

    @property
    def max_bytes(self) -> int:
        """The bound, in bytes."""
        return self.chunks.max_bytes

    def drop(self) -> None:
        """Forget every cached chunk and move :attr:`generation` on (a write, a commit, a refresh)."""
        with self._lock:
            self.generation += 1
            self._clear()

    def _clear(self) -> None:
        self.chunks.clear()
        self._tags.clear()
        self._seen.clear()

    def fits(self, n_chunks: int, chunk_bytes: int) -> bool:
        """True when a read touching ``n_chunks`` chunks of ``chunk_bytes`` bytes goes through the cache."""
        return n_chunks * chunk_bytes * CACHED_SHARE <= self.chunks.max_bytes

    def row(self, key: tuple[str, str, str], tag: Hashable, row: int, chunk_rows: int) -> np.ndarray | None:
        """Row ``row`` of the variable ``key = (data_id, phase, var)`` as a new array, when its chunk
        is cached under ``tag`` (see :meth:`read`); else None."""
        with self._lock:
            if self._tags.get(key[0]) != tag:
                return None
            chunk = self.chunks.get((*key, row // chunk_rows))
        if chunk is None:
            return None
        found = chunk[row % chunk_rows]
        return found.copy() if chunk.ndim > 1 else np.array(found, copy=True)  # 0-d for a 1-D variable

    def read(
        self,
        key: tuple[str, str, str],
        tag: Hashable,
        selection: Selection,
        inner: Inner,
        chunk_rows: int,
        read_rows: ReadRows,
    ) -> np.ndarray:
        """The rows ``selection`` (then ``inner`` inside them) of the variable ``key = (data_id, phase, var)``.

        ``tag`` is the commit record the read goes by and the generation when it began;
        ``read_rows`` reads the chunks the cache does not hold (their committed rows), one
        call per run of adjacent chunks. Returns a new array, as ``Backend.read_inner`` does.
        """
        if isinstance(selection, int):
            cid = selection // chunk_rows
            if not self._second_touch(key, tag, cid):  # read once so far: as zarr would, nothing kept
                row = read_rows(selection, selection + 1)[0]
                return np.array(row[inner] if inner else row, copy=True)
            chunk = self._chunks(key, tag, [cid], chunk_rows, read_rows)[cid]
            row = chunk[selection - cid * chunk_rows]
            return np.array(row[inner] if inner else row, copy=True)
        rows = np.arange(selection.start, selection.stop, dtype=np.int64) if isinstance(selection, slice) else selection
        ids = rows // chunk_rows
        unique = np.unique(ids)
        chunks = self._chunks(key, tag, unique.tolist(), chunk_rows, read_rows)
        first = chunks[int(unique[0])]
        out = np.empty((rows.shape[0], *first.shape[1:]), dtype=first.dtype)
        for cid, chunk in chunks.items():
            mine = np.flatnonzero(ids == cid)
            out[mine] = chunk[rows[mine] - cid * chunk_rows]
        return np.array(out[(slice(None), *inner)], copy=True) if inner else out

    def _retag(self, data_id: str, tag: Hashable) -> None:
        """Go by ``tag`` for ``data_id`` (under the lock): another commit's chunks are dropped."""
        old = self._tags.get(data_id)
        if old != tag:
            if old is not None:
                # Another commit: nothing cached may be served. Dropping every data_id's
                # chunks keeps this simple; most stores are read one data_id at a time.
                self._clear()
            self._tags[data_id] = tag

    def _second_touch(self, key: tuple[str, str, str], tag: Hashable, cid: int) -> bool:
        """Whether a single-row read of chunk ``cid`` should go through the cache: the chunk is
        cached, or was read once before under ``tag``; else remember this first read."""
        seen = (*key, cid)
        with self._lock:
            self._retag(key[0], tag)
            if seen in self._seen or seen in self.chunks:
                return True
            if len(self._seen) >= SEEN_LIMIT:
                self._seen.clear()
            self._seen.add(seen)
            return False

    def _chunks(
        self,
        key: tuple[str, str, str],
        tag: Hashable,
        ids: list[int],
        chunk_rows: int,
        read_rows: ReadRows,
    ) -> dict[int, np.ndarray]:
        """Decoded chunks ``ids`` (sorted, unique): cached ones, then the others read and cached."""
        data_id = key[0]
        found: dict[int, np.ndarray] = {}
        with self._lock:
            self._retag(data_id, tag)
            for cid in ids:
                chunk = self.chunks.get((*key, cid))
                if chunk is not None:
                    found[cid] = chunk
        missing = [cid for cid in ids if cid not in found]
        for first, last in chunk_runs(np.asarray(missing, dtype=np.int64)):
            block = read_rows(first * chunk_rows, (last + 1) * chunk_rows)
            for cid in range(first, last + 1):
                found[cid] = block[(cid - first) * chunk_rows : (cid - first + 1) * chunk_rows]
        if missing:
            with self._lock:
                if self._tags.get(data_id) == tag:  # another thread read under a newer commit meanwhile: keep nothing
                    for cid in missing:
                        # A copy: a chunk cut from a run's block would keep the whole block alive.
                        self.chunks.put((*key, cid), found[cid] if len(missing) == 1 else found[cid].copy())
        return dict(sorted(found.items()))
