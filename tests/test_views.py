"""Views behind the item syntax ``sg[phase][var_names][index]`` (storegate.views).

The item syntax itself runs on every backend in the conformance suite (ItemSyntaxTests);
here what is the views' own: a view never changes once made, and views of rows (subset,
filter, repeat, shuffled, concat) show numpy's fancy indexing of their phase on every backend.
"""

from __future__ import annotations

import math
import pickle
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storegate import InvalidArgumentError, NotFoundError, StoreGate, ValidationError
from storegate.engine import GroupEngine
from storegate.testing import BACKEND_KINDS, make_gate
from storegate.views import ConcatView, concat


@pytest.fixture(params=BACKEND_KINDS)
def sg(request: pytest.FixtureRequest, tmp_path: Path) -> StoreGate:
    return make_gate(request.param, tmp_path)


def test_views_are_immutable(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(10), phase=(0.7, 0.2, 0.1))
    sg.add_data("y", np.arange(10) + 100, phase=(0.7, 0.2, 0.1))
    a = sg["train"]
    b = sg["test"]
    np.testing.assert_array_equal(a["x"][:], np.arange(7))
    np.testing.assert_array_equal(b["x"][:], [9])
    ax = a["x"]
    ay = a["y"]
    np.testing.assert_array_equal(ay[:], np.arange(7) + 100)
    np.testing.assert_array_equal(ax[:], np.arange(7))
    with pytest.raises(AttributeError):
        a.phase = "test"  # type: ignore[misc]


def test_view_keeps_its_data_id(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(3))
    view = sg["train"]["x"]
    sg.set_data_id("other")
    sg.add_data("x", np.arange(5))
    np.testing.assert_array_equal(view[:], np.arange(3))


# --- views of rows: subset, filter, repeat, shuffled, concat ---------------------------------

N = 23
X = np.arange(N * 2, dtype=np.int64).reshape(N, 2)
Y = np.arange(N) % 4
SPLIT = (12, 6, 5)


def _filled(sg: StoreGate) -> StoreGate:
    sg.add_data(["x", "y"], [X, Y], phase=SPLIT)
    return sg


@pytest.fixture(scope="module")
def gates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, StoreGate]:
    """One filled store per backend, shared by the property test (it only reads)."""
    return {kind: _filled(make_gate(kind, tmp_path_factory.mktemp(kind))) for kind in BACKEND_KINDS}


def _phase_rows(phase: str) -> np.ndarray:
    bounds = np.cumsum([0, *SPLIT])
    i = ("train", "valid", "test").index(phase)
    return np.arange(bounds[i], bounds[i + 1])


def _model_bound(value: int | float | None, n: int) -> int | None:
    return math.floor(n * Fraction(repr(value))) if isinstance(value, float) else value


# One step of a chain: (name, arguments). The model applies it to numpy row numbers of 'all'.
steps_st = st.one_of(
    st.tuples(
        st.just("subset"),
        st.one_of(st.none(), st.integers(-30, 30), st.floats(0, 1)),
        st.none() | st.integers(-30, 30) | st.floats(0, 1),
    ),
    st.tuples(st.just("filter"), st.lists(st.integers(0, 4), max_size=3), st.booleans()),
    st.tuples(st.just("repeat"), st.none() | st.integers(1, 3), st.integers(0, 40)),
    st.tuples(st.just("shuffled"), st.integers(0, 2**32 - 1), st.none()),
    st.tuples(st.just("oversample"), st.none(), st.none()),
    st.tuples(st.just("concat"), st.sampled_from(["train", "valid", "test"]), st.none()),
)


