"""ChunkShuffleSampler: a permutation per epoch, reproducible, near-sequential, split over replicas."""

from __future__ import annotations

from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from storegate import InvalidArgumentError, StoreGate
from storegate.torch import ChunkShuffleSampler, StoreGateDataset

pytestmark = pytest.mark.timeout(120)


class Rows:
    """A stand-in dataset: ``n`` rows stored in chunks of the given sizes."""

    def __init__(self, chunk_sizes: list[int]) -> None:
        self.chunk_bounds = np.concatenate([[0], np.cumsum(chunk_sizes)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.chunk_bounds[-1])


def _chunk_of(bounds: np.ndarray, rows: list[int]) -> np.ndarray:
    return np.searchsorted(bounds, rows, side="right") - 1


def _lru_loads(chunks: np.ndarray, capacity: int) -> int:
    """Chunk reads that an LRU cache of ``capacity`` chunks needs to serve this order."""
    cache: OrderedDict[int, None] = OrderedDict()
    loads = 0
    for chunk in chunks.tolist():
        if chunk in cache:
            cache.move_to_end(chunk)
            continue
        loads += 1
        cache[chunk] = None
        if len(cache) > capacity:
            cache.popitem(last=False)
    return loads


chunk_sizes = st.lists(st.integers(1, 12), min_size=0, max_size=25)


@settings(max_examples=150, deadline=None)
@given(
    sizes=chunk_sizes,
    window=st.integers(1, 5),
    replicas=st.integers(1, 4),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**32),
    epoch=st.integers(0, 5),
)
def test_the_shards_of_an_epoch_are_a_split_permutation(
    sizes: list[int], window: int, replicas: int, drop_last: bool, seed: int, epoch: int
) -> None:
    dataset = Rows(sizes)
    n = len(dataset)
    shards = []
    for rank in range(replicas):
        sampler = ChunkShuffleSampler(
            dataset, seed, num_replicas=replicas, rank=rank, drop_last=drop_last, window=window
        )
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler)
    assert len({len(s) for s in shards}) == 1  # every rank gets the same count
    everything = [row for shard in shards for row in shard]
    order = ChunkShuffleSampler(dataset, seed, window=window)
    order.set_epoch(epoch)
    epoch_rows = list(order)
    assert sorted(epoch_rows) == list(range(n))  # one replica: a permutation
    if drop_last:
        assert len(everything) == n - n % replicas
        assert len(set(everything)) == len(everything)  # disjoint
        assert everything == epoch_rows[: len(everything)]
    else:
        assert set(everything) == set(range(n))  # the union is the epoch
        repeats = Counter(everything) - Counter(range(n))
        assert sum(repeats.values()) == len(everything) - n < replicas  # only the padding repeats
        assert everything[:n] == epoch_rows


@settings(max_examples=100, deadline=None)
@given(sizes=chunk_sizes, window=st.integers(1, 5), seed=st.integers(0, 1000))
def test_each_chunk_is_read_once_with_a_cache_of_window_chunks(sizes: list[int], window: int, seed: int) -> None:
    dataset = Rows(sizes)
    order = list(ChunkShuffleSampler(dataset, seed, window=window))
    chunks = _chunk_of(dataset.chunk_bounds, order)
    assert _lru_loads(chunks, window) == len(sizes)


