"""A reader through a ``cache_dir`` reads what a reader without one reads, after any commit.

The commit record is read from the store on every call (never from the cache), and copies
filled under an older record are never served (:mod:`storegate.cache_folders`), in the
same process and in a new one that finds a cache_dir filled before a commit.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from s3fs import S3FileSystem
from torch.utils.data import DataLoader

from storegate import StoreGate
from storegate.cache_folders import MARKER
from storegate.torch import StoreGateDataset
from tests.conftest import S3Server

pytestmark = [pytest.mark.s3, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[1]


def _args(server: S3Server, bucket: str, **extra: Any) -> dict[str, Any]:
    return {"output_dir": f"s3://{bucket}/store", "storage_options": server.storage_options, **extra}


def _append(gate: StoreGate) -> None:
    gate.add_data("x", np.arange(5.0), phase="train")


def _update(gate: StoreGate) -> None:
    gate.update_data("x", np.zeros(10), phase="train")


def _readd(gate: StoreGate) -> None:
    gate.delete_data("x", phase="train")
    gate.add_data("x", np.full(3, 7.0), phase="train")


def _in_new_process(args: dict[str, Any]) -> list[float]:
    code = (
        "import sys; from storegate import StoreGate; "
        f"print(StoreGate('zarr', {args!r}, data_id='d').get_data('x', 'train').tolist())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=90)
    assert done.returncode == 0, done.stderr
    return [float(v) for v in done.stdout.strip().strip("[]").split(",") if v.strip()]


@pytest.mark.parametrize("change", [_append, _update, _readd], ids=["append", "update", "delete-and-re-add"])
def test_a_cached_reader_reads_the_newest_commit(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, change: Callable[[StoreGate], None]
) -> None:
    writer = StoreGate("zarr", _args(s3_server, s3_bucket, chunk=4), data_id="d")
    writer.add_data("x", np.arange(10.0), phase="train")
    cached = _args(s3_server, s3_bucket, mode="r", cache_dir=str(tmp_path / "cache"))
    reader = StoreGate("zarr", cached, data_id="d")
    np.testing.assert_array_equal(reader.get_data("x", "train"), np.arange(10.0))  # the cache is filled
    change(writer)
    expected = StoreGate("zarr", _args(s3_server, s3_bucket, mode="r"), data_id="d").get_data("x", "train")
    assert _in_new_process(cached) == expected.tolist()  # a new process finds copies of the older commit
    np.testing.assert_array_equal(reader.get_data("x", "train"), expected)  # the same handle
    np.testing.assert_array_equal(reader.get_data("x", "train")[2], expected[2])  # a one-row read too
    np.testing.assert_array_equal(StoreGate("zarr", cached, data_id="d").get_data("x", "train"), expected)


def test_a_new_process_finds_copies_of_an_older_commit(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    """The reader that filled the cache is gone before the commit: only the folder's marker tells."""
    writer = StoreGate("zarr", _args(s3_server, s3_bucket, chunk=4), data_id="d")
    writer.add_data("x", np.arange(10.0), phase="train")
    cached = _args(s3_server, s3_bucket, mode="r", cache_dir=str(tmp_path / "cache"))
    assert _in_new_process(cached) == list(range(10))
    writer.add_data("x", np.arange(5.0), phase="train")
    writer.update_data("x", np.zeros(15), phase="train")
    assert _in_new_process(cached) == [0.0] * 15