def _apply(view: Any, rows: np.ndarray, step: tuple[Any, ...], sg: StoreGate) -> tuple[Any, np.ndarray]:
    """The view method, and numpy's answer for the same step."""
    name, a, b = step
    if name == "subset":
        return view.subset(a, b), rows[_model_bound(a, len(rows)) : _model_bound(b, len(rows))]
    if name == "filter":
        inside = np.isin(Y[rows], a)
        return (view.filter("y", keep=a), rows[inside]) if b else (view.filter("y", drop=a), rows[~inside])
    if name == "repeat":
        times = a if a is not None else (max(1, math.ceil(b / len(rows))) if len(rows) else 1)
        return (view.repeat(a) if a is not None else view.repeat(min_rows=b)), np.tile(rows, times)
    if name == "shuffled":
        return view.shuffled(a), rows[np.random.default_rng(a).permutation(len(rows))]
    if name == "oversample":
        classes, sizes = np.unique(Y[rows], return_counts=True)
        top = sizes.max() if len(rows) else 0
        extra = [np.resize(rows[Y[rows] == c], top - n) for c, n in zip(classes, sizes, strict=True)]
        return view.oversample("y"), np.concatenate([rows, *extra])
    return view + sg[a], np.concatenate([rows, _phase_rows(a)])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["train", "valid", "test"]), st.lists(steps_st, min_size=1, max_size=4), st.data())
def test_view_rows_equal_numpy_fancy_indexing(
    gates: dict[str, StoreGate], phase: str, steps: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    answers = {}
    for kind, sg in gates.items():
        view, rows = sg[phase], _phase_rows(phase)
        for step in steps:
            view, rows = _apply(view, rows, step, sg)
        assert len(view) == len(rows)
        base = {"train": 0, "valid": SPLIT[0], "test": SPLIT[0] + SPLIT[1], "all": 0}[view.base_phase]
        np.testing.assert_array_equal(view.row_numbers() + base, rows)
        np.testing.assert_array_equal(view["x"][:], X[rows])  # a view's rows are numpy's fancy indexing
        np.testing.assert_array_equal(view[["x", "y"]][:][1], Y[rows])
        answers[kind] = view["x"][:]
    if len(rows):
        index = data.draw(st.integers(-len(rows), len(rows) - 1) | st.lists(st.integers(0, len(rows) - 1), max_size=6))
        for sg in gates.values():
            view = sg[phase]
            for step in steps:
                view, _ = _apply(view, rows, step, sg)
            np.testing.assert_array_equal(view["x"][index], X[rows][index])  # int and batch indexing
    for kind in gates:
        np.testing.assert_array_equal(answers[kind], answers["numpy"])


def test_views_read_nothing_until_used_and_a_filter_reads_its_labels_only(
    gates: dict[str, StoreGate], monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[str] = []
    original = GroupEngine.read
    monkeypatch.setattr(
        GroupEngine, "read", lambda self, phase, var, *rest: read.append(var) or original(self, phase, var, *rest)
    )
    view = gates["zarr-dir"]["train"].filter("y", keep=[1, 2]).subset(0.5).repeat(2).shuffled(4)
    view = view + gates["zarr-dir"]["test"].filter("y", drop=[0])
    assert read == []  # made lazily: nothing read
    assert len(view) == 2 * 3 + 4
    assert set(read) == {"y"}  # the rows came from the labels alone
    read.clear()
    view["x"][:]
    assert set(read) == {"x"}


def test_view_rows_pickle_small() -> None:
    sg = _filled(StoreGate("numpy", data_id="d"))
    view = sg["train"].filter("y", keep=[0, 1]).repeat(min_rows=10_000).shuffled(1)
    assert len(view) == 10_002
    assert view.rows is not None
    size = len(pickle.dumps(view.rows))
    assert size < 1024  # its parameters, not its 10,002 row numbers
    back = pickle.loads(pickle.dumps(view.rows))
    assert "_rows" not in back.__dict__  # worked out again where it is used
    np.testing.assert_array_equal(back.rows(lambda var: sg.get_data(var, "train")), view.row_numbers())


def test_oversample_balances_the_classes() -> None:
    sg = StoreGate("numpy", data_id="d")
    sg.add_data(["x", "y"], [np.arange(10), np.array([0] * 6 + [1] * 3 + [2])])
    view = sg["train"].oversample("y")
    assert np.bincount(view["y"][:]).tolist() == [6, 6, 6]
    np.testing.assert_array_equal(view["x"][:], [*range(10), 6, 7, 8, 9, 9, 9, 9, 9])
    assert np.bincount(view.shuffled(0)["y"][:]).tolist() == [6, 6, 6]


def test_subset_by_fraction_is_kappadata_percent_filter() -> None:
    sg = StoreGate("numpy", data_id="d")
    sg.add_data("x", np.arange(100))
    np.testing.assert_array_equal(sg["train"].subset(0.25)["x"][:], np.arange(25, 100))
    np.testing.assert_array_equal(sg["train"].subset(None, 0.75)["x"][:], np.arange(75))
    np.testing.assert_array_equal(sg["train"].subset(0.29, 0.3)["x"][:], [29])  # 0.29 * 100 is 28.999... in floats
    np.testing.assert_array_equal(sg["train"]["x"].subset(-3)[:], [97, 98, 99])  # var_names first works too


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda v: v.subset(1.5), InvalidArgumentError, ["start must be None, an int", "Got 1.5"]),
        (lambda v: v.subset(None, "3"), InvalidArgumentError, ["stop must be", "Got '3'"]),
        (lambda v: v.filter("y"), InvalidArgumentError, ["exactly one of keep= ", "keep=None and drop=None"]),
        (lambda v: v.filter("y", keep=[1], drop=[2]), InvalidArgumentError, ["exactly one of keep="]),
        (lambda v: v.filter("nope", keep=[1]), NotFoundError, ["nope"]),
        (lambda v: v.filter(["y"], keep=[1]), InvalidArgumentError, ["var must be the name", "['y']"]),
        (lambda v: v.oversample("nope"), NotFoundError, ["nope"]),
        (lambda v: v.repeat(), InvalidArgumentError, ["exactly one of times=", "times=None"]),
        (lambda v: v.repeat(0), InvalidArgumentError, ["times must be an int >= 1", "Got 0"]),
        (lambda v: v.repeat(min_rows=-1), InvalidArgumentError, ["min_rows must be an int >= 0", "Got -1"]),
        (lambda v: v.shuffled(-1), InvalidArgumentError, ["seed must be", "Got -1"]),
        (lambda v: concat([]), InvalidArgumentError, ["non-empty list of views", "Got []"]),
        (lambda v: v + v["x"], InvalidArgumentError, ["same var_names"]),
        (lambda v: v.subset(1)["valid"], InvalidArgumentError, ["chooses phase once"]),
    ],
)
def test_bad_view_arguments(make: Any, error: type[Exception], words: list[str]) -> None:
    sg = _filled(StoreGate("numpy", data_id="d"))
    with pytest.raises(error) as info:
        make(sg["train"])
    for word in words:
        assert word in str(info.value)


