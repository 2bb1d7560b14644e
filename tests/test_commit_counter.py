"""Warm random rows checked by the commit counter (issue 12, item 3; storegate.backends.commit_counter).

A row of a cached chunk is served after one read of the data_id's commit counter, mapped
from ``.storegate/locks/<data_id>.commits``, instead of a read of the commit record. These
tests keep it exact:

- a warm row reads no commit record, and every commit of another handle or process (append,
  rewrite in place, astype, delete, mode 'w') is seen at the next read;
- a writer killed between its two counter writes leaves the counter odd: readers read the
  record until the next commit;
- files changed by hand are seen within WATCH_NS; stores on file systems of other machines
  (NFS, SMB, FUSE) read the record every time;
- a property test: a reader's rows equal a model under another handle's writes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storegate import NotFoundError, StoreGate
from storegate.backends import commit_counter, zarr_backend
from storegate.backends.zarr_locking import counter_path, poison_counter

ROWS, COLS, CHUNK = 24, 3, 4


def _data(n: int = ROWS, start: int = 0) -> np.ndarray:
    return (start + np.arange(n * COLS, dtype=np.int64)).reshape(n, COLS)


def _store(path: Path, kind: str = "zarr") -> StoreGate:
    sg = StoreGate(kind, {"output_dir": str(path), "chunk": CHUNK}, data_id="d")
    sg.add_data("x", _data(), "train")
    return sg


def _warm(sg: StoreGate) -> None:
    """Read every chunk twice: a chunk is kept from its second read on."""
    for _ in range(2):
        for row in range(0, ROWS, CHUNK):
            sg["train"]["x"][row]


@pytest.fixture
def record_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The commit-record keys the zarr backend reads from now on."""
    reads: list[str] = []
    real = zarr_backend.read_object_text

    def counting(store: Any, key: str) -> str | None:
        reads.append(key)
        return real(store, key)

    monkeypatch.setattr(zarr_backend, "read_object_text", counting)
    return reads


def test_a_warm_row_reads_no_commit_record_and_the_facade_gives_numpy_rows(
    tmp_path: Path, record_reads: list[str]
) -> None:
    sg = _store(tmp_path / "s.zarr")
    reader = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "mode": "r"}, data_id="d")
    _warm(reader)
    record_reads.clear()
    model = _data()
    for i in [0, 5, 23, -1, -24, 13]:
        np.testing.assert_array_equal(reader["train"]["x"][i], model[i])
        np.testing.assert_array_equal(reader.get_data("x", "train", i), model[i])
        np.testing.assert_array_equal(reader["train"]["x"].get(i), model[i])
    assert record_reads == []  # every row came warm
    row = reader["train"]["x"][2]
    row[:] = -1  # a copy: the cached chunk is not changed through it
    np.testing.assert_array_equal(reader["train"]["x"][2], model[2])
    sg.add_data("x", _data(2, start=500), "train")  # another handle commits
    np.testing.assert_array_equal(reader["train"]["x"][-1], _data(2, start=500)[-1])
    assert record_reads  # the counter moved: the record was read again


def test_out_of_range_and_bad_keys_still_raise_on_the_warm_path(tmp_path: Path) -> None:
    sg = _store(tmp_path / "s.zarr")
    _warm(sg)
    with pytest.raises(IndexError, match="24"):
        sg["train"]["x"][24]
    with pytest.raises(NotFoundError):
        sg["train"]["nope"][0]
    with pytest.raises(NotFoundError):
        sg.get_data("nope", "train", 0)
    assert sg["train"]["x"][-24].tolist() == _data()[0].tolist()