@settings(max_examples=100, deadline=None)
@given(sizes=chunk_sizes, window=st.integers(1, 5), seed=st.integers(0, 1000))
def test_the_rows_of_a_window_of_chunks_come_together(sizes: list[int], window: int, seed: int) -> None:
    dataset = Rows(sizes)
    chunks = _chunk_of(dataset.chunk_bounds, list(ChunkShuffleSampler(dataset, seed, window=window)))
    # Number the chunks by first appearance: window k holds chunks k*window .. k*window + window - 1.
    unique, first = np.unique(chunks, return_index=True)
    rank = dict(zip(unique[np.argsort(first)].tolist(), range(len(unique)), strict=True))
    groups = np.array([rank[c] // window for c in chunks.tolist()], dtype=np.int64)
    assert np.all(np.diff(groups) >= 0)


def test_reads_stay_near_sequential_while_a_plain_shuffle_does_not() -> None:
    dataset = Rows([100] * 50)
    sampler = ChunkShuffleSampler(dataset, seed=3, window=4)
    chunks = _chunk_of(dataset.chunk_bounds, list(sampler))
    shuffled = _chunk_of(dataset.chunk_bounds, np.random.default_rng(3).permutation(len(dataset)).tolist())
    assert _lru_loads(chunks, 4) == 50
    assert _lru_loads(shuffled, 4) > 20 * 50  # nearly every row misses a 4-chunk cache
    # Any 100 consecutive rows (a batch) touch at most two windows of 4 chunks.
    most = max(len(set(chunks[i : i + 100].tolist())) for i in range(0, len(chunks) - 100, 10))
    assert most <= 8
    assert len(set(shuffled[:100].tolist())) > 8


def test_the_order_is_random_inside_windows_and_across_chunks() -> None:
    dataset = Rows([10] * 20)
    order = np.array(list(ChunkShuffleSampler(dataset, seed=0, window=4)))
    assert not np.array_equal(order, np.arange(200))
    first_chunks = _chunk_of(dataset.chunk_bounds, order[:40].tolist())
    assert sorted(set(first_chunks.tolist())) != [0, 1, 2, 3]  # chunk order shuffled (seed 0)
    assert len(set(first_chunks[:10].tolist())) > 1  # rows of the window interleave


def test_the_same_seed_and_epoch_give_the_same_order() -> None:
    dataset = Rows([7] * 30)
    a = ChunkShuffleSampler(dataset, seed=5)
    b = ChunkShuffleSampler(dataset, seed=5)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating twice without set_epoch repeats the epoch
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)


def test_set_epoch_and_seed_change_the_order() -> None:
    dataset = Rows([7] * 30)
    sampler = ChunkShuffleSampler(dataset, seed=5)
    orders = set()
    for epoch in range(5):
        sampler.set_epoch(epoch)
        orders.add(tuple(sampler))
    assert len(orders) == 5
    assert tuple(ChunkShuffleSampler(dataset, seed=6)) not in orders | {tuple(ChunkShuffleSampler(dataset, seed=5))}


def test_a_long_epoch_is_given_as_python_ints_in_its_order() -> None:
    """The epoch is converted to Python ints a slice at a time (a whole-epoch list would hold
    about 40 bytes per row while the epoch runs); the order is the same across slices."""
    dataset = Rows([1000] * 150)  # 150,000 rows: more than one slice
    sampler = ChunkShuffleSampler(dataset, seed=2, num_replicas=2, rank=1)
    rows = iter(sampler)
    assert not isinstance(rows, list)
    got = list(rows)
    assert all(type(r) is int for r in got[:5] + got[-5:])
    assert got == sampler.epoch_order()[75_000:].tolist()


def test_chunk_rows_overrides_the_dataset_layout() -> None:
    sampler = ChunkShuffleSampler(list(range(95)), seed=1, chunk_rows=10, window=1)
    chunks = _chunk_of(np.append(np.arange(0, 95, 10), 95), list(sampler))
    # window=1: every chunk's rows come together.
    assert np.count_nonzero(np.diff(chunks)) == 9


def test_defaults_to_one_replica_outside_torch_distributed() -> None:
    sampler = ChunkShuffleSampler(Rows([3, 3]))
    assert (sampler.num_replicas, sampler.rank) == (1, 0)
    assert len(sampler) == 6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": -1}, "seed must be an int >= 0. Got -1"),
        ({"window": 0}, "window must be an int >= 1. Got 0"),
        ({"num_replicas": 0}, "num_replicas must be an int >= 1. Got 0"),
        ({"num_replicas": 2, "rank": 2}, r"rank must be an int in \[0, 2\). Got 2"),
        ({"chunk_rows": 0}, "chunk_rows must be an int >= 1. Got 0"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        ChunkShuffleSampler(Rows([4, 4]), **kwargs)


def test_a_dataset_without_chunks_needs_chunk_rows() -> None:
    with pytest.raises(InvalidArgumentError, match=r"chunk_bounds .* chunk_rows"):
        ChunkShuffleSampler(list(range(10)))
    with pytest.raises(InvalidArgumentError, match="epoch must be an int >= 0"):
        ChunkShuffleSampler(Rows([2])).set_epoch(-1)


def test_with_a_zarr_dataset_and_a_dataloader(tmp_path: Path) -> None:
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "chunk": 16}, data_id="d")
    sg.add_data("x", np.arange(300, dtype=np.float32)[:, None] * np.ones(4, dtype=np.float32))
    sg.add_data("y", np.arange(300))
    dataset = StoreGateDataset(sg, "train", "x", "y")
    sampler = ChunkShuffleSampler(dataset, seed=2, window=3)
    seen = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(DataLoader(dataset, batch_size=32, sampler=sampler))
        for x, y in batches:
            assert torch.equal(x[:, 0], y.float())
        ys = torch.cat([y for _, y in batches])
        assert sorted(ys.tolist()) == list(range(300))
        seen.append(ys.tolist())
        chunks = _chunk_of(dataset.chunk_bounds, ys.tolist())
        assert _lru_loads(chunks, 3) == -(-300 // 16)
    assert seen[0] != seen[1]
