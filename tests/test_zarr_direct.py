"""Rows inside one chunk of a zarr v3 array on local disk or S3, decoded in the calling thread
(storegate.backends.zarr_direct).

- a property test: whatever the reader serves equals ``np.asarray(array[selection])``
  (values, dtype, shape) and is the caller's own writable array (a new one, or all the rows
  of a chunk decoded straight into an array for this read), over dtypes (big-endian too), row
  shapes, chunkings, compressors (zstd, blosc, gzip, crc32c and chains of them), the bytes
  codec's byte order, both key separators and chunks with no object; it serves every
  in-range row of a chunk that has an object;
- which arrays it declines (zarr reads them as before);
- through StoreGate: single rows and first touches no longer go through zarr's selection,
  a damaged chunk is the same StoreGateError whatever its codec (read here or by zarr), rows
  appended later are read, a store opened with zarrs keeps to it;
- zstd and blosc frames decode straight into the chunk's array only when their headers state
  the chunk's exact size (frames of other sizes are damaged chunks, as before);
- on S3: rows are fetched with the store's own ``get`` and decoded here, damage is the same error.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, TransposeCodec, ZstdCodec
from zarr.storage import LocalStore, MemoryStore

from storegate import StoreGate, StoreGateError
from storegate.backends import zarr_direct
from storegate.backends.zarr_direct import damaged_chunk, direct_reader, frame_size
from tests.conftest import S3Server

COMPRESSORS: dict[str, Any] = {
    "zstd": ZstdCodec(),
    "zstd-checksum": ZstdCodec(level=5, checksum=True),
    "blosc": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    "blosc-zstd-bitshuffle": BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
    "blosc-noshuffle": BloscCodec(cname="blosclz", clevel=1, shuffle="noshuffle"),
    "gzip": GzipCodec(),
    "crc32c": Crc32cCodec(),
    "zstd+crc32c": (ZstdCodec(), Crc32cCodec()),
    "gzip+blosc": (GzipCodec(level=1), BloscCodec(cname="lz4")),
    "none": None,
}
SERIALIZERS: dict[str, Any] = {
    "default": "auto",
    "big": BytesCodec(endian="big"),
    "little": BytesCodec(endian="little"),
}
DTYPES = ["<f4", ">f8", "<i2", ">u4", "u1", "bool", "<U3", "|S2", ">c8", "<M8[s]", ">m8[ms]"]
_counter = itertools.count()


def _values(shape: tuple[int, ...], dtype: str, rng: np.random.Generator) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype == "<U3":
        return rng.choice(np.array(["", "a", "bc", "def"]), size=shape)
    if dtype == "|S2":
        return rng.choice(np.array([b"", b"a", b"bc"]), size=shape)
    return rng.integers(0, 100, size=shape).astype(dtype)


def _selections(n: int) -> st.SearchStrategy[int | slice]:
    bound = st.integers(-n - 2, n + 2) | st.none()
    return st.integers(-n, n - 1) | st.builds(slice, bound, bound, st.sampled_from([None, 1, 2, -1]))


@pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")  # '<U3', '|S2', times: no v3 spec yet
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dtype=st.sampled_from(DTYPES),
    row=st.lists(st.integers(1, 3), max_size=2).map(tuple),
    n=st.integers(1, 20),
    chunk_rows=st.integers(1, 6),
    codec=st.sampled_from(sorted(COMPRESSORS)),
    serializer=st.sampled_from(sorted(SERIALIZERS)),
    separator=st.sampled_from(["/", "."]),
    blank=st.lists(st.booleans(), min_size=10, max_size=10),
    data=st.data(),
)
def test_the_reader_serves_what_zarr_reads(
    tmp_path: Path,
    dtype: str,
    row: tuple[int, ...],
    n: int,
    chunk_rows: int,
    codec: str,
    serializer: str,
    separator: str,
    blank: list[bool],
    data: st.DataObject,
) -> None:
    values = _values((n, *row), dtype, np.random.default_rng(n))
    for cid, empty in enumerate(blank):  # chunks of fill values only: zarr stores no object for them
        if empty:
            values[cid * chunk_rows : (cid + 1) * chunk_rows] = np.zeros((), dtype=dtype)
    path = tmp_path / f"a{next(_counter)}.zarr"
    array = zarr.create_array(
        str(path),
        shape=values.shape,
        chunks=(chunk_rows, *row),
        dtype=dtype,
        compressors=COMPRESSORS[codec],
        serializer=SERIALIZERS[serializer],
        chunk_key_encoding={"name": "default", "separator": separator},
    )
    array[...] = values
    reader = direct_reader(array)
    assert reader is not None
    whole = [slice(c * chunk_rows, min((c + 1) * chunk_rows, n)) for c in range(-(-n // chunk_rows))]
    served: list[tuple[np.ndarray, np.ndarray]] = []
    for selection in [*data.draw(st.lists(_selections(n), min_size=1, max_size=8)), *whole]:
        got = reader.rows(selection)
        try:
            expected = np.asarray(array[selection])
        except IndexError:  # out of range, a negative step: zarr's error stands
            assert got is None
            continue
        if got is None:
            has_object = (
                isinstance(selection, int)
                and (
                    path / array.metadata.encode_chunk_key(((selection % n) // chunk_rows, *([0] * len(row))))
                ).exists()
            )
            assert not has_object, f"row {selection} of a chunk with an object was not served"
            continue
        assert got.dtype == expected.dtype
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
        assert got.flags.writeable
        # The caller's own: a new array, or a view of a chunk decoded for this call (all its rows).
        assert got.base is None or got.base.nbytes == chunk_rows * max(1, int(np.prod(row))) * got.itemsize
        if got.size:
            got.reshape(-1)[:1] = expected.reshape(-1)[-1:]  # a write into it does not reach later reads
            again = reader.rows(selection)
            assert again is not None
            np.testing.assert_array_equal(again, expected)
            served.append((again, expected))
    for again, expected in served:  # later reads (of other chunks, into the same buffers) left them as they were
        np.testing.assert_array_equal(again, expected)


def _array(store: Any, **options: Any) -> zarr.Array[Any]:
    array = zarr.create_array(store, shape=(10, 4), dtype="f4", **{"chunks": (5, 4), **options})
    array[...] = np.arange(40, dtype="f4").reshape(10, 4)
    return array


@pytest.mark.parametrize(
    "options",
    [
        {"shards": (10, 4)},  # chunks inside shards
        {"chunks": (5, 2)},  # chunks inside rows
        {"filters": [TransposeCodec(order=(1, 0))]},  # an array-to-array codec
        {"config": {"order": "F"}},
        {"zarr_format": 2},
        {"chunk_key_encoding": {"name": "v2", "separator": "."}},  # keys '0.0': zarr computes them
    ],
    ids=["shards", "row-chunks", "transpose", "order-F", "v2", "v2-keys"],
)
def test_layouts_the_reader_declines_are_read_by_zarr(tmp_path: Path, options: dict[str, Any]) -> None:
    assert direct_reader(_array(str(tmp_path / "a.zarr"), **options)) is None


@pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")  # "not in the Zarr version 3 specification"
def test_codecs_outside_the_specification_are_read_by_zarr(tmp_path: Path) -> None:
    numcodecs_zstd = pytest.importorskip("zarr.codecs.numcodecs").Zstd()  # 'numcodecs.zstd', zarr 3.1.3+
    assert direct_reader(_array(str(tmp_path / "a.zarr"), compressors=[numcodecs_zstd])) is None


@pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")  # variable-length strings
def test_variable_length_items_are_read_by_zarr(tmp_path: Path) -> None:
    array = zarr.create_array(str(tmp_path / "s.zarr"), shape=(4,), chunks=(2,), dtype=str)
    array[...] = np.array(["a", "bc", "", "def"])
    assert direct_reader(array) is None


def test_a_backend_says_whether_its_reads_wait_on_the_network(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    local = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr")}, data_id="d")
    s3 = StoreGate("zarr", {"output_dir": f"s3://{s3_bucket}/s", "storage_options": s3_server.storage_options}, "d")
    assert not local.backend_object.remote
    assert s3.backend_object.remote
    assert not StoreGate("numpy", data_id="d").backend_object.remote


def test_stores_other_than_a_plain_local_store_are_read_by_zarr(tmp_path: Path) -> None:
    assert direct_reader(_array(MemoryStore())) is None

    class Wrapped(LocalStore):  # a subclass may read otherwise (the journal's view wraps a store)
        pass

    assert direct_reader(_array(Wrapped(str(tmp_path / "w.zarr")))) is None
    assert direct_reader(_array(LocalStore(str(tmp_path / "p.zarr")))) is not None


def test_a_resize_of_the_handle_moves_the_rows_it_serves(tmp_path: Path) -> None:
    array = _array(str(tmp_path / "a.zarr"))
    reader = direct_reader(array)
    assert reader is not None
    array.append(np.full((3, 4), 7, dtype="f4"))
    np.testing.assert_array_equal(reader.rows(11), np.full(4, 7, dtype="f4"))
    array.resize((4, 4))
    assert reader.rows(6) is None  # out of range now: zarr raises its error


# --- through StoreGate ---------------------------------------------------------------------------


def _count_zarr_reads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    calls: list[object] = []
    original = zarr.Array.__getitem__

    def counted(self: zarr.Array[Any], selection: Any) -> Any:
        calls.append(selection)
        return original(self, selection)

    monkeypatch.setattr(zarr.Array, "__getitem__", counted)
    return calls


@pytest.mark.parametrize("cache_bytes", [0, 1 << 20])
def test_single_rows_of_a_local_store_skip_zarrs_selection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_bytes: int
) -> None:
    rows = np.arange(60, dtype=np.float32).reshape(20, 3)
    StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "chunk": 4}, data_id="d").add_data("x", rows, "train")
    sg = StoreGate(
        "zarr", {"output_dir": str(tmp_path / "s.zarr"), "mode": "r", "chunk_cache_bytes": cache_bytes}, data_id="d"
    )
    calls = _count_zarr_reads(monkeypatch)
    for i in (0, 5, 5, 6, 19, -1, -20):  # first touches, second touches (kept when the cache is on), negatives
        np.testing.assert_array_equal(sg["train"]["x"][i], rows[i])
        np.testing.assert_array_equal(sg.get_data("x", "train", i), rows[i])
    np.testing.assert_array_equal(sg["train"]["x"][8:11], rows[8:11])  # inside one chunk
    assert calls == []
    np.testing.assert_array_equal(sg["train"]["x"][12:20], rows[12:20])  # two chunks
    # zarr reads them as one selection; the cache reads the run of chunks it lacks (chunk 3) alone.
    assert len(calls) == (1 if cache_bytes == 0 else 0)


#: storegate compressors, and what the damaged chunk holds (a blosc chunk cut short still
#: decodes, through zarr as here, so it gets bytes blosc rejects).
DAMAGED: dict[str, tuple[Any, bytes]] = {
    "zstd": ("zstd", b"not zstd"),
    "blosc": ("blosc-lz4", b"not blosc"),
    "gzip": ("gzip", b"not gzip"),
    "gzip-cut": ("gzip", b"cut"),  # replaced by the first bytes of a real gzip chunk
    # Its first half, header intact: numcodecs' Blosc would decode past the object's end.
    "blosc-half": ("blosc-lz4", b"half"),
    "blosc-zstd-half": ("blosc-zstd", b"half"),
    "crc32c": ([ZstdCodec(), Crc32cCodec()], b"a wrong checksum"),
    "crc32c-short": ([Crc32cCodec()], b"ab"),
    "none": ("none", b"12345"),  # not the chunk's 32 bytes
    # Whole frames that decode to fewer or more bytes than the chunk's 32 (their headers say so).
    "zstd-short": ("zstd", numcodecs.Zstd().encode(np.arange(2, dtype=np.int64))),
    "zstd-long": ("zstd", numcodecs.Zstd().encode(np.arange(6, dtype=np.int64))),
    "blosc-short": ("blosc-lz4", numcodecs.Blosc("lz4").encode(np.arange(2, dtype=np.int64))),
    "blosc-long": ("blosc-lz4", numcodecs.Blosc("lz4").encode(np.arange(6, dtype=np.int64))),
}


def _damaged_store(tmp_path: Path, case: str) -> Path:
    """A store of x = 0..11 in chunks of 4 rows whose second chunk has the damage ``DAMAGED[case]``."""
    compressor, damage = DAMAGED[case]
    root = tmp_path / "s.zarr"
    sg = StoreGate("zarr", {"output_dir": str(root), "chunk": 4, "compressor": compressor}, data_id="d")
    sg.add_data("x", np.arange(12, dtype=np.int64), "train")
    chunk = root / "d/train/x/c/1"
    whole = chunk.read_bytes()
    chunk.write_bytes(whole[:10] if damage == b"cut" else whole[: len(whole) // 2] if damage == b"half" else damage)
    return root


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_chunk_read_directly_is_the_same_storegate_error(tmp_path: Path, case: str) -> None:
    root = _damaged_store(tmp_path, case)
    for cache_bytes in (0, 1 << 20):
        reader = StoreGate("zarr", {"output_dir": str(root), "chunk_cache_bytes": cache_bytes}, data_id="d")
        with pytest.raises(StoreGateError, match=r"var_name 'x' of phase 'train' in data_id 'd'.*cannot be decoded"):
            reader["train"]["x"][5]
        assert int(reader["train"]["x"][9]) == 9


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_chunk_read_through_zarr_is_the_same_storegate_error(tmp_path: Path, case: str) -> None:
    # Rows of several chunks go through zarr: its decode errors map to the same error.
    root = _damaged_store(tmp_path, case)
    reader = StoreGate("zarr", {"output_dir": str(root), "chunk_cache_bytes": 0}, data_id="d")
    with pytest.raises(StoreGateError, match=r"var_name 'x' of phase 'train' in data_id 'd'.*cannot be decoded"):
        reader["train"]["x"][2:7]


@pytest.mark.parametrize("cut", [0, 10, 16, -3])
def test_a_blosc_object_cut_short_is_a_damaged_chunk_not_the_bytes_past_its_end(tmp_path: Path, cut: int) -> None:
    # numcodecs' Blosc decodes as many bytes as the header says, whatever the buffer holds:
    # an object cut short (empty too) was read past its end, which on local disk is this
    # thread's read buffer, so an emptied chunk read as the chunk the thread read before.
    root = tmp_path / "s.zarr"
    sg = StoreGate("zarr", {"output_dir": str(root), "chunk": 5, "compressor": "blosc-lz4"}, data_id="d")
    sg.add_data("x", np.arange(10, dtype=np.int64), "train")
    np.testing.assert_array_equal(sg["train"]["x"][5:10], np.arange(5, 10))  # fills the read buffer
    chunk = root / "d/train/x/c/0"
    chunk.write_bytes(chunk.read_bytes()[:cut])
    with pytest.raises(StoreGateError, match=r"var_name 'x' of phase 'train' in data_id 'd'.*cannot be decoded"):
        sg["train"]["x"][0:5]


def test_a_thread_keeps_no_read_buffer_past_the_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The largest chunk a thread ever read stayed in its reused buffer for the thread's life
    # (100 MB chunks: 89 MiB held after the StoreGate was gone).
    monkeypatch.setattr(zarr_direct, "MAX_REUSED_BYTES", 1024)
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "chunk": 512, "compressor": "none"}, "d")
    sg.add_data("x", np.arange(1024, dtype=np.int64), "train")
    kept: list[int] = []

    def read() -> None:
        np.testing.assert_array_equal(sg["train"]["x"][0:512], np.arange(512))  # a 4 KiB object
        np.testing.assert_array_equal(sg["train"]["x"][700], 700)
        kept.append(len(getattr(zarr_direct._buffers, "buffer", b"")))

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    assert kept == [0]


def test_only_a_codecs_value_error_is_a_damaged_chunk() -> None:
    with pytest.raises(ValueError, match="rejects") as raised:
        raise ValueError("a selection zarr rejects")
    assert not damaged_chunk(raised.value)  # raised outside zarr's codecs: the read's own error stands
    assert not damaged_chunk(OSError("disk gone"))
    assert damaged_chunk(RuntimeError("Zstd decompression error"))


def test_a_store_opened_with_zarrs_reads_through_its_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("zarrs")
    root = str(tmp_path / "s.zarr")
    StoreGate("zarr", {"output_dir": root, "chunk": 4}, data_id="d").add_data("x", np.arange(8), "train")
    reader = StoreGate("zarr", {"output_dir": root, "codec_pipeline": "zarrs", "mode": "r"}, data_id="d")
    calls = _count_zarr_reads(monkeypatch)
    assert int(reader["train"]["x"][5]) == 5
    assert len(calls) == 1


def test_rows_appended_after_a_read_are_read_directly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = str(tmp_path / "s.zarr")
    sg = StoreGate("zarr", {"output_dir": root, "chunk": 4}, data_id="d")
    sg.add_data("x", np.arange(6, dtype=np.int64), "train")
    reader = StoreGate("zarr", {"output_dir": root, "mode": "r"}, data_id="d")
    assert int(reader["train"]["x"][5]) == 5
    sg.add_data("x", np.arange(6, 10, dtype=np.int64), "train")  # another handle commits more rows
    calls = _count_zarr_reads(monkeypatch)
    assert [int(reader["train"]["x"][i]) for i in (5, 7, 9, -1)] == [5, 7, 9, 9]
    assert calls == []
    sg.add_data("y", np.zeros(10), "train")  # a fill-value chunk is stored too (every chunk is kept): read directly
    assert float(reader["train"]["y"][3]) == 0.0
    assert calls == []


# --- decoding straight into the chunk's array ----------------------------------------------------


def _zstd_frame(descriptor: int, fields: bytes) -> bytes:
    """The first bytes of a zstd frame: magic number, Frame_Header_Descriptor, then ``fields``."""
    return (0xFD2FB528).to_bytes(4, "little") + bytes([descriptor]) + fields


@pytest.mark.parametrize(
    ("header", "size"),
    [
        (_zstd_frame(0b0010_0000, bytes([200])), 200),  # single segment, 1-byte content size
        (_zstd_frame(0b0110_0000, (1000 - 256).to_bytes(2, "little")), 1000),  # 2 bytes: value + 256
        (_zstd_frame(0b1000_0000, b"\x07" + (70000).to_bytes(4, "little")), 70000),  # window byte first
        (_zstd_frame(0b1110_0011, b"dict" + (5).to_bytes(4, "little")), None),  # cut short
        (_zstd_frame(0b1110_0010, (1234).to_bytes(2, "little") + (5 << 32).to_bytes(8, "little")), 5 << 32),
        (_zstd_frame(0b0000_0000, b"\x07\x00\x00"), None),  # no content size
        (b"\x00" * 12, None),  # not a zstd frame
    ],
)
def test_a_zstd_frame_header_states_its_size(header: bytes, size: int | None) -> None:
    assert frame_size(numcodecs.Zstd(), header) == size


def test_frame_sizes_of_real_frames() -> None:
    data = np.arange(1000, dtype="<f8")
    assert frame_size(numcodecs.Zstd(level=3), numcodecs.Zstd(level=3).encode(data)) == data.nbytes
    assert frame_size(numcodecs.Blosc("zstd"), numcodecs.Blosc("zstd").encode(data)) == data.nbytes
    assert frame_size(numcodecs.GZip(), numcodecs.GZip().encode(data)) is None  # no size: decoded as before


# --- on S3 (the test server) -----------------------------------------------------------------------


def test_rows_on_s3_are_fetched_and_decoded_in_the_calling_thread(
    s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = {"output_dir": f"s3://{s3_bucket}/s", "storage_options": s3_server.storage_options, "chunk": 4}
    rows = np.arange(60, dtype=np.float32).reshape(20, 3)
    StoreGate("zarr", args, data_id="d").add_data("x", rows, "train")
    reader = StoreGate("zarr", {**args, "mode": "r", "chunk_cache_bytes": 0}, data_id="d")
    calls = _count_zarr_reads(monkeypatch)
    for i in (0, 7, 19, -3):
        np.testing.assert_array_equal(reader["train"]["x"][i], rows[i])
    whole = reader["train"]["x"][8:12]  # a whole chunk: decoded into the array returned
    np.testing.assert_array_equal(whole, rows[8:12])
    whole[:] = -1
    np.testing.assert_array_equal(reader["train"]["x"][8:12], rows[8:12])
    assert calls == []
    s3_server.client().put_object(Bucket=s3_bucket, Key="s/d/train/x/c/1/0", Body=b"not zstd")
    with pytest.raises(StoreGateError, match=r"var_name 'x' of phase 'train' in data_id 'd'.*cannot be decoded"):
        reader["train"]["x"][5]