_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from storegate import StoreGate

    path, what = sys.argv[1], sys.argv[2]
    if what == "mode w":
        sg = StoreGate("zarr", {"output_dir": path, "mode": "w", "chunk": 4}, data_id="d")
        sg.add_data("x", np.full((24, 3), 9), "train")
    else:
        sg = StoreGate("zarr", {"output_dir": path}, data_id="d")
        if what == "update":
            sg["train"]["x"][3] = [7, 7, 7]
        elif what == "astype":
            sg.astype("x", "f8", "train")
        elif what == "delete data_id":
            sg.backend_object.delete_data_id("d")  # as `storegate rm` does
    """
)


def _other_process(path: Path, what: str) -> None:
    subprocess.run([sys.executable, "-c", _WRITER, str(path), what], check=True, timeout=120)


def test_every_commit_of_another_process_is_seen_at_the_next_warm_read(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    _store(path)
    reader = StoreGate("zarr", {"output_dir": str(path), "mode": "r"}, data_id="d")
    _warm(reader)
    _other_process(path, "update")
    assert reader["train"]["x"][3].tolist() == [7, 7, 7]
    _warm(reader)
    _other_process(path, "astype")
    assert reader["train"]["x"][3].dtype == np.float64
    _warm(reader)
    _other_process(path, "mode w")
    assert reader["train"]["x"][3].tolist() == [9, 9, 9]
    _warm(reader)
    _other_process(path, "delete data_id")
    with pytest.raises(NotFoundError):
        reader["train"]["x"][3]


def test_a_writer_killed_between_its_counter_writes_leaves_readers_reading_the_record(
    tmp_path: Path, record_reads: list[str]
) -> None:
    sg = _store(tmp_path / "s.zarr")
    _warm(sg)
    backend = sg.backend_object
    poison_counter(backend._root.store, "d")
    record_reads.clear()
    for _ in range(3):
        assert sg["train"]["x"][5].tolist() == _data()[5].tolist()
    assert len(record_reads) >= 3  # an odd counter: every read reads the record
    sg["train"]["x"][5] = [1, 1, 1]  # the next commit makes it even again
    _warm(sg)
    record_reads.clear()
    assert sg["train"]["x"][5].tolist() == [1, 1, 1]
    assert record_reads == []


def test_files_replaced_by_hand_are_seen_within_the_watch_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rm -rf and a store written by something that keeps no counter: seen once the mapping is renewed."""
    monkeypatch.setattr(zarr_backend, "WATCH_NS", 50_000_000)
    path = tmp_path / "s.zarr"
    _store(path)
    reader = StoreGate("zarr", {"output_dir": str(path), "mode": "r"}, data_id="d")
    _warm(reader)
    shutil.rmtree(path)
    other = StoreGate("zarr", {"output_dir": str(path), "chunk": CHUNK}, data_id="d")
    other.add_data("x", _data(start=1000), "train")
    counter = counter_path(other.backend_object._root.store, "d")
    assert counter is not None
    Path(counter).unlink()  # as a writer that keeps no counter leaves it
    time.sleep(0.06)
    assert reader["train"]["x"][3].tolist() == _data(start=1000)[3].tolist()


def test_a_store_on_another_machines_file_system_reads_the_record_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record_reads: list[str]
) -> None:
    monkeypatch.setattr(zarr_backend, "stat_is_fresh", lambda path: False)
    sg = _store(tmp_path / "s.zarr")
    _warm(sg)
    record_reads.clear()
    assert sg["train"]["x"][5].tolist() == _data()[5].tolist()
    assert record_reads  # no counter is trusted there


@pytest.mark.parametrize(
    ("fstype", "fresh"), [("ext4", True), ("tmpfs", True), ("overlay", True), ("nfs4", False), ("fuse.sshfs", False)]
)
def test_stat_is_fresh_goes_by_the_file_system_of_the_longest_mount_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fstype: str, fresh: bool
) -> None:
    store = tmp_path / "my store" / "s.zarr"
    point = str(tmp_path / "my store").replace(" ", "\\040")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        f"40 22 0:40 / {point} rw,relatime shared:2 - {fstype} server:/export rw\n"
    )
    monkeypatch.setattr(commit_counter, "_MOUNTINFO", str(mountinfo))
    assert commit_counter.stat_is_fresh(str(store)) is fresh
    assert commit_counter.stat_is_fresh(str(tmp_path / "elsewhere")) is True  # the root's ext4
    monkeypatch.setattr(commit_counter, "_MOUNTINFO", str(tmp_path / "missing"))
    assert commit_counter.stat_is_fresh(str(store)) is False


