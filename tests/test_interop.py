"""xarray and dask: stores open with xarray.open_zarr, and to_xarray / to_dask are lazy views
over the stored chunks (real xarray and dask)."""

from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from storegate import InvalidArgumentError, NotFoundError, StoreGate, StoreGateError
from storegate.migrate import add_dimension_names
from storegate.testing import BACKEND_KINDS, make_gate
from tests.conftest import S3Server

X = np.arange(120, dtype=np.float32).reshape(20, 3, 2)
Y = np.arange(20) % 4


def _fill(sg: StoreGate) -> StoreGate:
    sg.add_data(["x", "y"], [X, Y], phase=(0.6, 0.2, 0.2))
    return sg


def _fill_x2(sg: StoreGate) -> StoreGate:
    sg.add_data("x2", X + 1, phase=(0.6, 0.2, 0.2))
    return sg


def test_xarray_open_zarr_reads_a_phase(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    _fill(StoreGate("zarr", {"output_dir": str(path), "chunk": 4}, data_id="d"))
    ds = xr.open_zarr(path, group="d/train", consolidated=False)
    assert ds["x"].dims == ("row", "x_dim_1", "x_dim_2")
    assert ds["y"].dims == ("row",)
    assert ds.sizes["row"] == 12
    np.testing.assert_array_equal(ds["x"].values, X[:12])
    np.testing.assert_array_equal(ds["y"].values, Y[:12])


def test_older_stores_get_dimension_names_from_migrate(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    sg = _fill(StoreGate("zarr", {"output_dir": str(path)}, data_id="d"))
    root = zarr.open_group(str(path), mode="r")
    for phase in ("train", "valid", "test"):  # as storegate wrote them before it named the axes
        for var in ("x", "y"):
            document = path / "d" / phase / var / "zarr.json"
            meta = json.loads(document.read_text())
            assert meta.pop("dimension_names")
            document.write_text(json.dumps(meta))
    root = zarr.open_group(str(path), mode="r")
    assert root["d/train/x"].metadata.dimension_names is None
    assert add_dimension_names(str(path)) == 6
    assert add_dimension_names(str(path)) == 0  # names kept
    np.testing.assert_array_equal(xr.open_zarr(path, group="d/valid", consolidated=False)["x"].values, X[12:16])
    np.testing.assert_array_equal(sg.get_data("x", "all"), X)  # storegate reads them as before


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_to_dask_and_to_xarray_equal_get_data_on_every_backend(kind: str, tmp_path: Path) -> None:
    sg = _fill_x2(_fill(make_gate(kind, tmp_path)))
    x = sg.to_dask("x", "all")
    assert isinstance(x, da.Array)
    assert (x.shape, x.dtype) == (X.shape, X.dtype)
    np.testing.assert_array_equal(x.compute(), X)
    np.testing.assert_array_equal(x[3:7, 1].compute(), X[3:7, 1])
    stacked = sg.to_dask(("x", "x2"), "train")  # a tuple stacks on axis 1
    assert stacked.shape == (12, 2, 3, 2)
    np.testing.assert_array_equal(stacked.compute(), sg.get_data(("x", "x2"), "train"))
    xs, ys = sg.to_dask(["x", "y"], "valid")
    np.testing.assert_array_equal(xs.compute(), X[12:16])
    np.testing.assert_array_equal(ys.compute(), Y[12:16])
    ds = sg.to_xarray("test")
    assert set(ds.data_vars) == {"x", "x2", "y"}
    assert ds.attrs == {"data_id": "conf", "phase": "test"}
    np.testing.assert_array_equal(ds["x"].values, X[16:])
    assert float(ds["y"].mean()) == pytest.approx(Y[16:].mean())
    with pytest.raises(NotFoundError, match="'nope'"):
        sg.to_dask("nope")


def test_dask_blocks_are_the_stored_chunks_and_nothing_is_read_before_compute(tmp_path: Path) -> None:
    sg = _fill(StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "chunk": 4}, data_id="d"))
    x = sg.to_dask("x", "train")
    assert x.chunks[0] == (4, 4, 4)
    sg.update_data("x", np.zeros((12, 3, 2), dtype=np.float32), "train")  # after to_dask: compute reads now
    assert float(x.sum().compute()) == 0.0


