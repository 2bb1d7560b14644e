"""Passes of an ordinary DataLoader over a ChunkShuffleSampler: the calls that are the next batch
of the sampler's order read the commit record at a pass's start and after chunk reads only;
every other call reads it first. Read-ahead of a pass's next chunks on a remote store."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import BatchSampler, DataLoader

import storegate.passes
import storegate.readahead
import storegate.torch
from storegate import StoreGate
from storegate.backends.zarr_backend import ZarrBackend
from storegate.errors import StoreGateWarning
from storegate.loader import ChunkCache, Segment
from storegate.passes import Passes
from storegate.readahead import ReadAhead
from storegate.torch import ChunkShuffleSampler, ConcatDataset, StoreGateDataLoader, StoreGateDataset
from tests.torch_stores import (
    N,
    X,
    count_record_reads,
    epochs_while_committing,
    update_in_another_process,
    zarr_store,
)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings(r"ignore:.*use of fork\(\) may lead to deadlocks:DeprecationWarning"),
]


class _Order:
    """A sampler's order as Passes sees it."""

    def __init__(self, order: np.ndarray) -> None:
        self.order, self.epoch = order, 0

    def pass_order(self) -> tuple[Any, np.ndarray]:
        return (self.epoch,), self.order

    def reached(self) -> tuple[int, ...]:
        return (5,) if self.live else ()  # the tests' first batch: order[0:5]

    def per_row(self) -> bool:
        return False

    live = True


def _dealt(order: np.ndarray, m: int, worker: int, workers: int) -> list[np.ndarray]:
    """The batches torch deals to ``worker``: batch j of the order goes to worker j % workers."""
    batches = [order[i : i + m] for i in range(0, order.shape[0], m)]
    return batches[worker::workers]


# --- which calls belong to a pass -------------------------------------------------------


@pytest.mark.parametrize(("m", "workers"), [(10, 1), (7, 1), (8, 3), (5, 2)])
def test_the_batches_dealt_to_a_process_are_one_pass(m: int, workers: int) -> None:
    order = np.random.default_rng(0).permutation(100)
    sampler = _Order(order)
    for worker in range(workers):
        passes = Passes()  # each worker has its own copy of the dataset
        passes.follow(sampler)
        tokens = [passes.token(batch, worker, workers) for batch in _dealt(order, m, worker, workers)]
        assert tokens[0] is not None
        assert set(tokens) == {tokens[0]}  # the last, short batch too
        again = passes.token(_dealt(order, m, worker, workers)[0], worker, workers)
        assert again is not None
        assert again != tokens[0]


def test_a_call_off_the_order_gets_no_pass_and_the_pass_goes_on() -> None:
    order = np.random.default_rng(1).permutation(50)
    passes = Passes()
    sampler = _Order(order)
    passes.follow(sampler)
    first = passes.token(order[0:10])
    assert first is not None
    assert passes.token(np.sort(order[10:20])) is None  # the right rows in another order
    assert passes.token(order[30:40]) is None  # a later slice, skipping one
    assert passes.token(np.array([order[11]])) is None  # one row, neither where the pass goes on nor a start
    assert passes.token(order[10:20]) == first  # the pass continues after the stray calls
    assert passes.token(np.zeros(0, dtype=np.int64)) is None


def test_no_sampler_no_pass_and_a_dead_sampler_is_forgotten() -> None:
    order = np.arange(20)
    passes = Passes()
    assert passes.token(order[:5]) is None
    sampler = _Order(order)
    passes.follow(sampler)
    assert passes.token(order[:5]) is not None
    del sampler
    assert passes.token(order[:5]) is None  # followed weakly: a sampler that is gone is not followed


