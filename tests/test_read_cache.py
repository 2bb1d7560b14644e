"""The zarr backend's cache of decoded chunks (issue 12, item 3): small reads served from it,
never a value the last commit no longer holds.

- a property test: reads through the cache equal numpy indexing of a model under
  interleaved writes (every write path), on every backend;
- a cached hit does not reach zarr (a counting store sees no chunk read);
- another process's commit is seen at the next read (a subprocess writer);
- on the S3 server, a second row of a chunk read before sends no chunk GET.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.storage import MemoryStore

from storegate import IndexOutOfRangeError, InvalidArgumentError, StoreGate
from storegate.backends.zarr_cache import DecodedChunks
from storegate.phases import permutation
from storegate.testing import BACKEND_KINDS, make_gate
from tests.benchmark_modules import load
from tests.conftest import S3Server
from tests.counting_store import CountingStore, chunk_keys
from tests.v2_stores import DATA_ID as V2_DATA_ID
from tests.v2_stores import write_zarr2_files

ROWS, COLS, CHUNK = 40, 3, 8


def _data(n: int = ROWS, start: int = 0) -> np.ndarray:
    return (start + np.arange(n * COLS, dtype=np.int64)).reshape(n, COLS)


# --- a cached hit does not reach zarr ----------------------------------------------------------


def test_a_row_of_a_cached_chunk_reads_no_chunk_and_a_write_drops_the_cache() -> None:
    store = CountingStore(MemoryStore())
    sg = StoreGate("zarr", {"output_dir": store, "chunk": CHUNK}, data_id="d")
    sg.add_data("x", _data(), "train")
    store.keys.clear()
    np.testing.assert_array_equal(sg["train"]["x"][3], _data()[3])  # a first touch: read as zarr reads
    np.testing.assert_array_equal(sg["train"]["x"][4], _data()[4])  # the second: decoded and kept
    assert chunk_keys(store.keys) == ["d/train/x/c/0/0"] * 2
    store.keys.clear()
    for index in (5, -35, [0, 7, 2], slice(1, 6), (4, slice(1, None)), ([6, 1], 2)):  # rows of chunk 0 only
        np.testing.assert_array_equal(sg["train"]["x"][index], _data()[index])
        np.testing.assert_array_equal(sg.get_data("x", "train", index), _data()[index])
    assert chunk_keys(store.keys) == []
    sg["train"]["x"][2] = [-1, -2, -3]  # this process's write: the next read reads the chunk again
    store.keys.clear()
    assert sg["train"]["x"][2].tolist() == [-1, -2, -3]
    assert sg["train"]["x"][2].tolist() == [-1, -2, -3]
    assert chunk_keys(store.keys) == ["d/train/x/c/0/0"] * 2  # first touch, then kept
    row = sg["train"]["x"][2]
    row[0] = 99  # a row read is the caller's own copy: the cache keeps its values
    assert sg["train"]["x"][2].tolist() == [-1, -2, -3]


def test_a_single_row_keeps_its_chunk_from_the_second_read_of_the_chunk_on() -> None:
    """The doorkeeper: rows read once (a random scan) cost what zarr's read costs, nothing kept."""
    store = CountingStore(MemoryStore())
    sg = StoreGate("zarr", {"output_dir": store, "chunk": CHUNK}, data_id="d")
    sg.add_data("x", _data(), "train")
    store.keys.clear()
    for row in range(0, ROWS, CHUNK):  # one row of each chunk: every chunk read, none kept
        np.testing.assert_array_equal(sg["train"]["x"][row], _data()[row])
    assert len(chunk_keys(store.keys)) == ROWS // CHUNK
    store.keys.clear()
    for row in range(1, ROWS, CHUNK):  # a second row of each: read once more, then kept
        np.testing.assert_array_equal(sg["train"]["x"][row], _data()[row])
    assert len(chunk_keys(store.keys)) == ROWS // CHUNK
    store.keys.clear()
    for row in range(2, ROWS, CHUNK):
        np.testing.assert_array_equal(sg.get_data("x", "train", row), _data()[row])
    assert chunk_keys(store.keys) == []


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_one_row_reads_give_what_numpy_gives_cached_or_not(kind: str, tmp_path: Path) -> None:
    """The hot path (one int row of one variable) against numpy: 1-D rows are numpy scalars,
    negative rows count from the end, a row out of range raises the usual error, ragged
    variables and phase 'all' read as always."""
    sg = _gate(kind, tmp_path)
    labels = np.arange(ROWS, dtype=np.int32) * 3
    sg.add_data(["x", "y"], [_data(), labels], "train")
    sg.add_data("y", labels[:4], "valid")
    sg.add_data("r", [np.arange(i % 3 + 1) for i in range(ROWS)], "train")
    for _ in range(2):  # the second time from the cache, where there is one
        for i in (0, 9, -1, -ROWS):
            got = sg["train"]["y"][i]
            assert type(got) is np.int32
            assert got == labels[i]
            assert sg.get_data("y", "train", i) == labels[i]
            np.testing.assert_array_equal(sg["train"]["x"][i], _data()[i])
            np.testing.assert_array_equal(sg["train"]["r"][i], np.arange(i % ROWS % 3 + 1))
        assert sg["all"]["y"][ROWS + 1] == labels[1]
        with pytest.raises(IndexOutOfRangeError, match="40"):
            sg["train"]["x"][ROWS]
        with pytest.raises(IndexOutOfRangeError):
            sg.get_data("y", "train", -ROWS - 1)


