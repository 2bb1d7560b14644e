"""Rewrites in place (update, shuffle, astype, delete) behind an undo journal.

A rewrite journals the committed objects it will change, flags the commit record, writes in
place and commits. Checked here: the journal's own format; readers that see the last commit
while a rewrite runs (a writer thread held mid-call) and after it was killed (a real
process SIGKILLed right after its first write in place, on a folder and on the S3 server);
verify() and repair() after such a kill; and journals left by a call killed before it wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from storegate import StoreGate, StoreGateError
from storegate.backends.zarr_backend import ZarrBackend
from storegate.backends.zarr_journal import CommittedView, Entry, committed_objects, decode, encode
from tests.conftest import S3Server

ROWS = 40


def _fill(args: dict[str, Any]) -> StoreGate:
    sg = StoreGate("zarr", {**args, "chunk": 8}, data_id="d")
    x = np.arange(ROWS, dtype=np.int64)
    sg.add_data(["x", "y"], [x, -x], phase="train")
    sg.add_data("z", x * 10, phase="valid")
    sg.compile()
    return sg


def _snapshot(sg: StoreGate) -> dict[str, Any]:
    sg.refresh()
    return {p: {v: sg.get_data(v, p) for v in sg.get_var_names(p)} for p in ("train", "valid", "test")}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        a[p].keys() == b[p].keys()
        and all(a[p][v].dtype == b[p][v].dtype and np.array_equal(a[p][v], b[p][v]) for v in a[p])
        for p in a
    )


#: Each rewrite, as code run on a StoreGate ``sg`` of data_id 'd' (also in a child process).
REWRITES = {
    "update": "sg.update_data(['x', 'y'], [np.full(12, 7), np.full(12, -7)], phase='train', index=(2, 14))",
    "shuffle": "sg.shuffle(phase='train', seed=3)",
    "astype": "sg.astype('x', 'f8', phase='train')",
    "delete": "sg.delete_data('z', 'valid')",
}

# --- the journal's own format -------------------------------------------------------------

_objects = st.dictionaries(st.text(min_size=1, max_size=12), st.none() | st.binary(max_size=40), max_size=6)


@given(_objects, st.booleans(), st.lists(st.integers(0, 10**6), max_size=3))
def test_an_entry_reads_back_as_written(objects: dict[str, bytes | None], whole: bool, shape: list[int]) -> None:
    entry = Entry("train", "x", tuple(shape), whole, objects)
    assert decode(encode(entry), "e") == entry


@pytest.mark.parametrize("damage", [lambda b: b[:-1], lambda b: b"XXXX" + b[4:], lambda b: b[:10]])
def test_a_damaged_entry_is_an_error_naming_it(damage: Callable[[bytes], bytes]) -> None:
    data = encode(Entry("train", "x", (3,), False, {"zarr.json": b"{}", "c/0": b"12345"}))
    with pytest.raises(StoreGateError, match=r"journal entry 'k/0\.entry'"):
        decode(damage(data), "k/0.entry")


def test_the_oldest_entry_of_an_object_is_the_committed_one() -> None:
    first = Entry("train", "x", (8,), False, {"zarr.json": b"m0", "c/0": b"a0"})
    then_whole = Entry("train", "x", (8,), True, {"zarr.json": b"m1", "c/0": b"a1", "c/1": b"b1"})
    merged = committed_objects([first, then_whole])[("train", "x")]
    assert merged.objects == {"zarr.json": b"m0", "c/0": b"a0", "c/1": b"b1"}
    assert merged.whole


def test_a_committed_view_serves_byte_ranges_of_journalled_objects() -> None:
    import zarr
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    store = zarr.storage.MemoryStore()
    proto = default_buffer_prototype()
    sync(store.set("a/v/c/9", proto.buffer.from_bytes(b"later")))
    sync(store.set("a/w/c/0", proto.buffer.from_bytes(b"other")))
    view = CommittedView(store, "a/v", Entry("p", "v", (1,), True, {"c/0": b"0123456789"}))
    for request, want in [
        (None, b"0123456789"),
        (RangeByteRequest(2, 5), b"234"),
        (OffsetByteRequest(7), b"789"),
        (SuffixByteRequest(3), b"789"),
    ]:
        got = sync(view.get("a/v/c/0", proto, request))
        assert got is not None
        assert got.to_bytes() == want
    assert sync(view.get("a/v/c/9", proto)) is None  # written by the rewrite: not committed
    other = sync(view.get("a/w/c/0", proto))
    assert other is not None
    assert other.to_bytes() == b"other"


# --- readers while a rewrite runs -----------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(REWRITES))
def test_a_reader_sees_the_last_commit_while_a_rewrite_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    args = {"output_dir": str(tmp_path / "s")}
    writer = _fill(args)
    reader = StoreGate("zarr", args, data_id="d")
    before = _snapshot(reader)
    wrote, release = threading.Event(), threading.Event()

    def held(original: Callable[..., Any]) -> Callable[..., Any]:
        def method(self: ZarrBackend, *a: Any, **k: Any) -> Any:
            out = original(self, *a, **k)
            if self is writer.backend_object and threading.current_thread() is not threading.main_thread():
                wrote.set()
                release.wait(30)
            return out

        return method

    for name in ("write", "replace", "detach"):
        monkeypatch.setattr(ZarrBackend, name, held(getattr(ZarrBackend, name)))
    thread = threading.Thread(target=lambda: exec(REWRITES[kind], {"sg": writer, "np": np}))
    thread.start()
    try:
        assert wrote.wait(30), "the rewrite never wrote in place"
        assert _same(_snapshot(reader), before)  # mid-rewrite: the last commit, whole
        assert reader.get_var_names("valid") == ["z"]
    finally:
        release.set()
        thread.join(30)
    after = _snapshot(reader)
    assert not _same(after, before)  # committed now: the reader sees the rewrite
    assert _same(after, _snapshot(StoreGate("zarr", args, data_id="d")))
    assert not list((tmp_path / "s" / ".storegate" / "journal").rglob("*.entry"))  # cleared after the commit


def test_a_reader_thread_of_the_rewriting_handle_waits_for_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sg = _fill({"output_dir": str(tmp_path / "s")})
    wrote, release = threading.Event(), threading.Event()
    original = ZarrBackend.write

    def held(self: ZarrBackend, *a: Any, **k: Any) -> None:
        original(self, *a, **k)
        wrote.set()
        release.wait(30)

    monkeypatch.setattr(ZarrBackend, "write", held)
    writer = threading.Thread(target=lambda: exec(REWRITES["update"], {"sg": sg, "np": np}))
    writer.start()
    assert wrote.wait(30)
    seen: list[np.ndarray] = []
    reader = threading.Thread(target=lambda: seen.append(sg.get_data("y", "train")))
    reader.start()
    reader.join(0.3)
    assert reader.is_alive()  # it waits: the handle's arrays show x rewritten, y not yet
    release.set()
    writer.join(30)
    reader.join(30)
    assert np.array_equal(seen[0][2:14], np.full(12, -7))  # the committed update, whole


def _interleaved(monkeypatch: pytest.MonkeyPatch, reader: StoreGate, act: Callable[[], None]) -> list[int]:
    """Run ``act`` each time ``reader`` has read x and before it reads y; how often it ran."""
    original, fired = ZarrBackend.read, []

    def read(self: ZarrBackend, data_id: str, phase: str, var: str, selection: Any) -> np.ndarray:
        out = original(self, data_id, phase, var, selection)
        if self is reader.backend_object and var == "x":
            fired.append(1)
            act()
        return out

    monkeypatch.setattr(ZarrBackend, "read", read)
    return fired


def test_a_read_during_which_a_rewrite_began_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = {"output_dir": str(tmp_path / "s")}
    writer = _fill(args)
    # No decoded chunks kept: the second read reaches the store (a cached one would not read x at all).
    reader = StoreGate("zarr", {**args, "chunk_cache_bytes": 0}, data_id="d")
    reader.get_data(["x", "y"], "train")  # its cache holds the commit before the update

    def update_once() -> None:
        if len(fired) == 1:
            exec(REWRITES["update"], {"sg": writer, "np": np})

    fired = _interleaved(monkeypatch, reader, update_once)
    x, y = reader.get_data(["x", "y"], "train")
    assert len(fired) == 2  # x read, the update ran, y read: read again, whole
    np.testing.assert_array_equal(y, -x)
    np.testing.assert_array_equal(x[2:14], np.full(12, 7))


def test_a_read_begun_under_a_delete_and_ended_after_a_re_add_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reader opens x through the delete's journal; before it reads x's chunks the delete
    # commits, frees them, and x comes back with new values: it must not read zeros or a mix.
    args = {"output_dir": str(tmp_path / "s")}
    writer = _fill(args)
    reader = StoreGate("zarr", args, data_id="d")
    old = reader.get_data("x", "train")
    detached, release = threading.Event(), threading.Event()
    original_detach, original_view = ZarrBackend.detach, ZarrBackend._committed_array

    def held_detach(self: ZarrBackend, *a: Any, **k: Any) -> Any:
        out = original_detach(self, *a, **k)
        if self is writer.backend_object:
            detached.set()
            release.wait(30)
        return out

    new = np.arange(ROWS // 2, dtype=np.int64) + 1000  # fewer rows: x's old metadata over new chunks shows zeros

    def delete_and_add() -> None:
        writer.delete_data("x", "train")
        writer.add_data("x", new, "train")

    def view_then_finish(self: ZarrBackend, *a: Any, **k: Any) -> Any:
        out = original_view(self, *a, **k)
        if self is reader.backend_object and not release.is_set():
            release.set()
            thread.join(30)  # committed, chunks freed, x written anew: all before the reader reads x
        return out

    monkeypatch.setattr(ZarrBackend, "detach", held_detach)
    monkeypatch.setattr(ZarrBackend, "_committed_array", view_then_finish)
    thread = threading.Thread(target=delete_and_add)
    thread.start()
    assert detached.wait(30)
    x = reader.get_data("x", "train")
    assert release.is_set()  # the reader went through the journal
    assert np.array_equal(x, new) or np.array_equal(x, old), x


def test_commits_of_appends_during_a_read_need_no_second_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = {"output_dir": str(tmp_path / "s")}
    writer = _fill(args)
    reader = StoreGate("zarr", args, data_id="d")
    fired = _interleaved(
        monkeypatch, reader, lambda: writer.add_data(["x", "y"], [np.ones(2, "i8"), -np.ones(2, "i8")], "train")
    )
    x, y = reader.get_data(["x", "y"], "train")
    assert len(fired) == 1  # rows appended meanwhile stay past the commit this read saw
    assert len(x) == len(y) == ROWS
    np.testing.assert_array_equal(y, -x)


# --- a rewrite killed midway ----------------------------------------------------------------

KILLED = """
import os, signal, sys, json, numpy as np
from storegate import StoreGate
from storegate.backends.zarr_backend import ZarrBackend
from storegate.locks import Lease
Lease.__init__.__defaults__ = (3.0,)  # an S3 lease the kill leaves behind expires in 3 s, not 60 s
args, kind, where = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
sg = StoreGate("zarr", args, data_id="d")
def killing(original):
    def method(self, *a, **k):
        out = original(self, *a, **k)
        os.kill(os.getpid(), signal.SIGKILL)
    return method
