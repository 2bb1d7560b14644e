"""The zarr backend: the conformance suite on a local directory and an in-memory zarr store,
chunk sizing (rows or bytes per chunk) and sharding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from storegate import InvalidArgumentError, NotFoundError, StoreGate, StoreGateError
from storegate.backends.zarr_backend import (
    DEFAULT_CHUNK_BYTES,
    MAX_CHUNK_BYTES,
    MAX_CHUNK_ROWS,
    MAX_SHARD_BYTES,
    ZarrBackend,
)
from storegate.testing import BackendConformance


class TestZarrLocalDirectory(BackendConformance):
    @pytest.fixture
    def sg(self, tmp_path: Path) -> StoreGate:
        return StoreGate("zarr", {"output_dir": str(tmp_path / "store.zarr")}, data_id="conf")


class TestZarrMemoryStore(BackendConformance):
    @pytest.fixture
    def sg(self) -> StoreGate:
        return StoreGate("zarr", {"output_dir": zarr.storage.MemoryStore()}, data_id="conf")


# --- chunk sizing -----------------------------------------------------------------------------


def _gate(tmp_path: Path, **args: Any) -> StoreGate:
    return StoreGate("zarr", {"output_dir": str(tmp_path), **args}, data_id="d")


def _layout(tmp_path: Path, var: str = "x") -> tuple[list[int], list[int] | None]:
    """(chunk shape, shard shape or None) as written in zarr.json."""
    meta = json.loads((tmp_path / "d" / "train" / var / "zarr.json").read_text())
    outer = meta["chunk_grid"]["configuration"]["chunk_shape"]
    codec = meta["codecs"][0]
    if codec["name"] == "sharding_indexed":
        return codec["configuration"]["chunk_shape"], outer
    return outer, None


def _objects(tmp_path: Path, var: str = "x") -> list[str]:
    root = tmp_path / "d" / "train" / var / "c"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_chunk_sets_rows_per_chunk(tmp_path: Path) -> None:
    sg = _gate(tmp_path, chunk=7)
    sg.add_data("x", np.ones((50, 4, 5), "f4"))
    assert _layout(tmp_path) == ([7, 4, 5], None)
    assert len(_objects(tmp_path)) == 8  # ceil(50 / 7)


def test_chunk_bytes_sets_rows_from_the_row_size(tmp_path: Path) -> None:
    sg = _gate(tmp_path, chunk_bytes=1000)
    sg.add_data("x", np.zeros((50, 10), "f8"))  # 80 bytes a row
    sg.add_data("y", np.zeros(50, "i2"))
    assert _layout(tmp_path, "x")[0] == [1000 // 80, 10]
    assert _layout(tmp_path, "y")[0] == [500]


def test_default_chunk_bytes(tmp_path: Path) -> None:
    sg = _gate(tmp_path)
    sg.add_data("x", np.zeros((4, 32, 32), "f4"))
    assert _layout(tmp_path)[0] == [DEFAULT_CHUNK_BYTES // (32 * 32 * 4), 32, 32]


def test_row_larger_than_chunk_bytes_gives_one_row_chunks(tmp_path: Path) -> None:
    sg = _gate(tmp_path, chunk_bytes=100)
    sg.add_data("x", np.zeros((3, 64), "f4"))
    assert _layout(tmp_path)[0] == [1, 64]


def test_chunk_wins_over_chunk_bytes(tmp_path: Path) -> None:
    sg = _gate(tmp_path, chunk=3, chunk_bytes=10_000)
    sg.add_data("x", np.zeros((10, 2), "f4"))
    assert _layout(tmp_path)[0] == [3, 2]


@pytest.mark.parametrize("arg", ["chunk", "chunk_bytes", "shard_bytes"])
@pytest.mark.parametrize("value", [0, -5, 2.5, "big", True])
def test_sizes_must_be_positive_ints(tmp_path: Path, arg: str, value: object) -> None:
    with pytest.raises(InvalidArgumentError, match=f"{arg} must be a positive int. Got {value!r} instead"):
        _gate(tmp_path, **{arg: value})


# --- sharding --------------------------------------------------------------------------------


def test_shard_bytes_groups_whole_chunks_into_shards(tmp_path: Path) -> None:
    sg = _gate(tmp_path, chunk=10, shard_bytes=10 * 8 * 4 * 5)  # 5 chunks of 10 rows x 8 f4
    data = np.arange(130 * 8, dtype="f4").reshape(130, 8)
    sg.add_data("x", data)
    assert _layout(tmp_path) == ([10, 8], [50, 8])
    assert _objects(tmp_path) == ["0/0", "1/0", "2/0"]  # 3 shard objects, not 13 chunks
    np.testing.assert_array_equal(sg.get_data("x"), data)


def test_shard_bytes_from_chunk_bytes(tmp_path: Path) -> None:
    sg = _gate(tmp_path, chunk_bytes=400, shard_bytes=4000)
    sg.add_data("x", np.zeros((100, 10), "f4"))
    assert _layout(tmp_path) == ([10, 10], [100, 10])


def test_shard_smaller_than_a_chunk_holds_one_chunk(tmp_path: Path) -> None:
    sg = _gate(tmp_path, chunk=10, shard_bytes=1)
    sg.add_data("x", np.ones((25, 3), "f4"))
    assert _layout(tmp_path) == ([10, 3], [10, 3])
    np.testing.assert_array_equal(sg.get_data("x"), np.ones((25, 3)))


def test_random_row_reads_from_shards(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(size=(300, 4, 3)).astype("f4")
    sg = _gate(tmp_path, chunk=8, shard_bytes=8 * 12 * 4 * 6)
    sg.add_data("x", data)
    for _ in range(5):
        rows = rng.integers(0, 300, size=40)
        np.testing.assert_array_equal(sg.get_data("x", index=rows), data[rows])
    np.testing.assert_array_equal(sg["train"]["x"][-1], data[-1])
    np.testing.assert_array_equal(sg.get_data("x", index=slice(5, 290, 7)), data[5:290:7])


def test_appends_and_updates_keep_working_with_shards(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    sg = _gate(tmp_path, chunk=4, shard_bytes=4 * 2 * 8 * 3)
    expected = np.zeros((0, 2), "f8")
    for size in (1, 5, 11, 3, 12, 7, 0, 20):  # across chunk and shard edges
        block = rng.normal(size=(size, 2))
        sg.add_data("x", block)
        expected = np.concatenate([expected, block])
    np.testing.assert_array_equal(sg.get_data("x"), expected)
    # Several rows in one shard: zarr 3.1 gets this wrong by itself (zarr-python issue 2834).
    rows = [0, 2, 3, 13, 14, 40, 58, 2]
    values = rng.normal(size=(len(rows), 2))
    sg.update_data("x", values, index=rows)
    expected[rows] = values
    np.testing.assert_array_equal(sg.get_data("x"), expected)
    sg.update_data("x", np.full((2,), 9.0), index=-1)
    expected[-1] = 9
    np.testing.assert_array_equal(sg.get_data("x"), expected)
    reopened = StoreGate("zarr", {"output_dir": str(tmp_path), "mode": "r"}, "d")
    np.testing.assert_array_equal(reopened.get_data("x"), expected)


def test_sharded_one_dimensional_updates(tmp_path: Path) -> None:
    sg = _gate(tmp_path, chunk=4, shard_bytes=64)
    sg.add_data("y", np.arange(30))
    sg.update_data("y", [-1, -2, -3], index=[1, 2, 29])
    expected = np.arange(30)
    expected[[1, 2, 29]] = [-1, -2, -3]
    np.testing.assert_array_equal(sg.get_data("y"), expected)


def test_sharded_shrink_then_grow_fills_zeros(tmp_path: Path) -> None:
    sg = _gate(tmp_path, chunk=4, shard_bytes=4 * 3 * 4 * 4)
    sg.add_data("x", np.ones((40, 3), "f4"))
    sg.backend_object.resize("d", "train", "x", 10)
    sg.backend_object.resize("d", "train", "x", 30)
    expected = np.zeros((30, 3), "f4")
    expected[:10] = 1
    np.testing.assert_array_equal(sg.get_data("x"), expected)


def test_sharded_shuffle_and_delete(tmp_path: Path) -> None:
    sg = _gate(tmp_path, chunk=4, shard_bytes=200)
    data = np.arange(60, dtype="f4").reshape(30, 2)
    sg.add_data("x", data)
    sg.shuffle("train", seed=3)
    np.testing.assert_array_equal(sg.get_data("x"), data[np.random.RandomState(3).permutation(30)])
    sg.delete_data("x")
    assert sg.get_var_names() == []


def test_write_rows_is_the_shard_or_chunk(tmp_path: Path) -> None:
    sharded = _gate(tmp_path / "a", chunk=10, shard_bytes=10 * 4 * 4 * 3)
    plain = _gate(tmp_path / "b", chunk=10)
    memory = StoreGate("numpy", data_id="d")
    for sg in (sharded, plain, memory):
        sg.add_data("x", np.zeros((5, 4), "f4"))
    assert sharded.backend_object.write_rows("d", "train", "x") == 30
    assert plain.backend_object.write_rows("d", "train", "x") == 10
    assert memory.backend_object.write_rows("d", "train", "x") is None


# --- objects other tools left in the store -------------------------------------------------


def _with_other_objects(tmp_path: Path) -> StoreGate:
    """A store with variables x and y, and what other tools added around them."""
    sg = _gate(tmp_path)
    sg.add_data(["x", "y"], [np.arange(20.0).reshape(10, 2), np.arange(10)], phase=(0.6, 0.2, 0.2))
    root = zarr.open_group(str(tmp_path))
    mean = root["d/train"].create_array("mean", shape=(), dtype="f8")  # the example
    mean[()] = 4.5
    root["d/train"].create_group("sub")
    root["d/train"].create_array(".hidden", shape=(6,), dtype="i8")  # a name storegate refuses
    root["d"].create_array("stats", shape=(3,), dtype="f8")
    root["d"].create_group("extra")
    root.create_array("readme", shape=(2,), dtype="u1")
    root.create_group(".cache")
    return sg


OTHERS = [
    "extra: group",
    "stats: 1-d array",
    "train/.hidden: array named '.hidden' (a name storegate refuses)",
    "train/mean: 0-d array",
    "train/sub: group",
]


def test_every_call_skips_objects_other_tools_left(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sg = _with_other_objects(tmp_path)
    assert sg.get_var_names("train") == ["x", "y"]
    assert sg.get_metadata()["sizes"] == {"train": 6, "valid": 2, "test": 2, "all": 10}
    assert len(sg["train"]) == 6
    sg.compile()
    assert sg.get_metadata()["compiled"]
    np.testing.assert_array_equal(sg["all"]["y"][:], np.arange(10))
    assert sg.get_data_ids() == ["d"]  # neither the root array nor the group '.cache'
    found = sg.backend_object.other_objects("d")
    assert [f"{o.path}: {o.what}" for o in found] == OTHERS
    assert [o.path for o in sg.backend_object.other_objects()] == [".cache", "readme"]
    sg.show_info()
    text = capsys.readouterr().out
    assert "other objects (not storegate variables: skipped and left alone):\n" in text
    assert all(f"  {line}" in text for line in OTHERS)
    assert zarr.open_group(str(tmp_path))["d/train/mean"][()] == 4.5  # untouched
    assert StoreGate("numpy", data_id="d").backend_object.other_objects("d") == []  # the contract's default


def test_a_name_held_by_another_object_is_refused_and_the_object_kept(tmp_path: Path) -> None:
    sg = _with_other_objects(tmp_path)
    before = sg.get_data("x")
    with pytest.raises(InvalidArgumentError, match=r"var_name 'mean' in data_id 'd', phase 'train' .* 0-d array"):
        sg.add_data("mean", np.zeros(6))
    with pytest.raises(InvalidArgumentError, match="Got a group there"):
        sg.create_empty("sub", (6,))
    with pytest.raises(InvalidArgumentError, match="'mean'"):  # x is appended first, then put back
        sg.add_data(["x", "mean"], [np.zeros((2, 2)), np.zeros(2)])
    np.testing.assert_array_equal(sg.get_data("x"), before)
    sg.delete_data("mean")  # not a variable: nothing to delete
    raw = tmp_path / "d" / "train" / "raw"
    raw.mkdir()
    (raw / "notes.txt").write_text("keep me")
    with pytest.raises(
        InvalidArgumentError, match=r"must not name a folder of other files. Got raw/ holding \['notes.txt'\]"
    ):
        sg.add_data("raw", np.zeros(6))
    assert (raw / "notes.txt").read_text() == "keep me"
    assert zarr.open_group(str(tmp_path))["d/train/mean"][()] == 4.5
    assert sg.get_var_names("train") == ["x", "y"]


def test_a_variable_folder_a_killed_writer_left_mid_write_is_written_over(tmp_path: Path) -> None:
    # zarr's LocalStore writes zarr.json (and each chunk) to '<name>.<uuid hex>.partial' and
    # renames it: a writer killed between the two leaves only that (tests/test_kills.py met it).
    sg = StoreGate("zarr", {"output_dir": str(tmp_path)}, data_id="d")
    sg.add_data("x", np.arange(4), phase="train")
    left = tmp_path / "d" / "train" / "t"
    (left / "c").mkdir(parents=True)
    (left / "zarr.f10e044848eb40bba7da759e7e4991b0.partial").write_bytes(b'{"zarr_form')
    (left / "c" / "0.0123456789abcdef0123456789abcdef.partial").write_bytes(b"\0\1")
    sg.add_data("t", np.arange(6), phase="train")
    np.testing.assert_array_equal(sg.get_data("t", "train"), np.arange(6))
    assert not list(left.rglob("*.partial"))  # replaced with the rest
    (tmp_path / "d" / "train" / "u").mkdir()
    (tmp_path / "d" / "train" / "u" / "zarr.partial").write_text("not zarr's: a user's file")
    with pytest.raises(InvalidArgumentError, match=r"must not name a folder of other files"):
        sg.add_data("u", np.arange(6), phase="train")


def test_a_data_id_or_phase_that_is_an_array_is_refused(tmp_path: Path) -> None:
    sg = _with_other_objects(tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"data_id 'readme' must be a zarr group .* Got a zarr array"):
        sg.set_data_id("readme")
    zarr.open_group(str(tmp_path)).create_group("e").create_array("valid", shape=(4,), dtype="i8")
    sg.set_data_id("e")
    assert sg.get_var_names("valid") == []
    with pytest.raises(InvalidArgumentError, match=r"phase 'valid' of data_id 'e' must be a zarr group"):
        sg.add_data("v", np.arange(4), phase="valid")
    assert [o.what for o in sg.backend_object.other_objects("e")] == ["1-d array where phase 'valid' should be a group"]
    assert zarr.open_group(str(tmp_path))["e/valid"].shape == (4,)


def test_metadata_zarr_cannot_read_is_named_never_a_bare_error(tmp_path: Path) -> None:
    sg = _gate(tmp_path)
    sg.add_data("x", np.arange(4))
    broken = tmp_path / "d" / "train" / "bad"
    broken.mkdir()
    (broken / "zarr.json").write_text("{not json")
    assert sg.get_var_names() == ["x"]
    assert sg.get_metadata()["sizes"]["train"] == 4
    [other] = sg.backend_object.other_objects("d")
    assert other.path == "train/bad"
    assert other.what.startswith("metadata zarr cannot read (JSONDecodeError")
    for call in (lambda: sg.get_data("bad"), lambda: sg.add_data("bad", np.arange(4))):
        with pytest.raises(
            StoreGateError, match="the object 'd/train/bad' in the store must have metadata zarr can read"
        ):
            call()
    assert (broken / "zarr.json").read_text() == "{not json"


# --- limits of the layout options (issue 9) ----------------------------------------------------


def _files(path: Path) -> list[str]:
    """The store's data and metadata (not .storegate/: the locks and commit records)."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if not str(p.relative_to(path)).startswith("."))