def test_a_large_read_goes_to_the_store_and_leaves_the_cache_alone() -> None:
    store = CountingStore(MemoryStore())
    # 2 chunks of 8 rows x 3 int64 (192 bytes each) fit a cache of 4 x 2 x 192 bytes: 5 chunks do not.
    args = {"output_dir": store, "chunk": CHUNK, "chunk_cache_bytes": 4 * 2 * CHUNK * COLS * 8}
    sg = StoreGate("zarr", args, data_id="d")
    sg.add_data("x", _data(), "train")
    np.testing.assert_array_equal(sg["train"]["x"][0:16], _data()[0:16])
    cache: DecodedChunks = sg.backend_object._decoded  # type: ignore[attr-defined]
    assert len(cache.chunks) == 2
    np.testing.assert_array_equal(sg.get_data("x", "train"), _data())  # the whole phase: 5 chunks
    assert len(cache.chunks) == 2
    store.keys.clear()
    np.testing.assert_array_equal(sg["train"]["x"][[15, 0]], _data()[[15, 0]])
    assert chunk_keys(store.keys) == []


def test_chunk_cache_bytes_zero_reads_the_store_every_time_and_bad_values_are_refused(tmp_path: Path) -> None:
    store = CountingStore(MemoryStore())
    sg = StoreGate("zarr", {"output_dir": store, "chunk": CHUNK, "chunk_cache_bytes": 0}, data_id="d")
    sg.add_data("x", _data(), "train")
    store.keys.clear()
    sg["train"]["x"][3]
    sg["train"]["x"][3]
    assert chunk_keys(store.keys) == ["d/train/x/c/0/0"] * 2
    with pytest.raises(InvalidArgumentError, match=r"chunk_cache_bytes must be an int >= 0\. Got -1"):
        StoreGate("zarr", {"output_dir": str(tmp_path / "s"), "chunk_cache_bytes": -1})
    args = {"output_dir": str(tmp_path / "s"), "chunk_cache_bytes": 1 << 10}
    assert StoreGate("zarr", args).backend_object.reopen_args()["chunk_cache_bytes"] == 1 << 10


def test_row_chunks_and_stores_without_a_commit_record_are_read_from_the_store() -> None:
    store = CountingStore(MemoryStore())
    data = np.arange(6 * 4, dtype=np.int32).reshape(6, 4)
    zarr.open_group(store, mode="w").create_array("d/train/x", shape=data.shape, chunks=(2, 4), dtype="i4")[:] = data
    sg = StoreGate("zarr", {"output_dir": store, "mode": "r"}, data_id="d")  # written by zarr: no commit record
    store.keys.clear()
    for _ in range(2):
        np.testing.assert_array_equal(sg["train"]["x"][1], data[1])
    assert chunk_keys(store.keys) == ["d/train/x/c/0/0"] * 2


