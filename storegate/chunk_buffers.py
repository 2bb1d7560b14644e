"""Arrays of decoded chunks, recycled from the chunk caches' evictions (issue 12, item 5).

A reader decodes each chunk into a new array (``storegate.backends.zarr_direct``) and the
chunk cache drops the least recently used one as each new one arrives. Freed and allocated
again a chunk at a time (1 MiB by default), these arrays fragment glibc's heap, which keeps
the freed pieces: over a 1.1 GB epoch with a 256 MiB cache the reader held about 30 MiB
more than the cache and the epoch order, and about 8 MiB more once evicted arrays were
decoded into again (benchmarks/bench_scale.py measures it at 4.5 GB).

:func:`recycle` takes an array the cache drops and keeps it for :func:`empty` to hand out
again (or the array it is a view of), only when nothing else can reach it: writable, and
referenced by its caller alone (its base by it alone), which CPython's
reference counts tell exactly (up to 3.13; elsewhere nothing is recycled, and every array
is new as before). So a chunk that a batch being read, a user (``dataset.cache.get``) or a
view still holds is never written into again.
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np

__all__ = ["EXACT_REFCOUNTS", "MAX_KEPT_BYTES", "clear", "empty", "kept_bytes", "recycle"]

#: Whether :func:`sys.getrefcount` counts every reference (CPython before 3.14 borrows none).
EXACT_REFCOUNTS = sys.implementation.name == "cpython" and sys.version_info < (3, 14)
#: Bytes of arrays kept for reuse at most (per process): about the chunks of a few batches.
MAX_KEPT_BYTES = 32 << 20

_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread of the parent may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)
_kept: dict[tuple[tuple[int, ...], str], list[np.ndarray]] = {}
_kept_bytes = 0


def empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array of ``shape`` and ``dtype`` (``np.empty``'s), recycled when one is kept."""
    global _kept_bytes
    with _lock:
        free = _kept.get((tuple(shape), np.dtype(dtype).str))
        if free:
            array = free.pop()
            _kept_bytes -= array.nbytes
            return array
    return np.empty(shape, dtype=dtype)


def recycle(array: np.ndarray) -> None:
    """Keep ``array``, which the caller drops, for :func:`empty`, if nothing else holds it.

    The caller must hold ``array`` by one name only (a local variable it drops after this
    call) and must not use it afterwards.
    """
    global _kept_bytes
    # References: the caller's name, this parameter and getrefcount's own argument (counted
    # before any other name here refers to it).
    if not EXACT_REFCOUNTS or sys.getrefcount(array) > 3:
        return
    owner = array if array.base is None else array.base
    if not isinstance(owner, np.ndarray) or owner.base is not None:
        return
    if not owner.flags.writeable or not owner.flags.c_contiguous or owner.dtype.hasobject:
        return
    # A view (a chunk cut from a longer read): the view's base, the name ``owner`` and the argument.
    if owner is not array and sys.getrefcount(owner) > 3:
        return
    with _lock:
        if _kept_bytes + owner.nbytes > MAX_KEPT_BYTES:
            return
        _kept.setdefault((owner.shape, owner.dtype.str), []).append(owner)
        _kept_bytes += owner.nbytes


def clear() -> None:
    """Drop every array kept for reuse (their memory goes back to the allocator)."""
    global _kept_bytes
    with _lock:
        _kept.clear()
        _kept_bytes = 0


def kept_bytes() -> int:
    """Bytes of arrays kept for reuse now."""
    return _kept_bytes