def test_a_new_epoch_starts_a_new_pass() -> None:
    rng = np.random.default_rng(2)
    sampler = _Order(rng.permutation(40))
    passes = Passes()
    passes.follow(sampler)
    old = sampler.order
    first = passes.token(old[0:8])
    sampler.order, sampler.epoch = rng.permutation(40), 1
    assert passes.token(old[8:16]) is None  # the old epoch's next batch: no longer the order
    new = passes.token(sampler.order[0:8])
    assert new is not None
    assert new != first


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 60),
    m=st.integers(1, 12),
    workers=st.integers(1, 3),
    data=st.data(),
)
def test_only_slices_of_the_order_get_a_pass(n: int, m: int, workers: int, data: st.DataObject) -> None:
    """Whatever the calls, a call gets a pass only when its items are a slice of the order (at the
    position torch deals this worker, for batches of the call's length); the batches dealt to a
    worker, in sequence, all get one pass when its first batch is a whole one."""
    order = np.random.default_rng(n).permutation(n)
    worker = data.draw(st.integers(0, workers - 1))
    sampler = _Order(order)  # followed weakly: the caller holds it, as a DataLoader does
    passes = Passes()
    passes.follow(sampler)
    dealt_at = sorted(range(worker * m, n, workers * m))
    for _ in range(data.draw(st.integers(1, 12))):
        if dealt_at and data.draw(st.booleans()):
            start = data.draw(st.sampled_from(dealt_at))
            items = order[start : start + m]
        else:
            items = np.asarray(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=m)), dtype=np.int64)
        if passes.token(items, worker, workers) is not None:
            k = len(items)
            assert any(np.array_equal(order[p : p + k], items) for p in range(n - k + 1))
    fresh = Passes()
    fresh.follow(sampler)
    batches = _dealt(order, m, worker, workers)
    tokens = {fresh.token(batch, worker, workers) for batch in batches}
    if batches and len(batches[0]) == m:
        assert len(tokens) == 1
        assert None not in tokens


def test_ahead_gives_this_process_s_later_batches() -> None:
    order = np.random.default_rng(3).permutation(100)
    passes = Passes()
    sampler = _Order(order)
    passes.follow(sampler)
    token = passes.token(order[10:20], worker=1, workers=2)  # worker 1 of 2: batches 1, 3, 5...
    assert token is not None
    ahead = passes.ahead(token, 1)
    assert ahead is not None
    assert np.array_equal(ahead, order[30:40])
    ahead = passes.ahead(token, 4)
    assert ahead is not None
    assert np.array_equal(ahead, order[90:100])
    assert passes.ahead(token, 5) is None  # past the end of the order
    assert passes.ahead((0, 0), 1) is None
    assert passes.ahead(7, 1) is None


def test_a_pickled_dataset_s_passes_carry_the_sampler_and_no_pass() -> None:
    order = np.random.default_rng(4).permutation(30)
    sampler = _Order(order)
    passes = Passes()
    passes.follow(sampler)
    assert passes.token(order[0:5]) is not None
    copy = pickle.loads(pickle.dumps(passes))  # a spawned worker's
    assert copy.token(order[5:10]) is None  # the parent's pass is not the copy's
    assert copy.token(order[0:5]) is not None  # the sampler travelled, held by the copy


def test_a_forked_process_does_not_continue_its_parent_s_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    order = np.random.default_rng(5).permutation(30)
    passes = Passes()
    sampler = _Order(order)
    passes.follow(sampler)
    parent = passes.token(order[0:5])
    monkeypatch.setattr(storegate.passes.os, "getpid", lambda: -7)  # as in a forked child
    assert passes.token(order[5:10]) is None
    child = passes.token(order[0:5])
    assert child is not None
    assert child != parent
    assert child[0] == -7


# --- the commit record under a hand-built DataLoader -------------------------------------


def _epoch(loader: Any) -> dict[int, float]:
    values: dict[int, float] = {}
    for x, ids in loader:
        values.update({int(i): float(v) for i, v in zip(ids, x[:, 0], strict=True)})
    assert len(values) == N
    return values


@pytest.fixture
def record_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return count_record_reads(monkeypatch)


@pytest.mark.parametrize("whole", [False, True])
def test_a_hand_built_pass_reads_the_record_at_its_start_and_after_chunk_reads(
    tmp_path: Path, record_reads: list[str], whole: bool
) -> None:
    dataset = StoreGateDataset(zarr_store(tmp_path, chunk_rows=40), "train", "x", "id")
    sampler = ChunkShuffleSampler(dataset, window=1)
    loader = (
        DataLoader(dataset, sampler=BatchSampler(sampler, 8, False), batch_size=None)
        if whole
        else DataLoader(dataset, sampler=sampler, batch_size=8)
    )
    record_reads.clear()
    assert _epoch(loader) == {i: float(i) for i in range(N)}
    # 4 chunks of x and of id, one window each: the record at the pass's first batch, and
    # after each of the 4 batches that read chunks (the batch holds one commit's rows).
    assert 1 <= len(record_reads) <= 1 + 4 < len(loader)
    record_reads.clear()
    assert _epoch(DataLoader(dataset, batch_size=8)) == {i: float(i) for i in range(N)}  # no sampler: every batch
    assert len(record_reads) >= len(loader)


