"""StoreGateDataset: items, var_names forms, batched chunk reads, cache, pickling, every backend."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from storegate import InvalidArgumentError, NotFoundError, StoreGate, StoreGateError, ValidationError
from storegate.backends.zarr_backend import ZarrBackend
from storegate.torch import StoreGateDataset

pytestmark = pytest.mark.timeout(120)

N = 50
SPLIT = (30, 12, 8)
CHUNK = 4


def _source() -> dict[str, np.ndarray]:
    rows = np.arange(N)
    return {
        "x": np.stack([rows * 10.0, rows * 10.0 + 1, rows * 10.0 + 2], axis=1).astype(np.float32),
        "w": np.stack([-rows, -rows - 1, -rows - 2], axis=1).astype(np.float32),
        "y": rows.astype(np.int64),
    }


def _fill(sg: StoreGate) -> StoreGate:
    for var, data in _source().items():
        sg.add_data(var, data, phase=SPLIT)
    return sg


def _numpy(tmp: Path) -> StoreGate:
    return _fill(StoreGate("numpy", data_id="d"))


def _zarr(tmp: Path) -> StoreGate:
    return _fill(StoreGate("zarr", {"output_dir": str(tmp / "s.zarr"), "chunk": CHUNK}, data_id="d"))


def _zarr_memory(tmp: Path) -> StoreGate:
    return _fill(StoreGate("zarr", {"output_dir": zarr.storage.MemoryStore(), "chunk": CHUNK}, data_id="d"))


def _hybrid_zarr(tmp: Path) -> StoreGate:
    return _fill(StoreGate("hybrid", {"output_dir": str(tmp / "h.zarr"), "chunk": CHUNK}, data_id="d"))


def _hybrid_numpy(tmp: Path) -> StoreGate:
    sg = StoreGate("hybrid", {"output_dir": str(tmp / "h.zarr"), "chunk": CHUNK}, data_id="d")
    sg.set_mode("numpy")
    return _fill(sg)


MAKERS: dict[str, Callable[[Path], StoreGate]] = {
    "numpy": _numpy,
    "zarr": _zarr,
    "zarr-memorystore": _zarr_memory,
    "hybrid-zarr": _hybrid_zarr,
    "hybrid-numpy": _hybrid_numpy,
}


@pytest.fixture(params=list(MAKERS))
def sg(request: pytest.FixtureRequest, tmp_path: Path) -> StoreGate:
    return MAKERS[request.param](tmp_path)


@pytest.fixture
def zarr_sg(tmp_path: Path) -> StoreGate:
    return _zarr(tmp_path)


def _assert_same(got: Any, want: Any) -> None:
    if isinstance(want, list):
        assert isinstance(got, tuple)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            _assert_same(g, w)
        return
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), np.asarray(want))
    assert got.numpy().dtype == np.asarray(want).dtype


# --- items and forms -------------------------------------------------------------------

FORMS = ["x", ("x", "w"), ["x", "y"]]


@pytest.mark.parametrize("phase", ["train", "valid", "test", "all"])
@pytest.mark.parametrize("inputs", FORMS, ids=["str", "tuple", "list"])
def test_items_equal_get_data(sg: StoreGate, phase: str, inputs: Any) -> None:
    ds = StoreGateDataset(sg, phase, input_var_names=inputs, true_var_names="y")
    assert len(ds) == len(sg[phase])
    for i in (0, len(ds) - 1, len(ds) // 2, -1):
        data, target = ds[i]
        _assert_same(data, sg.get_data(inputs, phase, i))
        _assert_same(target, sg.get_data("y", phase, i))


def test_without_target_items_are_data_alone(sg: StoreGate) -> None:
    ds = StoreGateDataset(sg, "train", "x")
    _assert_same(ds[3], sg.get_data("x", "train", 3))


@pytest.mark.parametrize("targets", FORMS, ids=["str", "tuple", "list"])
def test_getitems_returns_the_samples_in_the_requested_order(sg: StoreGate, targets: Any) -> None:
    ds = StoreGateDataset(sg, "all", input_var_names="y", true_var_names=targets)
    indices = [17, 3, 45, 3, 0, 49, 31, -2, 30, 8]
    samples = ds.__getitems__(indices)
    assert len(samples) == len(indices)
    for index, (data, target) in zip(indices, samples, strict=True):
        _assert_same(data, sg.get_data("y", "all", index))
        _assert_same(target, sg.get_data(targets, "all", index))


@pytest.mark.parametrize("index", [slice(2, 9), [5, 1, 1, 7], np.array([0, 29]), torch.tensor([3, 2])])
def test_a_batch_index_gives_batched_tensors(sg: StoreGate, index: Any) -> None:
    ds = StoreGateDataset(sg, "train", ("x", "w"), ["y"])
    data, target = ds[index]
    _assert_same(data, sg.get_data(("x", "w"), "train", index))
    _assert_same(target, sg.get_data(["y"], "train", index))


def test_default_collate_stacks_the_samples(sg: StoreGate) -> None:
    ds = StoreGateDataset(sg, "valid", ["x", "w"], "y")
    batches = list(DataLoader(ds, batch_size=5, shuffle=False))
    assert len(batches) == 3
    xs = torch.cat([b[0][0] for b in batches])
    ws = torch.cat([b[0][1] for b in batches])
    ys = torch.cat([b[1] for b in batches])
    np.testing.assert_array_equal(xs.numpy(), sg.get_data("x", "valid"))
    np.testing.assert_array_equal(ws.numpy(), sg.get_data("w", "valid"))
    np.testing.assert_array_equal(ys.numpy(), sg.get_data("y", "valid"))


def test_a_batch_sampler_with_batch_size_none_skips_collation(zarr_sg: StoreGate) -> None:
    ds = StoreGateDataset(zarr_sg, "train", "x", "y")
    loader = DataLoader(ds, sampler=BatchSampler(SequentialSampler(ds), 8, drop_last=False), batch_size=None)
    ys = torch.cat([y for _, y in loader])
    np.testing.assert_array_equal(ys.numpy(), np.arange(SPLIT[0]))


def test_samples_never_alias_the_store_or_the_cache(sg: StoreGate) -> None:
    ds = StoreGateDataset(sg, "train", "x")
    first = ds[4]
    first += 1000
    _assert_same(ds[4], sg.get_data("x", "train", 4))
    batch = ds.__getitems__([4, 5])
    batch[0].zero_()
    _assert_same(ds[4], sg.get_data("x", "train", 4))


def test_callbacks_act_on_each_sample(sg: StoreGate) -> None:
    def double(data: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return data * 2, target + 100

    ds = StoreGateDataset(sg, "train", "x", "y", callbacks=[double])
    data, target = ds.__getitems__([6])[0]
    _assert_same(data, sg.get_data("x", "train", 6) * 2)
    assert int(target) == 106
    with pytest.raises(InvalidArgumentError, match="callbacks"):
        ds[0:2]


def test_preload_reads_into_memory_and_gives_the_same_items(zarr_sg: StoreGate) -> None:
    lazy = StoreGateDataset(zarr_sg, "all", ("x", "w"), "y")
    loaded = StoreGateDataset(zarr_sg, "all", ("x", "w"), "y", preload=True)
    assert "source='memory'" in repr(loaded)
    assert "s.zarr" in repr(lazy)
    for i in range(N):
        for a, b in zip(lazy[i], loaded[i], strict=True):
            assert torch.equal(a, b)


# --- errors ----------------------------------------------------------------------------


def test_input_var_names_are_required(zarr_sg: StoreGate) -> None:
    with pytest.raises(InvalidArgumentError, match=r"input_var_names .* Got None"):
        StoreGateDataset(zarr_sg, "train")


def test_a_missing_variable_raises_not_found(sg: StoreGate) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        StoreGateDataset(sg, "train", "x", "nope")


def test_variables_of_different_lengths_are_refused(sg: StoreGate) -> None:
    sg.add_data("short", np.zeros(3), phase="train")
    with pytest.raises(ValidationError, match="same number of rows"):
        StoreGateDataset(sg, "train", "x", "short")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"storegate": "store"}, "storegate must be a StoreGate. Got str"),
        ({"phase": "training"}, "phase must be one of"),
        ({"chunk_cache_bytes": -1}, "chunk_cache_bytes must be an int >= 0. Got -1"),
        ({"input_var_names": 3}, "var_names must be"),
    ],
)
def test_bad_arguments_are_refused(zarr_sg: StoreGate, kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"storegate": zarr_sg, "phase": "train", "input_var_names": "x", **kwargs}
    with pytest.raises(InvalidArgumentError, match=match):
        StoreGateDataset(**args)


def test_a_storegate_without_data_id_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="data_id"):
        StoreGateDataset(StoreGate("numpy"), "train", "x")


def test_out_of_range_indices_raise_index_errors(zarr_sg: StoreGate) -> None:
    ds = StoreGateDataset(zarr_sg, "test", "x")
    with pytest.raises(IndexError):
        ds[SPLIT[2]]
    with pytest.raises(IndexError):
        ds.__getitems__([0, SPLIT[2]])
    for huge in ([2**64 - 1], np.array([2**64 - 1], dtype=np.uint64)):  # not wrapped to -1: the last row
        with pytest.raises(IndexError):
            ds.__getitems__(huge)


def test_getitems_takes_every_flat_form_of_ints(zarr_sg: StoreGate) -> None:
    ds = StoreGateDataset(zarr_sg, "test", "x")
    want = torch.stack(ds.__getitems__([1, 2]))
    for given in (
        (1, 2),
        [np.int32(1), np.uint64(2)],
        torch.tensor([1, 2]),
        [torch.tensor(1), torch.tensor(2)],
        range(1, 3),
    ):
        assert torch.equal(torch.stack(ds.__getitems__(given)), want)
    assert ds.__getitems__([]) == []


# --- batched chunk reads ---------------------------------------------------------------


class _ReadSpy:
    """Records every read the zarr backend serves (in this process)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        original = ZarrBackend.read

        def read(backend: ZarrBackend, data_id: str, phase: str, var: str, selection: Any) -> np.ndarray:
            self.calls.append((phase, var, selection))
            return original(backend, data_id, phase, var, selection)

        monkeypatch.setattr(ZarrBackend, "read", read)


