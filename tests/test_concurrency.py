"""Several processes writing one store: every row of every successful call lands exactly once.

Real processes (spawned, so each imports storegate afresh), a real local folder and the
real moto S3 server of the session fixture. Each call writes x and y together, y = -x, with
values unique to the process and the call, so a lost, doubled or torn call shows.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from zarr.core.sync import sync

from storegate import ConflictError, InvalidArgumentError, StoreGate
from tests.conftest import S3Server

CALLS, ROWS = 12, 40
SPAWN = multiprocessing.get_context("spawn")


def _append(args: dict[str, Any], worker: int, start: Any, how: str) -> None:
    """One process's calls: add_data, or a writer per call, each x and y of one block of values."""
    sg = StoreGate("zarr", args, data_id="d")
    start.wait()
    for call in range(CALLS):
        values = (worker * 1_000 + call) * ROWS + np.arange(ROWS, dtype=np.int64)
        if how == "writer":
            with sg.writer("train") as w:
                w.add({"x": values[: ROWS // 2], "y": -values[: ROWS // 2]})
                w.add({"x": values[ROWS // 2 :], "y": -values[ROWS // 2 :]})
        else:
            sg.add_data(["x", "y"], [values, -values], phase="train")


def _run(args: dict[str, Any], n_procs: int, how: str = "add_data") -> None:
    StoreGate("zarr", {**args, "mode": "w"}, data_id="d")  # an empty store every worker opens with mode 'a'
    start = SPAWN.Event()
    procs = [SPAWN.Process(target=_append, args=(args, w, start, how)) for w in range(n_procs)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0] * n_procs


def _check_every_row_once(args: dict[str, Any], n_procs: int) -> None:
    sg = StoreGate("zarr", {**args, "mode": "r"}, data_id="d")
    x, y = sg.get_data("x", "train"), sg.get_data("y", "train")
    expected = np.concatenate([(w * 1_000 + c) * ROWS + np.arange(ROWS) for w in range(n_procs) for c in range(CALLS)])
    assert len(x) == len(y) == n_procs * CALLS * ROWS
    np.testing.assert_array_equal(np.sort(x), np.sort(expected))  # every row exactly once
    np.testing.assert_array_equal(y, -x)  # x and y of one call side by side
    # Each call's rows stay one contiguous block (writers never interleave inside a call).
    blocks = x.reshape(-1, ROWS)
    np.testing.assert_array_equal(blocks - blocks[:, :1], np.broadcast_to(np.arange(ROWS), blocks.shape))
    sg.compile()


@pytest.mark.slow
@pytest.mark.parametrize("n_procs", [2, 4])
def test_processes_appending_to_one_variable_of_a_folder_lose_nothing(tmp_path: Path, n_procs: int) -> None:
    args = {"output_dir": str(tmp_path / "store"), "mode": "a"}
    _run(args, n_procs)
    _check_every_row_once(args, n_procs)


@pytest.mark.slow
def test_processes_with_writers_lose_nothing(tmp_path: Path) -> None:
    args = {"output_dir": str(tmp_path / "store"), "mode": "a"}
    _run(args, 2, how="writer")
    _check_every_row_once(args, 2)


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.parametrize("n_procs", [2, 4])
def test_processes_appending_to_one_variable_on_s3_lose_nothing(
    s3_server: S3Server, s3_bucket: str, n_procs: int
) -> None:
    args = {"output_dir": f"s3://{s3_bucket}/store", "storage_options": s3_server.storage_options, "mode": "a"}
    _run(args, n_procs)
    _check_every_row_once(args, n_procs)


def _hold_writer(args: dict[str, Any], held: Any, release: Any) -> None:
    sg = StoreGate("zarr", args, data_id="d")
    with sg.writer("train") as w:
        w.add({"x": np.zeros(3)})  # the first batch takes the lock
        held.set()
        release.wait(60)


def test_a_writer_waiting_too_long_gets_a_conflict_and_writes_nothing(tmp_path: Path) -> None:
    args = {"output_dir": str(tmp_path / "store"), "mode": "a"}
    StoreGate("zarr", args, data_id="d").add_data("x", np.arange(5.0))
    held, release = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=_hold_writer, args=(args, held, release))
    holder.start()
    try:
        assert held.wait(120)
        sg = StoreGate("zarr", {**args, "lock_timeout": 0.5}, data_id="d")
        began = time.monotonic()
        with pytest.raises(ConflictError, match=r"write lock of data_id 'd'.*0\.5|write lock of data_id 'd'"):
            sg.add_data("x", np.arange(2.0))
        assert time.monotonic() - began < 10
    finally:
        release.set()
        holder.join(60)
    assert holder.exitcode == 0
    np.testing.assert_array_equal(
        StoreGate("zarr", args, data_id="d").get_data("x", "train"), np.r_[np.arange(5.0), np.zeros(3)]
    )


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    args = {"output_dir": str(tmp_path / "store"), "mode": "a"}
    handles = [StoreGate("zarr", args, data_id="d") for _ in range(3)]  # one handle per thread
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for c in range(10):
                handles[i].add_data("x", np.full(7, i * 100 + c))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    x = StoreGate("zarr", args, data_id="d").get_data("x", "train")
    assert sorted(np.unique(x).tolist()) == sorted(i * 100 + c for i in range(3) for c in range(10))
    assert all(np.count_nonzero(x == v) == 7 for v in np.unique(x))


@pytest.mark.parametrize("bad", [0, -1, True, float("nan"), "10"])
def test_lock_timeout_must_be_positive_seconds(tmp_path: Path, bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"lock_timeout must be a number of seconds > 0.*Got"):
        StoreGate("zarr", {"output_dir": str(tmp_path), "lock_timeout": bad}, data_id="d")


# --- the S3 lease itself -------------------------------------------------------------------


class _Fs:
    """A store's own asynchronous s3fs (as the Lease gets it from zarr), called synchronously here."""

    def __init__(self, s3_server: S3Server, bucket: str) -> None:
        from zarr.storage import FsspecStore

        self.fs = FsspecStore.from_url(f"s3://{bucket}/store", storage_options=s3_server.storage_options).fs

    def pipe_file(self, path: str, data: bytes) -> None:
        sync(self.fs._pipe_file(path, data))

    def cat_file(self, path: str) -> bytes:
        return bytes(sync(self.fs._cat_file(path)))

    def exists(self, path: str) -> bool:
        return bool(sync(self.fs._exists(path)))


def _lease_fs(s3_server: S3Server, bucket: str) -> _Fs:
    return _Fs(s3_server, bucket)


@pytest.mark.s3
def test_a_lease_is_exclusive_renewed_and_released(s3_server: S3Server, s3_bucket: str) -> None:
    from storegate.locks import Lease

    fs = _lease_fs(s3_server, s3_bucket)
    path = f"{s3_bucket}/store/.storegate/locks/d.lock"
    mine = Lease("data_id 'd'", fs.fs, path, ttl=0.6)
    other = Lease("data_id 'd'", fs.fs, path, ttl=0.6)
    mine.acquire(1.0)
    time.sleep(1.5)  # over twice the time-to-live: only the renewals keep it
    with pytest.raises(ConflictError, match=r"write lease of data_id 'd' for more than 0\.3 s \(held by pid \d+"):
        other.acquire(0.3)
    mine.check()  # still ours
    mine.release()
    assert not fs.exists(path)
    other.acquire(1.0)  # free again
    other.release()


@pytest.mark.s3
def test_an_expired_lease_of_a_crashed_writer_is_taken_over(s3_server: S3Server, s3_bucket: str) -> None:
    import json

    from storegate.locks import Lease

    fs = _lease_fs(s3_server, s3_bucket)
    path = f"{s3_bucket}/store/.storegate/locks/d.lock"
    fs.pipe_file(path, json.dumps({"token": "dead", "pid": 1, "host": "gone", "expires": time.time() - 1}).encode())
    lease = Lease("data_id 'd'", fs.fs, path)
    lease.acquire(2.0)  # no wait for a lease that expired
    assert json.loads(fs.cat_file(path))["token"] != "dead"
    lease.release()


@pytest.mark.s3
def test_a_lease_taken_over_after_a_stall_refuses_to_go_on(s3_server: S3Server, s3_bucket: str) -> None:
    import json

    from storegate.locks import Lease

    fs = _lease_fs(s3_server, s3_bucket)
    path = f"{s3_bucket}/store/.storegate/locks/d.lock"
    lease = Lease("data_id 'd'", fs.fs, path, ttl=0.6)
    lease.acquire(1.0)
    fs.pipe_file(path, json.dumps({"token": "thief", "expires": time.time() + 60}).encode())  # another writer
    time.sleep(0.6)  # the next renewal finds the lease changed
    with pytest.raises(ConflictError, match="taken over by another writer"):
        lease.check()
    lease.release()
    assert json.loads(fs.cat_file(path))["token"] == "thief"  # the new holder's lease is left alone


# --- readers see committed snapshots ---------------------------------------------------------


def test_a_reader_sees_a_writer_block_only_once_it_is_committed(tmp_path: Path) -> None:
    args = {"output_dir": str(tmp_path / "store"), "mode": "a", "chunk": 4}
    writer = StoreGate("zarr", args, data_id="d")
    writer.add_data(["x", "y"], [np.arange(10), -np.arange(10)], phase="train")
    reader = StoreGate("zarr", {**args, "mode": "r"}, data_id="d")
    with writer.writer("train") as w:
        for i in range(5):  # 5 batches of 40 rows: flushed to the store, not committed
            w.add({"x": np.arange(40) + 100 * i, "y": -np.arange(40) - 100 * i})
        late = StoreGate("zarr", {**args, "mode": "r"}, data_id="d")  # opened mid-block
        for sg in (reader, late):
            assert len(sg["train"]) == 10
            np.testing.assert_array_equal(sg.get_data("x", "train"), np.arange(10))
            np.testing.assert_array_equal(sg.get_data("y", "train")[:], -np.arange(10))
    for sg in (reader, late):
        assert len(sg["train"]) == 210  # every read checks the commit record first: the newest commit
        np.testing.assert_array_equal(sg.get_data("y", "train"), -sg.get_data("x", "train"))


def test_a_long_lived_reader_keeps_x_and_y_in_step_while_another_process_appends(tmp_path: Path) -> None:
    args = {"output_dir": str(tmp_path / "store"), "mode": "a", "chunk": 16}
    StoreGate("zarr", args, data_id="d").add_data(["x", "y"], [np.arange(5), -np.arange(5)], phase="train")
    reader = StoreGate("zarr", {**args, "mode": "r"}, data_id="d")
    start = SPAWN.Event()
    proc = SPAWN.Process(target=_append, args=(args, 1, start, "add_data"))
    proc.start()
    start.set()
    seen = set()
    while proc.is_alive() or not seen:
        x, y = reader.get_data(["x", "y"], "train")  # one read: one commit
        assert len(x) == len(y)
        np.testing.assert_array_equal(y, -x)
        assert len(reader["train"]) >= len(x)  # never a phase whose variables disagree (no ValidationError)
        seen.add(len(x))
    proc.join(60)
    assert proc.exitcode == 0
    reader.refresh()
    assert len(reader["train"]) == 5 + CALLS * ROWS


def test_rows_a_failed_process_left_past_the_commit_are_cut_by_the_next_writer(tmp_path: Path) -> None:
    import zarr

    args = {"output_dir": str(tmp_path / "store"), "mode": "a"}
    sg = StoreGate("zarr", args, data_id="d")
    sg.add_data(["x", "y"], [np.arange(6), -np.arange(6)], phase="train")
    zarr.open_array(str(tmp_path / "store" / "d" / "train" / "x"), mode="a").append(np.zeros(3, np.int64))
    zarr.open_group(str(tmp_path / "store" / "d" / "train"), mode="a").create_array("half", shape=(4,), dtype="i8")
    other = StoreGate("zarr", args, data_id="d")
    assert other.get_var_names("train") == ["x", "y"]  # the unfinished variable is not listed
    np.testing.assert_array_equal(other.get_data("x", "train"), np.arange(6))
    other.add_data(["x", "y"], [np.arange(6, 8), -np.arange(6, 8)], phase="train")  # cuts the 3 rows first
    np.testing.assert_array_equal(other.get_data("x", "train"), np.arange(8))
    other.add_data("half", np.arange(8), phase="train")  # a committed variable replaces the unfinished one
    np.testing.assert_array_equal(StoreGate("zarr", args, data_id="d").get_data("half", "train"), np.arange(8))
    other.compile()


def test_a_commit_that_fails_shows_nothing_of_the_call_and_a_retry_lands_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storegate import StorageError
    from storegate.backends import zarr_locking

    args = {"output_dir": str(tmp_path / "store"), "mode": "a", "chunk": 4}
    sg = StoreGate("zarr", args, data_id="d")
    sg.add_data(["x", "y"], [np.arange(6), -np.arange(6)], phase="train")
    real = zarr_locking._write

    def full_disk(store: Any, key: str, text: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zarr_locking, "_write", full_disk)
    with pytest.raises(StorageError, match=r"No space left on device"):  # the call is undone
        sg.add_data(["x", "y"], [np.arange(6, 16), -np.arange(6, 16)], phase="train")
    monkeypatch.setattr(zarr_locking, "_write", real)
    for handle in (sg, StoreGate("zarr", args, data_id="d")):
        np.testing.assert_array_equal(handle.get_data("x", "train"), np.arange(6))
        assert len(handle["train"]) == 6
    sg.add_data(["x", "y"], [np.arange(6, 16), -np.arange(6, 16)], phase="train")  # the retry
    fresh = StoreGate("zarr", args, data_id="d")
    np.testing.assert_array_equal(fresh.get_data("x", "train"), np.arange(16))
    np.testing.assert_array_equal(fresh.get_data("y", "train"), -np.arange(16))


@pytest.mark.s3
def test_a_lease_on_a_server_that_is_gone_is_a_storage_error(s3_server: S3Server) -> None:
    import socket

    from zarr.storage import FsspecStore

    from storegate import StorageError
    from storegate.locks import Lease

    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = {
        **s3_server.storage_options,
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
        "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
    }
    fs = FsspecStore.from_url("s3://nowhere/store", storage_options=options).fs
    began = time.monotonic()
    with pytest.raises(StorageError, match=r"cannot take the write lease nowhere/store/\.storegate/locks/d\.lock"):
        Lease("data_id 'd'", fs, "nowhere/store/.storegate/locks/d.lock").acquire(5.0)
    assert time.monotonic() - began < 30


def test_a_new_data_id_shows_nothing_of_a_writer_block_before_it_commits(tmp_path: Path) -> None:
    args = {"output_dir": str(tmp_path / "store"), "mode": "a", "chunk": 4}
    writer = StoreGate("zarr", args, data_id="fresh")
    with writer.writer("train") as w:
        w.add({"x": np.arange(40), "y": -np.arange(40)})  # flushed: 10 chunks of 4 rows
        reader = StoreGate("zarr", {**args, "mode": "r"}, data_id="fresh")
        assert reader.get_var_names("train") == []
        assert len(reader["train"]) == 0
        assert reader.verify(read_data=False).findings  # flushed rows past the (empty) commit
    assert len(reader["train"]) == 40
    assert reader.verify().ok


def test_a_stale_reader_never_reads_zeros_of_a_deleted_or_rebuilt_variable(tmp_path: Path) -> None:
    args = {"output_dir": str(tmp_path / "store"), "mode": "a", "chunk": 4}
    w = StoreGate("zarr", args, data_id="d")
    w.add_data(["x", "y"], [np.arange(10), np.arange(1, 11)], phase="train")
    r = StoreGate("zarr", {**args, "mode": "r"}, data_id="d")
    r.get_data("y", "train")  # caches y's metadata
    w.delete_data("y", phase="train")
    with pytest.raises(KeyError):
        r.get_data("y", "train")
    w.delete_data("x", phase="train")
    w.add_data("y", np.array([70, 71]), phase="train")
    np.testing.assert_array_equal(r.get_data("y", "train"), [70, 71])
    assert len(r["train"]) == 2
    StoreGate("zarr", {**args, "mode": "w"}, data_id="d").add_data("y", np.arange(50, 54), phase="train")
    np.testing.assert_array_equal(r.get_data("y", "train"), np.arange(50, 54))


def test_a_second_handle_of_this_process_cannot_write_under_an_open_writer(tmp_path: Path) -> None:
    args = {"output_dir": str(tmp_path / "store"), "mode": "a"}
    logger, data = StoreGate("zarr", args, data_id="run"), StoreGate("zarr", args, data_id="run")
    logger.add_data("loss", np.array([0.5]), phase="train")
    with data.writer("train") as w:
        w.add({"loss": np.array([1.0, 2.0, 3.0])})
        with pytest.raises(ConflictError, match=r"another StoreGate of this process.*Nothing was written"):
            logger.add_data("loss", np.array([99.0]), phase="train")
        with pytest.raises(ConflictError):
            logger.repair()
        with pytest.raises(ConflictError, match=r"while a sg\.writer\(\) block of this thread is open"):
            data.repair()  # its own open writer's rows would be cut
        w.add({"loss": np.array([4.0])})
    np.testing.assert_array_equal(logger.get_data("loss", "train"), [0.5, 1, 2, 3, 4])
    logger.add_data("loss", np.array([99.0]), phase="train")  # once the writer closed
    np.testing.assert_array_equal(data.get_data("loss", "train"), [0.5, 1, 2, 3, 4, 99])


def test_repair_from_a_fresh_handle_reports_what_it_cut(tmp_path: Path) -> None:
    import zarr

    args = {"output_dir": str(tmp_path / "store"), "mode": "a"}
    StoreGate("zarr", args, data_id="d").add_data("x", np.arange(5), phase="train")
    zarr.open_array(str(tmp_path / "store" / "d" / "train" / "x"), mode="a").append(np.zeros(3, np.int64))
    removed = StoreGate("zarr", args, data_id="d").repair()
    assert [(f.path, "3 rows past the last commit" in f.what) for f in removed] == [("d/train/x", True)]


# --- the breaker's finds ------------------------------------------------------------------------


def test_threads_sharing_one_handle_take_turns_and_see_only_commits(tmp_path: Path) -> None:
    args = {"output_dir": str(tmp_path / "store"), "mode": "a", "chunk": 4}
    sg = StoreGate("zarr", args, data_id="d")
    sg.add_data(["x", "y"], [np.arange(4), -np.arange(4)], phase="train")
    in_block, seen, errors = threading.Event(), [], []

    def block() -> None:
        with sg.writer("train") as w:
            for i in range(20):
                w.add({"x": np.arange(5) + 1000 + 5 * i, "y": -(np.arange(5) + 1000 + 5 * i)})
                in_block.set()
                time.sleep(0.002)

    def appends() -> None:
        try:
            in_block.wait(10)
            for i in range(10):
                sg.add_data(["x", "y"], [np.arange(3) + 5000 + 3 * i, -(np.arange(3) + 5000 + 3 * i)], phase="train")
                x, y = sg.get_data(["x", "y"], "train")
                seen.append(len(x) - len(y))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=block), threading.Thread(target=appends)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert set(seen) == {0}
    x, y = StoreGate("zarr", args, data_id="d").get_data(["x", "y"], "train")
    assert len(x) == 4 + 100 + 30
    np.testing.assert_array_equal(y, -x)
    assert len(np.unique(x)) == len(x)


def test_a_reader_thread_of_the_writing_handle_sees_only_commits(tmp_path: Path) -> None:
    args = {"output_dir": str(tmp_path / "store"), "mode": "a", "chunk": 4}
    sg = StoreGate("zarr", args, data_id="d")
    sg.add_data(["x", "y"], [np.arange(4), -np.arange(4)], phase="train")
    lengths: list[int] = []
    with sg.writer("train") as w:
        w.add({"x": np.arange(40), "y": -np.arange(40)})
        reader = threading.Thread(target=lambda: lengths.append(len(sg["train"])))
        reader.start()
        reader.join(30)
    assert lengths == [4]


def test_a_writer_must_close_in_its_own_thread(tmp_path: Path) -> None:
    from storegate import StoreGateError

    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "store")}, data_id="d")
    w = sg.writer("train")
    w.add({"x": np.arange(3)})
    errors: list[BaseException] = []

    def close_elsewhere() -> None:
        try:
            w.close()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=close_elsewhere)
    t.start()
    t.join(30)
    assert len(errors) == 1
    assert isinstance(errors[0], StoreGateError)
    assert "in the thread that added its first batch" in str(errors[0])
    w.close()
    np.testing.assert_array_equal(sg.get_data("x", "train"), np.arange(3))
    sg.add_data("x", np.arange(3, 5))  # the lock was released
    assert len(sg["train"]) == 5


