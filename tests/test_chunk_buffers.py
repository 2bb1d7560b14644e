"""Decoded-chunk arrays recycled from the chunk caches' evictions (storegate/chunk_buffers.py):
an array is decoded into again only when nothing else can reach it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from storegate import StoreGate, chunk_buffers
from storegate.chunk_buffers import EXACT_REFCOUNTS, MAX_KEPT_BYTES, empty, kept_bytes, recycle
from storegate.loader import ChunkCache
from storegate.torch import StoreGateDataset

pytestmark = pytest.mark.skipif(not EXACT_REFCOUNTS, reason="recycling needs exact reference counts")


@pytest.fixture(autouse=True)
def _no_kept_arrays() -> Iterator[None]:
    chunk_buffers.clear()
    yield
    chunk_buffers.clear()


def _dropped(shape: tuple[int, ...] = (4, 3), dtype: str = "f4") -> np.ndarray:
    array = np.zeros(shape, dtype=dtype)
    recycle(array)  # held by this one name only
    return array


def test_an_array_its_caller_alone_held_is_handed_out_again() -> None:
    array = _dropped()
    assert kept_bytes() == array.nbytes
    assert empty((4, 3), np.dtype("f4")) is array
    assert kept_bytes() == 0
    assert empty((4, 3), np.dtype("f4")) is not array  # handed out once only


def test_only_the_same_shape_and_dtype_get_it() -> None:
    array = _dropped()
    assert empty((3, 4), np.dtype("f4")) is not array
    assert empty((4, 3), np.dtype("<i4")) is not array
    assert empty((4, 3), np.dtype(">f4")) is not array
    assert empty((4, 3), np.dtype("f4")) is array


def test_an_array_something_else_holds_is_never_kept() -> None:
    array = np.zeros((4, 3), dtype="f4")
    also = array
    recycle(array)
    assert kept_bytes() == 0
    held_view = array[1:]
    del also
    recycle(array)  # a view of it lives on
    assert kept_bytes() == 0
    del held_view
    base = np.zeros((8, 3), dtype="f4")
    recycle(base[:4])  # a view whose base another name holds
    assert kept_bytes() == 0
    read_only = np.zeros(3)
    read_only.flags.writeable = False
    recycle(read_only)
    recycle(np.frombuffer(b"\0" * 12, dtype="f4"))  # memory numpy does not own
    recycle(np.empty(3, dtype=object))
    assert kept_bytes() == 0


def test_a_view_held_by_its_caller_alone_gives_back_its_base() -> None:
    def cut() -> np.ndarray:
        return np.zeros((8, 3), dtype="f4")[:5]  # the last chunk's rows of a full-size decode

    view = cut()
    base = view.base
    assert isinstance(base, np.ndarray)
    base_id = id(base)
    del base
    recycle(view)
    del view
    assert id(empty((8, 3), np.dtype("f4"))) == base_id


def test_kept_arrays_stay_within_their_bound() -> None:
    rows = MAX_KEPT_BYTES // (1 << 20)
    for _ in range(rows + 3):
        _dropped((1 << 18,), "f4")  # 1 MiB each
    assert kept_bytes() == MAX_KEPT_BYTES


def test_a_cache_recycles_what_it_evicts_and_not_what_a_caller_holds() -> None:
    cache = ChunkCache(max_bytes=2 * 48)
    held = np.zeros((4, 3), dtype="f4")
    cache.put("a", held)
    cache.put("b", np.ones((4, 3), dtype="f4"))
    cache.put("c", np.ones((4, 3), dtype="f4"))  # evicts 'a', which the caller still holds
    assert kept_bytes() == 0
    cache.put("d", np.ones((4, 3), dtype="f4"))  # evicts 'b', which nothing else holds
    assert kept_bytes() == 48
    np.testing.assert_array_equal(held, 0)


def test_batches_read_through_a_tiny_cache_are_right_and_chunks_a_user_holds_stay(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((400, 5)).astype("f4")
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "chunk": 16}, data_id="d")
    sg.add_data("x", x, phase="train")
    dataset = StoreGateDataset(sg, "train", "x", chunk_cache_bytes=3 * 16 * 5 * 4)  # 3 chunks; a batch needs more
    held = None
    for _ in range(60):
        rows = np.sort(rng.choice(400, size=40, replace=False))
        np.testing.assert_array_equal(dataset[rows].numpy(), x[rows])
        if held is None:  # a chunk the cache holds now, kept by the user from here on
            cid = next(c for c in range(25) if ("x", "train", c) in dataset.cache)
            held = dataset.cache.get(("x", "train", cid))
    assert held is not None
    np.testing.assert_array_equal(held, x[cid * 16 : cid * 16 + 16])  # never decoded into again