@pytest.mark.parametrize(
    ("arg", "value", "parts"),
    [
        (
            "chunk",
            10**12,
            [
                "chunk must be None or an int in [1, 1073741824] rows",
                "a chunk of even 1-byte rows must stay within 1 GiB",
                "Got 1000000000000 instead",
                "Give fewer rows per chunk, or leave chunk unset",
            ],
        ),
        (
            "chunk_bytes",
            10**12,
            [
                "chunk_bytes must be None or an int in [1, 1073741824] bytes (up to 1 GiB)",
                "Blosc at most 2 GiB",
                "Got 1000000000000 (931.3 GiB) instead",
                "Give a smaller chunk_bytes, or leave it unset: the default, 1048576 (1 MiB; 4194304 (4 MiB) on an",
            ],
        ),
        (
            "shard_bytes",
            10**15,
            [
                "shard_bytes must be None or an int in [1, 4294967296] bytes (up to 4 GiB)",
                "whole, in memory",
                "Got 1000000000000000 (909.5 TiB) instead",
                "Give a smaller shard_bytes",
            ],
        ),
    ],
)
def test_absurd_layout_options_are_refused_at_open(tmp_path: Path, arg: str, value: int, parts: list[str]) -> None:
    store = tmp_path / "s.zarr"
    with pytest.raises(InvalidArgumentError) as err:
        StoreGate("zarr", {"output_dir": str(store), "mode": "a", arg: value}, "x")
    assert all(part in str(err.value) for part in parts), str(err.value)
    assert not store.exists()  # refused before anything is written


