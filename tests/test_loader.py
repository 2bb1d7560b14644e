"""The torch-free machinery of the loader (storegate.loader): chunk cache and chunk runs."""

from __future__ import annotations

import numpy as np

from storegate.loader import ChunkCache, chunk_runs


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