def test_a_call_outside_the_pass_reads_the_record(tmp_path: Path, record_reads: list[str]) -> None:
    sg = zarr_store(tmp_path, chunk_rows=40)
    dataset = StoreGateDataset(sg, "train", "x", "id")
    sampler = ChunkShuffleSampler(dataset, window=4)  # one window: every chunk read by the first batch
    batches = iter(DataLoader(dataset, sampler=sampler, batch_size=8))
    next(batches)
    next(batches)
    record_reads.clear()
    next(batches)  # served by the cache, in the pass
    assert record_reads == []
    update_in_another_process(tmp_path, 3)
    x, ids = dataset[[5, 7]]  # the user's own call: checked, and so it sees the commit
    assert record_reads
    assert x[:, 0].tolist() == [15.0, 21.0]
    x, ids = dataset[int(list(sampler)[40])]  # one row, not where the pass goes next
    assert float(x[0]) == 3.0 * float(ids)


class _SkipBatches(BatchSampler):
    """The batches of ``inner`` from batch ``k`` on (a resumed epoch, as accelerate's skip_first_batches)."""

    def __init__(self, inner: BatchSampler, k: int) -> None:
        self.inner, self.k = inner, k

    def __iter__(self) -> Any:
        return itertools.islice(iter(self.inner), self.k, None)

    def __len__(self) -> int:
        return len(self.inner) - self.k


def test_a_new_iteration_resumed_where_the_last_one_stopped_is_a_new_pass(tmp_path: Path) -> None:
    """Found by the breaker: an iteration stopped after 3 batches, a commit of another process,
    then a new iteration from batch 3 gave the old values (it continued the stopped pass)."""
    sg = zarr_store(tmp_path, chunk_rows=40)
    dataset = StoreGateDataset(sg, "train", "x", "id")
    batches = BatchSampler(ChunkShuffleSampler(dataset, window=4), 8, False)  # one window: the cache holds it all
    stopped = iter(DataLoader(dataset, batch_sampler=batches))
    for _ in range(3):
        next(stopped)
    del stopped
    update_in_another_process(tmp_path, 5)
    x, ids = next(iter(DataLoader(dataset, batch_sampler=_SkipBatches(batches, 3))))
    assert torch.equal(x[:, 0], 5.0 * ids.float())


def test_iterating_the_sampler_again_starts_a_new_pass() -> None:
    sampler = ChunkShuffleSampler(range(40), chunk_rows=8)
    order = np.array(list(sampler))
    passes = Passes()
    passes.follow(sampler)
    first = passes.token(order[0:8])
    assert passes.token(order[8:16]) == first
    iter(sampler)  # a new DataLoader iteration in this process
    assert passes.token(order[16:24]) is None
    assert passes.token(order[0:8]) not in (None, first)


@pytest.mark.parametrize(
    ("workers", "context", "set_epoch"), [(0, None, True), (2, "fork", True), (2, "spawn", True), (2, "fork", False)]
)
def test_commits_show_in_the_next_pass_of_a_hand_built_loader(
    tmp_path: Path, workers: int, context: str | None, set_epoch: bool
) -> None:
    """The cache holds every chunk, so within a pass no batch reads the record; a commit of this
    process or another one shows in the next epoch, with persistent workers too."""
    sg = zarr_store(tmp_path)
    dataset = StoreGateDataset(sg, "train", "x", "id")
    sampler = ChunkShuffleSampler(dataset, seed=1)
    options: dict[str, Any] = {}
    if workers:
        options = {
            "num_workers": workers,
            "persistent_workers": True,
            "multiprocessing_context": context,
            "timeout": 90,
        }
    loader = DataLoader(dataset, sampler=BatchSampler(sampler, 16, False), batch_size=None, **options)
    for epoch, (factor, write) in enumerate([(1, None), (-1, "here"), (2, "elsewhere")]):
        if write == "here":
            sg.update_data("x", -X, "train")
        elif write == "elsewhere":
            update_in_another_process(tmp_path, factor)
        if set_epoch:
            sampler.set_epoch(epoch)
        assert _epoch(loader) == {i: factor * float(i) for i in range(N)}