if where == "before":  # journalled, the record not flagged yet
    ZarrBackend._flag_rewrite = lambda self, data_id: os.kill(os.getpid(), signal.SIGKILL)
else:  # right after the first write in place
    for name in ("write", "replace", "detach"):
        setattr(ZarrBackend, name, killing(getattr(ZarrBackend, name)))
exec(REWRITE, {"sg": sg, "np": np})
print("not killed")
"""


def _kill_midway(args: dict[str, Any], kind: str, where: str, rewrite: str | None = None) -> None:
    code = KILLED.replace("REWRITE", repr(rewrite or REWRITES[kind]))
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args), kind, where], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -9, done.stdout + done.stderr


def _killed_rewrite_is_put_back(args: dict[str, Any], kind: str) -> None:
    before = _snapshot(_fill({**args, "mode": "w"}))
    _kill_midway(args, kind, "after")
    reader = StoreGate("zarr", {**args, "mode": "r"}, data_id="d")
    assert _same(_snapshot(reader), before)  # before any repair: readers see the last commit
    found = StoreGate("zarr", args, data_id="d").verify(read_data=False)
    assert any("did not finish" in f.what and f.repairable for f in found.findings), found
    sg = StoreGate("zarr", args, data_id="d")
    repaired = sg.repair()
    assert any(f.path.endswith("/train/x") or f.path.endswith("/valid/z") for f in repaired), repaired
    assert _same(_snapshot(sg), before)
    assert sg.verify().ok
    sg.compile()
    exec(REWRITES[kind], {"sg": sg, "np": np})  # and the store takes the rewrite again
    assert not _same(_snapshot(sg), before)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(REWRITES))
def test_a_rewrite_killed_midway_leaves_the_last_commit_on_a_folder(tmp_path: Path, kind: str) -> None:
    _killed_rewrite_is_put_back({"output_dir": str(tmp_path / "s")}, kind)


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.parametrize("kind", ["update", "delete"])
def test_a_rewrite_killed_midway_leaves_the_last_commit_on_s3(s3_server: S3Server, s3_bucket: str, kind: str) -> None:
    args = {"output_dir": f"s3://{s3_bucket}/{kind}", "storage_options": s3_server.storage_options}
    _killed_rewrite_is_put_back(args, kind)


def test_the_next_writer_puts_a_killed_rewrite_back(tmp_path: Path) -> None:
    args = {"output_dir": str(tmp_path / "s")}
    before = _snapshot(_fill(args))
    _kill_midway(args, "update", "after")
    sg = StoreGate("zarr", args, data_id="d")
    sg.add_data("w", np.ones(3), phase="test")  # any write of the data_id puts the journal back first
    before["test"] = {"w": np.ones(3)}
    assert _same(_snapshot(sg), before)
    assert sg.verify().ok


def test_a_journal_left_before_any_write_in_place_changes_nothing_and_repair_deletes_it(tmp_path: Path) -> None:
    args = {"output_dir": str(tmp_path / "s")}
    before = _snapshot(_fill(args))
    _kill_midway(args, "update", "before")
    sg = StoreGate("zarr", args, data_id="d")
    assert _same(_snapshot(sg), before)
    found = sg.verify(read_data=False).findings
    assert [f.repairable for f in found] == [True]
    assert "killed before" in found[0].what
    assert [f.path for f in sg.repair()] == [found[0].path]
    assert sg.verify().ok
    assert _same(_snapshot(sg), before)
    assert not list((tmp_path / "s" / ".storegate" / "journal").rglob("*.entry"))


def test_a_killed_rewrite_of_a_zarr_v2_store_is_put_back(tmp_path: Path) -> None:
    from tests.v2_stores import write_zarr2_files

    write_zarr2_files(tmp_path / "v2")
    args = {"output_dir": str(tmp_path / "v2")}
    before = _snapshot(StoreGate("zarr", args, data_id="d"))
    update = "sg.update_data('y', np.full(10, 99), phase='train', index=(995, 1005))"  # two chunks
    _kill_midway(args, "update", "after", update)
    assert _same(_snapshot(StoreGate("zarr", {**args, "mode": "r"}, data_id="d")), before)
    sg = StoreGate("zarr", args, data_id="d")
    assert sg.repair()
    assert _same(_snapshot(sg), before)
    exec(update, {"sg": sg, "np": np})
    np.testing.assert_array_equal(sg.get_data("y", "train")[995:1005], np.full(10, 99))


@pytest.mark.parametrize("damage", ["delete_one", "flip_byte"])
def test_a_damaged_journal_is_an_error_never_a_torn_read(tmp_path: Path, damage: str) -> None:
    args = {"output_dir": str(tmp_path / "s")}
    _fill(args)
    _kill_midway(args, "update", "after")  # x rewritten in place, killed: the journal holds x and y
    entries = sorted((tmp_path / "s" / ".storegate" / "journal").rglob("*.entry"))
    assert len(entries) == 2
    if damage == "delete_one":
        entries[0].unlink()
        expected = "must hold the 2 entries its commit record names. Got 1"
    else:
        data = bytearray(entries[0].read_bytes())
        data[-3] ^= 0xFF  # inside x's saved chunk bytes
        entries[0].write_bytes(bytes(data))
        expected = "SHA-256"
    reader = StoreGate("zarr", {**args, "mode": "r"}, data_id="d")
    with pytest.raises(StoreGateError, match=expected):
        reader.get_data(["x", "y"], "train")
    findings = StoreGate("zarr", args, data_id="d").verify(read_data=False).findings
    assert [f.repairable for f in findings] == [False]
    assert expected.split(".")[0] in findings[0].what
    with pytest.raises(StoreGateError, match=expected):
        StoreGate("zarr", args, data_id="d").repair()  # never half put back
    stored = StoreGate("zarr", {**args, "mode": "r"}, data_id="d")
    with pytest.raises(StoreGateError, match=expected):  # still refused, not read as committed
        stored.get_data("y", "train")


@pytest.mark.parametrize(
    ("call", "failing"),
    [
        (lambda sg: sg.update_data("x", np.ones(6)), "train/x"),
        (lambda sg: sg.update_data(["x", "y"], [np.ones(6), np.ones(6)]), "train/y"),
        (lambda sg: sg.shuffle("train", seed=1), "train/x"),
        (lambda sg: sg.astype("y", np.float32), "train/y"),
    ],
)
def test_after_a_failed_rewrite_the_next_writes_and_readers_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: Callable[[StoreGate], None], failing: str
) -> None:
    """The put-back of a failed rewrite is the last commit again, not a failed commit that landed:
    the next write must not put the flagged record back and call its (cleared) journal damaged."""
    import zarr.storage

    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr")}, data_id="d")
    sg.add_data(["x", "y"], [np.arange(6.0), np.arange(6.0) + 10])
    original, hits = zarr.storage.LocalStore.set, []

    async def one_chunk_write_fails(self: Any, key: str, value: Any) -> None:
        if key.endswith(f"{failing}/c/0"):
            hits.append(key)
            if len(hits) == 1:
                raise OSError("simulated disk error")
        await original(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", one_chunk_write_fails)
    with pytest.raises(StoreGateError, match="simulated disk error"):
        call(sg)
    monkeypatch.undo()
    assert hits
    np.testing.assert_array_equal(sg.get_data("x"), np.arange(6.0))  # as last committed
    np.testing.assert_array_equal(sg.get_data("y"), np.arange(6.0) + 10)
    assert sg.verify().ok
    sg.update_data("x", np.arange(6.0) * 2)  # the next write goes on
    sg.add_data(["x", "y"], [np.ones(2), np.ones(2)])
    other = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "mode": "r"}, data_id="d")
    np.testing.assert_array_equal(other.get_data("x"), [*(np.arange(6.0) * 2), 1, 1])


def test_a_failed_first_call_on_a_store_without_a_commit_record_keeps_its_leftovers_unseen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store written before commit records: the first call commits what is stored, then fails
    and cannot undo its append. The next call must cut those rows off, not commit them."""
    import zarr
    import zarr.storage

    path = tmp_path / "s.zarr"
    sg = StoreGate("zarr", {"output_dir": str(path)}, data_id="d")
    sg.add_data(["x", "y"], [np.arange(4.0), np.arange(4.0)])
    (path / ".storegate" / "commits" / "d.json").unlink()  # as stores were before commit records
    sg = StoreGate("zarr", {"output_dir": str(path)}, data_id="d")
    original = zarr.storage.LocalStore.set
    failing, x_metadata = {"on": True}, []

    async def y_fails_then_x_cannot_be_undone(self: Any, key: str, value: Any) -> None:
        if failing["on"] and key == "d/train/y/zarr.json":
            raise OSError("simulated disk error")  # y's append fails...
        if failing["on"] and key == "d/train/x/zarr.json":
            x_metadata.append(key)
            if len(x_metadata) > 1:
                raise OSError("simulated disk error")  # ... and x's undo cannot shrink it back
        await original(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", y_fails_then_x_cannot_be_undone)
    with pytest.raises(StoreGateError):
        sg.add_data(["x", "y"], [np.ones(3), np.ones(3)])
    failing["on"] = False
    assert zarr.open_array(str(path / "d" / "train" / "x"), mode="r").shape == (7,)  # left past the commit
    sg.add_data("z", np.zeros(4))  # the next call: what the failed one left stays unseen
    np.testing.assert_array_equal(sg.get_data("x"), np.arange(4.0))
    np.testing.assert_array_equal(sg.get_data("y"), np.arange(4.0))
    again = StoreGate("zarr", {"output_dir": str(path), "mode": "r"}, data_id="d")
    np.testing.assert_array_equal(again.get_data("x"), np.arange(4.0))
