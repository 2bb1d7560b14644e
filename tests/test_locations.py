"""Locations of the zarr backend that need no S3 server: local and NAS paths, file:// and
memory:// URLs, Store objects, argument checks, reopen_args and the concurrency scope.
"""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.errors import ZarrUserWarning

from storegate import InvalidArgumentError, NotFoundError, ReadOnlyError, StoreGate, locations
from storegate.backends.zarr_backend import ZarrBackend
from storegate.locations import DEFAULT_S3_CONFIG, concurrency_scope, resolve_location, unsent_to

pytestmark = pytest.mark.timeout(60)


def write_x(args: dict[str, object], data_id: str = "d") -> StoreGate:
    sg = StoreGate("zarr", args, data_id=data_id)
    sg.add_data("x", np.arange(12).reshape(6, 2), phase="train")
    return sg


# --- local and NAS paths ------------------------------------------------------------------


def test_a_nas_folder_round_trip_and_a_second_reader(tmp_path: Path) -> None:
    nas = tmp_path / "nas" / "shared" / "mnist.zarr"  # any mounted folder is a local path
    write_x({"output_dir": str(nas)})
    assert (nas / "d" / "train" / "x" / "zarr.json").is_file()
    reader = StoreGate("zarr", {"output_dir": str(nas), "mode": "r"}, data_id="d")
    np.testing.assert_array_equal(reader.get_data("x", "train"), np.arange(12).reshape(6, 2))


def test_a_file_url_is_the_same_store_as_its_path(tmp_path: Path) -> None:
    write_x({"output_dir": f"file://{tmp_path / 'store'}"})
    reader = StoreGate("zarr", {"output_dir": str(tmp_path / "store"), "mode": "r"}, data_id="d")
    np.testing.assert_array_equal(reader.get_data("x", "train"), np.arange(12).reshape(6, 2))


def test_home_and_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert resolve_location("~/shared/a.zarr").path == str(tmp_path / "home" / "shared" / "a.zarr")
    backend = ZarrBackend(output_dir="rel.zarr")
    assert backend.reopen_args()["output_dir"] == str(tmp_path / "rel.zarr")
    assert backend.output_dir == "rel.zarr"


def test_mode_w_empties_the_folder_but_keeps_it(tmp_path: Path) -> None:
    root = tmp_path / "mount"
    write_x({"output_dir": str(root)}, data_id="old")
    (root / "notes.txt").write_text("stray")
    inode = os.stat(root).st_ino  # a NAS mount point cannot be removed, only emptied
    sg = StoreGate("zarr", {"output_dir": str(root), "mode": "w"}, data_id="new")
    assert sg.get_data_ids() == ["new"]
    assert os.stat(root).st_ino == inode
    assert sorted(p.name for p in root.iterdir()) == [".storegate", "new", "zarr.json"]
    assert [p.name for p in (root / ".storegate").iterdir()] == ["locks"]  # lock files others may wait on stay


def test_mode_w_refuses_a_folder_that_is_not_a_zarr_store(tmp_path: Path) -> None:
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "chapter1.tex").write_text("years of work")
    for name in ("a.txt", "b.txt", "c.txt", "d.txt", "e.txt"):
        (tmp_path / name).write_text(name)
    with pytest.raises(
        InvalidArgumentError,
        match=r"output_dir must be empty, new or a zarr store when mode is 'w'.* other files: "
        r"'a.txt', 'b.txt', 'c.txt', 'd.txt', 'e.txt' and 1 more. Choose a new or empty output_dir",
    ):
        StoreGate("zarr", {"output_dir": str(tmp_path), "mode": "w"}, data_id="d")
    assert (tmp_path / "thesis" / "chapter1.tex").read_text() == "years of work"
    assert len(list(tmp_path.iterdir())) == 6


@pytest.mark.parametrize("fmt", [2, 3])
def test_mode_w_replaces_a_zarr_store_an_empty_folder_or_nothing(tmp_path: Path, fmt: int) -> None:
    store = tmp_path / "store"
    zarr.open_group(str(store), mode="w", zarr_format=fmt).create_array("a", shape=(3,), dtype="i8")
    (tmp_path / "empty").mkdir()
    for where in (store, tmp_path / "empty", tmp_path / "new"):
        write_x({"output_dir": str(where), "mode": "w"})
        assert sorted(p.name for p in where.iterdir() if not p.name.startswith(".")) == ["d", "zarr.json"]