def test_an_unchanged_store_is_read_from_the_cache(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm read asks S3 for the commit record only, as a reader without cache_dir does."""
    writer = StoreGate("zarr", _args(s3_server, s3_bucket, chunk=4), data_id="d")
    writer.add_data("x", np.arange(40.0).reshape(20, 2), phase="train")
    asked: list[str] = []
    for name in ("_cat_file", "_get_file"):
        original = getattr(S3FileSystem, name)

        async def counted(self: S3FileSystem, path: str, *args: Any, _o: Any = original, **kw: Any) -> Any:
            asked.append(path)
            return await _o(self, path, *args, **kw)

        monkeypatch.setattr(S3FileSystem, name, counted)
    reader = StoreGate("zarr", _args(s3_server, s3_bucket, mode="r", cache_dir=str(tmp_path / "c")), data_id="d")
    reader.get_data("x", "train")
    asked.clear()
    for _ in range(3):
        np.testing.assert_array_equal(reader.get_data("x", "train"), np.arange(40.0).reshape(20, 2))
    assert asked
    assert all(path.endswith(".storegate/commits/d.json") for path in asked)
    per_call = len(asked) / 3
    uncached = StoreGate("zarr", _args(s3_server, s3_bucket, mode="r"), data_id="d")
    uncached.get_data("x", "train")
    asked.clear()
    uncached.get_data("x", "train")
    records = [path for path in asked if path.endswith(".storegate/commits/d.json")]
    assert per_call == len(records)  # the same record reads; the chunks come from the cache


def test_a_commit_to_another_data_id_leaves_each_read_right(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """Copies of one store: a commit to data_id 'e' empties the folder, 'd' is read again."""
    writer = StoreGate("zarr", _args(s3_server, s3_bucket, chunk=4), data_id="d")
    writer.add_data("x", np.arange(10.0), phase="train")
    writer.set_data_id("e")
    writer.add_data("x", np.arange(6.0), phase="train")
    cached = _args(s3_server, s3_bucket, mode="r", cache_dir=str(tmp_path / "cache"))
    d, e = StoreGate("zarr", cached, data_id="d"), StoreGate("zarr", cached, data_id="e")
    d.get_data("x", "train")
    e.get_data("x", "train")
    writer.update_data("x", np.ones(6), phase="train")  # data_id 'e'
    np.testing.assert_array_equal(e.get_data("x", "train"), np.ones(6))
    np.testing.assert_array_equal(d.get_data("x", "train"), np.arange(10.0))
    assert _in_new_process(cached) == list(range(10))


def test_a_lost_marker_empties_the_folder(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    """Copies nothing names the records of (records.json deleted) are never served."""
    writer = StoreGate("zarr", _args(s3_server, s3_bucket, chunk=4), data_id="d")
    writer.add_data("x", np.arange(10.0), phase="train")
    cached = _args(s3_server, s3_bucket, mode="r", cache_dir=str(tmp_path / "cache"))
    assert _in_new_process(cached) == list(range(10))
    (marker,) = (tmp_path / "cache").rglob(MARKER)
    marker.unlink()
    writer.update_data("x", np.ones(10), phase="train")
    assert _in_new_process(cached) == [1.0] * 10


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_two_workers_share_a_cache_dir_across_a_commit(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, context: str
) -> None:
    writer = StoreGate("zarr", _args(s3_server, s3_bucket, chunk=4), data_id="d")
    writer.add_data("x", np.arange(32.0), phase="train")
    cached = _args(s3_server, s3_bucket, mode="r", cache_dir=str(tmp_path / "cache"))

    def epoch() -> list[float]:
        dataset = StoreGateDataset(StoreGate("zarr", cached, data_id="d"), "train", "x")
        loader = DataLoader(dataset, batch_size=4, num_workers=2, multiprocessing_context=context, timeout=90)
        return [float(v) for batch in loader for v in batch.reshape(-1).tolist()]

    assert epoch() == list(range(32))
    writer.update_data("x", np.arange(32.0) * 2, phase="train")
    assert epoch() == [2.0 * i for i in range(32)]


def test_a_store_replaced_with_mode_w_is_read_anew(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    writer = StoreGate("zarr", _args(s3_server, s3_bucket, chunk=4), data_id="d")
    writer.add_data("x", np.arange(10.0), phase="train")
    cached = _args(s3_server, s3_bucket, mode="r", cache_dir=str(tmp_path / "cache"))
    reader = StoreGate("zarr", cached, data_id="d")
    np.testing.assert_array_equal(reader.get_data("x", "train"), np.arange(10.0))
    again = StoreGate("zarr", _args(s3_server, s3_bucket, chunk=2, mode="w"), data_id="d")
    again.add_data("x", np.full(4, 9.0), phase="train")
    np.testing.assert_array_equal(reader.get_data("x", "train"), np.full(4, 9.0))
    assert _in_new_process(cached) == [9.0] * 4


def test_a_sharded_variable_is_read_right_after_an_update(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    """Rows of a shard are byte ranges of one object (zarr's partial reads): copies of it too."""
    data = np.arange(64.0).reshape(32, 2)
    writer = StoreGate("zarr", _args(s3_server, s3_bucket, chunk=4, shard_bytes=256), data_id="d")
    writer.add_data("x", data, phase="train")
    cached = _args(s3_server, s3_bucket, mode="r", cache_dir=str(tmp_path / "cache"), chunk_cache_bytes=0)
    reader = StoreGate("zarr", cached, data_id="d")
    np.testing.assert_array_equal(reader.get_data("x", "train", [1, 9, 30]), data[[1, 9, 30]])
    writer.update_data("x", -data[9:10], phase="train", index=9)
    expected = data.copy()
    expected[9] *= -1
    np.testing.assert_array_equal(reader.get_data("x", "train", [1, 9, 30]), expected[[1, 9, 30]])
    np.testing.assert_array_equal(reader.get_data("x", "train"), expected)