def test_a_concatenation_passes_its_pass_to_its_parts(tmp_path: Path, record_reads: list[str]) -> None:
    a = StoreGateDataset(zarr_store(tmp_path / "a", chunk_rows=40), "train", "x", "id")
    b = StoreGateDataset(zarr_store(tmp_path / "b", chunk_rows=40), "train", "x", "id")
    both = ConcatDataset([a, b])
    for loader in (
        DataLoader(both, sampler=ChunkShuffleSampler(both, window=1), batch_size=8),
        DataLoader(both, sampler=BatchSampler(ChunkShuffleSampler(both, window=1), 8, False), batch_size=None),
    ):
        record_reads.clear()
        rows = sum(len(ids) for _, ids in loader)
        assert rows == 2 * N
        # 8 chunks of x and of id over both stores: each part reads the record at its first
        # batch of the pass and after each batch that reads chunks.
        assert len(record_reads) <= 2 + 8 < len(loader)
    one_by_one = DataLoader(both, sampler=ChunkShuffleSampler(both, window=1), batch_size=None)  # dataset[i]
    record_reads.clear()
    assert sorted(int(ids) for _, ids in one_by_one) == sorted([*range(N), *range(N)])
    assert len(record_reads) <= 2 + 8 < len(one_by_one)


@pytest.mark.slow
def test_two_workers_sharing_a_chunk_cache_never_pair_rows_of_two_commits(tmp_path: Path) -> None:
    """Found by the breaker: with shared_cache_bytes, about 1 batch in 80 held x of one commit
    beside id of the next (a worker entered chunks it read as of its older record)."""
    args = {"output_dir": str(tmp_path / "s.zarr"), "chunk": 8}
    sg = StoreGate("zarr", args, data_id="d")
    sg.add_data("x", np.zeros((N, 3), dtype=np.float32), "train")
    sg.add_data("id", np.zeros(N, dtype=np.int64), "train")
    dataset = StoreGateDataset(sg, "train", "x", "id", shared_cache_bytes=1 << 20)
    loader = DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2, multiprocessing_context="fork", timeout=90)
    epochs_while_committing(loader, {"output_dir": args["output_dir"]}, 4, pause=0.02)


# --- read-ahead -------------------------------------------------------------------------


def _backend(tmp_path: Path) -> tuple[StoreGate, ZarrBackend, Segment]:
    sg = zarr_store(tmp_path, chunk_rows=40)
    backend = sg.backend_object
    assert isinstance(backend, ZarrBackend)
    return sg, backend, Segment("train", 0, N, 40)


def _wait(ahead: ReadAhead, cache: ChunkCache, version: str | None, changes: int = 0) -> None:
    ahead.adopt(cache, version, changes, lambda: True)  # waits for the read to finish


def test_read_ahead_chunks_enter_the_cache_when_the_record_is_unchanged(tmp_path: Path) -> None:
    _, backend, segment = _backend(tmp_path)
    version = backend.data_version("d")
    ahead, cache = ReadAhead(), ChunkCache(1 << 20)
    ahead.start([("x", segment, [1, 3])], backend, "d", version, 0)
    assert ahead.busy()
    _wait(ahead, cache, version)
    assert not ahead.busy()
    for cid in (1, 3):
        chunk = cache.get(("x", "train", cid))
        assert chunk is not None
        assert np.array_equal(chunk, X[cid * 40 : (cid + 1) * 40])
    assert ("x", "train", 0) not in cache


def test_read_ahead_chunks_of_another_commit_are_dropped(tmp_path: Path) -> None:
    sg, backend, segment = _backend(tmp_path)
    before = backend.data_version("d")
    ahead, cache = ReadAhead(), ChunkCache(1 << 20)
    ahead.start([("x", segment, [0])], backend, "d", "not the record", 0)  # the record after reading differs
    _wait(ahead, cache, "not the record")
    assert len(cache) == 0
    ahead.start([("x", segment, [0])], backend, "d", before, 0)
    sg.update_data("x", -X, "train")  # the cache is of the new commit when the read is adopted
    _wait(ahead, cache, backend.data_version("d"))
    assert len(cache) == 0
    ahead.start([("x", segment, [0])], backend, "d", backend.data_version("d"), 0)
    _wait(ahead, cache, backend.data_version("d"), changes=1)  # this process wrote meanwhile
    assert len(cache) == 0