@pytest.mark.parametrize("layout", ["shards", "zarr v2"])
def test_shards_and_zarr_v2_stores_read_through_the_cache(layout: str, tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    if layout == "zarr v2":  # multiml's store: 1000-row chunks, written by zarr 2 (no commit record yet)
        expected = write_zarr2_files(path)[("train", "x")]
        sg = StoreGate("zarr", {"output_dir": str(path)}, data_id=V2_DATA_ID)
        sg.add_data("x", expected[:5], "train")  # a storegate write: the commit record from now on
        expected = np.concatenate([expected, expected[:5]])
    else:  # inner chunks of 8 rows in shards of 4 chunks: the cache keeps inner chunks
        args = {"output_dir": str(path), "chunk": CHUNK, "shard_bytes": 4 * CHUNK * COLS * 8}
        sg, expected = StoreGate("zarr", args, data_id=V2_DATA_ID), _data()
        sg.add_data("x", expected, "train")
    for index in (3, -1, [9, 2, 9], slice(5, 20)):
        for _ in range(2):
            np.testing.assert_array_equal(sg["train"]["x"][index], expected[index])
    sg["train"]["x"][3] = expected[3] * 2
    assert sg.backend_object._decoded.chunks.nbytes == 0  # type: ignore[attr-defined]
    np.testing.assert_array_equal(sg["train"]["x"][3], expected[3] * 2)
    np.testing.assert_array_equal(sg["train"]["x"][[4, 3]], [expected[4], expected[3] * 2])


# --- reads through the cache equal numpy's, under interleaved writes --------------------------

_WRITES = st.sampled_from(["update", "append", "delete_rows", "astype", "replace", "shuffle", "fail"])
_READS = st.one_of(
    st.integers(-ROWS, ROWS - 1),
    st.lists(st.integers(0, ROWS - 1), min_size=0, max_size=4),
    st.tuples(st.integers(0, ROWS), st.integers(0, ROWS)).map(lambda t: slice(min(t), max(t))),
)


def _write(sg: StoreGate, model: np.ndarray, what: str, row: int) -> np.ndarray:
    """Apply one write to the store and to the model; the new model."""
    if what == "update":
        sg["train"]["x"][row] = -model[row] - 1
        model = model.copy()
        model[row] = -model[row] - 1
    elif what == "append":
        more = _data(3, start=1000 + row)
        sg.add_data("x", more, "train")
        model = np.concatenate([model, more])
    elif what == "delete_rows":
        kept = np.ones(len(model), dtype=bool)
        kept[row] = False
        sg.delete_data("x", "train")
        sg.add_data("x", model[kept], "train")
        model = model[kept]
    elif what == "astype":
        sg.astype("x", "i4" if model.dtype == np.int64 else "i8", "train")
        model = model.astype("i4" if model.dtype == np.int64 else "i8")
    elif what == "replace":
        model = model[::-1].copy()
        sg.update_data("x", model, "train")
    elif what == "shuffle":
        sg.shuffle(phase="train", seed=row)
        model = model[permutation(len(model), row)]
    else:  # a write that fails: nothing changes
        with pytest.raises(InvalidArgumentError):
            sg.update_data("x", np.zeros((2, COLS + 1)), "train", index=[0, 1])
    return model


def _gate(kind: str, path: Path) -> StoreGate:
    """make_gate's store of ``kind``, with chunks of CHUNK rows so that reads span several."""
    if kind == "zarr-dir":
        return StoreGate("zarr", {"output_dir": str(path / "s.zarr"), "chunk": CHUNK}, data_id="d")
    if kind == "zarr-memory":
        return StoreGate("zarr", {"output_dir": MemoryStore(), "chunk": CHUNK}, data_id="d")
    if kind == "hybrid-zarr":
        return StoreGate("hybrid", {"output_dir": str(path / "h.zarr"), "chunk": CHUNK}, data_id="d")
    return make_gate(kind, path, data_id="d")


@pytest.mark.parametrize("kind", BACKEND_KINDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.tuples(_WRITES, st.integers(0, ROWS - 1), st.lists(_READS, min_size=1, max_size=3)), max_size=5)
)
def test_reads_through_the_cache_equal_numpy_under_writes(
    kind: str, tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int, list[Any]]]
) -> None:
    sg = _gate(kind, tmp_path_factory.mktemp(kind))
    model = _data()
    sg.add_data("x", model, "train")
    for what, row, reads in steps:
        for index in [*reads, *reads]:  # twice: the second read of each comes from the cache
            index = index % len(model) if isinstance(index, int) else index
            index = [i % len(model) for i in index] if isinstance(index, list) else index
            np.testing.assert_array_equal(sg["train"]["x"][index], model[index])
            np.testing.assert_array_equal(sg.get_data("x", "train", index), model[index])
        model = _write(sg, model, what, row % len(model))
        np.testing.assert_array_equal(sg["train"]["x"][row % len(model)], model[row % len(model)])
    np.testing.assert_array_equal(sg.get_data("x", "train"), model)


