"""verify() finds what is wrong in a data_id; repair() brings it back to its last commit."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from storegate import ReadOnlyError, StoreGate
from storegate.verify import Report
from tests.conftest import S3Server


def _store(tmp_path: Path, **extra: Any) -> tuple[StoreGate, Path]:
    root = tmp_path / "store"
    sg = StoreGate("zarr", {"output_dir": str(root), "chunk": 4, **extra}, data_id="d")
    sg.add_data(["x", "y"], [np.arange(10), -np.arange(10)], phase="train")
    return sg, root


@pytest.mark.parametrize("backend", ["numpy", "zarr", "hybrid"])
def test_a_store_storegate_wrote_is_ok(backend: str) -> None:
    sg = StoreGate(backend, data_id="d")
    sg.add_data(["x", "y"], [np.arange(10), -np.arange(10)], phase=(0.8, 0.1, 0.1))
    report = sg.verify(progress=True)
    assert isinstance(report, Report)
    assert report.ok, str(report)
    assert str(report) == "data_id 'd': no problem found"
    assert sg.repair() == []


def test_rows_and_variables_past_the_commit_are_found_and_repaired(tmp_path: Path) -> None:
    sg, root = _store(tmp_path)
    zarr.open_array(str(root / "d/train/x"), mode="a").append(np.zeros(3, np.int64))  # a writer killed mid-append
    zarr.open_group(str(root / "d/train"), mode="a").create_array("z", shape=(2,), dtype="i8")  # mid-create
    report = sg.verify()
    assert not report.ok
    assert [(f.path, f.repairable) for f in report.findings] == [("d/train/x", True), ("d/train/z", True)]
    assert "3 rows past the last commit (10 committed)" in str(report)
    assert "a variable no commit lists (2 rows)" in str(report)
    assert [f.path for f in sg.repair()] == ["d/train/x", "d/train/z"]
    assert sg.verify().ok
    assert zarr.open_array(str(root / "d/train/x"), mode="r").shape == (10,)
    assert not (root / "d/train/z").exists()
    np.testing.assert_array_equal(sg.get_data("x", "train"), np.arange(10))


def test_problems_repair_cannot_fix_are_reported_and_left(tmp_path: Path) -> None:
    sg, root = _store(tmp_path)
    sg.add_data("w", np.arange(3), phase="train")  # a length that disagrees (add_data does not compile)
    sg.add_data("v", np.arange(8), phase="valid")
    zarr.open_group(str(root / "d/test"), mode="a").create_array("mean", shape=(), dtype="f8")  # another tool's
    (root / "d/train/y/c/1").write_bytes(b"not zstd")  # a chunk that cannot be decoded
    shutil.rmtree(root / "d/valid/v")  # a committed variable whose array is gone
    report = StoreGate("zarr", {"output_dir": str(root), "mode": "r"}, data_id="d").verify()
    text = str(report)
    assert "d/valid/v: committed, but its array is gone" in text
    assert "d/test/mean: 0-d array, not a storegate variable" in text
    assert "every variable of phase 'train' must have the same number of rows" in text
    assert "d/train/y: unreadable:" in text
    assert not any(f.repairable for f in report.findings)
    assert sg.repair() == []
    assert not sg.verify(read_data=False).ok
    assert "unreadable" not in str(sg.verify(read_data=False))  # read_data=False reads no chunk


def test_repair_needs_a_writable_store_and_verify_needs_bools(tmp_path: Path) -> None:
    _, root = _store(tmp_path)
    reader = StoreGate("zarr", {"output_dir": str(root), "mode": "r"}, data_id="d")
    with pytest.raises(ReadOnlyError):
        reader.repair()
    with pytest.raises(ValueError, match=r"read_data must be True or False\. Got .yes."):
        reader.verify(read_data="yes")  # type: ignore[arg-type]


@pytest.mark.s3
def test_leftovers_on_s3_are_found_and_repaired(s3_server: S3Server, s3_bucket: str) -> None:
    args = {"output_dir": f"s3://{s3_bucket}/store", "storage_options": s3_server.storage_options, "chunk": 4}
    sg = StoreGate("zarr", args, data_id="d")
    sg.add_data("x", np.arange(10), phase="train")
    store = zarr.storage.FsspecStore.from_url(f"s3://{s3_bucket}/store", storage_options=s3_server.storage_options)
    zarr.open_array(store=store, path="d/train/x", mode="a").append(np.zeros(5, np.int64))
    assert [f.path for f in sg.verify().findings] == ["d/train/x"]
    sg.repair()
    assert sg.verify().ok
    np.testing.assert_array_equal(sg.get_data("x", "train"), np.arange(10))


def test_a_damaged_chunk_is_a_storegate_error_naming_the_variable(tmp_path: Path) -> None:
    from storegate import StoreGateError

    sg, root = _store(tmp_path)
    (root / "d/train/y/c/1").write_bytes(b"not zstd")
    with pytest.raises(StoreGateError, match=r"var_name 'y' of phase 'train' in data_id 'd'.*cannot be decoded"):
        sg.get_data("y", "train")
    np.testing.assert_array_equal(sg.get_data("x", "train"), np.arange(10))