@pytest.mark.parametrize("mode", ["w", "a", "r"])
def test_an_output_dir_that_is_a_file_is_refused(tmp_path: Path, mode: str) -> None:
    data = tmp_path / "data.csv"
    data.write_text("1,2,3")
    with pytest.raises(InvalidArgumentError, match=r"output_dir must be a directory .* which is a file"):
        ZarrBackend(output_dir=str(data), mode=mode)
    with pytest.raises(InvalidArgumentError, match=r"which is inside the file .*data.csv"):
        ZarrBackend(output_dir=str(data / "store.zarr"), mode=mode)
    assert data.read_text() == "1,2,3"


def test_a_root_array_is_refused(tmp_path: Path) -> None:
    zarr.open_array(str(tmp_path), mode="w", shape=(3,), dtype="i8")
    for mode in ("r", "a"):
        with pytest.raises(InvalidArgumentError, match=r"must hold a zarr group .* which holds a zarr array"):
            ZarrBackend(output_dir=str(tmp_path), mode=mode)


# zarr warns that consolidated metadata is not in the v3 spec: another tool's choice, made here on purpose.
@pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:zarr.errors.ZarrUserWarning")
def test_a_consolidated_v3_store_reads_what_is_there_and_refuses_mode_a(tmp_path: Path) -> None:
    write_x({"output_dir": str(tmp_path)})
    # storegate's locks and commit records (.storegate/) are no zarr node: plain zarr says so, harmlessly.
    with pytest.warns(ZarrUserWarning, match=r"Object at \.storegate is not recognized"):
        zarr.consolidate_metadata(str(tmp_path))
    zarr.open_group(str(tmp_path), mode="a", use_consolidated=False).create_group("late")  # not consolidated
    assert ZarrBackend(output_dir=str(tmp_path), mode="r").data_ids() == ["d", "late"]
    with pytest.raises(
        InvalidArgumentError, match=r"consolidated metadata.*'consolidated_metadata' from its zarr.json"
    ):
        ZarrBackend(output_dir=str(tmp_path), mode="a")


def test_mode_r_refuses_writes_and_needs_a_store(tmp_path: Path) -> None:
    write_x({"output_dir": str(tmp_path / "s")})
    reader = StoreGate("zarr", {"output_dir": str(tmp_path / "s"), "mode": "r"}, data_id="d")
    with pytest.raises(ReadOnlyError, match="mode 'r'"):
        reader.add_data("x", np.zeros((1, 2), dtype=np.int64), phase="train")
    with pytest.raises(NotFoundError, match="output_dir must hold a zarr store"):
        ZarrBackend(output_dir=str(tmp_path / "missing"), mode="r")
    assert not (tmp_path / "missing").exists()


def test_memory_url_goes_through_fsspec() -> None:
    backend = ZarrBackend(output_dir="memory://storegate-test-locations", mode="w")
    backend.create_data_id("d")
    backend.create("d", "train", "x", np.arange(4))
    assert isinstance(backend._root.store, zarr.storage.FsspecStore)
    # fsspec's memory filesystem lives in this process: another process could not open it.
    assert backend.reopen_args() is None
    reader = ZarrBackend(output_dir="memory://storegate-test-locations", mode="r")
    np.testing.assert_array_equal(reader.read("d", "train", "x", slice(None)), np.arange(4))


# --- argument checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"storage_options": {"anon": True}}, "storage_options only apply"),
        ({"endpoint": "127.0.0.1:9000"}, "endpoint only apply"),
        ({"cache_dir": "/tmp/c"}, "cache_dir only apply"),
    ],
)
def test_url_options_on_a_local_path_are_refused(tmp_path: Path, args: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        ZarrBackend(output_dir=str(tmp_path / "s"), **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"storage_options": "anon"}, "storage_options must be a dict"),
        ({"endpoint": "h:1", "storage_options": {"client_kwargs": {"endpoint_url": "http://other:2"}}}, "endpoint and"),
        ({"access_key": "a", "storage_options": {"key": "b"}}, "access_key and storage_options"),
        ({"endpoint": "https://h:1", "secure": False}, "secure=False contradicts"),
        ({"secure": True}, "endpoint must be"),
        ({"access_key": 12}, "access_key must be a str"),
        ({"cache_dir": "s3://b/cache"}, "cache_dir must be a local directory"),
    ],
)
def test_bad_s3_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        resolve_location("s3://bucket/prefix", **kwargs)  # type: ignore[arg-type]


