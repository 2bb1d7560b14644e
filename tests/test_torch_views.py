"""StoreGateDataset and ChunkShuffleSampler over views of rows (storegate.views), with 2 workers;
on the S3 server too, with a stratified split."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch.utils.data import DataLoader

from storegate import InvalidArgumentError, StoreGate, StratifiedSplit
from storegate.splits import phase_rows
from storegate.testing import BACKEND_KINDS, make_gate
from storegate.torch import ChunkShuffleSampler, ConcatDataset, StoreGateDataset
from tests.conftest import S3Server

pytestmark = [
    pytest.mark.timeout(300),
    # Python >= 3.12 warns when a process with threads forks; tests/test_torch_workers.py says why it is safe.
    pytest.mark.filterwarnings(r"ignore:.*use of fork\(\) may lead to deadlocks:DeprecationWarning"),
]

N = 200
CHUNK = 8
X = np.arange(N, dtype=np.float32)[:, None] * np.ones(3, dtype=np.float32)
Y = np.arange(N) % 5


def _fill(sg: StoreGate) -> StoreGate:
    sg.add_data(["x", "y"], [X, Y], phase=(0.8, 0.2, 0.0))
    sg.add_data("id", np.arange(N), phase=(0.8, 0.2, 0.0))
    return sg


def _view(sg: StoreGate) -> Any:
    """Classes 1 and 3 of train, shuffled, twice over, then the valid rows of class 0."""
    return sg["train"].filter("y", keep=[1, 3]).shuffled(7).repeat(2) + sg["valid"].filter("y", keep=[0])


def _expected_ids() -> np.ndarray:
    train, valid = np.arange(160), np.arange(160, 200)
    picked = train[np.isin(Y[train], [1, 3])]
    picked = picked[np.random.default_rng(7).permutation(picked.shape[0])]
    return np.concatenate([np.tile(picked, 2), valid[Y[valid] == 0]])


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_dataset_over_a_view_is_numpy_fancy_indexing(kind: str, tmp_path: Path) -> None:
    sg = _fill(make_gate(kind, tmp_path))
    dataset = StoreGateDataset(sg, _view(sg), "x", "id")
    ids = _expected_ids()
    assert len(dataset) == ids.shape[0] == 2 * 64 + 8
    x, i = dataset[:]  # a batch index
    np.testing.assert_array_equal(i.numpy(), ids)
    np.testing.assert_array_equal(x.numpy(), X[ids])
    x5, i5 = dataset[5]  # an int index
    assert int(i5) == ids[5]
    np.testing.assert_array_equal(x5.numpy(), X[ids[5]])
    items = dataset.__getitems__([3, 0, 3])  # a DataLoader batch
    assert [int(item[1]) for item in items] == ids[[3, 0, 3]].tolist()


def test_the_sampler_keeps_reads_near_sequential_on_a_view(tmp_path: Path) -> None:
    sg = _fill(StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "chunk": CHUNK}, data_id="d"))
    view = sg["train"].shuffled(3)  # items in random stored order
    dataset = StoreGateDataset(sg, view, "x", "id")
    stored = view.row_numbers()
    sampler = ChunkShuffleSampler(dataset, seed=0, window=2)
    order = np.array(list(sampler))
    assert sorted(order.tolist()) == list(range(len(dataset)))  # every item once per epoch
    chunks_per_batch = [np.unique(stored[b] // CHUNK).size for b in np.array_split(order, len(order) // 16)]
    plain = [np.unique(stored[b] // CHUNK).size for b in np.array_split(np.arange(len(order)), len(order) // 16)]
    assert max(chunks_per_batch) <= 2 + 2  # about `window` chunks per batch (a window's edges add one each)
    assert np.mean(plain) > 3 * np.mean(chunks_per_batch)  # the view's own order would touch many
    bounds = dataset.chunk_bounds
    assert (bounds[0], bounds[-1]) == (0, len(dataset))
    assert len(bounds) == 160 // CHUNK + 1  # one run per stored chunk


@pytest.mark.parametrize(("kind", "context"), [("zarr-dir", "fork"), ("zarr-dir", "spawn"), ("numpy", "fork")])
def test_two_workers_read_the_view(kind: str, context: str, tmp_path: Path) -> None:
    sg = _fill(make_gate(kind, tmp_path))
    dataset = StoreGateDataset(sg, _view(sg), "x", "id")
    dataset[0]  # the parent reads (and works out the view's rows) first
    seen, order = _two_worker_epoch(dataset, context, seed=1)
    assert seen == _expected_ids()[order].tolist()


def _two_worker_epoch(dataset: Any, context: str, seed: int) -> tuple[list[int], np.ndarray]:
    """The ids a DataLoader with 2 workers and a ChunkShuffleSampler delivers, and the sampler's order."""
    sampler = ChunkShuffleSampler(dataset, seed=seed, window=2)
    loader = DataLoader(
        dataset, batch_size=16, sampler=sampler, num_workers=2, multiprocessing_context=context, timeout=90
    )
    seen = []
    for x, ids in loader:
        np.testing.assert_array_equal(x.numpy(), X[ids.numpy()])
        seen += ids.tolist()
    return seen, np.array(list(sampler))


