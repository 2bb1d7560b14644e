"""A lost chunk never reads back as zeros (storegate.backends.zarr_chunks).

Variables the zarr backend writes keep every chunk, fill-valued ones too, and say so in their
attributes; a chunk missing from such a variable was lost: reads that need it raise
StorageError, verify() names it. Variables without the mark read as before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import ZstdCodec
from zarr.core.sync import sync
from zarr.storage import LocalStore, MemoryStore

from storegate import StorageError, StoreGate, StoreGateError
from storegate.backends.zarr_chunks import EVERY_CHUNK_ATTR
from storegate.codecs import zarrs_available
from storegate.testing import make_gate
from tests.conftest import S3Server
from tests.v2_stores import write_zarr2_files

CHUNK = 10
X = np.arange(50 * 3, dtype="f4").reshape(50, 3) + 1


def _open(kind: str, tmp_path: Path, **args: Any) -> tuple[StoreGate, Any]:
    """A StoreGate of ``kind`` (chunks of CHUNK rows) and the zarr store under it."""
    if kind == "zarr-memory":
        store: Any = MemoryStore()
        return StoreGate("zarr", {"output_dir": store, "chunk": CHUNK, **args}, data_id="d"), store
    name = "hybrid" if kind == "hybrid-zarr" else "zarr"
    folder = tmp_path / f"{name}.zarr"
    return StoreGate(name, {"output_dir": str(folder), "chunk": CHUNK, **args}, data_id="d"), LocalStore(folder)


def _keys(store: Any, var: str = "x", phase: str = "train") -> list[str]:
    prefix = f"d/{phase}/{var}/"
    return sorted(k.removeprefix(prefix) for k in sync(_list(store, prefix)) if not k.endswith("zarr.json"))


async def _list(store: Any, prefix: str) -> list[str]:
    return [k async for k in store.list_prefix(prefix)]


def _lose(store: Any, key: str, var: str = "x", phase: str = "train") -> None:
    sync(store.delete(f"d/{phase}/{var}/{key}"))


# --- a lost chunk, on every backend kind that stores chunks ------------------------------------


@pytest.mark.parametrize("kind", ["zarr-dir", "zarr-memory", "hybrid-zarr"])
def test_a_lost_chunk_raises_and_verify_names_it(kind: str, tmp_path: Path) -> None:
    sg, store = _open(kind, tmp_path)
    sg.add_data("x", X, "train")
    _lose(store, "c/2/0")  # rows 20-29
    with pytest.raises(StorageError, match=r"var_name 'x' of phase 'train'.*c/2/0.*sg\.verify\(\).*source"):
        sg.get_data("x", "train")
    for _ in range(3):  # a row of it, also once the decoded-chunk cache would keep it
        with pytest.raises(StorageError, match="c/2/0"):
            sg.get_data("x", "train", index=25)
    np.testing.assert_array_equal(sg.get_data("x", "train", index=slice(0, 20)), X[:20])  # other chunks read
    report = sg.verify()
    assert [f.path for f in report.findings] == ["d/train/x/c/2/0"]
    assert "rows 20-29" in report.findings[0].what
    assert not report.findings[0].repairable
    assert sg.repair() == []
    assert [f.path for f in sg.verify().findings] == ["d/train/x/c/2/0"]
    sg.update_data("x", X, "train")  # the fix the messages name: rewrite it from its source
    assert sg.verify().ok
    np.testing.assert_array_equal(sg.get_data("x", "train"), X)


def test_a_lost_chunk_on_s3(s3_server: S3Server, s3_bucket: str) -> None:
    args = {"output_dir": f"s3://{s3_bucket}/lost", "storage_options": s3_server.storage_options, "chunk": CHUNK}
    sg = StoreGate("zarr", args, data_id="d")
    sg.add_data("x", np.zeros_like(X), "train")  # all fill value: every chunk is stored all the same
    keys = s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix="lost/d/train/x/c/")["Contents"]
    assert len(keys) == 5
    s3_server.client().delete_object(Bucket=s3_bucket, Key="lost/d/train/x/c/4/0")
    reader = StoreGate("zarr", {**args, "mode": "r"}, data_id="d")
    with pytest.raises(StorageError, match="c/4/0"):
        reader.get_data("x", "train")
    assert [f.path for f in reader.verify().findings] == ["d/train/x/c/4/0"]


def test_the_loader_batch_path_raises(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from storegate.torch import StoreGateDataLoader, StoreGateDataset

    sg, store = _open("zarr-dir", tmp_path)
    sg.add_data("x", X, "train")
    _lose(store, "c/1/0")
    with pytest.raises(StorageError, match="c/1/0"):
        list(StoreGateDataLoader(StoreGateDataset(sg, "train", "x"), batch_size=8, shuffle=True))


# --- every chunk is kept: writes of fill value -------------------------------------------------


@pytest.mark.parametrize("kind", ["zarr-dir", "zarr-memory", "hybrid-zarr"])
def test_zero_chunks_are_stored_by_every_write(kind: str, tmp_path: Path) -> None:
    sg, store = _open(kind, tmp_path)
    zeros = np.zeros_like(X)
    sg.add_data("x", zeros, "train")
    sg.add_data("x", zeros[:15], "train")  # an append: a partial chunk, then a new one
    assert _keys(store) == [f"c/{i}/0" for i in range(7)]
    sg.update_data("x", zeros[:10], "train", index=slice(30, 40))  # zeros over a chunk: kept, not deleted
    sg.update_data("x", np.ones((1, 3), "f4"), "train", index=[3])
    sg.update_data("x", zeros[:1], "train", index=[3])
    assert _keys(store) == [f"c/{i}/0" for i in range(7)]
    sg.create_empty("e", (25, 2), dtype="i2", phase="valid")
    assert _keys(store, "e", "valid") == ["c/0/0", "c/1/0", "c/2/0"]
    with sg.writer("test") as writer:  # the streaming writer's appends
        for _ in range(3):
            writer.add({"w": np.zeros((7, 2), "f4")})
    assert _keys(store, "w", "test") == ["c/0/0", "c/1/0", "c/2/0"]
    np.testing.assert_array_equal(sg.get_data("x", "train"), np.zeros((65, 3), "f4"))
    assert sg.verify().ok


def test_a_sharded_variable_keeps_every_shard_and_refuses_a_lost_one(tmp_path: Path) -> None:
    sg, store = _open("zarr-dir", tmp_path, shard_bytes=2 * CHUNK * 3 * 4)  # 2 chunks a shard
    sg.add_data("x", np.zeros_like(X), "train")
    assert _keys(store) == ["c/0/0", "c/1/0", "c/2/0"]
    _lose(store, "c/1/0")  # rows 20-39
    with pytest.raises(StorageError, match="c/1/0"):
        sg.get_data("x", "train", index=33)
    assert [(f.path, "rows 20-39" in f.what) for f in sg.verify().findings] == [("d/train/x/c/1/0", True)]


@pytest.mark.skipif(not zarrs_available(), reason="the zarrs extra is not installed")
def test_the_zarrs_pipeline_keeps_and_checks_every_chunk(tmp_path: Path) -> None:
    sg, store = _open("zarr-dir", tmp_path, codec_pipeline="zarrs")
    sg.add_data("x", np.zeros_like(X), "train")  # zarrs alone would not store these
    assert _keys(store) == [f"c/{i}/0" for i in range(5)]
    _lose(store, "c/0/0")
    with pytest.raises(StorageError, match="c/0/0"):
        sg.get_data("x", "train")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parts=st.lists(st.tuples(st.integers(1, 25), st.booleans()), min_size=1, max_size=4),
    lost=st.integers(0, 10_000),
)
def test_every_chunk_of_the_committed_rows_is_stored_and_a_lost_one_is_named(
    parts: list[tuple[int, bool]], lost: int
) -> None:
    """Rule: whatever is appended (zeros or not), every chunk holding a committed row is stored
    and the data round-trip; deleting any one of them makes every read of its rows raise, and
    verify() names exactly that chunk."""
    sg, store = _open("zarr-memory", Path())
    blocks = [np.zeros((n, 2), "i4") if zero else np.full((n, 2), n, "i4") for n, zero in parts]
    for block in blocks:
        sg.add_data("x", block, "train")
    data = np.concatenate(blocks)
    n_chunks = -(-len(data) // CHUNK)
    assert _keys(store) == sorted(f"c/{i}/0" for i in range(n_chunks))
    np.testing.assert_array_equal(sg.get_data("x", "train"), data)
    chunk = lost % n_chunks
    _lose(store, f"c/{chunk}/0")
    reader = StoreGate("zarr", {"output_dir": store}, data_id="d")  # sg may serve the rows it decoded before
    with pytest.raises(StorageError, match=f"c/{chunk}/0"):
        reader.get_data("x", "train", index=chunk * CHUNK + lost % min(CHUNK, len(data) - chunk * CHUNK))
    assert [f.path for f in reader.verify(read_data=False).findings] == [f"d/train/x/c/{chunk}/0"]


# --- other damage to a chunk --------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["default", "none", "gzip"])
@pytest.mark.parametrize("damage", ["emptied", "cut short"])
def test_an_emptied_or_cut_chunk_raises_a_storegate_error(codec: str, damage: str, tmp_path: Path) -> None:
    sg, _ = _open("zarr-dir", tmp_path, compressor=codec)
    sg.add_data("x", X, "train")
    path = tmp_path / "zarr.zarr" / "d" / "train" / "x" / "c" / "2" / "0"
    path.write_bytes(path.read_bytes()[: 0 if damage == "emptied" else 7])
    with pytest.raises(StoreGateError, match=r"var_name 'x'.*must be readable.*verify"):
        sg.get_data("x", "train")
    assert [f.path for f in sg.verify().findings] == ["d/train/x"]


@pytest.mark.parametrize("codec", [ZstdCodec(level=3, checksum=True), "gzip"], ids=["zstd-checksum", "gzip"])
def test_a_changed_byte_raises_with_a_checksummed_codec(codec: Any, tmp_path: Path) -> None:
    # zstd without its checksum (storegate's default), 'lz4' and 'none' decode a changed byte silently.
    sg, _ = _open("zarr-dir", tmp_path, compressor=codec)
    sg.add_data("x", np.random.default_rng(0).standard_normal((50, 80)).astype("f4"), "train")
    path = tmp_path / "zarr.zarr" / "d" / "train" / "x" / "c" / "2" / "0"
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0x10  # a bit flipped inside the compressed values
    path.write_bytes(bytes(damaged))
    with pytest.raises(StoreGateError, match=r"must be readable.*(checksum|CRC)"):
        sg.get_data("x", "train")


# --- variables written before, or by other tools ------------------------------------------------


def test_a_variable_without_the_mark_reads_a_missing_chunk_as_before_until_written_anew(tmp_path: Path) -> None:
    sg, _store = _open("zarr-dir", tmp_path)
    sg.add_data("x", X, "train")
    meta = tmp_path / "zarr.zarr" / "d" / "train" / "x" / "zarr.json"
    document = json.loads(meta.read_text())
    del document["attributes"][EVERY_CHUNK_ATTR]  # as storegate wrote it before it kept every chunk
    meta.write_text(json.dumps(document))
    old, old_store = _open("zarr-dir", tmp_path)
    _lose(old_store, "c/2/0")
    expected = X.copy()
    expected[20:30] = 0  # zarr's fill value: nothing can tell a lost chunk from an empty one here
    np.testing.assert_array_equal(old.get_data("x", "train"), expected)
    assert old.verify().ok
    old.delete_data("x", "train")
    old.add_data("x", np.zeros_like(X), "train")  # written anew: it keeps every chunk from now on
    assert EVERY_CHUNK_ATTR in json.loads(meta.read_text())["attributes"]
    assert _keys(old_store) == [f"c/{i}/0" for i in range(5)]


def test_a_zarr_v2_store_marks_its_new_variables(tmp_path: Path) -> None:
    root = tmp_path / "v2.zarr"
    write_zarr2_files(root)
    sg = StoreGate("zarr", {"output_dir": str(root), "chunk": CHUNK}, data_id="d")
    sg.add_data("new", np.zeros((300, 2), "f4"), "valid")  # as long as the phase's other variables
    assert json.loads((root / "d" / "valid" / "new" / ".zattrs").read_text())[EVERY_CHUNK_ATTR] == "every"
    os.remove(root / "d" / "valid" / "new" / "1.0")
    with pytest.raises(StorageError, match=r"new/1\.0"):
        sg.get_data("new", "valid")
    assert [f.path for f in sg.verify(read_data=False).findings] == ["d/valid/new/1.0"]


def test_an_array_opened_with_zarr_alone_still_reads(tmp_path: Path) -> None:
    sg, _ = _open("zarr-dir", tmp_path)
    sg.add_data("x", X, "train")
    array = zarr.open_array(str(tmp_path / "zarr.zarr"), path="d/train/x", mode="r")
    np.testing.assert_array_equal(array[:], X)  # the mark is an attribute other tools ignore


def test_make_gate_kinds_keep_every_chunk(tmp_path: Path) -> None:
    sg = make_gate("zarr-dir", tmp_path)
    sg.add_data("x", np.zeros((4, 2)), "train")
    assert sg.verify().ok


def test_a_loader_batch_reads_again_when_a_rewrite_took_its_chunk_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk gone because another writer committed meanwhile (a rewrite undone, a variable
    replaced) is read again, as any batch that spans two commits is; not a lost chunk."""
    pytest.importorskip("torch")
    from storegate.backends.zarr_backend import ZarrBackend
    from storegate.torch import StoreGateDataLoader, StoreGateDataset

    sg, _ = _open("zarr-dir", tmp_path)
    sg.add_data("x", X, "train")
    dataset = StoreGateDataset(sg, "train", "x")
    other, _ = _open("zarr-dir", tmp_path)
    read = ZarrBackend.read_inner
    failures = []

    def read_once_mid_rewrite(self: ZarrBackend, *args: Any) -> np.ndarray:
        if not failures:  # another writer commits, and its rewrite had taken the chunk away meanwhile
            failures.append(1)
            other.add_data("y", np.zeros(50), "train")
            raise StorageError("chunk 'c/0/0' gone")
        return read(self, *args)

    monkeypatch.setattr(ZarrBackend, "read_inner", read_once_mid_rewrite)
    batches = list(StoreGateDataLoader(dataset, batch_size=25))
    np.testing.assert_array_equal(np.concatenate([b.numpy() for b in batches]), X)
    assert failures == [1]