@pytest.mark.parametrize(
    ("arg", "limit"), [("chunk", MAX_CHUNK_ROWS), ("chunk_bytes", MAX_CHUNK_BYTES), ("shard_bytes", MAX_SHARD_BYTES)]
)
def test_layout_limits_are_inclusive(arg: str, limit: int) -> None:
    ZarrBackend(zarr.storage.MemoryStore(), **{arg: limit, **({"chunk": 1} if arg == "shard_bytes" else {})})
    ZarrBackend(zarr.storage.MemoryStore(), **{arg: np.int64(limit)})  # numpy ints too
    with pytest.raises(InvalidArgumentError, match=rf"Got {limit + 1}\b.* instead"):
        ZarrBackend(zarr.storage.MemoryStore(), **{arg: limit + 1})


@pytest.mark.parametrize("arg", ["chunk", "chunk_bytes", "shard_bytes"])
def test_layout_options_refuse_bools(arg: str) -> None:
    for value in (True, False, np.True_):
        with pytest.raises(InvalidArgumentError, match=f"{arg} must be a positive int. Got {value!r} instead"):
            ZarrBackend(zarr.storage.MemoryStore(), **{arg: value})


@settings(max_examples=60, deadline=None)
@given(arg=st.sampled_from(["chunk", "chunk_bytes", "shard_bytes"]), value=st.integers(-(2**40), 2**50))
def test_a_layout_option_opens_exactly_when_in_range(arg: str, value: int) -> None:
    limit = {"chunk": MAX_CHUNK_ROWS, "chunk_bytes": MAX_CHUNK_BYTES, "shard_bytes": MAX_SHARD_BYTES}[arg]
    args: dict[str, Any] = {arg: value, **({"chunk": 1} if arg == "shard_bytes" else {})}
    if 1 <= value <= limit:
        ZarrBackend(zarr.storage.MemoryStore(), **args)
    else:
        with pytest.raises(InvalidArgumentError, match=f"^{arg} must be "):
            ZarrBackend(zarr.storage.MemoryStore(), **args)


