"""The zarr backend on S3: conformance suite and S3 behaviour, against the real moto server.

Every test talks HTTP to the moto server that ``tests/conftest.py`` starts on 127.0.0.1.

The conformance suite runs here without ``GetDataIndexTests`` (135 of its 289 tests): those
check the facade's index normalisation once per index form, which is the same code for every
zarr store (the store only sees chunk gets and sets). On the loaded 2-core development
machine the whole suite took 18 minutes on S3 (each call makes many small metadata requests),
this module with the subset 9.5. :func:`test_index_forms_read_like_numpy` reads every index
form from one S3 store instead. ``STOREGATE_S3_FULL=1`` adds the whole suite
(``TestZarrS3FullSuite``; 289 passed).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import FsspecStore

from storegate import InvalidArgumentError, ReadOnlyError, StorageError, StoreGate, convert_to_v3
from storegate.backends.zarr_backend import ZarrBackend
from storegate.locations import DEFAULT_REMOTE_CONCURRENCY
from storegate.testing import (
    INDEX_FORMS,
    MIXINS,
    BackendConformance,
    GetDataIndexTests,
    numpy_index,
)
from tests.conftest import S3Server
from tests.v2_stores import DATA_ID, ROWS, files, metadata_names, write_zarr2_files

pytestmark = [pytest.mark.s3, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[1]


def s3_args(server: S3Server, bucket: str, prefix: str = "store", **extra: Any) -> dict[str, Any]:
    return {"output_dir": f"s3://{bucket}/{prefix}", "storage_options": server.storage_options, **extra}


def s3_client(server: S3Server) -> Any:
    return server.client()


def object_keys(server: S3Server, bucket: str) -> set[str]:
    pages = s3_client(server).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


@pytest.fixture(scope="module")
def shared_bucket(s3_server: S3Server) -> str:
    """One bucket for the conformance tests, each of which takes its own prefix."""
    return s3_server.create_bucket()


class TestZarrS3(*(m for m in MIXINS if m is not GetDataIndexTests)):
    """The conformance suite without GetDataIndexTests (see the module docstring)."""

    @pytest.fixture
    def sg(self, s3_server: S3Server, shared_bucket: str) -> StoreGate:
        return StoreGate("zarr", s3_args(s3_server, shared_bucket, f"conf-{uuid.uuid4().hex}"), data_id="conf")


if os.environ.get("STOREGATE_S3_FULL") == "1":

    class TestZarrS3FullSuite(BackendConformance):
        """The whole conformance suite, each test on a fresh bucket."""

        @pytest.fixture
        def sg(self, s3_server: S3Server, s3_bucket: str) -> StoreGate:
            return StoreGate("zarr", s3_args(s3_server, s3_bucket), data_id="conf")


def test_index_forms_read_like_numpy(s3_server: S3Server, s3_bucket: str) -> None:
    sg = StoreGate("zarr", s3_args(s3_server, s3_bucket, chunk=3), data_id="d")
    data = np.arange(10 * 3, dtype=np.int64).reshape(10, 3)
    sg.add_data("x", data, phase="train")
    sg.add_data("x", data + 100, phase="test")
    both = np.concatenate([data, data + 100])
    for name, index in INDEX_FORMS:
        expected = data[numpy_index(index)]
        np.testing.assert_array_equal(sg.get_data("x", "train", index), expected, err_msg=name)
        np.testing.assert_array_equal(sg["train"]["x"][index], expected, err_msg=name)
    for index in (slice(8, 13), [0, 19, 10, 9], -1, np.arange(20) % 3 == 0):
        np.testing.assert_array_equal(sg.get_data("x", "all", index), both[index], err_msg=str(index))


# --- what lands in the bucket ------------------------------------------------------------


def test_objects_under_prefix_are_the_zarr_keys(s3_server: S3Server, s3_bucket: str) -> None:
    sg = StoreGate("zarr", s3_args(s3_server, s3_bucket, chunk=4), data_id="d")
    sg.add_data("x", np.arange(30, dtype=np.int64).reshape(10, 3), phase="train")
    keys = object_keys(s3_server, s3_bucket)
    groups = {"store/zarr.json", "store/d/zarr.json", "store/d/train/zarr.json"}
    # 10 rows in chunks of 4 rows: chunk grid (3, 1), zarr v3's default "c/" key encoding.
    array = {"store/d/train/x/zarr.json", "store/d/train/x/c/0/0", "store/d/train/x/c/1/0", "store/d/train/x/c/2/0"}
    # storegate's own: the commit record (the write lease is deleted once the call ends).
    own = {"store/.storegate/commits/d.json"}
    assert keys == groups | array | own
    meta = json.loads(s3_client(s3_server).get_object(Bucket=s3_bucket, Key="store/d/train/x/zarr.json")["Body"].read())
    assert meta["node_type"] == "array"
    assert meta["shape"] == [10, 3]


def test_get_data_ids_lists_the_data_ids_on_s3(s3_server: S3Server, s3_bucket: str) -> None:
    writer = StoreGate("zarr", s3_args(s3_server, s3_bucket))
    for data_id in ("beta", "alpha"):
        writer.set_data_id(data_id)
        writer.add_data("x", np.arange(3), phase="train")
    reader = StoreGate("zarr", s3_args(s3_server, s3_bucket, mode="r"))
    assert reader.get_data_ids() == ["alpha", "beta"]


def test_a_second_process_reads_what_the_first_wrote(s3_server: S3Server, s3_bucket: str) -> None:
    sg = StoreGate("zarr", s3_args(s3_server, s3_bucket), data_id="d")
    data = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    sg.add_data("x", data, phase=(0.6, 0.2, 0.2))
    sg.compile()
    args = sg.backend_object.reopen_args()
    script = (
        "import json, sys\n"
        "from storegate import StoreGate\n"
        "args = json.load(sys.stdin)\n"
        "sg = StoreGate('zarr', args, data_id='d')\n"
        "print(json.dumps({'ids': sg.get_data_ids(), 'valid': sg.get_data('x', 'valid').tolist(),\n"
        "                  'all': sg.get_data('x', 'all').tolist()}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(args),
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["ids"] == ["d"]
    np.testing.assert_array_equal(np.array(out["valid"], dtype=np.float32), data[30:40])
    np.testing.assert_array_equal(np.array(out["all"], dtype=np.float32), data)


# --- modes ---------------------------------------------------------------------------


def test_mode_w_replaces_everything_under_the_prefix_only(s3_server: S3Server, s3_bucket: str) -> None:
    old = StoreGate("zarr", s3_args(s3_server, s3_bucket), data_id="old")
    old.add_data("x", np.arange(10), phase="train")
    client = s3_client(s3_server)
    for key in ("store/stray.bin", "store-2/keep.bin", "other/keep.bin"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
    new = StoreGate("zarr", s3_args(s3_server, s3_bucket, mode="w"), data_id="new")
    assert new.get_data_ids() == ["new"]
    keys = object_keys(s3_server, s3_bucket)
    assert {"store-2/keep.bin", "other/keep.bin"} <= keys
    assert not {k for k in keys if k.startswith("store/")} - {"store/zarr.json", "store/new/zarr.json"}


def test_mode_w_on_a_bucket_root_keeps_the_bucket(s3_server: S3Server, s3_bucket: str) -> None:
    args = {"output_dir": f"s3://{s3_bucket}", "storage_options": s3_server.storage_options}
    StoreGate("zarr", args, data_id="old").add_data("x", np.arange(4), phase="train")
    sg = StoreGate("zarr", {**args, "mode": "w"}, data_id="new")
    sg.add_data("y", np.arange(3), phase="train")
    assert sg.get_data_ids() == ["new"]
    assert not any(key.startswith("old/") for key in object_keys(s3_server, s3_bucket))
    np.testing.assert_array_equal(sg.get_data("y", "train"), np.arange(3))


def test_mode_a_appends_to_an_existing_store(s3_server: S3Server, s3_bucket: str) -> None:
    StoreGate("zarr", s3_args(s3_server, s3_bucket), data_id="d").add_data("x", np.arange(4), phase="train")
    again = StoreGate("zarr", s3_args(s3_server, s3_bucket, mode="a"), data_id="d")
    again.add_data("x", np.arange(4, 7), phase="train")
    np.testing.assert_array_equal(again.get_data("x", "train"), np.arange(7))


def test_mode_r_refuses_every_write(s3_server: S3Server, s3_bucket: str) -> None:
    writer = StoreGate("zarr", s3_args(s3_server, s3_bucket), data_id="d")
    writer.add_data("x", np.arange(10), phase="train")
    before = object_keys(s3_server, s3_bucket)
    sg = StoreGate("zarr", s3_args(s3_server, s3_bucket, mode="r"), data_id="d")
    writes = [
        lambda: sg.add_data("x", np.arange(3), phase="train"),
        lambda: sg.add_data("z", np.arange(3), phase="train"),
        lambda: sg.update_data("x", np.arange(10), phase="train"),
        lambda: sg.delete_data("x", "train"),
        lambda: sg.create_empty("e", (3,), phase="train"),
    ]
    for write in writes:
        with pytest.raises(ReadOnlyError, match="mode 'r'"):
            write()
    assert object_keys(s3_server, s3_bucket) == before
    np.testing.assert_array_equal(sg.get_data("x", "train"), np.arange(10))


# --- zarr v2 stores (multiml's) --------------------------------------------------------------


def test_a_v2_store_on_s3_reads_grows_in_v2_and_converts(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    data = write_zarr2_files(tmp_path)
    client = s3_client(s3_server)
    for name, body in files(tmp_path).items():
        client.put_object(Bucket=s3_bucket, Key=f"multiml/{name}", Body=body)
    args = s3_args(s3_server, s3_bucket, "multiml")
    reader = StoreGate("zarr", {**args, "mode": "r"}, data_id=DATA_ID)
    np.testing.assert_array_equal(reader.get_data("x", "train"), data[("train", "x")])
    writer = StoreGate("zarr", args, data_id=DATA_ID)
    writer.add_data(["x", "y"], [np.ones((5, 3), dtype=np.float32), np.arange(5)], phase="test")
    writer.add_data("z", np.arange(ROWS["valid"]), phase="valid")
    assert metadata_names(object_keys(s3_server, s3_bucket)) == {".zgroup", ".zarray", ".zattrs"}
    convert_to_v3(args["output_dir"], args["storage_options"], progress=False)
    assert metadata_names(object_keys(s3_server, s3_bucket)) == {"zarr.json"}
    converted = StoreGate("zarr", {**args, "mode": "r"}, data_id=DATA_ID)
    assert converted.backend_object.zarr_format == 3
    np.testing.assert_array_equal(converted.get_data("y", "test")[-5:], np.arange(5))
    np.testing.assert_array_equal(converted.get_data("x", "train"), data[("train", "x")])
    np.testing.assert_array_equal(converted.get_data("z", "valid"), np.arange(ROWS["valid"]))


# --- a long-lived reader ---------------------------------------------------------------------


def test_a_long_lived_reader_sees_what_another_writer_adds(s3_server: S3Server, s3_bucket: str) -> None:
    # The writer has its own s3fs client, as another process would (fsspec shares one client per
    # set of options: these differ in a setting that changes nothing here). The reader's listings
    # must come from the bucket, not from a cache of what it listed before.
    options = {**s3_server.storage_options, "config_kwargs": {"connect_timeout": 6}}
    writer = StoreGate("zarr", {**s3_args(s3_server, s3_bucket), "storage_options": options}, data_id="d")
    writer.add_data("x", np.arange(5), phase="train")
    reader = StoreGate("zarr", s3_args(s3_server, s3_bucket, mode="r"), data_id="d")
    assert (reader.get_data_ids(), reader.get_var_names(), reader.get_metadata()["sizes"]["train"]) == (["d"], ["x"], 5)
    writer.add_data("x", np.arange(5, 8), phase="train")
    writer.add_data("y", np.arange(8), phase="train")
    writer.set_data_id("e")
    writer.add_data("z", np.arange(3), phase="test")
    assert reader.get_data_ids() == ["d", "e"]
    assert reader.get_var_names() == ["x", "y"]  # every read checks the commit record first
    assert reader.get_metadata()["sizes"]["train"] == 8
    np.testing.assert_array_equal(reader.get_data("x"), np.arange(8))
    reader.set_data_id("e")
    assert reader.get_var_names("test") == ["z"]


def test_mode_w_refuses_a_prefix_that_is_not_a_zarr_store(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_client(s3_server)
    for key in ("data/raw/run1.root", "data/notes.txt", "file.csv"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"keep")
    before = object_keys(s3_server, s3_bucket)
    cases = [
        ("data", "holds no zarr store but other files: 'notes.txt', 'raw'"),
        ("", "holds no zarr store but other files: 'data', 'file.csv'"),  # the bucket root
        ("file.csv", "must be a prefix .* which is a file"),
    ]
    for prefix, match in cases:
        args = {"output_dir": f"s3://{s3_bucket}/{prefix}".rstrip("/"), "storage_options": s3_server.storage_options}
        with pytest.raises(InvalidArgumentError, match=match):
            StoreGate("zarr", {**args, "mode": "w"}, data_id="d")
    assert object_keys(s3_server, s3_bucket) == before


# --- matorage's names ------------------------------------------------------------------


def test_matorage_names_reach_the_server(s3_server: S3Server, s3_bucket: str) -> None:
    host = s3_server.endpoint_url.removeprefix("http://")
    args = {
        "output_dir": f"s3://{s3_bucket}/m",
        "endpoint": host,
        "access_key": s3_server.key,
        "secret_key": s3_server.secret,
        "secure": False,
    }
    sg = StoreGate("zarr", args, data_id="d")
    sg.add_data("x", np.arange(5), phase="train")
    assert "store" not in object_keys(s3_server, s3_bucket)
    assert "m/d/train/x/zarr.json" in object_keys(s3_server, s3_bucket)
    reopen = sg.backend_object.reopen_args()
    assert reopen["storage_options"] == {
        "key": s3_server.key,
        "secret": s3_server.secret,
        "client_kwargs": {"endpoint_url": s3_server.endpoint_url},
    }
    assert s3_server.endpoint_url in sg.backend_object.location
    assert s3_server.secret not in repr(sg)


# --- reopening ---------------------------------------------------------------------------


def test_reopen_args_pickle_and_reopen_read_only(s3_server: S3Server, s3_bucket: str) -> None:
    backend = ZarrBackend(**s3_args(s3_server, s3_bucket))
    backend.create_data_id("d")
    backend.create("d", "train", "x", np.arange(6))
    args = pickle.loads(pickle.dumps(backend.reopen_args()))
    assert args["mode"] == "r"
    assert args["output_dir"] == f"s3://{s3_bucket}/store"
    assert args["concurrency"] == DEFAULT_REMOTE_CONCURRENCY
    reader = ZarrBackend(**args)
    assert not reader.writable
    np.testing.assert_array_equal(reader.read("d", "train", "x", slice(None)), np.arange(6))
    assert ZarrBackend(**backend.reopen_args(mode="a")).writable


# --- remote reads: concurrency and the local cache ------------------------------------------


@pytest.fixture
def in_flight(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the chunk requests FsspecStore has in flight at once (each held 20 ms)."""
    counts = {"now": 0, "max": 0}
    original = FsspecStore.get

    async def counting_get(self: FsspecStore, key: str, *args: Any, **kwargs: Any) -> Any:
        if "/c/" not in key:
            return await original(self, key, *args, **kwargs)
        counts["now"] += 1
        counts["max"] = max(counts["max"], counts["now"])
        try:
            await asyncio.sleep(0.02)
            return await original(self, key, *args, **kwargs)
        finally:
            counts["now"] -= 1

    monkeypatch.setattr(FsspecStore, "get", counting_get)
    return counts