def test_matorage_names_on_a_non_s3_url_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="access_key need an output_dir such as 's3://"):
        resolve_location("gs://bucket/prefix", access_key="a")


def test_matorage_mapping() -> None:
    loc = resolve_location("s3://b/p", endpoint="minio:9000", access_key="AK", secret_key="SK-42", secure=True)
    assert loc.storage_options == {
        "key": "AK",
        "secret": "SK-42",
        "client_kwargs": {"endpoint_url": "https://minio:9000"},
    }
    assert resolve_location("s3://b/p", endpoint="minio:9000").storage_options["client_kwargs"] == {
        "endpoint_url": "http://minio:9000"
    }
    assert loc.bucket == "b"
    assert loc.describe() == "s3://b/p (bucket 'b', endpoint https://minio:9000)"
    assert "SK-42" not in repr(loc)  # credentials never appear in messages or reprs


def test_s3_defaults_yield_to_the_users_config() -> None:
    loc = resolve_location("s3://b/p", {"config_kwargs": {"read_timeout": 300}})
    config = loc.fsspec_options()["config_kwargs"]
    assert config["read_timeout"] == 300
    assert config["connect_timeout"] == DEFAULT_S3_CONFIG["connect_timeout"]
    assert loc.storage_options == {"config_kwargs": {"read_timeout": 300}}  # kept as given


def test_remote_urls_list_afresh_unless_the_user_says_otherwise() -> None:
    assert resolve_location("s3://b/p").fsspec_options()["use_listings_cache"] is False
    assert resolve_location("gs://b/p").fsspec_options()["use_listings_cache"] is False
    mine = resolve_location("s3://b/p", {"use_listings_cache": True, "listings_expiry_time": 60})
    assert mine.fsspec_options()["use_listings_cache"] is True
    assert "use_listings_cache" not in resolve_location("memory://p").fsspec_options()


def test_cache_dir_needs_mode_r() -> None:
    with pytest.raises(InvalidArgumentError, match="cache_dir needs mode 'r'"):
        ZarrBackend(output_dir="s3://b/p", cache_dir="/tmp/cache", mode="a")


def test_bad_output_dir_and_concurrency(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="output_dir must be a path, a URL"):
        ZarrBackend(output_dir=12)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="concurrency must be a positive int"):
        ZarrBackend(output_dir=str(tmp_path / "s"), concurrency=0)


# --- reopen_args ---------------------------------------------------------------------------


def test_reopen_args_of_a_temporary_directory(tmp_path: Path) -> None:
    backend = ZarrBackend()
    backend.create_data_id("d")
    backend.create("d", "train", "x", np.arange(3))
    args = pickle.loads(pickle.dumps(backend.reopen_args()))
    assert args == {"output_dir": backend.output_dir, "mode": "r"}
    assert os.path.isdir(args["output_dir"])
    np.testing.assert_array_equal(ZarrBackend(**args).read("d", "train", "x", slice(None)), np.arange(3))
    with pytest.raises(InvalidArgumentError, match="mode must be 'r' or 'a'"):
        backend.reopen_args(mode="w")


def test_reopen_args_of_a_store_object_is_none() -> None:
    # A zarr Store object lives in this process's memory: the Backend contract says None.
    backend = ZarrBackend(output_dir=zarr.storage.MemoryStore())
    assert backend.reopen_args() is None
    assert backend.reopen_args(mode="a") is None


