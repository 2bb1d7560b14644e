"""StoreGateDataLoader: whole batches in ChunkShuffleSampler's order, a new epoch per iteration,
commits of any process seen, and the chunk runs of a batch read in threads."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import RandomSampler

from storegate import StoreGate
from storegate.errors import InvalidArgumentError
from storegate.loader import ChunkCache, ChunkedVariable, Segment, fetch_chunks
from storegate.testing import BACKEND_KINDS, make_gate
from storegate.torch import (
    ChunkShuffleSampler,
    ConcatDataset,
    LoaderBatch,
    StoreGateDataLoader,
    StoreGateDataset,
)
from tests.torch_stores import N, X, count_record_reads, epochs_while_committing, update_in_another_process, zarr_store

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings(r"ignore:.*use of fork\(\) may lead to deadlocks:DeprecationWarning"),
]


def _epoch(loader: Any) -> tuple[list[int], dict[int, float]]:
    order: list[int] = []
    values: dict[int, float] = {}
    for x, ids in loader:
        assert x.ndim == 2
        assert x.shape[0] == ids.shape[0]
        order += ids.tolist()
        values.update({int(i): float(v) for i, v in zip(ids, x[:, 0], strict=True)})
    return order, values


def test_whole_batches_in_the_samplers_order_a_new_epoch_each_iteration(tmp_path: Path) -> None:
    dataset = StoreGateDataset(zarr_store(tmp_path), "train", "x", "id")
    loader = StoreGateDataLoader(dataset, batch_size=24, shuffle=True, seed=3)
    sampler = ChunkShuffleSampler(dataset, seed=3)
    orders = []
    for epoch in range(3):
        order, values = _epoch(loader)
        sampler.set_epoch(epoch)
        assert order == list(sampler)  # ChunkShuffleSampler's order of that epoch
        assert values == {i: float(i) for i in range(N)}
        orders.append(order)
    assert orders[0] != orders[1] != orders[2]
    loader.set_epoch(1)  # DistributedSampler's idiom: choose the epoch, get its order again
    assert _epoch(loader)[0] == orders[1]
    assert len(loader) == -(-N // 24)


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # no worker starts here
@pytest.mark.parametrize(("workers", "batches"), [(2, 7), (3, 7), (2, 1), (4, 3)])
def test_each_worker_gets_a_run_of_consecutive_batches(tmp_path: Path, workers: int, batches: int) -> None:
    """A DataLoader deals batch j to worker j % workers: the loader orders its batches so that
    worker w gets the w-th run of the epoch's consecutive batches (its own chunks)."""
    dataset = StoreGateDataset(zarr_store(tmp_path), "train", "x", "id")
    size = -(-N // batches)
    loader = StoreGateDataLoader(dataset, size, True, seed=5, num_workers=workers)
    dealt = list(loader.sampler)  # type: ignore[arg-type]
    plain = [list(b) for b in torch.utils.data.BatchSampler(ChunkShuffleSampler(dataset, seed=5), size, False)]
    assert sorted(map(list, dealt)) == sorted(plain)  # the same batches
    runs = [list(r) for r in np.array_split(np.arange(len(plain)), workers)]
    for w, run in enumerate(runs):
        assert [list(b) for b in dealt[w::workers]] == [plain[j] for j in run]


def test_no_shuffle_gives_the_items_in_order_and_drop_last_the_short_batch(tmp_path: Path) -> None:
    dataset = StoreGateDataset(zarr_store(tmp_path), "train", "x", "id")
    assert _epoch(StoreGateDataLoader(dataset, batch_size=50))[0] == list(range(N))
    # With workers too: batches are not dealt in runs then (that would reorder them).
    two = StoreGateDataLoader(dataset, batch_size=8, num_workers=2, multiprocessing_context="fork", timeout=90)
    assert _epoch(two)[0] == list(range(N))
    kept = _epoch(StoreGateDataLoader(dataset, batch_size=50, drop_last=True))[0]
    assert kept == list(range(150))


def test_ranks_split_the_epoch(tmp_path: Path) -> None:
    dataset = StoreGateDataset(zarr_store(tmp_path), "train", "x", "id")
    parts = [_epoch(StoreGateDataLoader(dataset, 16, True, num_replicas=2, rank=r))[0] for r in (0, 1)]
    assert sorted(parts[0] + parts[1]) == list(range(N))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_persistent_workers_see_commits_between_epochs_though_the_cache_holds_every_chunk(
    tmp_path: Path, context: str
) -> None:
    """Under the loader a process skips the commit record for batches its cache serves whole,
    but never across iterations: a commit of this process or another one shows in the next epoch."""
    sg = zarr_store(tmp_path)
    dataset = StoreGateDataset(sg, "train", "x", "id")  # 64 MiB cache: the whole phase stays cached
    loader = StoreGateDataLoader(
        dataset, 16, True, num_workers=2, persistent_workers=True, multiprocessing_context=context, timeout=90
    )
    assert _epoch(loader)[1] == {i: float(i) for i in range(N)}
    sg.update_data("x", -X, "train")
    assert _epoch(loader)[1] == {i: -float(i) for i in range(N)}
    update_in_another_process(tmp_path, 2)
    assert _epoch(loader)[1] == {i: 2.0 * i for i in range(N)}


def test_a_new_loader_each_epoch_sees_a_commit_though_the_cache_holds_every_chunk(tmp_path: Path) -> None:
    sg = zarr_store(tmp_path)
    dataset = StoreGateDataset(sg, "train", "x", "id")
    assert _epoch(StoreGateDataLoader(dataset, 16, True))[1] == {i: float(i) for i in range(N)}
    update_in_another_process(tmp_path, -1)  # (a write of this process is counted without a read)
    assert _epoch(StoreGateDataLoader(dataset, 16, True))[1] == {i: -float(i) for i in range(N)}


@pytest.mark.parametrize(("workers", "plain"), [(2, False), (0, False), (2, True), (0, True)])
def test_a_batch_never_pairs_rows_of_two_commits(tmp_path: Path, workers: int, plain: bool) -> None:
    """Another process commits x and id together, again and again, while epochs run: every row
    of every batch holds one commit's x and id (a batch read across a commit is read again)."""
    sg = zarr_store(tmp_path, chunk_rows=8)
    sg.update_data("id", np.zeros(N, dtype=np.int64), "train")
    sg.update_data("x", np.zeros((N, 3), dtype=np.float32), "train")
    dataset = StoreGateDataset(sg, "train", "x", "id")
    options: dict[str, Any] = {"num_workers": workers}
    if workers:
        options.update(multiprocessing_context="fork", timeout=90)
    loader = (
        torch.utils.data.DataLoader(dataset, batch_size=32, sampler=ChunkShuffleSampler(dataset), **options)
        if plain
        else StoreGateDataLoader(dataset, 32, True, **options)
    )
    epochs_while_committing(loader, {"output_dir": str(tmp_path / "s.zarr")}, 6)


def test_the_commit_record_is_read_once_per_chunk_read_not_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = count_record_reads(monkeypatch)
    dataset = StoreGateDataset(zarr_store(tmp_path, chunk_rows=40), "train", "x", "id")
    batches = len(StoreGateDataLoader(dataset, 8, True))
    reads.clear()
    _epoch(StoreGateDataLoader(dataset, 8, True, window=1))
    # 4 chunks of x and of id: one read at the pass's first batch, and one after each batch
    # that reads chunks (the batch holds one commit's rows), never more.
    assert 1 <= len(reads) <= 1 + 4 < batches
    reads.clear()
    _epoch(torch.utils.data.DataLoader(dataset, batch_size=8))  # a DataLoader of its own: every batch
    assert batches <= len(reads) <= batches + 4  # and after a batch that read chunks


def test_callbacks_and_ragged_variables_take_the_per_sample_path(tmp_path: Path) -> None:
    sg = zarr_store(tmp_path)
    sg.add_data("pts", [np.ones((i % 3 + 1, 2)) * i for i in range(N)], "train", ragged=True)
    doubled = StoreGateDataset(sg, "train", "x", "id", callbacks=[lambda d, t: (d * 2, t)])
    order, values = _epoch(StoreGateDataLoader(doubled, 32, True, seed=1))
    assert sorted(order) == list(range(N))
    assert values == {i: 2.0 * i for i in range(N)}
    ragged = StoreGateDataset(sg, "train", "pts", "id")
    (padded, lengths), ids = next(iter(StoreGateDataLoader(ragged, 8)))  # padded by the dataset's collate_fn
    assert ids.tolist() == list(range(8))
    assert lengths.tolist() == [i % 3 + 1 for i in range(8)]
    assert padded.shape == (8, 3, 2)
    assert float(padded[5, 2, 0]) == 5.0


def test_a_concatenation_of_stores(tmp_path: Path) -> None:
    first = StoreGateDataset(zarr_store(tmp_path / "a"), "train", "x", "id")
    second = StoreGateDataset(zarr_store(tmp_path / "b"), "train", "x", "id")
    order, _ = _epoch(StoreGateDataLoader(ConcatDataset([first, second]), 20, True, seed=2))
    assert sorted(order) == sorted(list(range(N)) * 2)


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    dataset = StoreGateDataset(zarr_store(tmp_path), "train", "x", "id")
    with pytest.raises(InvalidArgumentError, match="sampler must be None"):
        StoreGateDataLoader(dataset, 8, sampler=RandomSampler(dataset))
    assert len(StoreGateDataLoader(dataset, 8, sampler=None, batch_sampler=None)) == N // 8  # torch's defaults
    with pytest.raises(InvalidArgumentError, match=r"generator must be None .*\(use shuffle, seed"):
        StoreGateDataLoader(dataset, 8, generator=torch.Generator())  # it would be ignored: seed orders epochs
    with pytest.raises(InvalidArgumentError, match="batch_sampler must be None"):
        StoreGateDataLoader(dataset, 8, batch_sampler=[[0, 1]])
    with pytest.raises(InvalidArgumentError, match="dataset must be a StoreGateDataset"):
        StoreGateDataLoader(torch.utils.data.TensorDataset(torch.zeros(3)), 8)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        StoreGateDataLoader(dataset, 0)
    with pytest.raises(InvalidArgumentError, match=r"shuffle must be True or False\. Got 'yes'"):
        StoreGateDataLoader(dataset, 8, "yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="epoch"):
        StoreGateDataLoader(dataset, 8).set_epoch(-1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from([*BACKEND_KINDS, "zarr-chunk-7"]),
    n=st.integers(1, 70),
    batch_size=st.integers(1, 30),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    window=st.integers(1, 3),
)
def test_every_backend_gives_the_rows_of_its_batches(
    tmp_path_factory: pytest.TempPathFactory,
    kind: str,
    n: int,
    batch_size: int,
    shuffle: bool,
    drop_last: bool,
    window: int,
) -> None:
    root = tmp_path_factory.mktemp(kind)
    sg = (
        StoreGate("zarr", {"output_dir": str(root / "s.zarr"), "chunk": 7}, data_id="d")
        if kind == "zarr-chunk-7"
        else make_gate(kind, root)
    )
    values = np.random.default_rng(n).random((n, 2)).astype(np.float32)
    sg.add_data("x", values, "train")
    sg.add_data("id", np.arange(n), "train")
    dataset = StoreGateDataset(sg, "train", "x", "id")
    loader = StoreGateDataLoader(dataset, batch_size, shuffle, drop_last=drop_last, window=window)
    seen = []
    for x, ids in loader:
        assert x.shape[0] == len(ids) <= batch_size
        assert not drop_last or len(ids) == batch_size
        np.testing.assert_array_equal(x.numpy(), values[ids.numpy()])
        seen += ids.tolist()
    expected = list(ChunkShuffleSampler(dataset, window=window, shuffle=shuffle))
    assert seen == expected[: len(expected) - (len(expected) % batch_size if drop_last else 0)]


def test_chunk_runs_are_read_in_threads_when_the_fetch_allows_it() -> None:
    data = np.arange(100 * 2, dtype=np.float64).reshape(100, 2)
    threads: set[str] = set()
    lock = threading.Lock()

    class Fetch:
        concurrent = True

        def __call__(self, phase: str, var: str, rows: slice) -> np.ndarray:
            with lock:
                threads.add(threading.current_thread().name)
            return data[rows].copy()

    segment = Segment("train", 0, 100, 10)
    found = fetch_chunks("x", segment, [0, 2, 4, 6, 7, 9], Fetch())
    assert sorted(found) == [0, 2, 4, 6, 7, 9]
    for cid, chunk in found.items():
        np.testing.assert_array_equal(chunk, data[cid * 10 : cid * 10 + 10])
    assert all(name.startswith("storegate-read") for name in threads)
    rows = np.array([95, 3, 41, 3, 77])
    variable = ChunkedVariable("x", (segment,), np.dtype(np.float64), (2,))
    np.testing.assert_array_equal(variable.read(rows, Fetch(), ChunkCache(0)), data[rows])


def test_a_failed_run_read_in_a_thread_raises_and_caches_nothing() -> None:
    class Failing:
        concurrent = True

        def __call__(self, phase: str, var: str, rows: slice) -> np.ndarray:
            if rows.start >= 50:
                raise OSError("disk gone")
            return np.zeros((rows.stop - rows.start, 1))

    cache = ChunkCache(1 << 20)
    variable = ChunkedVariable("x", (Segment("train", 0, 100, 10),), np.dtype(np.float64), (1,))
    with pytest.raises(OSError, match="disk gone"):
        variable.read(np.array([1, 55]), Failing(), cache)
    assert len(cache) == 0


def test_loader_batches_pickle_with_their_iteration() -> None:
    import pickle

    batch = pickle.loads(pickle.dumps(LoaderBatch([3, 1, 2], 7)))
    assert isinstance(batch, LoaderBatch)
    assert list(batch) == [3, 1, 2]
    assert batch.iteration == 7


@pytest.mark.parametrize("concat", [False, True])
def test_batches_of_batches_are_refused_not_flattened(tmp_path: Path, concat: bool) -> None:
    """A BatchSampler as sampler beside a batch_size hands the dataset lists of lists: read as one
    flat batch they would give a batch of the wrong shape without a word."""
    one = StoreGateDataset(zarr_store(tmp_path), "train", "x", "id")
    dataset: Any = ConcatDataset([one]) if concat else one
    for drop_last in (True, False):  # equal lengths, and a short last batch (a ragged nesting)
        sampler = torch.utils.data.BatchSampler(ChunkShuffleSampler(dataset), 25, drop_last)
        loader = torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=2)
        with pytest.raises(InvalidArgumentError, match="batch_size=None"):
            list(loader)
    with pytest.raises(InvalidArgumentError, match="flat sequence of ints"):
        dataset.__getitems__([0.5, 1.0])
    assert dataset.__getitems__([]) == []
    x, ids = torch.utils.data.default_collate(dataset.__getitems__([3, 1]))
    assert ids.tolist() == [3, 1]
    assert x[:, 0].tolist() == [3.0, 1.0]
