"""The icechunk backend: one commit per call, versions a training run can pin, conflicts between writers."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from storegate import ConflictError, InvalidArgumentError, NotFoundError, ReadOnlyError, StoreGate, StoreGateError
from storegate.backends.icechunk_backend import IcechunkBackend
from storegate.backends.zarr_backend import ZarrBackend
from storegate.testing import MIXINS, GetDataIndexTests
from tests.icechunk_worker import CALLS, append_until_committed

pytest.importorskip("icechunk")

SPAWN = multiprocessing.get_context("spawn")
#: Writer processes in the test of writers in several processes.
PROCESSES = 3


def _open(path: Path, **args: object) -> StoreGate:
    return StoreGate("icechunk", {"output_dir": str(path), **args}, data_id="d")


def _messages(sg: StoreGate) -> list[str]:
    return [message for _, message in sg.backend_object.history()]  # type: ignore[attr-defined]


class TestIcechunkConformance(*(m for m in MIXINS if m is not GetDataIndexTests)):  # type: ignore[misc]
    """The conformance suite on a repository in a local folder.

    Without ``GetDataIndexTests`` (135 tests of read index forms, which the zarr backend's
    suite covers: the icechunk backend only changes where the bytes come from).
    """

    @pytest.fixture
    def sg(self, tmp_path: Path) -> StoreGate:
        return StoreGate("icechunk", {"output_dir": str(tmp_path / "repo")}, data_id="conf")

    backend = "icechunk"


def test_write_commit_and_read_an_older_version(tmp_path: Path) -> None:
    sg = _open(tmp_path / "repo")
    sg.add_data("x", np.arange(10), phase="train")
    first = sg.version
    sg.add_data("x", np.arange(10, 15), phase="train")
    sg.update_data("x", np.zeros(15, dtype=np.int64), phase="train")
    assert sg.version != first
    assert _messages(sg)[:3] == ["storegate update_data: data_id 'd'", *["storegate add_data: data_id 'd'"] * 2]

    pinned = _open(tmp_path / "repo", version=first)
    assert pinned.version == first
    np.testing.assert_array_equal(pinned.get_data("x", "train"), np.arange(10))  # the data as they were
    np.testing.assert_array_equal(sg.get_data("x", "train"), np.zeros(15))
    with pytest.raises(ReadOnlyError, match="must be opened without version to be written"):
        pinned.add_data("x", np.arange(3), phase="train")
    # Worker processes reopen the snapshot their parent reads.
    assert sg.backend_object.reopen_args()["version"] == sg.version  # type: ignore[index]


def test_a_tag_pins_a_version_and_readers_follow_the_branch(tmp_path: Path) -> None:
    sg = _open(tmp_path / "repo")
    sg.add_data("x", np.arange(4), phase="train")
    sg.backend_object.repository.create_tag("v1", sg.version)  # type: ignore[attr-defined]
    reader = _open(tmp_path / "repo", mode="r")
    assert len(reader.get_data("x", "train")) == 4
    sg.add_data("x", np.arange(4), phase="train")
    assert len(reader.get_data("x", "train")) == 8  # a reader of the branch sees the newest commit
    assert len(_open(tmp_path / "repo", version="v1").get_data("x", "train")) == 4
    with pytest.raises(NotFoundError, match="snapshot id or a tag"):
        _open(tmp_path / "repo", version="no-such-tag")
    with pytest.raises(InvalidArgumentError, match="mode must be 'r'"):
        _open(tmp_path / "repo", version="v1", mode="a")


def test_two_writers_of_one_data_id_conflict_and_nothing_is_lost(tmp_path: Path) -> None:
    first, second = _open(tmp_path / "repo"), _open(tmp_path / "repo")
    first.add_data("x", np.arange(4), phase="train")
    writer = second.writer(phase="train")  # its call (and session) begins at 4 rows
    writer.add({"x": np.full(3, -1)})
    first.add_data("x", np.arange(4, 6), phase="train")  # commits first
    before = _messages(first)
    with pytest.raises(ConflictError, match="another writer committed"):
        writer.close()
    assert _messages(first) == before  # the loser committed nothing
    np.testing.assert_array_equal(_open(tmp_path / "repo").get_data("x", "train"), np.arange(6))
    second.add_data("x", np.full(3, -1), phase="train")  # a retry plans from the newest commit
    np.testing.assert_array_equal(first.get_data("x", "train"), [*range(6), -1, -1, -1])


def test_writers_in_several_processes_lose_no_commit(tmp_path: Path) -> None:
    # Without storegate's commit lock, icechunk on a folder lost about 4% of such commits
    # silently (4 processes, 25 calls each: 288 of 300 rows).
    path = str(tmp_path / "repo")
    _open(tmp_path / "repo")
    workers = [SPAWN.Process(target=append_until_committed, args=(path, w)) for w in range(PROCESSES)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
        assert process.exitcode == 0
    sg = _open(tmp_path / "repo")
    x, y = sg.get_data("x", "train"), sg.get_data("y", "train")
    np.testing.assert_array_equal(x, y)  # every call whole
    values, counts = np.unique(x, return_counts=True)
    assert sorted(values) == [w * 100 + c for w in range(PROCESSES) for c in range(CALLS)]  # every call once
    assert set(counts) == {2}


def test_two_writers_creating_one_store_and_data_id_both_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As processes starting together do: each plans the new store (and data_id) before the
    # other commits it. The one that commits second finds it there, and uses it.
    path = str(tmp_path / "repo")
    first_session = IcechunkBackend._first_session
    begin = IcechunkBackend._begin
    others: list[StoreGate] = []

    def first_session_then_another_opens(self: IcechunkBackend, mode: str) -> Any:
        session = first_session(self, mode)
        if not others:
            others.append(None)  # type: ignore[arg-type] (the other one below opens as usual)
            others[0] = StoreGate("icechunk", {"output_dir": path})  # creates the store, commits first
        return session

    monkeypatch.setattr(IcechunkBackend, "_first_session", first_session_then_another_opens)
    late = StoreGate("icechunk", {"output_dir": path})
    monkeypatch.undo()
    assert _messages(late).count("storegate: create the store") == 1

    def begin_then_another_creates(self: IcechunkBackend) -> None:
        begin(self)
        if self is late.backend_object and not others[0].get_data_ids():
            others[0].set_data_id("d")  # commits the same new data_id first

    monkeypatch.setattr(IcechunkBackend, "_begin", begin_then_another_creates)
    late.set_data_id("d")
    assert late.get_data_ids() == ["d"]
    assert _messages(late).count("storegate set_data_id: data_id 'd'") == 1


def test_threads_of_one_handle_take_turns(tmp_path: Path) -> None:
    sg = _open(tmp_path / "repo")
    seen: list[int] = []

    def write(worker: int) -> None:
        for call in range(5):
            sg.add_data(["x", "y"], [np.full(2, worker * 10 + call)] * 2, phase="train")

    def read() -> None:  # reads while the writers take turns
        for _ in range(20):
            seen.append(len(sg.get_data("x", "train")) if sg.get_var_names("train") else 0)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(2)] + [threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(np.unique(sg.get_data("x", "train"))) == [w * 10 + c for w in range(2) for c in range(5)]
    assert _messages(sg).count("storegate add_data: data_id 'd'") == 10
    assert len(seen) == 20


def test_writers_of_different_data_ids_both_commit(tmp_path: Path) -> None:
    first = _open(tmp_path / "repo")
    other = StoreGate("icechunk", {"output_dir": str(tmp_path / "repo")}, data_id="e")
    writer = first.writer(phase="train")
    writer.add({"x": np.arange(3)})
    other.add_data("y", np.arange(5), phase="train")
    writer.close()  # rebased onto the other commit: it changed another data_id
    assert _messages(first)[:2] == ["storegate writer.close: data_id 'd'", "storegate add_data: data_id 'e'"]
    fresh = _open(tmp_path / "repo")
    np.testing.assert_array_equal(fresh.get_data("x", "train"), np.arange(3))
    fresh.set_data_id("e")
    np.testing.assert_array_equal(fresh.get_data("y", "train"), np.arange(5))


def test_a_failed_call_leaves_no_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sg = _open(tmp_path / "repo")
    sg.add_data("x", np.arange(4), phase="train")
    version, before = sg.version, _messages(sg)

    def fail(self: ZarrBackend, data_id: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ZarrBackend, "commit", fail)  # the last step of the call's transaction
    with pytest.raises(OSError, match="disk full"):
        sg.add_data(["x", "y"], [np.arange(4, 8), np.arange(4)], phase="train")
    monkeypatch.undo()
    assert sg.version == version
    assert _messages(_open(tmp_path / "repo")) == before
    assert sg.get_var_names("train") == ["x"]
    np.testing.assert_array_equal(_open(tmp_path / "repo").get_data("x", "train"), np.arange(4))
    writer = sg.writer(phase="train")  # an aborted writer: no commit either
    writer.add({"x": np.arange(3)})
    writer.abort()
    assert _messages(sg) == before
    np.testing.assert_array_equal(sg.get_data("x", "train"), np.arange(4))


def test_mode_w_is_one_commit_and_history_keeps_the_old_data(tmp_path: Path) -> None:
    sg = _open(tmp_path / "repo")
    sg.add_data("x", np.arange(4), phase="train")
    old = sg.version
    assert StoreGate("icechunk", {"output_dir": str(tmp_path / "repo"), "mode": "w"}).get_data_ids() == []
    assert _open(tmp_path / "repo", version=old).get_data_ids() == ["d"]


def test_refuses_what_is_not_a_repository(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InvalidArgumentError, match="other files"):
        _open(tmp_path / "other")
    with pytest.raises(NotFoundError, match="icechunk repository"):
        _open(tmp_path / "none", mode="r")
    with pytest.raises(InvalidArgumentError, match="its own S3 client"):  # s3fs's options are not icechunk's
        StoreGate("icechunk", {"output_dir": "s3://bucket/repo", "storage_options": {"config_kwargs": {}}})


def _open_in_child(path: str, found: multiprocessing.Queue[str]) -> None:
    try:
        StoreGate("icechunk", {"output_dir": path}, data_id="d").get_data("x", "train")
        found.put("opened")
    except StoreGateError as exc:
        found.put(str(exc))


def test_a_child_forked_after_icechunk_ran_fails_at_once(tmp_path: Path) -> None:
    # icechunk's runtime does not survive fork(): its first request in the child would hang.
    _open(tmp_path / "repo").add_data("x", np.arange(3), phase="train")
    fork = multiprocessing.get_context("fork")
    found: multiprocessing.Queue[str] = fork.Queue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: fork() of a process with threads
        child = fork.Process(target=_open_in_child, args=(str(tmp_path / "repo"), found))
        child.start()
    child.join(timeout=60)
    assert "multiprocessing_context='spawn'" in found.get(timeout=5)


def test_without_icechunk_the_error_says_what_to_install() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["icechunk"] = None  # as if it were not installed
        import storegate
        try:
            storegate.StoreGate("icechunk", {"output_dir": "unused"})
        except storegate.StoreGateError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "pip install 'storegate[icechunk]'" in out.stdout


@pytest.mark.s3
def test_versions_and_conflicts_on_s3(s3_server: object, s3_bucket: str) -> None:
    options = s3_server.storage_options  # type: ignore[attr-defined]
    args = {"output_dir": f"s3://{s3_bucket}/repo", "storage_options": options}
    first, second = (StoreGate("icechunk", args, data_id="d") for _ in range(2))
    first.add_data("x", np.arange(4), phase="train")
    version = first.version
    writer = second.writer(phase="train")
    writer.add({"x": np.full(2, -1)})
    first.add_data("x", np.arange(4, 6), phase="train")
    with pytest.raises(ConflictError):
        writer.close()
    pinned = StoreGate("icechunk", {**args, "version": version}, data_id="d")
    np.testing.assert_array_equal(pinned.get_data("x", "train"), np.arange(4))
    np.testing.assert_array_equal(second.get_data("x", "train"), np.arange(6))


def test_reader_and_writer_threads_of_one_handle_neither_deadlock_nor_tear(tmp_path: Path) -> None:
    # A listing in a reader thread and a write in another once deadlocked inside icechunk's session.
    from tests.test_concurrency import threads_share_one_handle

    threads_share_one_handle("icechunk", tmp_path)