def test_a_dataset_over_a_view_pickles_small(tmp_path: Path) -> None:
    sg = _fill(StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "chunk": CHUNK}, data_id="d"))
    big = StoreGateDataset(sg, sg["train"].filter("y", drop=[0]).repeat(min_rows=100_000).shuffled(0), "x")
    assert len(big) == 128 * 782
    assert len(pickle.dumps(big)) < 4096  # the view's parameters, not its 100,096 row numbers
    back = pickle.loads(pickle.dumps(big))
    np.testing.assert_array_equal(back[[0, -1]].numpy(), big[[0, -1]].numpy())


def test_a_view_of_another_store_is_refused(tmp_path: Path) -> None:
    sg = _fill(StoreGate("numpy", data_id="d"))
    other = _fill(StoreGate("numpy", data_id="d"))
    with pytest.raises(InvalidArgumentError, match="view of the StoreGate given"):
        StoreGateDataset(sg, other["train"].subset(0, 5), "x")
    torch_dataset = StoreGateDataset(sg, sg["train"], "x")  # a view without rows is its phase
    assert len(torch_dataset) == 160
    assert torch_dataset.chunk_order is None


@pytest.mark.s3
def test_on_s3_a_stratified_split_and_a_view_through_two_workers(s3_server: S3Server, s3_bucket: str) -> None:
    args = {"output_dir": f"s3://{s3_bucket}/views", "storage_options": s3_server.storage_options, "chunk": CHUNK}
    sg = StoreGate("zarr", args, data_id="d")
    split = StratifiedSplit((0.8, 0.2, 0.0), by=Y, seed=2)
    sg.add_data(["x", "id"], [X, np.arange(N)], phase=split)
    train_rows = phase_rows(split, N)[0]
    np.testing.assert_array_equal(sg.get_data("id", "train"), train_rows)
    sg.add_data("y", Y, phase=split)
    view = sg["train"].filter("y", drop=[0]).shuffled(5)
    dataset = StoreGateDataset(sg, view, "x", "id")
    expected = train_rows[view.row_numbers()]
    sampler = ChunkShuffleSampler(dataset, seed=0, window=2)
    loader = DataLoader(
        dataset, batch_size=16, sampler=sampler, num_workers=2, multiprocessing_context="fork", timeout=90
    )
    seen = [int(i) for _, ids in loader for i in ids]
    assert seen == expected[np.array(list(sampler))].tolist()


# --- ConcatDataset: datasets of several stores, one after the other ---------------------------


def _parts(tmp_path: Path) -> tuple[ConcatDataset, np.ndarray]:
    """A zarr store's view, a numpy store's valid phase and a zarr store's train phase."""
    a = _fill(StoreGate("zarr", {"output_dir": str(tmp_path / "a.zarr"), "chunk": CHUNK}, data_id="d"))
    b = _fill(StoreGate("numpy", data_id="d"))
    c = _fill(StoreGate("zarr", {"output_dir": str(tmp_path / "c.zarr"), "chunk": CHUNK}, data_id="d"))
    parts = [StoreGateDataset(a, _view(a), "x", "id"), StoreGateDataset(b, "valid", "x", "id")]
    dataset = ConcatDataset([ConcatDataset(parts), StoreGateDataset(c, "train", "x", "id")])  # nested: flattened
    ids = np.concatenate([_expected_ids(), np.arange(160, 200), np.arange(160)])
    return dataset, ids