def test_views_of_rows_are_read_only() -> None:
    sg = _filled(StoreGate("numpy", data_id="d"))
    view = sg["train"].subset(0, 3)
    with pytest.raises(InvalidArgumentError, match="read-only and cannot write"):
        view["x"][0] = X[0]
    with pytest.raises(InvalidArgumentError, match="read-only and cannot delete"):
        del view["x"]
    other = _filled(StoreGate("numpy", data_id="d"))
    both = concat([view, other["train"]])  # views of two stores: a ConcatView, read-only too
    assert isinstance(both, ConcatView)
    with pytest.raises(InvalidArgumentError, match="read-only and cannot write"):
        both["x"][0] = X[0]
    assert [int(x[0]) for x in view["x"]] == [0, 2, 4]  # iteration goes through the view
    assert [int(x[0]) for x in both["x"]][:4] == [0, 2, 4, 0]


# --- concatenation of stores ---------------------------------------------------------------

part_st = st.tuples(
    st.sampled_from(BACKEND_KINDS), st.sampled_from(["train", "valid", "test"]), st.lists(steps_st, max_size=2)
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(part_st, min_size=2, max_size=3), st.lists(steps_st, max_size=2), st.data())
def test_a_concatenation_of_stores_is_numpy_concatenation(
    gates: dict[str, StoreGate],
    parts: list[tuple[str, str, list[tuple[Any, ...]]]],
    steps: list[tuple[Any, ...]],
    data: st.DataObject,
) -> None:
    views, expected = [], []
    for kind, phase, part_steps in parts:  # every store holds the same X and Y: rows index them
        view, rows = gates[kind][phase], _phase_rows(phase)
        for step in part_steps:
            view, rows = _apply(view, rows, step, gates[kind])
        views.append(view)
        expected.append(rows)
    view, rows = concat(views), np.concatenate(expected)
    for step in steps:
        view, rows = _apply(view, rows, step, gates["zarr-dir"])
    assert len(view) == len(rows)
    np.testing.assert_array_equal(view["x"][:], X[rows])
    np.testing.assert_array_equal(view[["x", "y"]][:][1], Y[rows])
    if len(rows):
        index = data.draw(st.integers(-len(rows), len(rows) - 1) | st.lists(st.integers(0, len(rows) - 1), max_size=6))
        np.testing.assert_array_equal(view["x"][index], X[rows][index])
        np.testing.assert_array_equal(view["y"][index], Y[rows][index])