def test_a_statistic_over_a_phase_holds_a_few_chunks_not_the_data(tmp_path: Path) -> None:
    n, width = 64_000, 256  # 64 MB of float32
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "big.zarr"), "chunk": 2000}, data_id="d")
    with sg.writer() as w:
        for start in range(0, n, 8000):
            w.add({"x": np.full((8000, width), start // 8000, dtype=np.float32)})
    data_bytes = n * width * 4
    x = sg.to_dask("x", "train")
    tracemalloc.start()
    try:
        with dask.config.set(scheduler="synchronous"):
            mean = float(x.mean().compute())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert mean == pytest.approx(3.5)
    assert peak < data_bytes / 8, f"peak {peak / 2**20:.1f} MiB for {data_bytes / 2**20:.0f} MiB of data"


def test_missing_dask_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_dask(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith(("dask", "xarray")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    sg = _fill(StoreGate("numpy", data_id="d"))
    monkeypatch.setattr(builtins, "__import__", no_dask)
    for name in [m for m in sys.modules if m.startswith(("dask", "xarray"))]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(InvalidArgumentError, match="pip install 'dask\\[array\\]'"):
        sg.to_dask("x")
    with pytest.raises(InvalidArgumentError, match="pip install xarray"):
        sg.to_xarray()


@pytest.mark.s3
def test_xarray_over_the_s3_server(s3_server: S3Server, s3_bucket: str) -> None:
    options = s3_server.storage_options
    _fill(StoreGate("zarr", {"output_dir": f"s3://{s3_bucket}/s", "storage_options": options}, data_id="d"))
    ds = xr.open_zarr(f"s3://{s3_bucket}/s", group="d/train", consolidated=False, storage_options=options)
    np.testing.assert_array_equal(ds["x"].values, X[:12])
    sg = StoreGate("zarr", {"output_dir": f"s3://{s3_bucket}/s", "storage_options": options, "mode": "r"})
    sg.set_data_id("d")
    np.testing.assert_array_equal(sg.to_xarray("valid")["y"].values, Y[12:16])


def test_arrays_of_two_stores_or_two_moments_never_share_blocks(tmp_path: Path) -> None:
    a = StoreGate("zarr", {"output_dir": str(tmp_path / "a.zarr")}, data_id="d")
    a.add_data("x", np.zeros(10), phase="train")
    b = StoreGate("numpy", data_id="d")
    b.add_data("x", np.ones(10), phase="train")
    assert dask.compute(a.to_dask("x").sum(), b.to_dask("x").sum()) == (0.0, 10.0)
    assert float((a.to_dask("x") - b.to_dask("x")).sum().compute()) == -10.0
    before = a.to_dask("x")
    a.update_data("x", np.full(10, 2.0))
    after = a.to_dask("x")
    assert dask.compute(before.sum(), after.sum()) == (20.0, 20.0)  # values are read at compute time


def test_a_dask_array_whose_variable_changed_layout_raises(tmp_path: Path) -> None:
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr")}, data_id="d")
    sg.add_data("x", np.arange(40.0).reshape(20, 2), phase="train")
    stale = sg.to_dask("x")
    sg.delete_data("x")
    sg.add_data("x", np.arange(100).reshape(20, 5), phase="train")
    with pytest.raises(StoreGateError, match=r"must keep the shape and dtype \(20, 2\) float64.*make the array again"):
        stale.compute()
    also = sg.to_dask("x")
    sg.astype("x", np.int8)
    with pytest.raises(StoreGateError, match="make the array again"):
        also.sum().compute()


def test_hybrid_lazy_arrays_keep_the_tier_they_were_made_on(tmp_path: Path) -> None:
    hs = StoreGate("hybrid", {"output_dir": str(tmp_path / "h.zarr")}, data_id="d")
    hs.set_mode("zarr")
    hs.add_data("p", np.arange(4.0), phase="train")
    hs.set_mode("numpy")
    hs.add_data("p", np.zeros(4), phase="train")
    in_memory = hs.to_dask("p")
    hs.set_mode("zarr")
    np.testing.assert_array_equal(in_memory.compute(), np.zeros(4))  # not the zarr tier's values
    np.testing.assert_array_equal(hs.to_xarray()["p"].values, np.arange(4.0))
