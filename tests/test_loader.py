"""The torch-free machinery of the loader (storegate.loader): chunk cache and chunk runs."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from storegate.loader import LOCAL_READ_THREADS, READ_THREADS, ChunkCache, Segment, chunk_runs, fetch_chunks


def test_chunk_cache_evicts_the_least_recently_used() -> None:
    cache = ChunkCache(max_bytes=3 * 8)
    for key in "abc":
        cache.put(key, np.zeros(1))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", np.zeros(1))
    assert cache.get("b") is None
    assert {k for k in "acd" if cache.get(k) is not None} == {"a", "c", "d"}
    cache.put("big", np.zeros(4))  # larger than the bound: not cached, nothing evicted
    assert cache.get("big") is None
    assert len(cache) == 3
    assert cache.nbytes == 24


def test_chunk_runs_groups_adjacent_ids() -> None:
    assert chunk_runs(np.array([0, 1, 2, 5, 7, 8])) == [(0, 2), (5, 5), (7, 8)]
    assert chunk_runs(np.array([], dtype=np.int64)) == []


class _SlowFetch:
    """A fetch that waits as a remote read would, and notes the thread of each call."""

    concurrent = True

    def __init__(self, remote: bool) -> None:
        self.remote = remote
        self.threads: set[int] = set()

    def __call__(self, phase: str, var: str, rows: slice) -> np.ndarray:
        self.threads.add(threading.get_ident())
        time.sleep(0.02)
        return np.arange(rows.start, rows.stop, dtype=np.int64)


@pytest.mark.parametrize(("remote", "most"), [(False, LOCAL_READ_THREADS), (True, READ_THREADS)])
def test_chunks_are_read_at_once_in_as_many_threads_as_the_store_needs(remote: bool, most: int) -> None:
    fetch = _SlowFetch(remote)
    segment = Segment("train", 0, 400, 10)
    found = fetch_chunks("x", segment, list(range(0, 40, 2)), fetch)  # 20 chunks, none adjacent
    assert sorted(found) == list(range(0, 40, 2))
    for cid, chunk in found.items():
        np.testing.assert_array_equal(chunk, np.arange(cid * 10, cid * 10 + 10))
    assert len(fetch.threads) == most  # every thread of the pool, and no more


def _read_in_a_forked_child(queue: Any) -> None:
    fetch = _SlowFetch(remote=False)
    found = fetch_chunks("x", Segment("train", 0, 40, 10), [0, 2], fetch)
    queue.put(sorted(found))


def test_a_child_forked_while_a_thread_holds_the_pools_lock_still_reads() -> None:
    import multiprocessing

    from storegate import loader

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    with loader._pools_lock:  # as a reader thread of the parent might at the fork
        child = context.Process(target=_read_in_a_forked_child, args=(queue,))
        child.start()
    assert queue.get(timeout=30) == [0, 2]
    child.join(30)
