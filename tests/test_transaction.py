"""Every mutating call is one transaction: a failure at any step leaves data and metadata as they were.

For each mutating call of StoreGate (add, update, delete, create_empty, clear, astype,
onehot, argmax, shuffle, compile(reset=True), the streaming writer, item assignment and
deletion, and the hybrid moves) the test runs the call on a fresh store once per write it
makes, failing the k-th write each time, until the call completes without reaching k. Each
failed run must raise the injected error and leave the store exactly as it was: the same
variables, values, dtypes and ``get_metadata()`` through a new StoreGate, and for zarr
stores the same metadata documents, byte for byte, and no chunk object lost.

Two places to fail:

- **backend**: the k-th mutating call of the backend (``create``, ``append``, ``write``,
  ``detach``, ``save_state``...) raises, before it does anything;
- **store**: the k-th ``set`` or ``delete`` of the zarr Store raises, so a backend call
  fails *midway* (zarr's append has resized the array, its chunks are not written). The
  failing step must be undone too.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore

from storegate import StorageError, StoreGate
from storegate.backends import Backend, TieredBackend
from storegate.errors import StoreGateWarning
from storegate.testing import BACKEND_KINDS, assert_same_snapshot, make_gate, snapshot
from storegate.transaction import Step, Transaction, to_completion
from tests.conftest import S3Server
from tests.row_list_backend import RowListBackend

assert RowListBackend.name == "row-list"  # importing the module registered it

#: The backend calls that change a store.
MUTATING = ("create", "create_empty", "append", "write", "resize", "replace", "delete", "detach", "save_state")


class Injected(Exception):
    """The failure a test injects (an I/O error of the store)."""


class Interrupted(KeyboardInterrupt):
    """The user pressing Ctrl-C at a step."""


# --- the calls --------------------------------------------------------------------------------

X = np.arange(30, dtype=np.int64).reshape(10, 3)
Y = np.linspace(0, 1, 10, dtype=np.float32)
LABEL = np.arange(10, dtype=np.int64) % 3


def populate(sg: StoreGate) -> None:
    """x, y and label split 7 / 2 / 1, compiled (so calls also change the compile state)."""
    sg.add_data(["x", "y", "label"], [X, Y, LABEL], phase=(0.7, 0.2, 0.1))
    sg.compile()


def _writer_block(sg: StoreGate) -> None:
    with sg.writer("train") as w:
        for i in range(5):
            w.add({"x": np.full((3, 3), i), "y": np.full(3, i, "f4"), "label": np.full(3, i % 3)})


def _set_item(sg: StoreGate) -> None:
    sg["all"]["x"][[0, 8, 9]] = np.full((3, 3), -1)


def _del_item(sg: StoreGate) -> None:
    del sg["valid"][["x", "y"]]


CALLS: dict[str, Callable[[StoreGate], None]] = {
    "add-append": lambda sg: sg.add_data(["x", "y"], [X[:4], Y[:4]], phase="train"),
    "add-split-new": lambda sg: sg.add_data(["x", "new"], [X, X * 2.0], phase=(0.6, 0.2, 0.2)),
    "add-compile": lambda sg: sg.add_data(["x", "y", "label"], [X, Y, LABEL], phase=(5, 3, 2), do_compile=True),
    "update-rows-all": lambda sg: sg.update_data("x", np.full((3, 3), 9), phase="all", index=[0, 8, 9]),
    "update-whole-and-new": lambda sg: sg.update_data(["y", "z"], [Y[:7] + 1, X[:7]], do_compile=False),
    "update-split": lambda sg: sg.update_data("y", Y * 2, phase=(7, 2, 1)),
    "delete": lambda sg: sg.delete_data(["x", "y"], phase="all", do_compile=False),
    "create-empty": lambda sg: sg.create_empty(["e", "f"], (4, 3), phase=(2, 1, 1), dtype="f8"),
    "clear": lambda sg: sg.clear_data(),
    "astype": lambda sg: sg.astype("x", "f4", phase="all"),
    "onehot": lambda sg: sg.onehot("label", 3, phase="all"),
    "argmax": lambda sg: sg.argmax("x", 1, phase="all"),
    "shuffle": lambda sg: sg.shuffle("all", seed=3),
    "compile-reset": lambda sg: sg.compile(reset=True),
    "writer": _writer_block,
    "setitem": _set_item,
    "delitem": _del_item,
}

MOVES: dict[str, Callable[[StoreGate], None]] = {
    "to-memory": lambda sg: sg.to_memory(["x", "y"], phase="all"),
    "to-storage": lambda sg: sg.to_storage(["y"], phase="train", output_var_names=["y2"]),
}


def populate_hybrid(sg: StoreGate) -> None:
    """Both tiers hold data: y and w in memory, x, y and label in storage."""
    populate(sg)
    sg.set_mode("numpy")
    sg.set_data_id("t")
    sg.add_data(["y", "w"], [Y[:7], X[:7]], phase="train")
    sg.set_mode("zarr")


# --- the stores -------------------------------------------------------------------------------


class Store_:
    """A fresh store of one kind: how to open it, and its raw objects."""

    def __init__(self, kind: str, tmp_path: Path, s3: tuple[S3Server, str] | None = None) -> None:
        self.kind, self.tmp_path, self.s3 = kind, tmp_path, s3
        self.memory = zarr.storage.MemoryStore()
        self.prefix = uuid.uuid4().hex[:12]
        self.path = str(tmp_path / f"{kind}-{self.prefix}.zarr")

    def args(self) -> dict[str, Any]:
        if self.kind == "zarr-memory":
            return {"output_dir": self.memory, "chunk": 4}
        if self.kind == "zarr-s3":
            assert self.s3 is not None
            server, bucket = self.s3
            return {"output_dir": f"s3://{bucket}/{self.prefix}", "storage_options": server.storage_options, "chunk": 4}
        return {"output_dir": self.path, "chunk": 4}

    def open(self) -> StoreGate:
        if self.kind in ("numpy", "row-list"):
            return StoreGate(self.kind, data_id="t")
        backend = "hybrid" if self.kind.startswith("hybrid") else "zarr"
        sg = StoreGate(backend, self.args(), data_id="t")
        if self.kind == "hybrid-numpy":
            sg.set_mode("numpy")
            sg.set_data_id("t")
        return sg

    def state(self, sg: StoreGate) -> tuple[Any, dict[str, bytes]]:
        """What must not change: the data and metadata (through a new StoreGate when the data
        survive the process) and the stored objects."""
        reopened = self.open() if self.kind in ("zarr-dir", "hybrid-zarr", "zarr-s3") else sg
        return snapshot(reopened), self.raw()

    def raw(self) -> dict[str, bytes]:
        """Every stored object and its bytes (empty for memory backends)."""
        if self.kind == "zarr-memory":
            return _raw_objects(self.memory)
        if self.kind == "zarr-s3":
            assert self.s3 is not None
            server, bucket = self.s3
            client = server.client()
            listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{self.prefix}/").get("Contents", [])
            return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}
        if self.kind in ("zarr-dir", "hybrid-zarr"):
            return {str(p.relative_to(self.path)): p.read_bytes() for p in Path(self.path).rglob("*") if p.is_file()}
        return {}


def _raw_objects(store: Store) -> dict[str, bytes]:
    async def collect() -> dict[str, bytes]:
        from zarr.core.buffer import default_buffer_prototype

        keys = [k async for k in store.list()]
        values = [await store.get(k, default_buffer_prototype()) for k in keys]
        return {k: v.to_bytes() for k, v in zip(keys, values, strict=True) if v is not None}

    return asyncio.run(collect())


# --- injecting failures -------------------------------------------------------------------------


def _leaves(backend: Backend) -> list[Backend]:
    return list(backend.tiers().values()) if isinstance(backend, TieredBackend) else [backend]


@contextmanager
def failing_backend(sg: StoreGate, k: int, error: type[BaseException]) -> Iterator[list[str]]:
    """Make the k-th mutating backend call raise ``error``; yields the calls seen."""
    seen: list[str] = []
    patched: list[tuple[Backend, str]] = []
    for backend in _leaves(sg.backend_object):
        for method in MUTATING:
            original = getattr(backend, method)

            def flaky(*args: Any, _original: Any = original, _method: str = method, **kwargs: Any) -> Any:
                seen.append(_method)
                if len(seen) == k:
                    raise error(f"injected into {_method} (call {k})")
                return _original(*args, **kwargs)

            setattr(backend, method, flaky)
            patched.append((backend, method))
    try:
        yield seen
    finally:
        for backend, method in patched:
            delattr(backend, method)  # the class method shows through again


@contextmanager
def failing_store(k: int, error: type[BaseException]) -> Iterator[list[str]]:
    """Make the k-th ``set`` / ``delete`` of any zarr Store raise ``error``; yields the keys seen."""
    seen: list[str] = []
    originals = {
        (cls, name): getattr(cls, name)
        for cls in (LocalStore, FsspecStore, zarr.storage.MemoryStore)
        for name in ("set", "delete")
    }

    def wrap(original: Any) -> Any:
        async def flaky(self: Store, key: str, *args: Any, **kwargs: Any) -> Any:
            seen.append(key)
            if len(seen) == k:
                raise error(f"injected into a store write of {key} (write {k})")
            return await original(self, key, *args, **kwargs)

        return flaky

    for (cls, name), original in originals.items():
        setattr(cls, name, wrap(original))
    try:
        yield seen
    finally:
        for (cls, name), original in originals.items():
            setattr(cls, name, original)


def check_every_step(
    make: Callable[[], Store_],
    prepare: Callable[[StoreGate], None],
    call: Callable[[StoreGate], None],
    inject: Callable[[StoreGate, int], Any],
    error: type[BaseException],
    max_steps: int = 200,
) -> int:
    """Fail the call at write 1, 2, ... until it completes; return the number of writes seen.

    A failure while cleaning up after the call succeeded (purging a deleted variable's
    chunks) is a StoreGateWarning, and the store must then look as after a clean run.
    """
    clean = make()
    sg = clean.open()
    prepare(sg)
    call(sg)
    succeeded = clean.state(sg)[0]
    for k in range(1, max_steps):
        store = make()
        sg = store.open()
        prepare(sg)
        before_snapshot, before_raw = store.state(sg)
        with inject(sg, k) as seen, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", StoreGateWarning)
            try:
                call(sg)
            except error:
                pass
            else:
                if not caught:
                    assert len(seen) < k, f"the call made {len(seen)} writes and did not fail at {k}"
                    return k - 1
        if caught:  # the call succeeded; only its cleanup failed
            assert [w.category for w in caught] == [StoreGateWarning]
            _assert_same(succeeded, store.state(sg)[0])
            continue
        after_snapshot, after_raw = store.state(sg)
        _assert_same(before_snapshot, after_snapshot)
        _assert_same_objects(before_raw, after_raw, k)
    raise AssertionError(f"the call never completed within {max_steps} writes")


def _assert_same_objects(before: dict[str, bytes], after: dict[str, bytes], k: int) -> None:
    """The same metadata documents, byte for byte, and no chunk lost.

    An undone append is cut back to its old shape: the rows it wrote into the last, partial
    chunk stay past the end (that chunk may even exist now where it held only fill values
    before), where no read reaches them; the snapshot compares every visible value.
    """
    chunks = {key for key in before.keys() | after.keys() if "/c/" in key or key.split("/")[-1][:1].isdigit()}
    assert sorted(set(before) - chunks) == sorted(set(after) - chunks), f"failure at write {k}: metadata differ"
    for key in set(before) - chunks:
        if ".storegate/commits/" in key:
            # A failed rewrite in place commits the same rows anew: the record's epoch tells a
            # reader that read during the rewrite to read again.
            rows = [json.loads(raw)["rows"] for raw in (before[key], after[key])]
            assert rows[0] == rows[1], f"failure at write {k}: {key} lists other rows"
            continue
        if key.endswith(".commits"):  # a commit counter counts the record's undone changes too
            continue
        assert after[key] == before[key], f"failure at write {k}: {key} differs"
    assert set(before) & chunks <= set(after), f"failure at write {k}: chunks lost {set(before) - set(after)}"


def _assert_same(before: Any, after: Any) -> None:
    if isinstance(before, list):  # one snapshot per tier
        for b, a in zip(before, after, strict=True):
            assert_same_snapshot(b, a)
    else:
        assert_same_snapshot(before, after)


# --- the tests ----------------------------------------------------------------------------------

#: Every local kind, and a third-party backend that relies on the Backend defaults for undo.
LOCAL_KINDS = ["numpy", "zarr-dir", "zarr-memory", "hybrid-zarr", "hybrid-numpy", "row-list"]


@pytest.mark.parametrize("kind", LOCAL_KINDS)
@pytest.mark.parametrize("name", list(CALLS))
def test_a_failing_backend_call_changes_nothing(tmp_path: Path, kind: str, name: str) -> None:
    inject = lambda sg, k: failing_backend(sg, k, Injected)  # noqa: E731
    steps = check_every_step(lambda: Store_(kind, tmp_path), populate, CALLS[name], inject, Injected)
    assert steps >= 1


@pytest.mark.parametrize("kind", ["zarr-dir", "zarr-memory"])
@pytest.mark.parametrize("name", list(CALLS))
def test_a_store_write_failing_midway_changes_nothing(tmp_path: Path, kind: str, name: str) -> None:
    inject = lambda sg, k: failing_store(k, Injected)  # noqa: E731
    steps = check_every_step(lambda: Store_(kind, tmp_path), populate, CALLS[name], inject, Injected)
    assert steps >= 1


@pytest.mark.parametrize("name", ["add-split-new", "update-rows-all", "delete", "writer", "shuffle"])
def test_ctrl_c_at_any_step_changes_nothing(tmp_path: Path, name: str) -> None:
    inject = lambda sg, k: failing_backend(sg, k, Interrupted)  # noqa: E731
    check_every_step(lambda: Store_("zarr-dir", tmp_path), populate, CALLS[name], inject, Interrupted)


@pytest.mark.parametrize("name", list(MOVES))
@pytest.mark.parametrize("where", ["backend", "store"])
def test_a_failing_move_changes_neither_tier(tmp_path: Path, name: str, where: str) -> None:
    def inject(sg: StoreGate, k: int) -> Any:
        return failing_backend(sg, k, Injected) if where == "backend" else failing_store(k, Injected)

    def make() -> Store_:
        return _HybridBothTiers("hybrid-zarr", tmp_path)

    steps = check_every_step(make, populate_hybrid, MOVES[name], inject, Injected)
    if (name, where) == ("to-memory", "store"):
        assert steps == 0  # a transfer copies (multiml): copying out of the store writes none of it
    else:
        assert steps >= 2


class _HybridBothTiers(Store_):
    """A hybrid store whose state covers both tiers of the same StoreGate."""

    def state(self, sg: StoreGate) -> tuple[Any, dict[str, bytes]]:
        mode = sg.mode
        tiers = []
        for tier in ("numpy", "zarr"):
            sg.set_mode(tier)
            tiers.append(snapshot(sg))
        sg.set_mode(mode)
        return tiers, self.raw()


#: On S3 every step of a few calls (about 15 s each on the moto server): the undo code is that
#: of the directory and memory stores above, what differs is the store under it.
#: ``STOREGATE_S3_FULL=1`` runs every call.
S3_CALLS = list(CALLS) if os.environ.get("STOREGATE_S3_FULL") == "1" else ["add-split-new", "update-rows-all"]


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", S3_CALLS)
def test_on_s3_a_failing_call_changes_nothing(s3_server: S3Server, tmp_path: Path, name: str) -> None:
    bucket = s3_server.create_bucket()
    inject = lambda sg, k: failing_backend(sg, k, Injected)  # noqa: E731
    check_every_step(lambda: Store_("zarr-s3", tmp_path, (s3_server, bucket)), populate, CALLS[name], inject, Injected)


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["add-append"])
def test_on_s3_a_request_failing_midway_changes_nothing(s3_server: S3Server, tmp_path: Path, name: str) -> None:
    bucket = s3_server.create_bucket()
    inject = lambda sg, k: failing_store(k, Injected)  # noqa: E731
    check_every_step(lambda: Store_("zarr-s3", tmp_path, (s3_server, bucket)), populate, CALLS[name], inject, Injected)


# --- examples: an I/O error midway through a multi-variable write --------------------------------


@pytest.fixture(params=BACKEND_KINDS)
def sg(request: pytest.FixtureRequest, tmp_path: Path) -> StoreGate:
    """A compiled data_id: x (int64, rows of 3), y (int labels), z (float32, rows of 2) split 7/2/1."""
    gate = make_gate(request.param, tmp_path)
    gate.add_data("x", np.arange(30).reshape(10, 3), phase=(0.7, 0.2, 0.1))
    gate.add_data("y", np.arange(10) % 3, phase=(0.7, 0.2, 0.1))
    gate.add_data("z", np.ones((10, 2), dtype=np.float32), phase=(0.7, 0.2, 0.1))
    gate.compile()
    return gate


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, backend: Any, method: str, n: int) -> list[Any]:
    """Make ``backend.method`` raise OSError on its n-th call; return the list of calls seen."""
    calls: list[Any] = []
    original = getattr(backend, method)

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[:3])
        if len(calls) == n:
            raise OSError(f"simulated I/O error in {method}")
        return original(*args, **kwargs)

    monkeypatch.setattr(backend, method, flaky)
    return calls


def test_io_error_in_second_append_rolls_back_the_first(sg: StoreGate, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(sg)
    calls = _fail_on_call(monkeypatch, sg.backend_object, "append", 2)
    with pytest.raises(OSError, match="simulated"):
        sg.add_data(["x", "z", "y"], [np.full((2, 3), 7), np.full((2, 2), 7.0), [1, 1]])
    assert calls[0] == ("conf", "train", "x")  # the first variable was appended, then undone
    monkeypatch.undo()
    assert_same_snapshot(before, snapshot(sg))
    sg.add_data(["x", "z", "y"], [np.full((2, 3), 7), np.full((2, 2), 7.0), [1, 1]])
    np.testing.assert_array_equal(sg.get_data("x")[-3:], [[18, 19, 20], [7, 7, 7], [7, 7, 7]])


@pytest.mark.parametrize("failing", [2, 3, 4])
def test_io_error_in_a_split_append_rolls_back_every_phase(
    sg: StoreGate, monkeypatch: pytest.MonkeyPatch, failing: int
) -> None:
    before = snapshot(sg)
    calls = _fail_on_call(monkeypatch, sg.backend_object, "append", failing)
    with pytest.raises(OSError, match="simulated"):
        sg.add_data(["x", "y"], [np.full((10, 3), 5), np.zeros(10, "i8")], phase=(0.7, 0.2, 0.1))
    assert len(calls) == failing
    monkeypatch.undo()
    assert_same_snapshot(before, snapshot(sg))


def test_io_error_in_second_create_removes_the_first(sg: StoreGate, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(sg)
    _fail_on_call(monkeypatch, sg.backend_object, "create", 2)
    with pytest.raises(OSError, match="simulated"):
        sg.add_data(["new1", "new2"], [np.zeros(3), np.zeros(3)], phase="valid")
    monkeypatch.undo()
    assert_same_snapshot(before, snapshot(sg))
    assert "new1" not in sg["valid"]


def test_io_error_mixing_create_and_append(sg: StoreGate, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(sg)
    _fail_on_call(monkeypatch, sg.backend_object, "append", 2)  # x is appended, new is created, z fails
    with pytest.raises(OSError, match="simulated"):
        sg.add_data(["x", "new", "z"], [np.zeros((2, 3), "i8"), np.zeros(2), np.zeros((2, 2), "f4")])
    monkeypatch.undo()
    assert_same_snapshot(before, snapshot(sg))


# --- the Transaction itself ----------------------------------------------------------------------


def test_steps_are_undone_newest_first_including_the_failing_one() -> None:
    log: list[str] = []

    def step(name: str, fail: bool = False) -> Step:
        def apply() -> None:
            log.append(f"do {name}")
            if fail:
                raise Injected(name)

        return Step(name, apply, lambda: log.append(f"undo {name}"), lambda: log.append(f"finish {name}"))

    with pytest.raises(Injected):
        Transaction().run([step("a"), step("b", fail=True), step("c")])
    assert log == ["do a", "do b", "undo b", "undo a"]
    log.clear()
    Transaction().run([step("a"), step("b")])
    assert log == ["do a", "do b", "finish a", "finish b"]


def test_an_undo_that_fails_is_noted_on_the_error_and_the_others_still_run() -> None:
    undone: list[str] = []

    def broken_undo() -> None:
        raise OSError("server gone")

    steps = [Step("a", lambda: None, lambda: undone.append("a")), Step("b", lambda: None, broken_undo)]
    steps.append(Step("c", lambda: (_ for _ in ()).throw(Injected("c"))))
    with pytest.raises(Injected) as info:
        Transaction().run(steps)
    assert undone == ["a"]
    assert any("undoing step 'b' also failed" in note for note in info.value.__notes__)


def test_a_cleanup_that_fails_after_success_is_a_warning() -> None:
    def broken() -> None:
        raise OSError("no")

    with pytest.warns(StoreGateWarning, match="cleanup after 'delete train/x' failed"):
        Transaction().run([Step("delete train/x", lambda: None, finish=broken)])


# --- what the breakers found: a write that lands and then reports an error; Ctrl-C in the undo ------


def test_a_delete_that_lands_before_its_error_is_undone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "d.zarr")}, data_id="d")
    sg.add_data(["x", "y"], [np.arange(5), np.arange(5)])
    sg.compile()
    before = snapshot(sg)
    original = LocalStore.delete

    async def lost_reply(self: LocalStore, key: str) -> None:
        await original(self, key)
        raise OSError("the reply was lost")

    monkeypatch.setattr(LocalStore, "delete", lost_reply)
    with pytest.raises(StorageError, match="the reply was lost"):
        sg.delete_data("x")
    monkeypatch.undo()
    assert_same_snapshot(before, snapshot(StoreGate("zarr", {"output_dir": str(tmp_path / "d.zarr")}, data_id="d")))


def test_ctrl_c_in_an_undo_restarts_it_and_comes_after() -> None:
    undone: list[str] = []
    pressed = [True]

    def undo_a() -> None:
        if pressed.pop() if pressed else False:
            raise KeyboardInterrupt  # Ctrl-C in the middle of undoing a
        undone.append("a")

    steps = [Step("a", lambda: None, undo_a), Step("b", lambda: None, lambda: undone.append("b"))]
    tx = Transaction()
    for step in steps:
        tx.do(step)
    with pytest.raises(KeyboardInterrupt):
        tx.rollback()
    assert undone == ["b", "a"]  # both undone before the interrupt went through
    assert to_completion(lambda: None) is None


def test_ctrl_c_during_cleanup_says_the_call_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "c.zarr")}, data_id="d")
    sg.add_data("x", np.arange(5))
    backend = sg.backend_object

    def interrupted(checkpoint: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(backend, "discard", interrupted)
    with pytest.raises(KeyboardInterrupt) as info:
        sg.delete_data("x")
    assert any("the call had completed" in note for note in info.value.__notes__)
    assert sg.get_var_names() == []  # the delete itself happened, as the note says


# --- Ctrl-C as it arrives: a SIGINT, checked between bytecodes ------------------------------


def _sigint_after(obj: Any, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``obj.name`` deliver a real SIGINT right after it has done its work."""
    original = getattr(obj, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)
        return result

    monkeypatch.setattr(obj, name, wrapped)


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_ctrl_c_as_a_variable_is_detached_keeps_it(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The signal lands after the detach removed the variable and before the step kept its
    # checkpoint: held back until both happened, the undo then puts the variable back.
    sg = make_gate(kind, tmp_path)
    sg.add_data(["x", "y"], [np.arange(5), np.arange(5.0)])
    before = snapshot(sg)
    _sigint_after(sg.backend_object, "detach", monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        sg.delete_data("x")
    assert_same_snapshot(before, snapshot(sg))


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_ctrl_c_while_a_writer_closes(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sg = make_gate(kind, tmp_path)
    sg.add_data("y", np.arange(4))
    before = snapshot(sg)
    w = sg.writer()
    w.add({"y": np.array([10, 11, 12])})
    _sigint_after(w, "_drop_empty", monkeypatch)  # before the block completes: all of it undone
    with pytest.raises(KeyboardInterrupt):
        w.__exit__(None, None, None)
    assert_same_snapshot(before, snapshot(sg))
    w = sg.writer()
    w.add({"y": np.array([10, 11])})
    _sigint_after(w._tx, "commit", monkeypatch)  # every row written: the block completes, then Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        w.close()
    assert sg.get_data("y").tolist() == [0, 1, 2, 3, 10, 11]