def test_a_read_ahead_that_fails_leaves_the_cache_alone(tmp_path: Path) -> None:
    _, backend, segment = _backend(tmp_path)
    version = backend.data_version("d")
    ahead, cache = ReadAhead(), ChunkCache(1 << 20)
    ahead.start([("nope", segment, [0])], backend, "d", version, 0)  # no such variable
    _wait(ahead, cache, version)
    assert len(cache) == 0
    assert not ahead.busy()


def test_a_running_read_ahead_is_waited_for_only_when_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, backend, segment = _backend(tmp_path)
    version = backend.data_version("d")
    ahead, cache = ReadAhead(), ChunkCache(1 << 20)
    ahead.start([("x", segment, [2])], backend, "d", version, 0)
    job = ahead._job
    assert job is not None
    job.future.result()
    ahead.adopt(cache, version, 0, lambda: pytest.fail("a finished read needs no question"))
    assert ("x", "train", 2) in cache
    ahead.start([("x", segment, [0])], backend, "d", version, 0)
    monkeypatch.setattr(storegate.readahead.os, "getpid", lambda: -7)  # a forked child: not its read
    assert not ahead.busy()
    _wait(ahead, cache, version)
    assert ("x", "train", 0) not in cache


def _s3_args(server: Any, bucket: str, **extra: Any) -> dict[str, Any]:
    return {"output_dir": f"s3://{bucket}/store", "storage_options": server.storage_options, **extra}


