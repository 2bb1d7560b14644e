"""storegate.shared_cache without torch: exact values, the byte bound, decoded once across
processes ('fork' and 'spawn'), a killed reader taken over, and no segment left in /dev/shm."""

from __future__ import annotations

import errno
import gc
import multiprocessing as mp
import os
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storegate.errors import InvalidArgumentError
from storegate.loader import ChunkCache, ChunkedVariable, Segment
from storegate.shared_cache import SHM_DIR, SharedChunkCache
from tests.shm_segments import no_leak, segments  # noqa: F401 (no_leak: an autouse fixture)

pytestmark = pytest.mark.timeout(120)

N, CHUNK = 200, 8
DATA = np.arange(N * 3, dtype=np.float32).reshape(N, 3)
VAR = ChunkedVariable("x", (Segment("train", 0, N, CHUNK),), DATA.dtype, (3,))
N_CHUNKS = N // CHUNK


class Counting:
    """A fetch over DATA that counts the chunks it reads (in this process)."""

    def __init__(self, data: np.ndarray = DATA) -> None:
        self.data, self.chunks = data, 0

    def __call__(self, phase: str, var: str, rows: slice) -> np.ndarray:
        self.chunks += -(-(rows.stop - rows.start) // CHUNK)
        return self.data[rows].copy()


def _read(cache: SharedChunkCache, rows: np.ndarray, fetch: object) -> np.ndarray:
    return VAR.read(rows, fetch, ChunkCache(0), cache)  # type: ignore[arg-type]


def test_values_are_numpy_indexing_and_each_chunk_is_decoded_once() -> None:
    cache = SharedChunkCache([VAR], 1 << 20)
    fetch = Counting()
    rows = np.random.default_rng(0).integers(0, N, size=500)
    np.testing.assert_array_equal(_read(cache, rows, fetch), DATA[rows])
    np.testing.assert_array_equal(_read(cache, rows[::-1], fetch), DATA[rows[::-1]])
    assert fetch.chunks == cache.stats().decoded == N_CHUNKS  # the second read came from the arena
    assert cache.stats().hits == N_CHUNKS
    assert cache.capacity == {"x": N_CHUNKS}  # never more room than the data need
    cache.close()


@settings(max_examples=40, deadline=None)
@given(
    max_bytes=st.integers(1, 3000),
    reads=st.lists(st.lists(st.integers(0, N - 1), min_size=1, max_size=40), min_size=1, max_size=6),
)
def test_a_cache_smaller_than_the_data_stays_within_its_bound_and_exact(max_bytes: int, reads: list[list[int]]) -> None:
    cache = SharedChunkCache([VAR], max_bytes)
    assert cache.held_bytes <= max_bytes
    for rows in reads:
        picked = np.asarray(rows, dtype=np.int64)
        np.testing.assert_array_equal(_read(cache, picked, Counting()), DATA[picked])
    cache.close()


def test_variables_share_the_bound_by_rows_and_an_object_variable_is_read_directly() -> None:
    labels = np.arange(N, dtype=np.int64)
    y = ChunkedVariable("y", (Segment("train", 0, N, 50),), labels.dtype, ())
    names = ChunkedVariable("name", (Segment("train", 0, N, 8),), np.dtype(object), ())
    cache = SharedChunkCache([VAR, y, names], 4096)
    assert cache.held_bytes <= 4096
    assert set(cache.capacity) == {"x", "y"}
    assert cache.capacity == {"x": 19, "y": 3}  # 150 rows of each: 19 x chunks of 8 rows, 3 y chunks of 50
    texts = np.array([f"r{i}" for i in range(N)], dtype=object)
    out = names.read(np.array([5, 190]), lambda p, v, r: texts[r].copy(), ChunkCache(0), cache)
    assert out.tolist() == ["r5", "r190"]
    cache.close()


def test_several_phases_have_their_own_chunks() -> None:
    var = ChunkedVariable("x", (Segment("train", 0, 150, 8), Segment("valid", 150, 50, 16)), DATA.dtype, (3,))
    parts = {"train": DATA[:150], "valid": DATA[150:]}
    cache = SharedChunkCache([var], 1 << 20)
    rows = np.array([149, 150, 199, 0, 160])
    out = var.read(rows, lambda phase, v, r: parts[phase][r].copy(), ChunkCache(0), cache)
    np.testing.assert_array_equal(out, DATA[rows])
    again = var.read(rows, lambda phase, v, r: np.zeros_like(parts[phase][r]), ChunkCache(0), cache)
    np.testing.assert_array_equal(again, DATA[rows])  # from the arena, not the (zero) fetch
    cache.close()


def test_invalidate_drops_every_chunk() -> None:
    cache = SharedChunkCache([VAR], 1 << 20)
    rows = np.arange(N)
    _read(cache, rows, Counting())
    cache.invalidate()
    changed = DATA + 1
    np.testing.assert_array_equal(_read(cache, rows, Counting(changed)), changed)
    assert cache.stats().decoded == 2 * N_CHUNKS
    cache.close()


def test_a_process_that_reads_an_older_commit_does_not_enter_its_chunks() -> None:
    """Found by the breaker: a worker that had not yet seen a commit entered the chunks it read
    as of its older record after another worker had invalidated the arena for the new
    commit, and that worker then paired them with the new commit's chunks of another variable."""
    cache = SharedChunkCache([VAR], 1 << 20)
    cache.expect(2)
    cache.invalidate()  # a process saw commit 2
    stale = pickle.loads(pickle.dumps(cache))  # another process, still reading commit 1
    stale.expect(1)
    rows = np.arange(N)
    old = _read(stale, rows, Counting())
    np.testing.assert_array_equal(old, DATA)  # its own read is its own (checked against its record after)
    changed = DATA + 1
    np.testing.assert_array_equal(_read(cache, rows, Counting(changed)), changed)  # not commit 1's chunks
    stale.invalidate()  # it invalidates after the process that saw commit 2 (it read the record earlier)
    _read(stale, rows, Counting())  # its commit 1 chunks enter now...
    np.testing.assert_array_equal(_read(cache, rows, Counting(changed)), changed)  # ...and are not taken
    stale.expect(2)  # it saw commit 2: its chunks enter again
    cache.invalidate()
    _read(stale, rows, Counting(changed))
    fetch = Counting()
    np.testing.assert_array_equal(_read(cache, rows, fetch), changed)
    assert fetch.chunks == 0
    stale.close()
    cache.close()


def test_a_failed_fetch_gives_its_claims_up() -> None:
    cache = SharedChunkCache([VAR], 1 << 20)

    def failing(phase: str, var: str, rows: slice) -> np.ndarray:
        raise OSError("the store went away")

    with pytest.raises(OSError, match="went away"):
        _read(cache, np.arange(20), failing)
    start = time.monotonic()
    np.testing.assert_array_equal(_read(cache, np.arange(20), Counting()), DATA[:20])
    assert time.monotonic() - start < 1  # nobody waits for the failed reader's chunks
    cache.close()


def test_threads_of_one_process_read_each_chunk_once() -> None:
    cache = SharedChunkCache([VAR], 1 << 20)
    fetch = SlowFetch(0.002)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            rows = np.random.default_rng(seed).permutation(N)
            np.testing.assert_array_equal(_read(cache, rows, fetch), DATA[rows])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.stats().decoded == N_CHUNKS
    cache.close()


def test_close_unlinks_and_reads_go_on_from_the_store() -> None:
    cache = SharedChunkCache([VAR], 1 << 20)
    assert (SHM_DIR / cache.name).exists()
    cache.close()
    assert not (SHM_DIR / cache.name).exists()
    assert cache.closed
    np.testing.assert_array_equal(_read(cache, np.array([3, 100]), Counting()), DATA[[3, 100]])
    back = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(_read(back, np.array([7]), Counting()), DATA[[7]])
    cache.close()  # twice is fine


def test_garbage_collection_unlinks() -> None:
    cache = SharedChunkCache([VAR], 1 << 20)
    path = SHM_DIR / cache.name
    _read(cache, np.arange(10), Counting())
    del cache
    gc.collect()
    assert not path.exists()


def test_a_copy_in_the_same_process_does_not_unlink() -> None:
    cache = SharedChunkCache([VAR], 1 << 20)
    copy = pickle.loads(pickle.dumps(cache))
    _read(copy, np.arange(10), Counting())
    copy.close()
    del copy
    gc.collect()
    assert (SHM_DIR / cache.name).exists()  # only the cache that made it removes it
    assert cache.stats().decoded == 2  # the copy's reads are in the owner's arena
    cache.close()


def test_bad_bounds_and_a_full_dev_shm_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgumentError, match="max_bytes must be an int"):
            SharedChunkCache([VAR], bad)  # type: ignore[arg-type]

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(InvalidArgumentError, match=r"shared_cache_bytes must fit in /dev/shm.*--shm-size"):
        SharedChunkCache([VAR], 1 << 20)  # and the autouse fixture checks nothing was left