@pytest.mark.s3
def test_a_lease_holder_that_stalled_writes_nothing_more(s3_server: S3Server, s3_bucket: str) -> None:
    from storegate.locks import Lease

    fs = _lease_fs(s3_server, s3_bucket)
    lease = Lease("data_id 'd'", fs.fs, f"{s3_bucket}/store/.storegate/locks/d.lock", ttl=0.6)
    lease.acquire(2.0)
    lease._stop.set()  # as if the process stalled: no renewal happens
    time.sleep(0.55)  # past 80 % of the time-to-live, before anyone may take it over
    with pytest.raises(ConflictError, match="taken over by another writer"):
        lease.check()
    lease.release()


def test_a_data_id_of_255_bytes_is_written_on_a_folder(tmp_path: Path) -> None:
    name = "d" * 255
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "store")}, data_id=name)
    sg.add_data("x", np.arange(3), phase="train")
    sg.add_data("x", np.arange(3, 5), phase="train")
    assert len(StoreGate("zarr", {"output_dir": str(tmp_path / "store"), "mode": "r"}, data_id=name)["train"]) == 5
    assert sg.verify().ok


@pytest.mark.parametrize("rows", ['{"train": {"x": -3}}', '{"train": {"x": 7.9}}', '{"train": {"x": true}}', "oops"])
def test_a_damaged_commit_record_is_named_by_every_call_and_by_verify(tmp_path: Path, rows: str) -> None:
    from storegate import StoreGateError

    args = {"output_dir": str(tmp_path / "store")}
    StoreGate("zarr", args, data_id="d").add_data("x", np.arange(10), phase="train")
    record = tmp_path / "store" / ".storegate" / "commits" / "d.json"
    record.write_text('{"token": "t", "rows": ' + rows + "}" if rows != "oops" else "oops")
    sg = StoreGate("zarr", args, data_id="d")
    with pytest.raises(StoreGateError, match=r"the commit record '\.storegate/commits/d\.json' must be storegate's"):
        sg.get_data("x", "train")
    with pytest.raises(StoreGateError, match="must be storegate's JSON"):
        sg.add_data("x", np.arange(2), phase="train")
    assert "must be storegate's JSON" in str(sg.verify())
    record.unlink()  # as the message says
    assert len(sg["train"]) == 10