@pytest.mark.s3
def test_a_pass_on_s3_reads_ahead_in_a_worker_only_and_gives_the_same_rows(
    s3_server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sg = StoreGate("zarr", _s3_args(s3_server, s3_bucket, chunk=16), data_id="d")
    sg.add_data("x", X, "train")
    sg.add_data("id", np.arange(N), "train")
    dataset = StoreGateDataset(
        StoreGate("zarr", _s3_args(s3_server, s3_bucket, mode="r"), data_id="d"), "train", "x", "id"
    )
    started = _count_read_aheads(monkeypatch)
    sampler = ChunkShuffleSampler(dataset, window=2)
    loader = DataLoader(dataset, sampler=BatchSampler(sampler, 8, False), batch_size=None)
    assert _epoch(loader) == {i: float(i) for i in range(N)}
    assert started == []  # not from a remote store in the main process

    class _Worker:
        id, num_workers = 0, 1

    monkeypatch.setattr(storegate.torch, "get_worker_info", lambda: _Worker())  # as in a DataLoader worker
    dataset.cache.clear()
    sampler.set_epoch(1)
    assert _epoch(loader) == {i: float(i) for i in range(N)}
    assert started  # the pass's later chunks were read ahead
    sg.update_data("x", 2 * X, "train")
    sampler.set_epoch(2)
    assert _epoch(loader) == {i: 2.0 * i for i in range(N)}


def test_a_pass_reads_ahead_from_local_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = StoreGateDataset(zarr_store(tmp_path), "train", "x", "id")
    started = _count_read_aheads(monkeypatch)
    sampler = ChunkShuffleSampler(dataset, window=2)
    assert _epoch(DataLoader(dataset, sampler=sampler, batch_size=8)) == {i: float(i) for i in range(N)}
    assert started
    started.clear()
    assert _epoch(DataLoader(dataset, batch_size=8)) == {i: float(i) for i in range(N)}
    assert started == []  # no sampler pass, no read-ahead


def _count_read_aheads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of chunks of each read-ahead started from now on."""
    started: list[int] = []
    real = ReadAhead.start

    def counted(self: ReadAhead, wanted: Any, *args: Any) -> None:
        started.append(sum(len(ids) for _, _, ids in wanted))
        real(self, wanted, *args)

    monkeypatch.setattr(ReadAhead, "start", counted)
    return started


@pytest.mark.s3
@pytest.mark.slow
def test_a_batch_read_ahead_on_s3_never_pairs_rows_of_two_commits(s3_server: Any, s3_bucket: str) -> None:
    """Another process commits x and id together, again and again, while 2 forked workers read
    ahead in their passes: every row of every batch holds one commit's x and id."""
    sg = StoreGate("zarr", _s3_args(s3_server, s3_bucket, chunk=8), data_id="d")
    sg.add_data("x", np.zeros((N, 3), dtype=np.float32), "train")
    sg.add_data("id", np.zeros(N, dtype=np.int64), "train")
    dataset = StoreGateDataset(sg, "train", "x", "id")
    sampler = ChunkShuffleSampler(dataset, window=2)
    loader = DataLoader(
        dataset,
        sampler=BatchSampler(sampler, 8, False),
        batch_size=None,
        num_workers=2,
        multiprocessing_context="fork",
        timeout=90,
    )
    epochs_while_committing(loader, _s3_args(s3_server, s3_bucket), 4, sampler)


# --- a cache too small for the sampler's window -------------------------------------------


def test_a_sampler_over_a_cache_smaller_than_its_window_warns_with_the_size_needed(tmp_path: Path) -> None:
    sg = zarr_store(tmp_path, chunk_rows=16)  # a chunk of x: 16 rows of 3 float32; of id: 16 int64
    need = 4 * (16 * 3 * 4 + 16 * 8)
    small = StoreGateDataset(sg, "train", "x", "id", chunk_cache_bytes=need - 1)
    with pytest.warns(StoreGateWarning, match=f"chunk_cache_bytes >= {need}"):
        ChunkShuffleSampler(small, window=4)
    with pytest.warns(StoreGateWarning, match="window=4"):
        StoreGateDataLoader(small, 8, True)
    with pytest.warns(StoreGateWarning):
        ChunkShuffleSampler(ConcatDataset([small]), window=4)
    ChunkShuffleSampler(small, window=3)  # 3 chunks of each fit: no warning (warnings are errors here)
    ChunkShuffleSampler(StoreGateDataset(sg, "train", "x", "id", chunk_cache_bytes=need), window=4)
    ChunkShuffleSampler(StoreGateDataset(sg, "train", "x", "id", chunk_cache_bytes=0), window=4)  # off: asked for
    shared = StoreGateDataset(sg, "train", "x", "id", chunk_cache_bytes=1, shared_cache_bytes=need)
    with shared:
        ChunkShuffleSampler(shared, window=4)  # the shared cache holds them


def test_outside_workers_only_a_sampler_being_iterated_takes_calls_for_its_batches() -> None:
    order = np.arange(30)
    sampler = _Order(order)
    passes = Passes()
    passes.follow(sampler)
    sampler.live = False
    assert passes.token(order[0:5], live_only=True) is None
    assert passes.token(order[0:5]) is not None  # in a worker the sampler is iterated elsewhere
    sampler.live = True
    assert passes.token(order[0:5], live_only=True) is not None


def test_your_own_calls_in_an_in_order_sampler_s_order_still_see_commits(
    tmp_path: Path, record_reads: list[str]
) -> None:
    """An in-order sampler made for later (evaluation) is not being iterated: dataset[0],
    dataset[1]... of your own are not its batches, and each reads the commit record."""
    dataset = StoreGateDataset(zarr_store(tmp_path), "train", "x", "id")
    sampler = ChunkShuffleSampler(dataset, shuffle=False)
    record_reads.clear()
    for i in range(3):
        assert float(dataset[i][0][0]) == float(i)
    assert len(record_reads) >= 3
    update_in_another_process(tmp_path, 5)
    assert float(dataset[3][0][0]) == 15.0
    x, _ = dataset[4:6]
    assert x[:, 0].tolist() == [20.0, 25.0]
    for x, ids in DataLoader(dataset, sampler=sampler, batch_size=40):  # its own iteration: its batches
        assert torch.equal(x[:, 0], 5.0 * ids.float())


def test_a_pickled_dataset_carries_its_sampler_but_not_a_view_s_order_of_items(tmp_path: Path) -> None:
    sg = zarr_store(tmp_path)
    plain = StoreGateDataset(sg, "train", "x", "id")
    sampler = ChunkShuffleSampler(plain, seed=3)
    copy = pickle.loads(pickle.dumps(plain))  # a spawned worker's
    assert copy._passes.token(sampler.indices()[:8]) is not None
    view = StoreGateDataset(sg, sg["train"].shuffled(0), "x", "id")
    alone = len(pickle.dumps(view))
    over_view = ChunkShuffleSampler(view, seed=3)
    assert over_view.per_row()
    assert len(pickle.dumps(view)) == alone  # configuration only, as without a sampler
    assert pickle.loads(pickle.dumps(view))._passes.token(over_view.indices()[:8]) is None  # checked each call


def test_an_iterator_left_open_takes_only_the_items_it_gave_for_its_batches(
    tmp_path: Path, record_reads: list[str]
) -> None:
    """``it = iter(loader); next(it)`` kept (a notebook's peek): the sampler is under way, but
    only its first item was given, so dataset[1], dataset[2]... of your own read the record."""
    dataset = StoreGateDataset(zarr_store(tmp_path), "train", "x", "id")
    sampler = ChunkShuffleSampler(dataset, shuffle=False)
    it = iter(DataLoader(dataset, sampler=sampler, batch_size=1))
    next(it)
    assert sampler.reached() == (1,)
    for i in range(3):
        assert float(dataset[i][0][0]) == float(i)
    update_in_another_process(tmp_path, 5)
    assert float(dataset[3][0][0]) == 15.0
    del it
    assert sampler.reached() == ()


def test_two_loaders_zipped_over_one_sampler_read_every_batch() -> None:
    order = np.arange(40)
    sampler = ChunkShuffleSampler(list(range(40)), chunk_rows=8, shuffle=False)
    a, b = iter(sampler), iter(sampler)
    assert [next(a) for _ in range(5)] == [next(b) for _ in range(5)] == list(range(5))
    assert sampler.reached() == (5, 5)
    next(a)
    assert sampler.reached() == (6, 5)
    del a
    assert sampler.reached() == (5,)
    assert list(b) == order[5:].tolist()
    assert sampler.reached() == ()


@pytest.mark.parametrize("windows", [2, 3, 4, 6])
def test_read_ahead_into_a_small_cache_reads_no_chunk_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, windows: int
) -> None:
    """Chunks read ahead into a cache too small for every chunk up to their batch would push out
    chunks the batches in between need, or be pushed out before their batch (2.8x the reads)."""
    sg = zarr_store(tmp_path, chunk_rows=8)
    room = windows * 2 * 8 * (3 * 4 + 8)  # window=2 chunks of x (3 float32) and id (int64)
    reads: list[int] = []
    real = ZarrBackend.read

    def counted(self: ZarrBackend, *args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ZarrBackend, "read", counted)
    counts = []
    for ahead in (False, True):
        if not ahead:
            monkeypatch.setattr(StoreGateDataset, "_read_ahead", lambda *args: None)
        else:
            monkeypatch.undo()
            monkeypatch.setattr(ZarrBackend, "read", counted)
        dataset = StoreGateDataset(sg, "train", "x", "id", chunk_cache_bytes=room)
        sampler = ChunkShuffleSampler(dataset, window=2)
        reads.clear()
        for epoch in range(3):
            sampler.set_epoch(epoch)
            assert _epoch(DataLoader(dataset, sampler=BatchSampler(sampler, 4, False), batch_size=None)) == {
                i: float(i) for i in range(N)
            }
        counts.append(len(reads))
    assert counts[1] <= counts[0] * 1.05