def test_a_chunk_too_big_for_a_wide_row_is_refused_before_the_variable_exists(tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    sg = StoreGate("zarr", {"output_dir": str(store), "mode": "a", "chunk": 10**6}, "x")
    before = _files(store)
    with pytest.raises(InvalidArgumentError) as err:
        sg.add_data("q", np.zeros((3, 1024), "f8"))  # 8 KiB rows: 10**6 of them make 7.6 GiB
    message = str(err.value)
    for part in (
        "chunk must keep one chunk within 1073741824 bytes (1 GiB)",
        "Got chunk=1000000 rows for var_name 'q' (rows of shape (1024,), float64: 8192 bytes a row)",
        "a chunk of 8192000000 bytes (7.6 GiB) instead",
        "Give chunk <= 131072 for this variable, or leave chunk unset",
    ):
        assert part in message, message
    with pytest.raises(InvalidArgumentError, match="chunk must keep one chunk within"), sg.writer() as w:
        w.add({"q": np.zeros((3, 1024), "f8")})  # the streaming writer creates the variable the same way
    assert sg.get_var_names("train") == []
    assert _files(store) == before  # no variable, no object
    sg.add_data("q", np.zeros(3, "f8"))  # narrow rows: 7.6 MiB chunks are fine
    assert sg.get_var_names("train") == ["q"]


def test_too_many_chunks_per_shard_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        _gate(tmp_path / "a", chunk_bytes=1024, shard_bytes=1 << 30)
    for part in (
        "shard_bytes must be at most 65536 chunks of chunk_bytes, here 67108864 bytes (64 MiB)",
        "Got shard_bytes=1073741824 (1 GiB) with chunk_bytes=1024 instead",
        "Give a smaller shard_bytes or a larger chunk_bytes",
    ):
        assert part in str(err.value), str(err.value)
    assert not (tmp_path / "a").exists()
    # With chunk (rows), the chunk's bytes are known only from the row: checked at create.
    sg = _gate(tmp_path / "b", chunk=1, shard_bytes=1 << 20)
    with pytest.raises(InvalidArgumentError) as err:
        sg.add_data("x", np.zeros(10, "f4"))
    for part in (
        "shard_bytes must group at most 65536 chunks into one shard",
        "Got shard_bytes=1048576 (1 MiB) over chunks of 1 rows for var_name 'x'",
        "4 bytes a chunk, 262144 chunks a shard",
        "Give shard_bytes <= 262144, or larger chunks",
    ):
        assert part in str(err.value), str(err.value)
    assert sg.get_var_names("train") == []
    assert not (tmp_path / "b" / "d" / "train" / "x").exists()
    sg.add_data("y", np.zeros((10, 4), "f4"))  # 16-byte chunks: exactly 65536 a shard
    assert _layout(tmp_path / "b", "y") == ([1, 4], [65536, 4])


# --- fewer requests (issue 12, item 4): the shortcuts give the same answers --------------------------


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, Any], Any]:
    """backend_args of a new store, and a function writing raw bytes at a key inside it."""
    if request.param == "local":

        def put_local(key: str, data: bytes) -> None:
            (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / key).write_bytes(data)

        return {"output_dir": str(tmp_path)}, put_local
    server, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
    import s3fs

    fs = s3fs.S3FileSystem(**server.storage_options)

    def put_s3(key: str, data: bytes) -> None:
        fs.pipe(f"{bucket}/store/{key}", data)

    return {"output_dir": f"s3://{bucket}/store", "storage_options": server.storage_options}, put_s3