def test_a_concatenation_of_stores_promotes_as_numpy_or_refuses_what_would_lose_values() -> None:
    a = StoreGate("numpy", data_id="a")
    a.add_data("x", np.arange(4, dtype=np.int16))
    b = StoreGate("numpy", data_id="b")
    b.add_data("x", np.arange(3, dtype=np.int32))
    both = a["train"] + b["train"]
    assert both["x"][:].dtype == np.int32  # one dtype, whichever part a read touches
    assert both["x"][0].dtype == np.int32
    assert both["x"][[0, 1]].dtype == np.int32
    c = StoreGate("numpy", data_id="c")
    c.add_data("x", np.arange(3, dtype=np.uint64))
    with pytest.raises(ValidationError, match="astype"):  # int32 and uint64 meet in float64: values lost
        (b["train"] + c["train"])["x"][:]
    d = StoreGate("numpy", data_id="d")
    d.add_data("x", np.zeros((2, 3), dtype=np.int16))
    with pytest.raises(ValidationError, match="one row shape in every part"):
        (a["train"] + d["train"])["x"][:]
    e = StoreGate("numpy", data_id="e")
    e.add_data("z", np.zeros(2))
    with pytest.raises(NotFoundError, match="'x'"):
        (a["train"] + e["train"])["x"][:]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda cv: cv["valid"], ["chosen its phases", "concat([a['train'], b['train']])"]),
        (lambda cv: cv["x"]["y"], ["chooses var_names once"]),
        (lambda cv: cv[0], ["choose var_names before an index"]),
        (lambda cv: list(cv), ["choose var_names before iterating"]),
        (lambda cv: cv + cv["x"], ["same var_names"]),
        (lambda cv: cv.filter("nope", keep=[0]), ["nope"]),
    ],
)
def test_bad_concatenation_arguments(make: Any, words: list[str]) -> None:
    a, b = _filled(StoreGate("numpy", data_id="a")), _filled(StoreGate("numpy", data_id="b"))
    with pytest.raises((InvalidArgumentError, NotFoundError)) as info:
        make(a["train"] + b["test"])
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_the_views_a_gate_keeps_follow_set_data_id(kind: str, tmp_path: Path) -> None:
    """sg['train'] and sg['train']['x'] are kept for the hot path: they must follow the data_id."""
    sg = make_gate(kind, tmp_path, data_id="a")
    sg.add_data("x", np.array([1, 2, 3]), "train")
    sg.set_data_id("b")
    sg.add_data("x", np.array([4, 5, 6]), "train")
    for _ in range(2):  # the second time from the kept views, warm where the backend keeps chunks
        for data_id, first in [("a", 1), ("b", 4)]:
            sg.set_data_id(data_id)
            assert sg["train"]["x"][0] == first
            assert sg.get_data("x", "train", 0) == first
            assert sg["train"]["x"][-1] == first + 2
    phase = sg["train"]
    assert phase["x"] is phase["x"]  # kept
    assert phase["x"].var_names == "x"
    assert phase["y"].var_names == "y"
    with pytest.raises(InvalidArgumentError):
        phase["x"]["y"]  # var_names chosen twice, kept view or not