def test_your_own_calls_beside_a_loader_with_workers_still_see_commits(tmp_path: Path) -> None:
    """This process iterates the sampler ahead for the workers: its items given so far are not
    batches of this process, and dataset[0], dataset[1]... of your own read the record."""
    dataset = StoreGateDataset(zarr_store(tmp_path), "train", "x", "id")
    sampler = ChunkShuffleSampler(dataset, shuffle=False)
    loader = DataLoader(dataset, sampler=sampler, batch_size=8, num_workers=2, multiprocessing_context="fork")
    for k, _ in enumerate(loader):
        if k == 0:
            assert max(sampler.reached(), default=0) > 8  # iterated ahead for the workers
            for i in range(4):
                assert float(dataset[i][0][0]) == float(i)
            update_in_another_process(tmp_path, 5)
            assert float(dataset[4][0][0]) == 20.0


def test_a_sampler_knows_how_far_each_of_its_iterations_has_got(tmp_path: Path) -> None:
    sampler = ChunkShuffleSampler(StoreGateDataset(zarr_store(tmp_path), "train", "x", "id"))
    assert sampler.reached() == ()
    first, second = iter(sampler), iter(sampler)
    taken = [next(first) for _ in range(5)]
    assert sampler.reached() == (5,)  # the second has not started
    next(second)
    assert sorted(sampler.reached()) == [1, 5]
    assert taken + list(first) == sampler.indices().tolist()
    assert sampler.reached() == (1,)
    del second
    assert sampler.reached() == ()
    progress = storegate.torch._Progress()
    items = progress.items(np.arange(10), step=3)  # across blocks of 3
    got = [next(items) for _ in range(7)]
    assert got == list(range(7))
    assert progress.given() == 7