# --- another process's commit -------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from storegate import StoreGate

    sg = StoreGate("zarr", {"output_dir": sys.argv[1]}, data_id="d")
    what = sys.argv[2]
    if what == "update":
        sg["train"]["x"][3] = [7, 7, 7]
    elif what == "append":
        sg.add_data("x", np.full((2, 3), 5), "train")
    else:
        sg.astype("x", "f8", "train")
    """
)


def _other_process(path: Path, what: str) -> None:
    subprocess.run([sys.executable, "-c", _WRITER, str(path), what], check=True, timeout=120)


def test_a_commit_of_another_process_is_seen_at_the_next_read(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    sg = StoreGate("zarr", {"output_dir": str(path), "chunk": CHUNK}, data_id="d")
    sg.add_data("x", _data(), "train")
    reader = StoreGate("zarr", {"output_dir": str(path), "mode": "r"}, data_id="d")
    assert reader["train"]["x"][3].tolist() == _data()[3].tolist()
    assert reader["train"]["x"][4].tolist() == _data()[4].tolist()  # from the cache
    _other_process(path, "update")
    assert reader["train"]["x"][3].tolist() == [7, 7, 7]
    assert reader.get_data("x", "train", [4, 3]).tolist() == [_data()[4].tolist(), [7, 7, 7]]
    _other_process(path, "append")
    assert reader["train"]["x"][-1].tolist() == [5, 5, 5]
    assert len(reader.get_data("x", "train")) == ROWS + 2
    _other_process(path, "astype")
    row = reader["train"]["x"][3]
    assert row.dtype == np.float64
    assert row.tolist() == [7.0, 7.0, 7.0]


def _read_in_a_loop(path: str, out: Any, stop: Any) -> None:
    reader = StoreGate("zarr", {"output_dir": path, "mode": "r"}, data_id="d")
    seen: set[int] = set()
    while not stop.is_set():
        row = reader["train"]["x"][1]
        if len(set(row.tolist())) != 1:
            out.put("torn row")
            return
        seen.add(int(row[0]))
    out.put(sorted(seen))


def test_a_reader_in_another_process_never_sees_a_torn_or_stale_row(tmp_path: Path) -> None:
    """The writer rewrites row 1 in place (x[1] = k, k = 1..30) while another process reads it in a loop."""
    path = str(tmp_path / "s.zarr")
    sg = StoreGate("zarr", {"output_dir": path, "chunk": CHUNK}, data_id="d")
    sg.add_data("x", np.zeros((ROWS, COLS), dtype=np.int64), "train")
    spawn = multiprocessing.get_context("spawn")
    out, stop = spawn.Queue(), spawn.Event()
    reader = spawn.Process(target=_read_in_a_loop, args=(path, out, stop))
    reader.start()
    try:
        for k in range(1, 31):
            sg["train"]["x"][1] = [k, k, k]
        stop.set()
        seen = out.get(timeout=120)
    finally:
        reader.join(timeout=60)
    assert seen != "torn row"
    assert seen == sorted(seen)
    assert set(seen) <= set(range(31))
    check = StoreGate("zarr", {"output_dir": path, "mode": "r"}, data_id="d")
    assert check["train"]["x"][1].tolist() == [30, 30, 30]


# --- DataLoader workers keep their own caches --------------------------------------------------


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_two_workers_read_what_the_gate_wrote_after_it_cached_rows(context: str, tmp_path: Path) -> None:
    """The gate's cache stays in the gate: a dataset made from it reads the store through its
    own handle in each worker, and sees a write the gate made after caching the rows."""
    torch = pytest.importorskip("torch")
    from storegate.torch import StoreGateDataset

    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "chunk": CHUNK}, data_id="d")
    sg.add_data("x", _data(), "train")
    for i in range(ROWS):
        sg["train"]["x"][i]  # every chunk in the gate's cache
    changed = _data() * 2
    sg.update_data("x", changed, "train")
    dataset = StoreGateDataset(sg, "train", "x")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=8, num_workers=2, multiprocessing_context=context, timeout=90
    )
    np.testing.assert_array_equal(torch.cat(list(loader)).numpy(), changed)
    np.testing.assert_array_equal(sg["train"]["x"][[3, 30]], changed[[3, 30]])


# --- S3 ---------------------------------------------------------------------------------------


@pytest.mark.s3
def test_on_s3_a_second_row_of_a_chunk_sends_no_chunk_get(s3_server: S3Server, s3_bucket: str) -> None:
    counter = load("bench_s3_requests").RequestCounter()
    args = {"output_dir": f"s3://{s3_bucket}/rows", "storage_options": s3_server.storage_options, "chunk": CHUNK}
    sg = StoreGate("zarr", args, data_id="d")
    sg.add_data("x", _data(), "train")
    reader = StoreGate("zarr", {**args, "mode": "r"}, data_id="d")
    with counter.counting():
        first = counter.measure(lambda: reader["train"]["x"][3])[1]
        kept = counter.measure(lambda: reader["train"]["x"][4])[1]  # the chunk's second read: kept
        second = counter.measure(lambda: reader["train"]["x"][5])[1]
        fancy = counter.measure(lambda: reader.get_data("x", "train", [6, 2]))[1]
        sg["train"]["x"][5] = [0, 0, 0]  # a commit: the reader reads the chunk again
        after, changed = counter.measure(lambda: reader["train"]["x"][5])
    assert first["GET"] >= 2  # the chunk and the commit record (and metadata, on a fresh handle)
    assert kept == Counter({"GET": 2})  # the commit record and the chunk, decoded and kept
    assert second == fancy == Counter({"GET": 1})  # the commit record alone
    assert after.tolist() == [0, 0, 0]
    assert changed["GET"] >= 2


@pytest.mark.s3
def test_on_s3_an_uncached_read_reads_the_commit_record_once(s3_server: S3Server, s3_bucket: str) -> None:
    """Issue 12, item 4: each chunk once and the commit record once (it was twice)."""
    counter = load("bench_s3_requests").RequestCounter()
    args = {"output_dir": f"s3://{s3_bucket}/once", "storage_options": s3_server.storage_options, "chunk": CHUNK}
    StoreGate("zarr", args, data_id="d").add_data("x", _data(), "train")
    reader = StoreGate("zarr", {**args, "mode": "r", "chunk_cache_bytes": 0}, data_id="d")
    reader.get_data("x", "train")
    with counter.counting():
        whole = counter.measure(lambda: reader.get_data("x", "train"))[1]
        row = counter.measure(lambda: reader["train"]["x"][3])[1]
    assert whole == Counter({"GET": ROWS // CHUNK + 1})
    assert row == Counter({"GET": 2})
