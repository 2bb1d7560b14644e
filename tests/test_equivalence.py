"""Property tests: the numpy, zarr and hybrid backends give identical arrays and dtypes.

Each example runs the same calls on every backend and requires the same outcome
everywhere: the same array (byte for byte, same dtype and shape), or the same error
class. Where the documented rule is plain numpy (same_kind casts, Python indexing, 'all'
as the concatenation of the phases), the outcome is also checked against numpy itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import zarr
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from storegate import StoreGate
from storegate.errors import IndexOutOfRangeError, InvalidArgumentError, NotFoundError, ValidationError

pytestmark = pytest.mark.timeout(300)

DTYPES = tuple(
    np.dtype(d) for d in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "float16", "float32", "float64")
)
PHASES = ("train", "valid", "test")
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_gates() -> dict[str, StoreGate]:
    """One StoreGate per backend; zarr with 2-row chunks so reads cross chunk boundaries.

    hybrid runs in its default 'zarr' mode; tests/test_state_machine.py runs both modes.
    """
    return {
        "numpy": StoreGate("numpy", data_id="eq"),
        "zarr": StoreGate("zarr", {"output_dir": zarr.storage.MemoryStore(), "chunk": 2}, data_id="eq"),
        "hybrid-zarr": StoreGate("hybrid", {"output_dir": zarr.storage.MemoryStore(), "chunk": 2}, data_id="eq"),
    }


def elements(dtype: np.dtype) -> st.SearchStrategy[Any]:
    """Values of ``dtype`` that every cast between DTYPES handles without overflow warnings."""
    if dtype.kind == "b":
        return st.booleans()
    if dtype.kind == "u":
        return st.integers(0, 200)
    if dtype.kind == "i":
        return st.integers(-100, 100)
    finite = st.floats(-1000, 1000, width=8 * dtype.itemsize)
    return finite | st.sampled_from([np.nan, np.inf, -np.inf, -0.0])


def arrays(dtype: np.dtype, shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(dtype, shape, elements=elements(dtype))


row_shapes = st.sampled_from([(), (1,), (3,), (2, 2), (0,)])
n_rows = st.integers(0, 7)


def index_st(n: int) -> st.SearchStrategy[Any]:
    """Every documented index form for ``n`` rows, sometimes out of range."""
    ints = st.integers(-n - 1, n)
    bound = st.none() | st.integers(-n - 2, n + 2)
    return st.one_of(
        st.none(),
        ints,
        ints.map(np.int32),
        st.builds(slice, bound, bound, st.sampled_from([None, 1, 2, 3, -1, -2])),
        st.tuples(ints, ints),
        st.lists(ints, max_size=5),
        st.lists(ints, max_size=5).map(lambda x: np.array(x, dtype=np.int64)),
        st.lists(st.booleans(), min_size=n, max_size=n).map(lambda x: np.array(x, dtype=bool)),
        st.lists(ints, max_size=5).map(lambda x: torch.tensor(x, dtype=torch.int64)),
        st.lists(st.booleans(), min_size=n, max_size=n).map(lambda x: torch.tensor(x, dtype=torch.bool)),
    )


def outcome(call: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return True, call()
    except Exception as exc:
        return False, exc


def values_fit(values: np.ndarray, dtype: np.dtype) -> bool:
    """The cast rule (issue 8), from its statement: same_kind, and every value kept.

    Ints and bools exactly (each value within the stored type's range); floats up to the
    stored precision, but a finite value must stay finite.
    """
    signed_into_unsigned = values.dtype.kind == "i" and dtype.kind == "u"  # checked by value, as numpy does
    if not (signed_into_unsigned or np.can_cast(values.dtype, dtype, casting="same_kind")):
        return False
    flat = values.reshape(-1).tolist()
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return all(info.min <= int(v) <= info.max for v in flat)
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            return all(np.isfinite(np.array([v]).astype(dtype)).all() for v in flat if np.isfinite(v))
    return True


def lossless(dtypes: list[np.dtype]) -> bool:
    """The 'all' read rule, from its statement: numpy's promotion must keep every value.

    Ints into floats only when the float's mantissa holds every int of that type.
    """
    unique = set(dtypes)
    if len(unique) == 1:
        return True
    result = np.result_type(*unique)
    for d in unique:
        if d.kind in "iub" and result.kind == "f":
            if d.kind != "b" and 8 * d.itemsize - (d.kind == "i") > np.finfo(result).nmant + 1:
                return False
        elif not np.can_cast(d, result, casting="safe"):
            return False
    return True


def assert_identical(a: Any, b: Any, where: str) -> None:
    """Same type, dtype, shape and bytes (so NaN, -0.0 and inf compare exactly)."""
    if isinstance(b, list):
        assert isinstance(a, list), where
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
        return
    assert type(a) is type(b), f"{where}: type {type(a)} != {type(b)}"
    if b is None:
        return
    assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{where}: shape {a.shape} != {b.shape}"
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), f"{where}: values\n{a}\n!=\n{b}"


def assert_outcome(ok: bool, value: Any, expected: Any, where: str) -> None:
    """``expected`` is an array to match or the error class that must have been raised."""
    if isinstance(expected, type):
        assert not ok, f"{where}: expected {expected.__name__}, got {value!r}"
        assert isinstance(value, expected), f"{where}: expected {expected.__name__}, got {value!r}"
    else:
        assert ok, f"{where}: {value!r}"
        assert_identical(value, expected, where)


def run_all(gates: dict[str, StoreGate], call: Callable[[StoreGate], Any]) -> tuple[bool, Any]:
    """Run ``call`` on every backend; all must succeed identically or raise one error class."""
    results = {name: outcome(lambda g=gate: call(g)) for name, gate in gates.items()}
    oks = {ok for ok, _ in results.values()}
    assert len(oks) == 1, f"some backends failed, others did not: {results}"
    (name0, (ok, first)), *rest = results.items()
    for name, (_, value) in rest:
        if ok:
            assert_identical(value, first, f"{name} vs {name0}")
        else:
            assert type(value) is type(first), f"{name} raised {type(value).__name__}, {name0} {type(first).__name__}"
    return ok, first


def read_all(gates: dict[str, StoreGate], var: Any, phase: Any = "train", index: Any = None) -> Any:
    ok, value = run_all(gates, lambda g: g.get_data(var, phase=phase, index=index))
    assert ok, f"reading {var!r} failed: {value!r}"
    return value


def selected_rows(index: Any, n: int) -> np.ndarray:
    """The row numbers an in-range index selects, in order."""
    if index is None:
        return np.arange(n)
    if isinstance(index, torch.Tensor):
        index = index.numpy()
    return np.atleast_1d(np.arange(n)[slice(*index) if isinstance(index, tuple) else index])


def numpy_select(array: np.ndarray, index: Any) -> Any:
    """numpy's answer for the documented index forms, or the error class storegate must raise."""
    n = array.shape[0]
    if isinstance(index, torch.Tensor):
        index = index.numpy()
    if isinstance(index, tuple):
        index = slice(*index)
    if isinstance(index, (int, np.integer)) and not -n <= index < n:
        return IndexOutOfRangeError
    if isinstance(index, (list, np.ndarray)) and np.asarray(index).dtype != bool:
        rows = np.asarray(index, dtype=np.int64)
        if ((rows < -n) | (rows >= n)).any():
            return IndexOutOfRangeError
        index = rows
    return array[index] if index is not None else array


@SETTINGS
@given(dtype=st.sampled_from(DTYPES), n=n_rows, row=row_shapes, data=st.data())
def test_add_and_read_back(dtype: np.dtype, n: int, row: tuple[int, ...], data: st.DataObject) -> None:
    """Any dtype and shape, 1-D included, reads back unchanged on every backend; N=0 adds nothing (multiml)."""
    array = data.draw(arrays(dtype, (n, *row)))
    gates = make_gates()
    ok, error = run_all(gates, lambda g: g.add_data("x", array))
    assert ok, error
    if n == 0:
        ok, missing = run_all(gates, lambda g: g.get_data("x"))
        assert_outcome(ok, missing, NotFoundError, "no row, no variable")
        return
    assert_identical(read_all(gates, "x"), array, "read back")
    ok, shape = run_all(gates, lambda g: np.array(g.get_var_shapes("x"), dtype=np.int64))
    assert tuple(shape) == array.shape[1:]


@SETTINGS
@given(
    old=st.sampled_from(DTYPES),
    new=st.sampled_from(DTYPES),
    n=n_rows,
    m=n_rows,
    row=row_shapes,
    other_row=row_shapes,
    data=st.data(),
)
@example(old=np.dtype("int8"), new=np.dtype("float64"), n=2, m=1, row=(), other_row=(), data=None)
@example(old=np.dtype("float16"), new=np.dtype("float64"), n=0, m=3, row=(2, 2), other_row=(2, 2), data=None)
def test_append_follows_same_kind(
    old: np.dtype, new: np.dtype, n: int, m: int, row: tuple[int, ...], other_row: tuple[int, ...], data: Any
) -> None:
    """An append casts by numpy's same_kind rule keeping every value, or every backend raises the same error."""
    first = data.draw(arrays(old, (n, *row))) if data else np.zeros((n, *row), dtype=old)
    second = data.draw(arrays(new, (m, *other_row))) if data else np.ones((m, *other_row), dtype=new)
    gates = make_gates()
    run_all(gates, lambda g: g.add_data("x", first))
    ok, error = run_all(gates, lambda g: g.add_data("x", second))
    if n == 0:  # the first call added nothing: the second creates x, or nothing again
        assert ok, error
        if m:
            assert_identical(read_all(gates, "x"), second, "created by the second call")
        return
    allowed = row == other_row and values_fit(second, old)
    assert ok == allowed, f"append of {new}{second.shape} to {old}{first.shape}: {error!r}"
    if not ok:
        assert isinstance(error, InvalidArgumentError)
    expected = np.concatenate([first, second.astype(old)]) if ok else first
    assert_identical(read_all(gates, "x"), expected, "after the append")


@SETTINGS
@given(dtype=st.sampled_from(DTYPES), n=n_rows, row=row_shapes, data=st.data())
def test_every_index_form_reads_alike(dtype: np.dtype, n: int, row: tuple[int, ...], data: st.DataObject) -> None:
    """get_data and the item syntax agree across backends and with numpy for every index form."""
    array = data.draw(arrays(dtype, (n, *row)))
    index = data.draw(index_st(n))
    gates = make_gates()
    run_all(gates, lambda g: g.add_data("x", array))
    expected = numpy_select(array, index) if n else NotFoundError  # no row, no variable
    for how, call in (
        ("get_data", lambda g: g.get_data("x", index=index)),
        ("item", lambda g: g["train"]["x"][index]),
    ):
        ok, value = run_all(gates, call)
        assert_outcome(ok, value, expected, f"{how}[{index!r}]")


@SETTINGS
@given(
    stored=st.sampled_from(DTYPES),
    given_dtype=st.sampled_from(DTYPES),
    n=st.integers(1, 7),
    row=row_shapes,
    data=st.data(),
)
def test_update_by_index_alike(
    stored: np.dtype, given_dtype: np.dtype, n: int, row: tuple[int, ...], data: st.DataObject
) -> None:
    """Updates of selected rows: same result or same error on every backend, numpy's casting rule."""
    array = data.draw(arrays(stored, (n, *row)))
    index = data.draw(index_st(n))
    target = numpy_select(np.arange(n), index)
    k = 1 if isinstance(target, type) else int(np.size(target))
    scalar = isinstance(index, (int, np.integer)) and not isinstance(target, type)
    new = data.draw(arrays(given_dtype, row if scalar else (k, *row)))
    gates = make_gates()
    run_all(gates, lambda g: g.add_data("x", array))
    ok, error = run_all(gates, lambda g: g.update_data("x", new, index=index, do_compile=False))
    expected = array.copy()
    if ok:
        assert not isinstance(target, type), f"update at {index!r} should have raised"
        assert values_fit(new, stored), f"{new!r} does not fit {stored}"
        expected[selected_rows(index, n)] = new
    else:
        assert isinstance(target, type) or not values_fit(new, stored), error
    assert_identical(read_all(gates, "x"), expected, f"after update at {index!r}")


@SETTINGS
@given(m=st.integers(1, 3), dtype=st.sampled_from(DTYPES), n=n_rows, row=row_shapes, data=st.data())
def test_tuple_form_alike(m: int, dtype: np.dtype, n: int, row: tuple[int, ...], data: st.DataObject) -> None:
    """A tuple of M names splits (N, M, ...) data and stacks them back, identically everywhere."""
    array = data.draw(arrays(dtype, (n, m, *row)))
    names = tuple("abc"[:m])
    gates = make_gates()
    ok, error = run_all(gates, lambda g: g.add_data(names, array, phase=(0.5, 0.25, 0.25)))
    assert ok, error
    if n:  # with no rows, a split creates nothing
        assert_identical(read_all(gates, names, "all"), array, "tuple read back")
        assert_identical(read_all(gates, list(names), "all"), [array[:, i] for i in range(m)], "list read")
        assert_identical(read_all(gates, names, "all", -1), array[-1], "one row of a tuple")


@SETTINGS
@given(
    dtypes=st.lists(st.sampled_from(DTYPES), min_size=3, max_size=3),
    sizes=st.lists(st.integers(0, 3), min_size=3, max_size=3),
    row=row_shapes,
    data=st.data(),
)
@example(  # one row of 'all' has the dtype of the whole of 'all', not that of its phase
    dtypes=[np.dtype("int8"), np.dtype("int64"), np.dtype("int8")],
    sizes=[2, 1, 0],
    row=(),
    data=None,
)
def test_all_is_the_concatenation(dtypes: list[np.dtype], sizes: list[int], row: tuple[int, ...], data: Any) -> None:
    """Phase 'all' reads as np.concatenate of the phases, dtype included, for every index form."""
    parts = [
        data.draw(arrays(d, (k, *row))) if data else np.arange(k * int(np.prod(row))).reshape(k, *row).astype(d)
        for d, k in zip(dtypes, sizes, strict=True)
    ]
    gates = make_gates()
    for phase, part in zip(PHASES, parts, strict=True):
        run_all(gates, lambda g, p=phase, a=part: g.add_data("x", a, phase=p))
    held = [p for p in parts if len(p)]  # a part of no row adds no variable
    whole = np.concatenate(held) if held else np.zeros(0)
    indexes = [data.draw(index_st(whole.shape[0])) if data else 0, None, -1, slice(None, None, -1)]
    for index in indexes:
        expected: Any = numpy_select(whole, index)
        if not held:
            expected = NotFoundError
        elif not lossless([p.dtype for p in held]):
            expected = ValidationError  # one dtype must hold every phase's values
        ok, value = run_all(gates, lambda g, i=index: g.get_data("x", phase="all", index=i))
        assert_outcome(ok, value, expected, f"'all'[{index!r}]")


@SETTINGS
@given(
    dtypes=st.lists(st.sampled_from(DTYPES), min_size=3, max_size=3),
    sizes=st.lists(st.integers(0, 3), min_size=3, max_size=3),
    given_dtype=st.sampled_from(DTYPES),
    data=st.data(),
)
@example(  # float data must not slip into the int8 phase through the float32 of 'all'
    dtypes=[np.dtype("int8"), np.dtype("float32"), np.dtype("float32")],
    sizes=[2, 2, 0],
    given_dtype=np.dtype("float64"),
    data=None,
)
def test_update_all_casts_to_each_phase(
    dtypes: list[np.dtype], sizes: list[int], given_dtype: np.dtype, data: Any
) -> None:
    """Writing across phases casts by same_kind to every phase's own stored dtype, each value kept, or raises."""
    parts = [data.draw(arrays(d, (k,))) if data else np.arange(k).astype(d) for d, k in zip(dtypes, sizes, strict=True)]
    total = sum(sizes)
    index = data.draw(index_st(total)) if data else [0, 1, 2]
    target = numpy_select(np.arange(total), index)
    k = 1 if isinstance(target, type) else int(np.size(target))
    scalar = isinstance(index, (int, np.integer)) and not isinstance(target, type)
    new = data.draw(arrays(given_dtype, () if scalar else (k,))) if data else np.full(k, 300.5, dtype=given_dtype)
    gates = make_gates()
    for phase, part in zip(PHASES, parts, strict=True):
        run_all(gates, lambda g, p=phase, a=part: g.add_data("x", a, phase=p))
    ok, error = run_all(gates, lambda g: g.update_data("x", new, phase="all", index=index, do_compile=False))
    stored = [p.dtype for p in parts if len(p)]
    castable = all(values_fit(np.zeros(0, given_dtype), d) for d in stored)  # the kind rule, for every phase
    if not total:
        assert not ok
        return
    if castable and not isinstance(target, type):  # and each value must fit the phase it lands in
        rows = selected_rows(index, total)
        written = np.broadcast_to(np.atleast_1d(new), rows.shape)
        offsets = np.cumsum([0, *sizes])
        phase_of = np.searchsorted(offsets, rows, side="right") - 1
        castable = all(values_fit(written[i : i + 1], dtypes[int(phase_of[i])]) for i in range(rows.size))
    assert ok == (castable and not isinstance(target, type)), f"update 'all'[{index!r}] with {given_dtype}: {error!r}"
    if ok:
        rows = selected_rows(index, total)
        written = np.broadcast_to(np.atleast_1d(new), rows.shape)
        offsets = np.cumsum([0, *sizes])
        for i, row in enumerate(rows):  # in order: a repeated row keeps the last value
            part = int(np.searchsorted(offsets, row, side="right")) - 1
            parts[part][row - offsets[part]] = written[i : i + 1].astype(dtypes[part])[0]
    for phase, part in zip(PHASES, parts, strict=True):  # each phase keeps its own dtype
        if len(part):
            assert_identical(read_all(gates, "x", phase), part, f"{phase} after the update")