def test_verify_reports_committed_rows_that_are_missing(tmp_path: Path) -> None:
    import zarr

    args = {"output_dir": str(tmp_path / "store")}
    sg = StoreGate("zarr", args, data_id="d")
    sg.add_data("x", np.arange(10), phase="train")
    zarr.open_array(str(tmp_path / "store" / "d" / "train" / "x"), mode="a").resize((6,))
    assert "4 committed rows are missing (10 committed, 6 stored)" in str(sg.verify())


@pytest.mark.parametrize("how", ["mode_w", "delete_data_id"])
def test_emptying_a_store_or_a_data_id_waits_for_its_writers(tmp_path: Path, how: str) -> None:
    root = tmp_path / "store"
    args = {"output_dir": str(root), "mode": "a"}
    StoreGate("zarr", args, data_id="d").add_data("x", np.arange(5.0))
    held, release = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=_hold_writer, args=(args, held, release))
    holder.start()

    def empty(timeout: float) -> None:
        if how == "mode_w":
            StoreGate("zarr", {**args, "mode": "w", "lock_timeout": timeout})
        else:
            StoreGate("zarr", {**args, "lock_timeout": timeout}, data_id="d").backend_object.delete_data_id("d")

    try:
        assert held.wait(120)
        with pytest.raises(ConflictError, match="write lock of data_id 'd'"):
            empty(0.5)  # the open writer keeps it: nothing deleted
        assert len(StoreGate("zarr", args, data_id="d").get_data("x", "train")) == 5
    finally:
        release.set()
        holder.join(60)
    assert holder.exitcode == 0
    assert len(StoreGate("zarr", args, data_id="d").get_data("x", "train")) == 8  # the writer's rows landed
    empty(30)
    assert StoreGate("zarr", {**args, "mode": "r"}).get_data_ids() == []
    assert (root / ".storegate" / "locks" / "d.lock").exists()  # a lock others may wait on is never deleted
    sg = StoreGate("zarr", args, data_id="d")
    sg.add_data("x", np.arange(2.0))
    np.testing.assert_array_equal(sg.get_data("x", "train"), np.arange(2.0))