def test_a_batch_reads_each_chunk_it_needs_once_as_one_slice(
    zarr_sg: StoreGate, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One slice per chunk (not per run of adjacent chunks): the reader threads fetch and
    # decode them at once, each in the thread that asked for it (zarr_direct).
    ds = StoreGateDataset(zarr_sg, "train", "x")
    # chunks of 4 rows: rows 1, 2 -> chunk 0; 5 -> 1; 9 -> 2; 21, 22 -> 5; 29 -> 7 (the last, 2 rows)
    rows = [22, 5, 1, 29, 9, 2, 21]
    want = zarr_sg.get_data("x", "train", rows)
    spy = _ReadSpy(monkeypatch)
    samples = ds.__getitems__(rows)
    _assert_same(torch.stack(samples), want)
    reads = sorted((s.start, s.stop) for _, _, s in spy.calls)
    assert reads == [(0, 4), (4, 8), (8, 12), (20, 24), (28, 30)]
    assert all(isinstance(s, slice) for _, _, s in spy.calls)


def test_cached_chunks_are_not_read_again(zarr_sg: StoreGate, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = StoreGateDataset(zarr_sg, "train", "x", "y")
    spy = _ReadSpy(monkeypatch)
    ds.__getitems__([0, 1, 2, 3])
    first = len(spy.calls)
    assert first == 2  # one chunk of x, one of y
    ds.__getitems__([3, 2, 0])
    assert len(spy.calls) == first


def test_the_cache_stays_within_its_bound(zarr_sg: StoreGate, monkeypatch: pytest.MonkeyPatch) -> None:
    chunk_bytes = CHUNK * 3 * 4  # 4 rows of 3 float32
    ds = StoreGateDataset(zarr_sg, "train", "x", chunk_cache_bytes=2 * chunk_bytes)
    spy = _ReadSpy(monkeypatch)
    for row in range(SPLIT[0]):
        ds[row]
        assert ds.cache.nbytes <= 2 * chunk_bytes
    assert len(spy.calls) == -(-SPLIT[0] // CHUNK)  # sequential: each chunk read once
    ds[0]  # evicted long ago
    assert len(spy.calls) == -(-SPLIT[0] // CHUNK) + 1


def test_phase_all_reads_each_phase_array(zarr_sg: StoreGate, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = StoreGateDataset(zarr_sg, "all", "y")
    np.testing.assert_array_equal(ds.chunk_bounds[[0, -1]], [0, N])
    assert {30, 42} <= set(ds.chunk_bounds.tolist())  # phase boundaries start chunks
    spy = _ReadSpy(monkeypatch)
    got = torch.stack(ds.__getitems__([49, 0, 31, 29]))
    np.testing.assert_array_equal(got.numpy(), [49, 0, 31, 29])
    assert sorted(p for p, _, _ in spy.calls) == ["test", "train", "train", "valid"]


@pytest.mark.parametrize("maker", ["zarr", "hybrid-zarr"])
def test_stored_data_have_a_bound_at_every_chunk(maker: str, tmp_path: Path) -> None:
    ds = StoreGateDataset(MAKERS[maker](tmp_path), "train", "x", "y")
    np.testing.assert_array_equal(ds.chunk_bounds, [*range(0, SPLIT[0], CHUNK), SPLIT[0]])


@pytest.mark.parametrize("maker", ["numpy", "zarr-memorystore", "hybrid-numpy"])
def test_data_in_memory_have_a_bound_at_every_row(maker: str, tmp_path: Path) -> None:
    ds = StoreGateDataset(MAKERS[maker](tmp_path), "train", "x", "y")
    np.testing.assert_array_equal(ds.chunk_bounds, np.arange(SPLIT[0] + 1))


# --- pickling (spawn / forkserver workers) ---------------------------------------------


def test_the_dataset_pickles_without_open_stores_or_cached_chunks(sg: StoreGate) -> None:
    ds = StoreGateDataset(sg, "all", ("x", "w"), "y")
    ds.__getitems__(list(range(N)))  # opens the store and fills the cache here
    copy = pickle.loads(pickle.dumps(ds))
    assert len(copy.cache) == 0
    for i in range(N):
        for a, b in zip(ds[i], copy[i], strict=True):
            assert torch.equal(a, b)


def test_a_memorystore_is_carried_as_numpy(tmp_path: Path) -> None:
    sg = _zarr_memory(tmp_path)
    ds = StoreGateDataset(sg, "train", "x")
    assert "source='memory'" in repr(ds)
    sg.update_data("x", np.zeros((SPLIT[0], 3), dtype=np.float32), phase="train")
    # The dataset holds the data as they were when it was made.
    _assert_same(pickle.loads(pickle.dumps(ds))[1], _source()["x"][1])


def test_a_local_store_is_streamed_not_copied(tmp_path: Path) -> None:
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "big.zarr")}, data_id="d")
    x = np.ones((20_000, 4), dtype=np.float32)
    sg.add_data("x", x)
    assert len(pickle.dumps(StoreGateDataset(sg, "train", "x"))) < x.nbytes // 100


def test_storegate_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import storegate, numpy as np\n"
        "sg = storegate.StoreGate('numpy', data_id='d'); sg.add_data('x', np.arange(3))\n"
        "assert 'torch' not in {m for m in sys.modules if sys.modules[m] is not None}\n"
        "try:\n    import storegate.torch\nexcept ImportError:\n    print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("maker", ["zarr", "hybrid-zarr"])
def test_writes_of_this_process_are_read_not_served_from_the_cache(tmp_path: Path, maker: str) -> None:
    sg = MAKERS[maker](tmp_path)
    dataset = StoreGateDataset(sg, "train", "y")
    assert [int(dataset[i]) for i in (3, 20)] == [3, 20]  # both chunks now cached
    sg.update_data("y", np.zeros(SPLIT[0], dtype=np.int64))
    assert [int(dataset[i]) for i in (3, 20, 29)] == [0, 0, 0]
    sg.shuffle("train", seed=3)  # same layout, rows moved: read anew, x and y still aligned
    assert int(dataset[0]) == 0


@pytest.mark.parametrize("maker", ["zarr", "hybrid-zarr"])
def test_a_changed_layout_is_an_error_not_stale_rows(tmp_path: Path, maker: str) -> None:
    sg = MAKERS[maker](tmp_path)
    dataset = StoreGateDataset(sg, "train", ("x", "w"))
    _ = dataset[25]
    sg.delete_data(["x", "w"], do_compile=False)
    sg.add_data(["x", "w"], [np.zeros((10, 3), np.float32)] * 2)
    with pytest.raises(StoreGateError, match="changed its rows, chunks or dtype"):
        _ = dataset[25]


def test_another_process_shrinking_the_store_is_a_storegate_error(zarr_sg: StoreGate, tmp_path: Path) -> None:
    dataset = StoreGateDataset(zarr_sg, "train", "y", chunk_cache_bytes=0)
    code = (
        "import numpy as np; from storegate import StoreGate; "
        f"sg = StoreGate('zarr', {{'output_dir': {str(tmp_path / 's.zarr')!r}}}, data_id='d'); "
        "sg.delete_data(['x', 'w', 'y'], do_compile=False); sg.add_data('y', np.arange(5))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    # The dataset reads the commit record before each batch: the other process's commit is seen.
    with pytest.raises(StoreGateError, match="changed its rows, chunks or dtype since this StoreGateDataset was made"):
        _ = dataset[25]