# --- several processes ---------------------------------------------------------------------


class SlowFetch(Counting):
    """Counting, and slow enough that processes overlap."""

    def __init__(self, pause: float) -> None:
        super().__init__()
        self.pause = pause

    def __call__(self, phase: str, var: str, rows: slice) -> np.ndarray:
        time.sleep(self.pause)
        return super().__call__(phase, var, rows)


def _read_all(cache: SharedChunkCache, seed: int, done: mp.Queue[object]) -> None:
    rows = np.random.default_rng(seed).permutation(N)
    out = VAR.read(rows, SlowFetch(0.003), ChunkCache(0), cache)
    done.put(bool(np.array_equal(out, DATA[rows])))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_processes_decode_each_chunk_once_in_total(context: str) -> None:
    ctx = mp.get_context(context)
    cache = SharedChunkCache([VAR], 1 << 20)
    done: mp.Queue[object] = ctx.Queue()
    procs = [ctx.Process(target=_read_all, args=(cache, seed, done)) for seed in range(3)]
    for p in procs:
        p.start()
    results = [done.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == [True, True, True]
    stats = cache.stats()
    assert stats.decoded == N_CHUNKS  # not 3 x N_CHUNKS
    assert stats.hits + stats.decoded >= 3 * N_CHUNKS - stats.waits
    cache.close()


def _claim_and_hang(cache: SharedChunkCache, started: mp.Event) -> None:  # type: ignore[valid-type]
    def hang(phase: str, var: str, rows: slice) -> np.ndarray:
        started.set()  # type: ignore[attr-defined]
        time.sleep(600)
        raise AssertionError("killed before this")

    VAR.read(np.arange(N), hang, ChunkCache(0), cache)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_the_chunks_of_a_killed_reader_are_taken_over(context: str) -> None:
    ctx = mp.get_context(context)
    cache = SharedChunkCache([VAR], 1 << 20)
    started = ctx.Event()
    proc = ctx.Process(target=_claim_and_hang, args=(cache, started))
    proc.start()
    assert started.wait(60)
    proc.kill()  # it holds claims on every chunk (and maybe the lock: the kernel drops it)
    proc.join(30)
    fetch = Counting()
    np.testing.assert_array_equal(_read(cache, np.arange(N), fetch), DATA)
    assert fetch.chunks == N_CHUNKS
    assert cache.stats().takeovers == N_CHUNKS
    cache.close()


def test_a_path_that_is_not_a_folder_means_no_shared_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import storegate.shared_cache as shared_cache

    monkeypatch.setattr(shared_cache, "SHM_DIR", tmp_path / "nowhere")
    with pytest.raises(InvalidArgumentError, match="needs POSIX shared memory"):
        SharedChunkCache([VAR], 1 << 20)


def test_a_reader_that_never_finishes_is_waited_for_a_bounded_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import storegate.shared_cache as shared_cache

    ctx = mp.get_context("fork")
    cache = SharedChunkCache([VAR], 1 << 20)
    started = ctx.Event()
    proc = ctx.Process(target=_claim_and_hang, args=(cache, started))
    proc.start()
    try:
        assert started.wait(60)
        monkeypatch.setattr(shared_cache, "WAIT_LIMIT", 0.3)
        fetch = Counting()
        np.testing.assert_array_equal(_read(cache, np.arange(N), fetch), DATA)  # alive: waited, then read here
        assert fetch.chunks == N_CHUNKS
        assert cache.stats().waits == N_CHUNKS
        assert cache.stats().takeovers == 0
    finally:
        proc.kill()
        proc.join(30)
        cache.close()