def test_reader_and_writer_threads_of_one_handle_lose_no_row_and_read_no_torn_call(tmp_path: Path) -> None:
    # A reader thread once dropped the arrays a writer thread of the same handle was appending
    # through: the writer then committed the shape of an array opened before its append (rows
    # lost), and reads mixed two commits (x and y of different lengths).
    threads_share_one_handle("zarr", tmp_path)


def threads_share_one_handle(backend: str, tmp_path: Path) -> None:
    """Two writer threads and a reader thread on one StoreGate: every row once, no torn read."""
    for trial in range(4):
        sg = StoreGate(backend, {"output_dir": str(tmp_path / str(trial))}, data_id="d")
        torn: list[tuple[int, int]] = []

        def write(worker: int, sg: StoreGate = sg) -> None:
            for call in range(5):
                sg.add_data(["x", "y"], [np.full(2, worker * 10 + call)] * 2, phase="train")

        def read(sg: StoreGate = sg, torn: list[tuple[int, int]] = torn) -> None:
            for _ in range(40):
                if sg.get_var_names("train"):
                    x, y = sg.get_data(["x", "y"], "train")
                    if len(x) != len(y) or not np.array_equal(x, y):
                        torn.append((len(x), len(y)))

        threads = [threading.Thread(target=write, args=(w,)) for w in range(2)] + [threading.Thread(target=read)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not torn
        x = StoreGate(backend, {"output_dir": str(tmp_path / str(trial)), "mode": "r"}, data_id="d").get_data("x")
        assert sorted(x.tolist()) == sorted([w * 10 + c for w in range(2) for c in range(5)] * 2)