@pytest.mark.parametrize("concurrency", [4, 24])
def test_a_full_read_fetches_chunks_in_parallel(
    s3_server: S3Server, s3_bucket: str, in_flight: dict[str, int], concurrency: int
) -> None:
    writer = ZarrBackend(**s3_args(s3_server, s3_bucket, chunk=1))
    writer.create_data_id("d")
    writer.create("d", "train", "x", np.arange(64 * 2).reshape(64, 2))
    before = zarr.config.get("async.concurrency")
    reader = ZarrBackend(**s3_args(s3_server, s3_bucket, mode="r", concurrency=concurrency))
    in_flight["max"] = 0
    np.testing.assert_array_equal(reader.read("d", "train", "x", slice(None)), np.arange(128).reshape(64, 2))
    assert concurrency // 2 < in_flight["max"] <= concurrency
    assert zarr.config.get("async.concurrency") == before  # restored after the read


def test_cache_dir_serves_a_second_epoch_without_the_bucket(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    data = np.arange(40 * 3, dtype=np.float64).reshape(40, 3)
    writer = StoreGate("zarr", s3_args(s3_server, s3_bucket, chunk=8), data_id="d")
    writer.add_data("x", data, phase="train")
    cached = s3_args(s3_server, s3_bucket, mode="r", cache_dir=str(tmp_path / "cache"))
    first = StoreGate("zarr", cached, data_id="d").get_data("x", "train")
    np.testing.assert_array_equal(first, data)
    copies = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != "records.json"]
    assert len(copies) >= 5  # 5 chunks and the metadata, in the store's folder of cache_dir
    # Take the chunks away from the bucket: only the local cache still has them.
    client = s3_client(s3_server)
    chunks = [k for k in object_keys(s3_server, s3_bucket) if "/c/" in k]
    assert len(chunks) == 5
    for key in chunks:
        client.delete_object(Bucket=s3_bucket, Key=key)
    second = StoreGate("zarr", cached, data_id="d").get_data("x", "train")
    np.testing.assert_array_equal(second, data)
    uncached = StoreGate("zarr", s3_args(s3_server, s3_bucket, mode="r"), data_id="d")
    with pytest.raises(StorageError, match=r"c/\d/0"):  # without the cache the chunks are lost, never zeros
        uncached.get_data("x", "train")


def _read_in_child(args: dict[str, Any], out: Any) -> None:
    out.put(ZarrBackend(**args).read("d", "train", "x", slice(None)).tolist())


def test_a_forked_process_reopens_the_store_after_the_parent_used_it(s3_server: S3Server, s3_bucket: str) -> None:
    backend = ZarrBackend(**s3_args(s3_server, s3_bucket))
    backend.create_data_id("d")
    backend.create("d", "train", "x", np.arange(8))
    np.testing.assert_array_equal(backend.read("d", "train", "x", slice(None)), np.arange(8))  # parent's loop busy
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_read_in_child, args=(backend.reopen_args(), out))
    child.start()
    try:
        assert out.get(timeout=60) == list(range(8))
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
