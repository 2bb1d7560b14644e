"""Errors: the hierarchy, messages that name argument / expected / given, and atomicity.

Atomicity means a call that raises leaves the store as it was: the same variables, values
and dtypes, and the same ``get_metadata()`` (a failed call must not even mark the data_id
as not compiled).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import storegate
from storegate import (
    IndexOutOfRangeError,
    InvalidArgumentError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
    StoreGate,
    StoreGateError,
    ValidationError,
)
from storegate.testing import BACKEND_KINDS, assert_same_snapshot, make_gate, snapshot

Call = Callable[[StoreGate], Any]


@pytest.fixture(params=BACKEND_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sg(kind: str, tmp_path: Path) -> StoreGate:
    """A compiled data_id: x (int64, rows of 3), y (int labels), z (float32, rows of 2) split 7/2/1,
    and n (rows of 4) in test only."""
    gate = make_gate(kind, tmp_path)
    gate.add_data("x", np.arange(30).reshape(10, 3), phase=(0.7, 0.2, 0.1))
    gate.add_data("y", np.arange(10) % 3, phase=(0.7, 0.2, 0.1))
    gate.add_data("z", np.ones((10, 2), dtype=np.float32), phase=(0.7, 0.2, 0.1))
    gate.add_data("n", np.zeros((1, 4)), phase="test")
    gate.compile()
    return gate


# --- the hierarchy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (NotFoundError, KeyError),
        (InvalidArgumentError, ValueError),
        (ValidationError, ValueError),
        (IndexOutOfRangeError, IndexError),
        (ReadOnlyError, PermissionError),
        (StorageError, OSError),
    ],
)
def test_hierarchy(error: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(error, StoreGateError)
    assert issubclass(error, builtin)
    assert error.__name__ in storegate.__all__


def test_missing_variable_is_caught_as_key_error(sg: StoreGate) -> None:
    with pytest.raises(KeyError) as info:
        sg.get_data("missing")
    assert isinstance(info.value, NotFoundError)
    assert str(info.value).startswith("var_name 'missing'")  # not wrapped in quotes like KeyError's


def test_bad_argument_is_caught_as_value_error(sg: StoreGate) -> None:
    with pytest.raises(ValueError, match="phase") as info:
        sg.get_data("x", phase="training")
    assert isinstance(info.value, InvalidArgumentError)
    with pytest.raises(StoreGateError):
        sg.add_data("x", np.zeros((2, 5)))


def test_missing_store_and_data_id(tmp_path: Path) -> None:
    path = str(tmp_path / "none.zarr")
    with pytest.raises(NotFoundError, match=r"none\.zarr"):
        StoreGate("zarr", {"output_dir": path, "mode": "r"})
    StoreGate("zarr", {"output_dir": path}, data_id="there")
    with pytest.raises(NotFoundError, match=r"data_id 'absent'.*\['there'\]"):
        StoreGate("zarr", {"output_dir": path, "mode": "r"}, data_id="absent")


# --- messages name the argument, what was expected and what was given ---------------------------

# (id, call, error class, fragments that must all appear in the message)
MESSAGE_CASES: list[tuple[str, Call, type[Exception], list[str]]] = [
    ("phase-name", lambda sg: sg.get_data("x", "training"), InvalidArgumentError, ["phase", "'train'", "'training'"]),
    (
        "phase-fractions",
        lambda sg: sg.add_data("x", np.zeros((10, 3)), phase=(0.5, 0.3, 0.1)),
        InvalidArgumentError,
        ["phase", "sum to 1", "(0.5, 0.3, 0.1)"],
    ),
    (
        "phase-counts",
        lambda sg: sg.add_data("x", np.zeros((10, 3), "i8"), phase=(5, 3, 1)),
        InvalidArgumentError,
        ["phase", "number of rows (10)", "(5, 3, 1)"],
    ),
    (
        "phase-all-rows",
        lambda sg: sg.add_data("w", np.zeros(4), phase="all"),
        InvalidArgumentError,
        ["phase 'all'", "needs 10 rows", "Got 4 rows"],
    ),
    ("var-names-type", lambda sg: sg.get_data(3), InvalidArgumentError, ["var_names", "a str", "Got 3"]),
    ("var-name-slash", lambda sg: sg.add_data("a/b", [1]), InvalidArgumentError, ["var_name", "'/'", "'a/b'"]),
    (
        "var-names-repeat",
        lambda sg: sg.get_data(["x", "x"]),
        InvalidArgumentError,
        ["var_names", "not repeat", "['x', 'x']"],
    ),
    (
        "list-count",
        lambda sg: sg.add_data(["a", "b"], [np.zeros(3)]),
        InvalidArgumentError,
        ["var_names ['a', 'b']", "2 arrays", "Got 1"],
    ),
    (
        "list-lengths",
        lambda sg: sg.add_data(["a", "b"], [np.zeros(3), np.zeros(4)]),
        InvalidArgumentError,
        ["same number of rows", "'a': 3", "'b': 4"],
    ),
    (
        "tuple-shape",
        lambda sg: sg.add_data(("a", "b"), np.zeros((4, 3))),
        InvalidArgumentError,
        ["tuple of 2 var_names", "(N, 2, ...)", "(4, 3)"],
    ),
    # Rows of different lengths are a ragged variable; rows that differ past their first axis are refused.
    ("ragged", lambda sg: sg.add_data("r", [[[1, 2]], [[3]]]), InvalidArgumentError, ["data must be", "inhomogeneous"]),
    (
        "ragged-inner",
        lambda sg: sg.add_data("r", [[[1, 2]], [[3], [4]]]),
        InvalidArgumentError,
        ["data as ragged rows must hold", "one inner shape"],
    ),
    (
        "row-shape",
        lambda sg: sg.add_data("x", np.zeros((2, 4), "i8")),
        InvalidArgumentError,
        ["var_name 'x'", "row shape (3,)", "row shape (4,)"],
    ),
    (
        "dtype",
        lambda sg: sg.add_data("x", np.zeros((2, 3))),
        InvalidArgumentError,
        ["var_name 'x'", "int64", "same_kind", "float64"],
    ),
    ("index-form", lambda sg: sg.get_data("x", index=1.5), InvalidArgumentError, ["index", "a slice", "1.5"]),
    ("index-range", lambda sg: sg.get_data("x", index=7), IndexOutOfRangeError, ["index", "[-7, 7)", "Got 7"]),
    ("index-rows", lambda sg: sg.get_data("x", "all", [0, -11]), IndexOutOfRangeError, ["[-10, 10)", "Got -11"]),
    (
        "mask-length",
        lambda sg: sg.get_data("x", index=np.ones(3, bool)),
        InvalidArgumentError,
        ["boolean mask", "one entry per row (7)", "length 3"],
    ),
    ("missing-var", lambda sg: sg.get_data("w"), NotFoundError, ["var_name 'w'", "phase 'train'", "'x'"]),
    ("missing-var-all", lambda sg: sg.get_data("w", "all"), NotFoundError, ["var_name 'w'", "any phase"]),
    (
        "update-rows",
        lambda sg: sg.update_data("x", np.zeros((3, 3), "i8"), index=[0, 1]),
        InvalidArgumentError,
        ["var_name 'x'", "shape (2, 3)", "shape (3, 3)"],
    ),
    (
        "update-split-index",
        lambda sg: sg.update_data("x", np.zeros((10, 3)), phase=(7, 2, 1), index=[0]),
        InvalidArgumentError,
        ["index must be None", "split", "[0]"],
    ),
    (
        "update-absent-index",
        lambda sg: sg.update_data("w", [1], index=[0]),
        NotFoundError,
        ["var_name 'w'", "index=None", "[0]"],
    ),
    (
        "update-absent-inside-rows",
        lambda sg: sg.update_data("w", [1], index=(0, slice(None))),
        NotFoundError,
        ["var_name 'w'", "index=None", "(0, slice(None"],
    ),
    (
        "update-one-row-tuple",  # the shape given, not the one with a row axis added
        lambda sg: sg.update_data(("x", "z"), np.zeros((1, 2, 3)), index=0),
        InvalidArgumentError,
        ["tuple of 2 var_names", "at one row", "(2, ...)", "(1, 2, 3)"],
    ),
    ("num-classes", lambda sg: sg.onehot("y", 0), InvalidArgumentError, ["num_classes", "positive int", "0"]),
    ("labels", lambda sg: sg.onehot("y", 2, phase="all"), InvalidArgumentError, ["labels", "[0, 2)", "to 2"]),
    ("onehot-float", lambda sg: sg.onehot("z", 2), InvalidArgumentError, ["integer labels", "float32"]),
    ("argmax-axis", lambda sg: sg.argmax("x", axis=0), InvalidArgumentError, ["axis", "non-row axis", "Got 0"]),
    ("astype", lambda sg: sg.astype("x", "nope"), InvalidArgumentError, ["dtype", "numpy dtype", "'nope'"]),
    ("seed", lambda sg: sg.shuffle(seed=-1), InvalidArgumentError, ["seed", "non-negative int", "-1"]),
    (
        "shuffle-arg",
        lambda sg: sg.add_data("x", np.zeros((1, 3), "i8"), shuffle="yes"),
        InvalidArgumentError,
        ["shuffle", "bool or a non-negative int", "'yes'"],
    ),
    (
        "empty-shape",
        lambda sg: sg.create_empty("e", (-1, 2)),
        InvalidArgumentError,
        ["shape", "non-negative ints", "(-1, 2)"],
    ),
    ("empty-phase", lambda sg: sg.create_empty("e", (2,), phase="all"), InvalidArgumentError, ["phase", "'all'"]),
    ("data-id", lambda sg: sg.set_data_id("a/b"), InvalidArgumentError, ["data_id", "non-empty str", "'a/b'"]),
    (
        "compile",
        lambda sg: (sg.add_data("y", [1]), sg.compile()),
        ValidationError,
        ["phase 'train'", "same number of rows", "'y': 8"],
    ),
    ("del-index", lambda sg: sg["train"].__delitem__(0), InvalidArgumentError, ["del needs var_names", "Got 0"]),
    (
        "view-no-names",
        lambda sg: sg["train"][0:2],
        InvalidArgumentError,
        ["choose var_names", "sg['train']['x'][0:2]"],
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "fragments"), [c[1:] for c in MESSAGE_CASES], ids=[c[0] for c in MESSAGE_CASES]
)
def test_message_names_argument_expected_and_given(
    sg: StoreGate, call: Call, error: type[Exception], fragments: list[str]
) -> None:
    with pytest.raises(error) as info:
        call(sg)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_mode_messages(sg: StoreGate, kind: str) -> None:
    if kind.startswith("hybrid"):
        with pytest.raises(InvalidArgumentError, match=r"mode must be one of \('numpy', 'zarr'\). Got 'disk'"):
            sg.set_mode("disk")
        return
    with pytest.raises(InvalidArgumentError, match=rf"needs backend 'hybrid'. Got backend '{sg.backend}'"):
        sg.set_mode("numpy")
    with pytest.raises(InvalidArgumentError, match=rf"needs backend 'hybrid'. Got backend '{sg.backend}'"):
        sg.to_memory("x")


@pytest.mark.parametrize(
    ("backend", "args", "fragments"),
    [
        ("sql", None, ["backend must be one of", "'numpy'", "'sql'"]),
        (3, None, ["backend must be a str", "int"]),
        ("numpy", [1], ["backend_args must be a dict", "list"]),
        ("numpy", {"output_dir": "x"}, ["backend_args", "'numpy'", "output_dir"]),
        ("zarr", {"mode": "x"}, ["mode must be one of", "'r'", "'x'"]),
        ("zarr", {"chunk": 0}, ["chunk must be a positive int", "Got 0"]),
        ("zarr", {"compressor": "lzma-9"}, ["compressor", "'zstd'", "'lzma-9'"]),
    ],
)
def test_constructor_messages(backend: Any, args: Any, fragments: list[str]) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        StoreGate(backend, args)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_data_id_must_be_set() -> None:
    with pytest.raises(InvalidArgumentError, match=r"data_id must be set.*Got None instead"):
        StoreGate("numpy").get_data("x")


# --- atomicity: a failed call leaves data and metadata as they were ---------------------------

FAILING_CALLS: list[tuple[str, Call]] = [
    (
        "list-dtype-2nd-of-3",
        lambda sg: sg.add_data(["x", "z", "y"], [np.zeros((2, 3), "i8"), np.zeros((2, 2), "c8"), [0, 1]]),
    ),
    ("list-lengths", lambda sg: sg.add_data(["x", "z"], [np.zeros((2, 3), "i8"), np.zeros((3, 2), "f4")])),
    ("split-row-shape-in-test", lambda sg: sg.add_data("n", np.zeros((10, 3)), phase=(0.7, 0.2, 0.1))),
    ("split-dtype", lambda sg: sg.add_data(["z", "x"], [np.zeros((10, 2)), np.zeros((10, 3))], phase=(5, 3, 2))),
    ("split-bad-spec", lambda sg: sg.add_data("x", np.zeros((10, 3), "i8"), phase=[0.5, 0.5])),
    ("all-wrong-count", lambda sg: sg.add_data(["w", "x"], [np.zeros(9), np.zeros((9, 3), "i8")], phase="all")),
    ("tuple-shape", lambda sg: sg.add_data(("x", "z"), np.zeros((2, 3, 3)))),
    ("shuffle-arg", lambda sg: sg.add_data("x", np.zeros((1, 3), "i8"), shuffle=-2)),
    ("update-length", lambda sg: sg.update_data("x", np.zeros((3, 3), "i8"), index=[0, 1])),
    (
        "update-list-2nd",
        lambda sg: sg.update_data(["x", "z"], [np.zeros((2, 3), "i8"), np.zeros((2, 5))], index=(0, 2)),
    ),
    ("update-all-length", lambda sg: sg.update_data("x", np.zeros((9, 3), "i8"), phase="all")),
    ("update-all-dtype", lambda sg: sg.update_data(["z", "x"], [np.zeros((10, 2)), np.zeros((10, 3))], phase="all")),
    ("update-index-range", lambda sg: sg.update_data("x", np.zeros((2, 3), "i8"), index=[0, 99])),
    ("update-absent-index", lambda sg: sg.update_data(["x", "w"], [np.zeros((1, 3), "i8"), [1]], index=[0])),
    ("update-split", lambda sg: sg.update_data(["z", "x"], [np.zeros((10, 2)), np.zeros((10, 3))], phase=(7, 2, 1))),
    ("setitem-shape", lambda sg: sg["all"]["x"].__setitem__(slice(5, 9), np.zeros((4, 4)))),
    ("onehot-range", lambda sg: sg.onehot("y", 2, phase="all")),
    ("onehot-classes", lambda sg: sg.onehot(["y"], -1)),
    ("onehot-float-2nd", lambda sg: sg.onehot(["y", "z"], 3)),
    ("astype-missing-2nd", lambda sg: sg.astype(["x", "w"], "f8")),
    ("astype-dtype", lambda sg: sg.astype("x", object())),
    ("argmax-axis-2nd", lambda sg: sg.argmax(["z", "y"], axis=1)),
    ("shuffle-seed", lambda sg: sg.shuffle(seed=1.5)),
    ("create-empty-shape", lambda sg: sg.create_empty(["x", "z"], (2, -3))),
    ("create-empty-dtype", lambda sg: sg.create_empty(["x", "z"], (2, 3), dtype="nope")),
    ("create-empty-name", lambda sg: sg.create_empty(["x", "a/b"], (2, 3))),
    ("delete-bad-phase", lambda sg: sg.delete_data("x", phase="everything")),
    ("delete-bad-name", lambda sg: sg.delete_data(["x", 3])),
    ("move-not-hybrid-or-bad-names", lambda sg: sg.to_memory(["x", "z"], output_var_names=["a"])),
    ("set-data-id", lambda sg: sg.set_data_id("")),
    # do_compile=True: a write that compile() would reject is refused before anything is written.
    ("update-breaks-lengths", lambda sg: sg.update_data("x", np.zeros((3, 3), "i8"))),
    ("update-new-var-wrong-length", lambda sg: sg.update_data("w", np.zeros(2))),
    ("update-row-shape-across-phases", lambda sg: sg.update_data("n", np.zeros((2, 5)), phase="valid")),
    ("add-compile-lengths", lambda sg: sg.add_data("x", np.zeros((1, 3), "i8"), do_compile=True)),
]


@pytest.mark.parametrize("call", [c[1] for c in FAILING_CALLS], ids=[c[0] for c in FAILING_CALLS])
def test_failed_call_leaves_the_store_as_it_was(sg: StoreGate, call: Call) -> None:
    before = snapshot(sg)
    assert before["metadata"]["compiled"] is True
    with pytest.raises(StoreGateError):
        call(sg)
    assert_same_snapshot(before, snapshot(sg))


def test_failed_compile_changes_nothing(sg: StoreGate) -> None:
    sg.add_data("y", [1])  # train: x 7 rows, y 8
    before = snapshot(sg)
    assert before["metadata"]["compiled"] is False
    for reset in (False, True):
        with pytest.raises(ValidationError, match="'y': 8"):
            sg.compile(reset=reset)
    assert_same_snapshot(before, snapshot(sg))
    assert "active" not in sg.get_var_names("all")


READ_ONLY_WRITES: list[tuple[str, Call]] = [
    ("add", lambda sg: sg.add_data("x", np.zeros((1, 3), "i8"))),
    ("add-new", lambda sg: sg.add_data("w", [1, 2])),
    ("update", lambda sg: sg.update_data("x", np.zeros((1, 3), "i8"), index=[0])),
    ("setitem", lambda sg: sg["train"]["x"].__setitem__(0, [1, 2, 3])),
    ("delete", lambda sg: sg.delete_data("x")),
    ("del", lambda sg: sg["train"].__delitem__("x")),
    ("clear", lambda sg: sg.clear_data()),
    ("create-empty", lambda sg: sg.create_empty("e", (2,))),
    ("astype", lambda sg: sg.astype("x", "f8")),
    ("onehot", lambda sg: sg.onehot("y", 3)),
    ("argmax", lambda sg: sg.argmax("z", 1)),
    ("shuffle", lambda sg: sg.shuffle()),
    ("compile-reset", lambda sg: sg.compile(reset=True)),
]


@pytest.mark.parametrize("backend", ["zarr", "hybrid"])
@pytest.mark.parametrize("call", [c[1] for c in READ_ONLY_WRITES], ids=[c[0] for c in READ_ONLY_WRITES])
def test_read_only_store_refuses_every_write(tmp_path: Path, backend: str, call: Call) -> None:
    path = str(tmp_path / "ro.zarr")
    writer = StoreGate(backend, {"output_dir": path}, data_id="d")
    writer.add_data(["x", "y", "z"], [np.arange(6).reshape(2, 3), [0, 2], np.ones((2, 2))], do_compile=True)
    reader = StoreGate(backend, {"output_dir": path, "mode": "r"}, data_id="d")
    before = snapshot(reader)
    with pytest.raises(ReadOnlyError, match="mode 'r'") as info:
        call(reader)
    assert "ro.zarr" in str(info.value)
    assert_same_snapshot(before, snapshot(reader))
    assert_same_snapshot(before, snapshot(StoreGate(backend, {"output_dir": path, "mode": "r"}, data_id="d")))
    with pytest.raises(NotFoundError, match="read-only"):
        reader.set_data_id("new")
