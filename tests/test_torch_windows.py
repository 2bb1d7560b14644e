"""StoreGateDataset's ``inner``: selections inside rows and random windows (lardon's randslice),
a new window at every read, reproducible under torch.manual_seed, through 2 DataLoader workers
(fork and spawn) and from the S3 test server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from storegate import IndexOutOfRangeError, InvalidArgumentError, StoreGate, randslice
from storegate.testing import BACKEND_KINDS, make_gate
from storegate.torch import StoreGateDataset
from tests.conftest import S3Server

pytestmark = [
    pytest.mark.timeout(300),
    # Python >= 3.12 warns when a process with threads forks; tests/test_torch_workers.py says why it is safe.
    pytest.mark.filterwarnings(r"ignore:.*use of fork\(\) may lead to deadlocks:DeprecationWarning"),
]

N, L, W = 24, 20, 5
#: Row i holds i * 100 + position along its last axis, so a window's first value says where it starts.
X = (np.arange(N)[:, None, None] * 100 + np.arange(L)[None, None, :] + np.zeros((1, 2, 1))).astype(np.float32)


def _fill(sg: StoreGate) -> StoreGate:
    sg.add_data(["x", "z", "id"], [X, X + 10_000, np.arange(N)], "train")
    return sg


def _starts(x: torch.Tensor, ids: torch.Tensor) -> np.ndarray:
    """Where each sample's window starts; checks that it is a whole window of its row."""
    starts = x[:, 0, 0].numpy() - ids.numpy() * 100
    for sample, row, start in zip(x.numpy(), ids.numpy(), starts.astype(int), strict=True):
        np.testing.assert_array_equal(sample, X[row][:, start : start + W])
    return starts.astype(int)


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_inner_selects_inside_each_sample(kind: str, tmp_path: Path) -> None:
    sg = _fill(make_gate(kind, tmp_path))
    dataset = StoreGateDataset(sg, "train", "x", "id", inner={"x": (1, slice(None, None, -3))})
    x, _ = dataset[5]
    np.testing.assert_array_equal(x.numpy(), X[5, 1, ::-3])
    channels = StoreGateDataset(sg, "train", "x", inner={"x": ([1, 0, 1], slice(2, 4))})
    np.testing.assert_array_equal(channels[[7, 2]].numpy(), X[[7, 2]][:, [1, 0, 1], 2:4])
    batch, _ = dataset[[3, 0]]
    np.testing.assert_array_equal(batch.numpy(), X[[3, 0], 1, ::-3])
    torch.manual_seed(0)
    windows = StoreGateDataset(
        sg, "train", ("x", "z"), "id", inner={"x": randslice(2, seed=1), "z": randslice(2, seed=1)}
    )
    both, _ = windows[:]
    np.testing.assert_array_equal(both[:, 1].numpy(), both[:, 0].numpy() + 10_000)  # same seeds, same windows


def test_a_window_is_new_at_each_read_and_reproducible_under_torch_manual_seed(tmp_path: Path) -> None:
    sg = _fill(make_gate("zarr-dir", tmp_path))
    torch.manual_seed(3)
    dataset = StoreGateDataset(sg, "train", "x", "id", inner={"x": (..., randslice(W, seed=7))})
    first = [_starts(*dataset[list(range(N))])]
    first += [_starts(*dataset[list(range(N))])]
    assert not np.array_equal(first[0], first[1])  # new windows at each read
    assert len(set(first[0].tolist())) > 1  # one window per sample
    again = StoreGateDataset(sg, "train", "x", "id", inner={"x": (..., randslice(W, seed=7))})
    np.testing.assert_array_equal(_starts(*again[list(range(N))]), first[0])  # the same torch seed, the same windows
    torch.manual_seed(4)
    other = StoreGateDataset(sg, "train", "x", "id", inner={"x": (..., randslice(W, seed=7))})
    assert not np.array_equal(_starts(*other[list(range(N))]), first[0])


def _epoch(dataset: StoreGateDataset, context: str) -> dict[int, int]:
    loader = DataLoader(dataset, batch_size=4, num_workers=2, multiprocessing_context=context, timeout=90)
    return {int(i): int(s) for x, ids in loader for i, s in zip(ids, _starts(x, ids), strict=True)}


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_two_workers_draw_their_own_windows_reproducibly(context: str, tmp_path: Path) -> None:
    sg = _fill(make_gate("zarr-dir", tmp_path))
    dataset = StoreGateDataset(sg, "train", "x", "id", inner={"x": (slice(None), randslice(W, seed=2))})
    torch.manual_seed(0)
    first = _epoch(dataset, context)
    second = _epoch(dataset, context)
    assert sorted(first) == list(range(N))
    assert first != second  # a new epoch, new windows
    torch.manual_seed(0)
    assert _epoch(dataset, context) == first  # reproducible
    worker_0 = [first[i] for i in range(N) if i // 4 % 2 == 0]  # batches go to the workers in turn
    worker_1 = [first[i] for i in range(N) if i // 4 % 2 == 1]
    assert worker_0 != worker_1  # each worker its own windows


@pytest.mark.parametrize(
    ("inner", "words"),
    [
        ({"y": randslice(2)}, "over the var_names read"),
        ({"x": (0, 0, 0)}, "at most one item per axis"),
        ({"x": (slice(None), 25)}, "index item 2 must be in [-20, 20)"),
        ({"x": ([0, 1], 0)}, "no int item"),
        ({"x": 0.5}, "index item 1"),
        (["x"], "inner must be a dict"),
    ],
)
def test_bad_inner_is_refused_when_the_dataset_is_made(inner: Any, words: str) -> None:
    sg = _fill(StoreGate("numpy", data_id="d"))
    with pytest.raises((InvalidArgumentError, IndexOutOfRangeError)) as info:
        StoreGateDataset(sg, "train", "x", inner=inner)
    assert words in str(info.value)


def test_a_window_longer_than_its_axis_raises_on_read() -> None:
    sg = _fill(StoreGate("numpy", data_id="d"))
    dataset = StoreGateDataset(sg, "train", "x", inner={"x": (slice(None), randslice(L + 1))})
    with pytest.raises(InvalidArgumentError, match="must fit its axis"):
        dataset[0]


@pytest.mark.s3
def test_on_s3_windows_through_two_forked_workers(s3_server: S3Server, s3_bucket: str) -> None:
    args = {"output_dir": f"s3://{s3_bucket}/windows", "storage_options": s3_server.storage_options, "chunk": 4}
    sg = _fill(StoreGate("zarr", args, data_id="d"))
    dataset = StoreGateDataset(sg, "train", "x", "id", inner={"x": (slice(None), randslice(W, seed=2))})
    torch.manual_seed(1)
    first = _epoch(dataset, "fork")
    torch.manual_seed(1)
    assert _epoch(dataset, "fork") == first