def test_a_concat_dataset_is_numpy_concatenation(tmp_path: Path) -> None:
    dataset, ids = _parts(tmp_path)
    assert len(dataset) == ids.shape[0]
    x, i = dataset[:]
    np.testing.assert_array_equal(i.numpy(), ids)
    np.testing.assert_array_equal(x.numpy(), X[ids])
    picked = [len(dataset) - 1, 0, 140, 136, 0]  # across parts, repeats, out of order
    np.testing.assert_array_equal(dataset[picked][1].numpy(), ids[picked])
    assert [int(s[1]) for s in dataset.__getitems__(picked)] == ids[picked].tolist()
    assert int(dataset[-1][1]) == ids[-1]
    assert dataset[[]][0].shape == (0, 3)
    bounds = dataset.chunk_bounds
    assert bounds[0] == 0
    assert bounds[-1] == len(dataset)
    assert np.all(np.diff(bounds) > 0)
    assert 176 in bounds
    assert 216 in bounds
    order = dataset.chunk_order
    assert order is not None
    assert sorted(order.tolist()) == list(range(len(dataset)))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_two_workers_read_a_concat_dataset_once_each(context: str, tmp_path: Path) -> None:
    dataset, ids = _parts(tmp_path)
    seen, order = _two_worker_epoch(dataset, context, seed=3)
    assert sorted(order.tolist()) == list(range(len(dataset)))  # every item exactly once
    assert seen == ids[order].tolist()


def test_concat_dataset_refuses_parts_that_do_not_stack(tmp_path: Path) -> None:
    a = _fill(StoreGate("numpy", data_id="d"))
    b = StoreGate("numpy", data_id="d")
    b.add_data(["x", "id"], [X.astype(np.float64), np.arange(N)])
    with pytest.raises(InvalidArgumentError, match="one dtype and row shape"):
        ConcatDataset([StoreGateDataset(a, "train", "x", "id"), StoreGateDataset(b, "train", "x", "id")])
    with pytest.raises(InvalidArgumentError, match="same input_var_names"):
        ConcatDataset([StoreGateDataset(a, "train", "x", "id"), StoreGateDataset(a, "train", "x")])
    with pytest.raises(InvalidArgumentError, match="non-empty list"):
        ConcatDataset([])
    with pytest.raises(InvalidArgumentError, match=r"StoreGateDatasets .* only"):
        ConcatDataset([StoreGateDataset(a, "train", "x"), [1, 2]])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match=r"storegate.torch.ConcatDataset"):
        StoreGateDataset(a, a["train"] + b["train"], "x")  # a view of two stores


@pytest.mark.s3
def test_on_s3_a_concat_of_an_s3_store_and_a_folder_through_two_workers(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    args = {"output_dir": f"s3://{s3_bucket}/concat", "storage_options": s3_server.storage_options, "chunk": CHUNK}
    remote = _fill(StoreGate("zarr", args, data_id="d"))
    local = _fill(StoreGate("zarr", {"output_dir": str(tmp_path / "l.zarr"), "chunk": CHUNK}, data_id="d"))
    view = remote["valid"] + local["train"].subset(0, 20)
    np.testing.assert_array_equal(view["id"][:], np.r_[160:200, 0:20])
    dataset = ConcatDataset(
        [StoreGateDataset(remote, "valid", "x", "id"), StoreGateDataset(local, local["train"].subset(0, 20), "x", "id")]
    )
    sampler = ChunkShuffleSampler(dataset, seed=0, window=2)
    loader = DataLoader(
        dataset, batch_size=8, sampler=sampler, num_workers=2, multiprocessing_context="fork", timeout=90
    )
    seen = [int(i) for _, ids in loader for i in ids]
    assert sorted(seen) == [*range(20), *range(160, 200)]