def test_the_counter_is_odd_during_a_change_and_new_and_even_after_it_even_when_it_raises(tmp_path: Path) -> None:
    path = str(tmp_path / "locks" / "d.commits")
    assert commit_counter.watch(path) is None  # none yet
    values = []
    with commit_counter.counting(path):
        counter = commit_counter.watch(path)
        assert counter is not None
        values.append(counter[0])
    values.append(counter[0])

    def failing() -> None:
        with commit_counter.counting(path):
            values.append(counter[0])
            raise RuntimeError("a write that failed (it may have landed)")

    with pytest.raises(RuntimeError):
        failing()
    values.append(counter[0])
    commit_counter.poison(path)
    values.append(counter[0])
    with commit_counter.counting(path):
        values.append(counter[0])
    values.append(counter[0])
    assert values == [1, 2, 3, 4, 5, 7, 8]


_WRITES = st.sampled_from(["update", "append", "astype", "rewrite", "delete", "poison"])


@pytest.mark.parametrize("kind", ["zarr", "hybrid"])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(_WRITES, st.integers(0, ROWS - 1), st.lists(st.integers(-ROWS, ROWS - 1))), max_size=6))
def test_a_readers_warm_rows_equal_a_model_under_another_handles_writes(
    kind: str, tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int, list[int]]]
) -> None:
    path = tmp_path_factory.mktemp(kind) / "s.zarr"
    writer = _store(path, kind)
    reader = StoreGate(kind, {"output_dir": str(path), "mode": "r"} if kind == "zarr" else {"output_dir": str(path)})
    reader.set_data_id("d")
    model: np.ndarray | None = _data()
    for what, row, reads in steps:
        if model is not None:
            _warm(reader)
            for i in reads:
                i = i % len(model)
                np.testing.assert_array_equal(reader["train"]["x"][i], model[i])
        if what == "update" and model is not None:
            writer["train"]["x"][row % len(model)] = [row, row, row]
            model = model.copy()
            model[row % len(model)] = row
        elif what == "append" and model is not None:
            writer.add_data("x", _data(2, start=100 * row), "train")
            model = np.concatenate([model, _data(2, start=100 * row)])
        elif what == "astype" and model is not None:
            model = model.astype("i4" if model.dtype == np.int64 else "i8")
            writer.astype("x", model.dtype, "train")
        elif what == "rewrite":
            model = _data(start=row)
            writer.delete_data("x", "train")
            writer.add_data("x", model, "train")
        elif what == "delete":
            writer.delete_data("x", "train")
            model = None
        else:
            poison_counter(writer.backend_object._root.store if kind == "zarr" else _zarr_store(writer), "d")
        if model is None:
            with pytest.raises(NotFoundError):
                reader["train"]["x"][0]
        else:
            np.testing.assert_array_equal(reader["train"]["x"][row % len(model)], model[row % len(model)])


def _zarr_store(sg: StoreGate) -> Any:
    return sg.backend_object.tiers()["zarr"]._root.store


def test_numpy_integers_take_the_warm_path_too(tmp_path: Path, record_reads: list[str]) -> None:
    """rng.integers and loops over arrays give numpy integers: the same rows, as warm as ints."""
    sg = _store(tmp_path / "s.zarr")
    _warm(sg)
    record_reads.clear()
    model = _data()
    for i in [np.int64(5), np.int32(-1), np.uint16(23), np.intp(0)]:
        np.testing.assert_array_equal(sg["train"]["x"][i], model[i])
        np.testing.assert_array_equal(sg.get_data("x", "train", i), model[i])
    assert record_reads == []
    with pytest.raises(IndexError):
        sg["train"]["x"][np.int64(24)]