def test_a_new_variable_over_chunks_a_failed_write_left_holds_only_its_own_rows(
    place: tuple[dict[str, Any], Any],
) -> None:
    args, put = place
    sg = StoreGate("zarr", {**args, "chunk": 4}, data_id="d")
    sg.add_data("x", np.arange(8))
    put("d/train/v/c/1", b"not a chunk")  # what a killed write of another 'v' left: chunks, no metadata
    sg.create_empty("v", (8,))
    np.testing.assert_array_equal(sg.get_data("v"), np.zeros(8, dtype=np.float64))
    sg.add_data("w", np.arange(8))  # nothing under the name: the metadata is written once
    np.testing.assert_array_equal(sg.get_data("w"), np.arange(8))
    again = StoreGate("zarr", {**args, "mode": "r"}, data_id="d")
    assert again.get_var_names() == ["v", "w", "x"]
    assert again.get_metadata()["sizes"]["train"] == 8


def test_variables_come_from_the_commit_record_as_a_listing_gave_them(place: tuple[dict[str, Any], Any]) -> None:
    args, put = place
    sg = StoreGate("zarr", args, data_id="d")
    sg.add_data(["x", "y", "z"], [np.arange(6), np.arange(6), np.arange(6)], phase=(0.5, 0.5, 0.0))
    put("d/train/y/zarr.json", b"{not json")  # a committed variable zarr can no longer read: skipped
    put("d/train/q/zarr.json", b"{}")  # another tool's object the record does not list
    sg.refresh()  # a handle keeps the metadata it read until another commit or a refresh
    reader = StoreGate("zarr", {**args, "mode": "r"}, data_id="d")
    for gate in (sg, reader):
        assert gate.get_var_names("train") == ["x", "z"]
        assert gate.get_var_names("valid") == ["x", "y", "z"]
        assert gate.get_var_names("test") == []
        assert gate.get_metadata()["sizes"] == {"train": 3, "valid": 3, "test": 0, "all": 6}


def test_a_read_only_open_finds_its_data_id_with_one_read(place: tuple[dict[str, Any], Any]) -> None:
    args, _ = place
    StoreGate("zarr", args, data_id="d").add_data("x", np.arange(3))
    root = zarr.open_group(args["output_dir"], storage_options=args.get("storage_options"), use_consolidated=False)
    root.create_array("arr", shape=(2,), dtype="u1")  # another tool's array: no data_id
    assert StoreGate("zarr", {**args, "mode": "r"}, data_id="d").get_data("x").tolist() == [0, 1, 2]
    for absent in ("e", "arr"):
        with pytest.raises(NotFoundError, match=rf"data_id '{absent}' does not exist .* Stored data_ids: \['d'\]"):
            StoreGate("zarr", {**args, "mode": "r"}, data_id=absent)