def test_reopen_args_carry_the_layout_and_pipeline_for_writers(tmp_path: Path) -> None:
    backend = ZarrBackend(
        output_dir=str(tmp_path / "s.zarr"), chunk=7, compressor="gzip", shard_bytes=1 << 20, codec_pipeline="zarrs"
    )
    reader = backend.reopen_args()
    assert reader is not None
    assert reader["codec_pipeline"] == "zarrs"
    assert "chunk" not in reader  # a reader needs no layout options
    writer = backend.reopen_args(mode="a")
    assert writer is not None
    assert {k: writer[k] for k in ("chunk", "compressor", "shard_bytes", "mode")} == {
        "chunk": 7,
        "compressor": "gzip",
        "shard_bytes": 1 << 20,
        "mode": "a",
    }
    again = ZarrBackend(**writer)
    again.create_data_id("d")
    again.create("d", "train", "x", np.arange(20, dtype="f4"))
    assert again.info("d", "train", "x").chunk_rows == 7
    assert again.info("d", "train", "x").codec == "Gzip"


# --- the concurrency scope ----------------------------------------------------------------


def test_concurrency_scope_sets_and_restores() -> None:
    before = zarr.config.get("async.concurrency")
    with concurrency_scope(before + 7):
        assert zarr.config.get("async.concurrency") == before + 7
        with concurrency_scope(2):  # overlapping scopes keep the largest value
            assert zarr.config.get("async.concurrency") == before + 7
        assert zarr.config.get("async.concurrency") == before + 7
    assert zarr.config.get("async.concurrency") == before
    with concurrency_scope(None):
        assert zarr.config.get("async.concurrency") == before


def test_concurrency_scope_restores_after_overlapping_threads() -> None:
    before = zarr.config.get("async.concurrency")
    inside = threading.Barrier(2)
    leave = threading.Event()
    seen: list[int] = []

    def worker(value: int) -> None:
        with concurrency_scope(value):
            inside.wait(timeout=10)
            seen.append(zarr.config.get("async.concurrency"))
            leave.wait(timeout=10)

    threads = [threading.Thread(target=worker, args=(v,)) for v in (before + 3, before + 9)]
    for thread in threads:
        thread.start()
    leave.set()
    for thread in threads:
        thread.join(timeout=10)
    assert seen == [before + 9, before + 9]
    assert zarr.config.get("async.concurrency") == before


@pytest.mark.filterwarnings(r"ignore:.*use of fork\(\) may lead to deadlocks:DeprecationWarning")
def test_a_forked_child_keeps_none_of_its_parent_threads_scopes() -> None:
    """A DataLoader worker forked while a thread of its parent kept requests from an endpoint
    (after a request got no reply) or raised zarr's concurrency would otherwise send no request
    to that endpoint, and keep that concurrency, for its whole life."""
    before = zarr.config.get("async.concurrency")
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with unsent_to("http://127.0.0.1:1"), concurrency_scope(before + 5):
            inside.set()
            leave.wait(timeout=30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert inside.wait(timeout=10)
        assert zarr.config.get("async.concurrency") == before + 5
        pid = os.fork()
        if pid == 0:
            clean = not locations._unsent and zarr.config.get("async.concurrency") == before
            with unsent_to("http://127.0.0.1:1"), concurrency_scope(3):  # its own locks: no hang
                clean = clean and zarr.config.get("async.concurrency") == 3
            os._exit(0 if clean and zarr.config.get("async.concurrency") == before else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        leave.set()
        thread.join(timeout=10)
    assert zarr.config.get("async.concurrency") == before


def test_a_pathlib_path(tmp_path: Path) -> None:
    write_x({"output_dir": tmp_path / "p.zarr"})
    backend = ZarrBackend(output_dir=tmp_path / "p.zarr", mode="r")
    assert backend.reopen_args()["output_dir"] == str(tmp_path / "p.zarr")
    np.testing.assert_array_equal(backend.read("d", "train", "x", slice(0, 1)), [[0, 1]])


def test_a_local_store_object_is_its_folder(tmp_path: Path) -> None:
    # A LocalStore used to count as an in-memory Store object: DataLoader workers got a copy
    # of the data instead of the path. Its folder reopens anywhere.
    backend = ZarrBackend(output_dir=zarr.storage.LocalStore(str(tmp_path / "ls.zarr")))
    backend.create_data_id("d")
    backend.create("d", "train", "x", np.arange(3))
    args = backend.reopen_args()
    assert args is not None
    assert args["output_dir"] == str(tmp_path / "ls.zarr")
    np.testing.assert_array_equal(ZarrBackend(**args).read("d", "train", "x", slice(0, 3, 1)), np.arange(3))
