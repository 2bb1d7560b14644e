"""The conformance suite: behaviour every StoreGate backend must show (``storegate.testing``).

Shipped in the package, as zarr ships ``zarr.testing.store.StoreTests``, so that a backend
written outside storegate runs the same tests as the built-in ones. It needs pytest
(``pip install 'storegate[testing]'``); torch is optional (its index forms are skipped
without it).

:class:`BackendConformance` is not named ``Test*``, so pytest never collects it on its own.
A backend registered with :func:`storegate.register_backend` runs the whole suite with a
one-line subclass::

    # test_my_backend.py
    from storegate import register_backend
    from storegate.testing import BackendConformance

    register_backend("mine", "my_package.backend:MyBackend")

    class TestMyBackend(BackendConformance):
        backend = "mine"

The suite then makes each test's store with ``StoreGate(backend, backend_args(tmp_path),
data_id="conf")``; override :meth:`BackendConformance.backend_args` for options, or the
``sg`` fixture itself for anything else (a fresh :class:`storegate.StoreGate` with
``data_id`` set and nothing stored), as storegate's own tests do for zarr on S3::

    class TestZarrS3(BackendConformance):
        @pytest.fixture
        def sg(self, s3_server, s3_bucket):
            args = {"output_dir": f"s3://{s3_bucket}/store", "storage_options": s3_server.storage_options}
            return StoreGate("zarr", args, data_id="conf")

The suite is a set of mixins, one per operation (``AddDataTests``, ``UpdateDataTests``,
``GetDataIndexTests``, ...); a slow backend may combine a subset of them, saying in its
module why (``tests/test_backend_s3.py`` does). A subclass may override a test to skip it
only with a reason the backend documents.
:func:`make_gate` and :data:`BACKEND_KINDS` build the same stores for test modules that
parametrize one test over every backend instead of subclassing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import zarr

from storegate.backends import available_backends
from storegate.errors import InvalidArgumentError, NotFoundError, ValidationError
from storegate.gate import StoreGate

try:
    import pytest
except ImportError as exc:  # the suite is pytest's: say how to get it
    raise ImportError("storegate.testing needs pytest: pip install 'storegate[testing]'.") from exc

try:
    import torch
except ImportError:  # torch is optional: its index forms and tensor inputs are skipped
    torch = None  # type: ignore[assignment]

__all__ = [
    "BACKEND_KINDS",
    "INDEX_FORMS",
    "MIXINS",
    "BackendConformance",
    "RaggedTests",
    "assert_same_snapshot",
    "make_gate",
    "numpy_index",
    "snapshot",
]

#: Every backend configuration the suite runs on (see :func:`make_gate`).
BACKEND_KINDS = ("numpy", "zarr-dir", "zarr-memory", "hybrid-zarr", "hybrid-numpy")


def make_gate(kind: str, tmp_path: Path, data_id: str = "conf") -> StoreGate:
    """A fresh StoreGate of one of :data:`BACKEND_KINDS`, with ``data_id`` set."""
    if kind == "numpy":
        return StoreGate("numpy", data_id=data_id)
    if kind == "zarr-dir":
        return StoreGate("zarr", {"output_dir": str(tmp_path / "store.zarr")}, data_id=data_id)
    if kind == "zarr-memory":
        return StoreGate("zarr", {"output_dir": zarr.storage.MemoryStore()}, data_id=data_id)
    sg = StoreGate("hybrid", {"output_dir": str(tmp_path / "hybrid.zarr")}, data_id=data_id)
    if kind == "hybrid-numpy":
        sg.set_mode("numpy")
        sg.set_data_id(data_id)  # create it in the numpy store too
    elif kind != "hybrid-zarr":
        raise ValueError(f"kind must be one of {BACKEND_KINDS}. Got {kind!r} instead.")
    return sg


def snapshot(sg: StoreGate) -> dict[str, Any]:
    """Every variable (data and dtype) of the current data_id, plus get_metadata()."""
    data = {
        (phase, var): sg.get_data(var, phase) for phase in ("train", "valid", "test") for var in sg.get_var_names(phase)
    }
    return {"data": data, "metadata": sg.get_metadata()}


def assert_same_snapshot(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Same variables, same values, same dtypes and the same metadata."""
    assert after["metadata"] == before["metadata"]
    assert sorted(after["data"]) == sorted(before["data"])
    for key, array in before["data"].items():
        if isinstance(array, list):  # a ragged variable: a list of rows
            assert isinstance(after["data"][key], list), key
            assert len(after["data"][key]) == len(array), key
            for got, row in zip(after["data"][key], array, strict=True):
                assert got.dtype == row.dtype, key
                np.testing.assert_array_equal(got, row, err_msg=str(key))
            continue
        assert after["data"][key].dtype == array.dtype, key
        np.testing.assert_array_equal(after["data"][key], array, err_msg=str(key))


def _x(n: int = 10) -> np.ndarray:
    return np.arange(n * 3, dtype=np.int64).reshape(n, 3)


def _mask(n: int, rows: list[int]) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return mask


def numpy_index(index: Any) -> Any:
    """The plain numpy index that selects the same rows as a storegate index."""
    if index is None:
        return slice(None)
    if isinstance(index, tuple):
        return slice(*index)
    if torch is not None and isinstance(index, torch.Tensor):
        return index.numpy()
    if isinstance(index, list) and not index:
        return np.zeros(0, dtype=np.int64)
    return index


#: Every index form on 10 rows, as (test id, index).
INDEX_FORMS: list[tuple[str, Any]] = [
    ("none", None),
    ("int-first", 0),
    ("int", 4),
    ("int-last", 9),
    ("int-neg-last", -1),
    ("int-neg-first", -10),
    ("np-int", np.int32(5)),
    ("slice", slice(2, 5)),
    ("slice-open", slice(None)),
    ("slice-neg", slice(-4, -1)),
    ("slice-neg-start", slice(-3, None)),
    ("slice-step", slice(1, None, 3)),
    ("slice-neg-step", slice(None, None, -2)),
    ("slice-empty", slice(5, 2)),
    ("slice-past-end", slice(6, 100)),
    ("tuple", (2, 8)),
    ("tuple-neg", (-4, -1)),
    ("list", [0, 3, 1]),
    ("list-neg", [-1, 0, -2]),
    ("list-repeat", [2, 2, 7]),
    ("list-empty", []),
    ("ndarray", np.array([9, 4, 6])),
    ("ndarray-int32", np.array([1, 8], dtype=np.int32)),
    *([("tensor", torch.tensor([0, 9, 3]))] if torch is not None else []),
    ("mask", _mask(10, [1, 5, 9])),
    ("mask-list", [bool(b) for b in _mask(10, [0, 2])]),
    *([("mask-tensor", torch.from_numpy(_mask(10, [3, 4, 8])))] if torch is not None else []),
]
INDEX_IDS = [i for i, _ in INDEX_FORMS]
INDEX_VALUES = [v for _, v in INDEX_FORMS]
#: Index forms that select rows (not one row) and so can be written without repeats.
WRITE_FORMS = [(i, v) for i, v in INDEX_FORMS if not isinstance(v, (int, np.integer)) and i != "list-repeat"]
over_index_forms = pytest.mark.parametrize("index", INDEX_VALUES, ids=INDEX_IDS)
over_write_forms = pytest.mark.parametrize("index", [v for _, v in WRITE_FORMS], ids=[i for i, _ in WRITE_FORMS])


def _split(sg: StoreGate, name: str = "x", n: int = 10) -> np.ndarray:
    """Add ``_x(n)`` split 7/2/1 (for n=10) and return it."""
    data = _x(n)
    sg.add_data(name, data, phase=(0.7, 0.2, 0.1))
    return data


class AddDataTests:
    """add_data: var_names forms, phase forms, appends, shuffle, inputs."""

    def test_str_round_trip(self, sg: StoreGate) -> None:
        data = _x()
        sg.add_data("x", data)
        out = sg.get_data("x")
        assert out.dtype == data.dtype
        np.testing.assert_array_equal(out, data)

    def test_append_when_variable_exists(self, sg: StoreGate) -> None:
        sg.add_data("x", _x(4))
        sg.add_data("x", _x(6) + 100)
        np.testing.assert_array_equal(sg.get_data("x"), np.concatenate([_x(4), _x(6) + 100]))
        assert sg.get_var_shapes("x") == (3,)  # the row shape, as multiml gives it
        assert len(sg["train"]) == 10

    @pytest.mark.parametrize("dtype", ["f4", "f8", "i4", "u1", "bool", "c8"])
    def test_dtypes_are_kept(self, sg: StoreGate, dtype: str) -> None:
        data = (np.arange(12).reshape(6, 2) % 3).astype(dtype)
        sg.add_data("x", data)
        out = sg.get_data("x")
        assert out.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(out, data)

    def test_one_dimensional_rows(self, sg: StoreGate) -> None:
        sg.add_data("y", np.arange(5))
        assert sg.get_var_shapes("y") == ()
        assert sg.get_data("y", index=2) == 2

    def test_multi_dimensional_rows(self, sg: StoreGate) -> None:
        data = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
        sg.add_data("img", data)
        np.testing.assert_array_equal(sg.get_data("img"), data)

    def test_tuple_splits_second_axis(self, sg: StoreGate) -> None:
        data = np.arange(10 * 2 * 3).reshape(10, 2, 3)
        sg.add_data(("a", "b"), data)
        np.testing.assert_array_equal(sg.get_data("a"), data[:, 0])
        np.testing.assert_array_equal(sg.get_data("b"), data[:, 1])
        np.testing.assert_array_equal(sg.get_data(("a", "b")), data)

    def test_tuple_of_scalars_per_variable(self, sg: StoreGate) -> None:
        data = np.arange(12).reshape(4, 3)
        sg.add_data(("a", "b", "c"), data)
        np.testing.assert_array_equal(sg.get_data("c"), data[:, 2])
        np.testing.assert_array_equal(sg.get_data(("c", "a")), data[:, [2, 0]])

    def test_list_allows_different_row_shapes(self, sg: StoreGate) -> None:
        a, b = np.arange(8).reshape(4, 2), np.arange(4, dtype=np.float32)
        sg.add_data(["a", "b"], [a, b])
        out = sg.get_data(["a", "b"])
        assert isinstance(out, list)
        np.testing.assert_array_equal(out[0], a)
        np.testing.assert_array_equal(out[1], b)
        assert out[1].dtype == np.float32

    def test_accepts_python_lists_and_tensors(self, sg: StoreGate) -> None:
        if torch is None:
            pytest.skip("torch is not installed")
        sg.add_data("l", [[1, 2], [3, 4]])
        sg.add_data("t", torch.arange(6, dtype=torch.float32).reshape(3, 2))
        np.testing.assert_array_equal(sg.get_data("l"), [[1, 2], [3, 4]])
        np.testing.assert_array_equal(sg.get_data("t"), np.arange(6, dtype=np.float32).reshape(3, 2))
        assert sg.get_data("t").dtype == np.float32

    @pytest.mark.parametrize("phase", ["train", "valid", "test"])
    def test_named_phase(self, sg: StoreGate, phase: str) -> None:
        sg.add_data("x", _x())
        sg.add_data("x", _x(3), phase=phase)
        expected = np.concatenate([_x(), _x(3)]) if phase == "train" else _x(3)
        np.testing.assert_array_equal(sg.get_data("x", phase), expected)

    @pytest.mark.parametrize(
        ("spec", "counts"),
        [
            ((0.5, 0.3, 0.2), (5, 3, 2)),
            ([0.5, 0.3, 0.2], (5, 3, 2)),
            ((0.7, 0.2, 0.1), (7, 2, 1)),
            ((5, 3, 2), (5, 3, 2)),
            ([6, 0, 4], (6, 0, 4)),
            ((1.0, 0.0, 0.0), (10, 0, 0)),
            ((0, 0, 10), (0, 0, 10)),
        ],
        ids=["tuple-frac", "list-frac", "frac-70-20-10", "tuple-int", "list-int-empty-valid", "all-train", "all-test"],
    )
    def test_split_phase(self, sg: StoreGate, spec: Any, counts: tuple[int, int, int]) -> None:
        data = _x()
        sg.add_data("x", data, phase=spec)
        bounds = np.cumsum([0, *counts])
        for i, phase in enumerate(("train", "valid", "test")):
            if counts[i]:
                np.testing.assert_array_equal(sg.get_data("x", phase), data[bounds[i] : bounds[i + 1]])
            else:  # multiml's rule: a phase that gets no row gets no variable
                assert "x" not in sg.get_var_names(phase)
        np.testing.assert_array_equal(sg.get_data("x", "all"), data)

    def test_split_with_tuple_and_list_names(self, sg: StoreGate) -> None:
        data = np.arange(10 * 2).reshape(10, 2)
        sg.add_data(("a", "b"), data, phase=(0.6, 0.2, 0.2))
        sg.add_data(["c", "d"], [data[:, 0], data[:, 1] * 2], phase=(6, 2, 2))
        np.testing.assert_array_equal(sg.get_data("b", "valid"), data[6:8, 1])
        np.testing.assert_array_equal(sg.get_data("d", "test"), data[8:, 1] * 2)

    def test_phase_all_splits_by_current_sizes(self, sg: StoreGate) -> None:
        _split(sg)
        y = np.arange(10) * 10
        sg.add_data("y", y, phase="all")
        np.testing.assert_array_equal(sg.get_data("y", "train"), y[:7])
        np.testing.assert_array_equal(sg.get_data("y", "valid"), y[7:9])
        np.testing.assert_array_equal(sg.get_data("y", "test"), y[9:])

    def test_shuffle_true_keeps_separate_calls_aligned(self, sg: StoreGate) -> None:
        x = np.arange(20)
        sg.add_data("x", x, shuffle=True)
        sg.add_data("y", x * 2, shuffle=True)
        sx, sy = sg.get_data("x"), sg.get_data("y")
        assert sorted(sx.tolist()) == x.tolist()
        assert not np.array_equal(sx, x)
        np.testing.assert_array_equal(sy, sx * 2)

    def test_shuffle_int_is_a_seed(self, sg: StoreGate) -> None:
        x = np.arange(20)
        sg.add_data("a", x, shuffle=3)
        sg.add_data("b", x, shuffle=3)
        sg.add_data("c", x, shuffle=4)
        np.testing.assert_array_equal(sg.get_data("a"), sg.get_data("b"))
        assert not np.array_equal(sg.get_data("a"), sg.get_data("c"))

    def test_shuffle_before_split(self, sg: StoreGate) -> None:
        x = np.arange(10)
        sg.add_data("x", x, phase=(0.5, 0.3, 0.2), shuffle=True)
        parts = [sg.get_data("x", p) for p in ("train", "valid", "test")]
        assert [len(p) for p in parts] == [5, 3, 2]
        assert sorted(np.concatenate(parts).tolist()) == x.tolist()

    def test_do_compile(self, sg: StoreGate) -> None:
        sg.add_data("x", _x(), do_compile=True)
        meta = sg.get_metadata()
        assert meta["compiled"] is True
        assert meta["sizes"]["train"] == 10

    def test_empty_array(self, sg: StoreGate) -> None:
        sg.add_data("x", np.zeros((0, 3), dtype=np.float32))
        assert sg.get_var_shapes("x") is None  # no row, no variable (multiml); create_empty makes one
        sg.add_data("x", np.ones((2, 3), dtype=np.float32))
        sg.add_data("x", np.zeros((0, 3), dtype=np.float32))  # appends nothing
        np.testing.assert_array_equal(sg.get_data("x"), np.ones((2, 3)))


class UpdateDataTests:
    """update_data: full replacement, every index form, 'all', absent variables."""

    def test_index_none_writes_every_row(self, sg: StoreGate) -> None:
        # multiml: x[0:] = data, numpy's assignment rule; the variable keeps its length.
        sg.add_data("x", _x())
        sg.update_data("x", _x() + 7)
        np.testing.assert_array_equal(sg.get_data("x"), _x() + 7)
        sg.update_data("x", [1, 2, 3])
        np.testing.assert_array_equal(sg.get_data("x"), np.tile([1, 2, 3], (10, 1)))
        with pytest.raises(InvalidArgumentError, match=re.escape("shape (10, 3)")):
            sg.update_data("x", _x(4))
        np.testing.assert_array_equal(sg.get_data("x"), np.tile([1, 2, 3], (10, 1)))

    @over_write_forms
    def test_index_forms(self, sg: StoreGate, index: Any) -> None:
        sg.add_data("x", _x())
        expected = _x()
        rows = -expected[numpy_index(index)] - 1
        expected[numpy_index(index)] = rows
        sg.update_data("x", rows, index=index)
        np.testing.assert_array_equal(sg.get_data("x"), expected)

    @pytest.mark.parametrize("index", [0, 3, -1, -10, np.int64(2)])
    def test_int_index_takes_one_row_without_row_axis(self, sg: StoreGate, index: Any) -> None:
        sg.add_data("x", _x())
        expected = _x()
        expected[index] = [-1, -2, -3]
        sg.update_data("x", [-1, -2, -3], index=index)
        np.testing.assert_array_equal(sg.get_data("x"), expected)

    def test_repeated_rows_last_write_wins(self, sg: StoreGate) -> None:
        sg.add_data("y", np.zeros(5, dtype=np.int64))
        sg.update_data("y", [1, 2, 3], index=[4, 1, 4])
        np.testing.assert_array_equal(sg.get_data("y"), [0, 2, 0, 0, 3])

    def test_casts_same_kind(self, sg: StoreGate) -> None:
        sg.add_data("x", np.zeros((3, 2), dtype=np.float32))
        sg.update_data("x", np.full((1, 2), 0.5, dtype=np.float64), index=[1])
        out = sg.get_data("x")
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out[1], [0.5, 0.5])

    def test_tuple_names_with_index(self, sg: StoreGate) -> None:
        data = np.arange(10 * 2 * 3).reshape(10, 2, 3)
        sg.add_data(("a", "b"), data)
        new = -np.ones((2, 2, 3), dtype=np.int64)
        sg.update_data(("a", "b"), new, index=(3, 5))
        data[3:5] = new
        np.testing.assert_array_equal(sg.get_data(("a", "b")), data)
        sg.update_data(("a", "b"), np.full((2, 3), 9), index=-1)
        np.testing.assert_array_equal(sg.get_data("b", index=-1), [9, 9, 9])

    def test_list_names_with_index(self, sg: StoreGate) -> None:
        sg.add_data(["a", "b"], [np.zeros((4, 2)), np.zeros(4)])
        sg.update_data(["a", "b"], [np.ones((2, 2)), np.ones(2)], index=[0, 3])
        sg.update_data(["a", "b"], [[5, 5], 5], index=1)
        np.testing.assert_array_equal(sg.get_data("a"), [[1, 1], [5, 5], [0, 0], [1, 1]])
        np.testing.assert_array_equal(sg.get_data("b"), [1, 5, 0, 1])

    def test_absent_variable_is_added(self, sg: StoreGate) -> None:
        sg.update_data("new", _x(3), phase="valid")
        np.testing.assert_array_equal(sg.get_data("new", "valid"), _x(3))

    def test_phase_all_without_index_writes_across_phases(self, sg: StoreGate) -> None:
        _split(sg)
        new = -_x()
        sg.update_data("x", new, phase="all")
        np.testing.assert_array_equal(sg.get_data("x", "train"), new[:7])
        np.testing.assert_array_equal(sg.get_data("x", "test"), new[9:])

    def test_phase_all_adds_absent_variable_by_phase_sizes(self, sg: StoreGate) -> None:
        _split(sg)
        sg.update_data("y", np.arange(10), phase="all")
        np.testing.assert_array_equal(sg.get_data("y", "valid"), [7, 8])

    @over_write_forms
    def test_phase_all_index_forms(self, sg: StoreGate, index: Any) -> None:
        _split(sg)
        expected = _x()
        rows = -expected[numpy_index(index)] - 1
        expected[numpy_index(index)] = rows
        sg.update_data("x", rows, phase="all", index=index)
        np.testing.assert_array_equal(sg.get_data("x", "all"), expected)
        np.testing.assert_array_equal(sg.get_data("x", "valid"), expected[7:9])

    @pytest.mark.parametrize("index", [6, 7, 8, 9, -1, -4])
    def test_phase_all_int_index(self, sg: StoreGate, index: int) -> None:
        _split(sg)
        expected = _x()
        expected[index] = [7, 7, 7]
        sg.update_data("x", [7, 7, 7], phase="all", index=index)
        np.testing.assert_array_equal(sg.get_data("x", "all"), expected)

    def test_split_phase_writes_each_phase(self, sg: StoreGate) -> None:
        _split(sg)
        sg.update_data("x", -_x(), phase=(7, 2, 1))
        np.testing.assert_array_equal(sg.get_data("x", "valid"), -_x()[7:9])
        np.testing.assert_array_equal(sg.get_data("x", "all"), -_x())
        with pytest.raises(InvalidArgumentError, match="broadcast"):
            sg.update_data("x", _x(), phase=(5, 3, 2))  # would change the phases' lengths
        np.testing.assert_array_equal(sg.get_data("x", "all"), -_x())

    def test_do_compile_defaults_to_true(self, sg: StoreGate) -> None:
        sg.add_data("x", _x())
        sg.update_data("x", _x(), index=None)
        assert sg.get_metadata()["compiled"] is True
        sg.update_data("x", _x(), do_compile=False)
        assert sg.get_metadata()["compiled"] is False


class GetDataIndexTests:
    """get_data with every index form, in one phase and across phases."""

    @over_index_forms
    def test_one_phase(self, sg: StoreGate, index: Any) -> None:
        sg.add_data("x", _x())
        expected = _x()[numpy_index(index)]
        out = sg.get_data("x", "train", index)
        assert np.shape(out) == expected.shape
        np.testing.assert_array_equal(out, expected)

    @over_index_forms
    def test_phase_all(self, sg: StoreGate, index: Any) -> None:
        data = _split(sg)
        expected = data[numpy_index(index)]
        out = sg.get_data("x", "all", index)
        assert np.shape(out) == expected.shape
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(sg.get_data("x", None, index), expected)

    @over_index_forms
    def test_tuple_names(self, sg: StoreGate, index: Any) -> None:
        data = np.arange(10 * 2 * 3).reshape(10, 2, 3)
        sg.add_data(("a", "b"), data, phase=(0.7, 0.2, 0.1))
        expected = data[numpy_index(index)]
        out = sg.get_data(("a", "b"), "all", index)
        assert out.shape == expected.shape
        np.testing.assert_array_equal(out, expected)

    @over_index_forms
    def test_list_names(self, sg: StoreGate, index: Any) -> None:
        a, b = _x(), np.arange(10.0)
        sg.add_data(["a", "b"], [a, b])
        out = sg.get_data(["a", "b"], "train", index)
        np.testing.assert_array_equal(out[0], a[numpy_index(index)])
        np.testing.assert_array_equal(out[1], b[numpy_index(index)])

    @over_index_forms
    def test_item_syntax(self, sg: StoreGate, index: Any) -> None:
        data = _split(sg)
        sg.add_data("t", data * 2, phase="train")
        np.testing.assert_array_equal(sg["all"]["x"][index], data[numpy_index(index)])
        np.testing.assert_array_equal(sg["train"]["t"][index], data[numpy_index(index)] * 2)


class GetDataTests:
    """get_data: return shapes, phases, missing variables, copies."""

    def test_return_shape_matrix(self, sg: StoreGate) -> None:
        data = np.arange(5 * 2 * 3).reshape(5, 2, 3)
        sg.add_data(("a", "b"), data)
        assert sg.get_data("a", index=1).shape == (3,)
        assert sg.get_data(("a", "b"), index=1).shape == (2, 3)
        assert sg.get_data("a").shape == (5, 3)
        assert sg.get_data(("a", "b")).shape == (5, 2, 3)
        assert [a.shape for a in sg.get_data(["a", "b"], index=1)] == [(3,), (3,)]

    def test_default_index_is_all_rows(self, sg: StoreGate) -> None:
        sg.add_data("x", _x())
        np.testing.assert_array_equal(sg.get_data("x"), _x())
        np.testing.assert_array_equal(sg.get_data("x", "train", None), _x())

    def test_phase_all_skips_phases_without_the_variable(self, sg: StoreGate) -> None:
        sg.add_data("x", _x(3), phase="train")
        sg.add_data("x", _x(2) + 50, phase="test")
        np.testing.assert_array_equal(sg.get_data("x", "all"), np.concatenate([_x(3), _x(2) + 50]))

    def test_missing_variable_raises_key_error(self, sg: StoreGate) -> None:
        sg.add_data("x", _x())
        with pytest.raises(KeyError, match="'nope'"):
            sg.get_data("nope")
        with pytest.raises(NotFoundError, match="'x'"):
            sg.get_data("x", "valid")
        with pytest.raises(NotFoundError):
            sg.get_data("nope", "all")

    def test_out_of_range_int_raises_index_error(self, sg: StoreGate) -> None:
        sg.add_data("x", _x())
        for index in (10, -11):
            with pytest.raises(IndexError, match=str(index)):
                sg.get_data("x", index=index)

    def test_result_is_a_copy(self, sg: StoreGate) -> None:
        sg.add_data("x", _x())
        out = sg.get_data("x", index=slice(0, 3))
        out[:] = -1
        np.testing.assert_array_equal(sg.get_data("x"), _x())

    def test_reads_inside_rows_are_numpy_indexing(self, sg: StoreGate) -> None:
        """A tuple (rows, *inner) reads as numpy indexes the whole array (Backend.read_inner), writes as it assigns."""
        data = np.arange(10 * 3 * 4).reshape(10, 3, 4)
        sg.add_data("v", data, phase=(0.7, 0.2, 0.1))
        indexes: list[Any] = [
            (2, 1, slice(1, 3)),
            (slice(1, 9), ..., 3),
            ([6, 0, 6], slice(None, None, -2), 0),
            (np.array([], dtype=np.int64), 0),
            (slice(None, None, 3), -1, slice(-1, None, -3)),
            (5, ...),
            (slice(1, 9, 2), [2, 0, 2], slice(None)),
            (slice(None), ..., np.array([True, False, False, True])),
        ]
        for index in indexes:
            for phase, array in (("all", data), ("train", data[:7])):
                out = sg.get_data("v", phase, index)
                assert np.shape(out) == array[index].shape, index
                np.testing.assert_array_equal(out, array[index])
        sg.update_data("v", -1, "all", index=(slice(5, 9), 0, slice(None, None, -2)))
        data[5:9, 0, ::-2] = -1
        np.testing.assert_array_equal(sg.get_data("v", "all"), data)
        with pytest.raises(InvalidArgumentError, match="must broadcast"):
            sg.update_data("v", [1, 2, 3], "train", index=(0, 1, slice(1, 3)))
        np.testing.assert_array_equal(sg.get_data("v", "all"), data)


class DeleteTests:
    """delete_data and clear_data."""

    def test_delete_one_phase(self, sg: StoreGate) -> None:
        _split(sg)
        sg.delete_data("x", "train")
        assert "x" not in sg.get_var_names("train")
        assert sg.get_var_names("valid") == ["x"]

    def test_delete_names_and_all(self, sg: StoreGate) -> None:
        _split(sg, "x")
        _split(sg, "y")
        _split(sg, "z")
        sg.delete_data(["x", "y"], "all")
        assert sg.get_var_names("all") == ["z"]

    def test_delete_absent_is_a_no_op(self, sg: StoreGate) -> None:
        sg.add_data("x", _x())
        sg.delete_data("nope")
        sg.delete_data("x", "valid")
        sg.delete_data(("nope", "x"), "test")
        np.testing.assert_array_equal(sg.get_data("x"), _x())

    def test_delete_then_add_again(self, sg: StoreGate) -> None:
        sg.add_data("x", _x())
        sg.delete_data("x")
        sg.add_data("x", np.ones(2, dtype=np.float32))
        out = sg.get_data("x")
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, [1, 1])

    def test_clear_data(self, sg: StoreGate) -> None:
        _split(sg)
        sg.compile()
        sg.clear_data()
        assert sg.get_var_names("all") == []
        assert sg.data_id in sg.get_data_ids()
        assert sg.get_metadata()["compiled"] is False
        sg.add_data("x", _x(2))
        assert len(sg["train"]) == 2

    def test_clear_data_keeps_other_data_ids(self, sg: StoreGate) -> None:
        own = sg.data_id
        assert own is not None
        sg.set_data_id("other")
        sg.add_data("x", _x())
        sg.set_data_id(own)
        sg.add_data("x", _x(2))
        sg.clear_data()
        sg.set_data_id("other")
        np.testing.assert_array_equal(sg.get_data("x"), _x())


class CreateEmptyTests:
    """create_empty."""

    def test_zeros_of_shape_and_dtype(self, sg: StoreGate) -> None:
        sg.create_empty("e", (4, 2), dtype="i2")
        out = sg.get_data("e")
        assert out.dtype == np.int16
        np.testing.assert_array_equal(out, np.zeros((4, 2)))

    def test_default_dtype_is_float32(self, sg: StoreGate) -> None:
        sg.create_empty(["a", "b"], [3], phase="valid")
        assert sg.get_data("b", "valid").dtype == np.float32
        assert sg.get_var_shapes(["a", "b"], "valid") == [(), ()]
        assert len(sg["valid"]) == 3

    def test_refuses_an_existing_variable(self, sg: StoreGate) -> None:
        sg.add_data("x", _x())  # multiml refused too: zeros would silently replace the data
        with pytest.raises(InvalidArgumentError, match="already exists in phase 'train'"):
            sg.create_empty("x", (2, 5), dtype="f8")
        np.testing.assert_array_equal(sg.get_data("x"), _x())

    def test_a_split_shares_the_rows_out(self, sg: StoreGate) -> None:
        sg.create_empty(["a", "b"], (10, 2), phase=(0.7, 0.2, 0.1), dtype="i2")
        assert [len(sg[p]) for p in ("train", "valid", "test")] == [7, 2, 1]
        assert sg.get_data("b", "all").dtype == np.int16

    def test_can_be_filled_by_update(self, sg: StoreGate) -> None:
        sg.create_empty("x", (5, 3), dtype="i8")
        sg.update_data("x", _x(2), index=(1, 3))
        np.testing.assert_array_equal(sg.get_data("x")[1:3], _x(2))
        np.testing.assert_array_equal(sg.get_data("x")[3:], 0)


class InspectionTests:
    """data_id, backend, get_data_ids, get_var_names, get_var_shapes, get_metadata."""

    def test_data_id_and_backend(self, sg: StoreGate) -> None:
        assert sg.data_id in sg.get_data_ids()
        assert sg.backend in available_backends()
        assert sg.backend_object.name in available_backends()
        sg.set_data_id("second")
        assert sg.data_id == "second"

    def test_get_data_ids(self, sg: StoreGate) -> None:
        own = sg.data_id
        assert own in sg.get_data_ids()
        sg.set_data_id("zz")
        sg.add_data("x", _x())
        ids = sg.get_data_ids()
        assert {own, "zz"} <= set(ids)
        assert ids == sorted(ids)

    def test_data_ids_are_separate(self, sg: StoreGate) -> None:
        own = sg.data_id
        assert own is not None
        sg.add_data("x", _x())
        sg.set_data_id("other")
        assert sg.get_var_names() == []
        sg.add_data("x", _x(2))
        sg.set_data_id(own)
        assert len(sg["train"]["x"]) == 10

    def test_get_var_names(self, sg: StoreGate) -> None:
        sg.add_data("b", _x())
        sg.add_data("a", _x())
        sg.add_data("c", _x(2), phase="test")
        assert sg.get_var_names() == ["a", "b"]
        assert sg.get_var_names("valid") == []
        assert sg.get_var_names("test") == ["c"]
        assert sg.get_var_names("all") == ["a", "b", "c"]

    def test_get_var_shapes(self, sg: StoreGate) -> None:
        sg.add_data(["a", "b"], [_x(), np.zeros((10, 2, 2))], phase=(0.7, 0.2, 0.1))
        # multiml's get_var_shapes: the shape of one row, None for an absent variable.
        assert sg.get_var_shapes("a") == (3,)
        assert sg.get_var_shapes("b", "valid") == (2, 2)
        assert sg.get_var_shapes(["a", "b"], "all") == [(3,), (2, 2)]
        assert sg.get_var_shapes(("a", "b"), "test") == [(3,), (2, 2)]
        assert sg.get_var_shapes("nope") is None
        assert sg.get_var_shapes(["a", "nope"]) == [(3,), None]

    def test_get_metadata(self, sg: StoreGate) -> None:
        meta = sg.get_metadata()
        assert meta["sizes"] == {"train": 0, "valid": 0, "test": 0, "all": 0}
        assert meta["valid_phases"] == []
        _split(sg)
        meta = sg.get_metadata()
        assert meta["compiled"] is False
        assert meta["sizes"] == {"train": 7, "valid": 2, "test": 1, "all": 10}
        assert meta["total_events"] == 10
        assert meta["valid_phases"] == ["train", "valid", "test"]

    def test_get_metadata_skips_empty_phases(self, sg: StoreGate) -> None:
        sg.add_data("x", _x(), phase=(8, 0, 2))
        sg.compile()
        meta = sg.get_metadata()
        assert meta["valid_phases"] == ["train", "test"]
        assert meta["sizes"]["valid"] == 0
        assert meta["compiled"] is True

    def test_get_metadata_with_unequal_lengths(self, sg: StoreGate) -> None:
        sg.add_data("x", _x(3))
        sg.add_data("y", _x(4))
        meta = sg.get_metadata()
        assert meta["sizes"]["train"] is None
        assert meta["total_events"] is None
        assert meta["compiled"] is False


class TransformTests:
    """astype, onehot, argmax, shuffle."""

    def test_astype(self, sg: StoreGate) -> None:
        sg.add_data("x", _x())
        sg.astype("x", np.float16)
        out = sg.get_data("x")
        assert out.dtype == np.float16
        np.testing.assert_array_equal(out, _x())

    def test_astype_list_and_phase_all(self, sg: StoreGate) -> None:
        _split(sg, "x")
        _split(sg, "y")
        sg.add_data("z", np.arange(7), phase="train")
        sg.astype(["x", "z"], "f4", phase="all")
        assert {sg.get_data("x", p).dtype for p in ("train", "valid", "test")} == {np.dtype("f4")}
        assert sg.get_data("z").dtype == np.float32
        assert sg.get_data("y", "valid").dtype == np.int64

    def test_astype_then_same_kind_appends(self, sg: StoreGate) -> None:
        sg.add_data("x", _x(2))
        sg.astype("x", "f8")
        sg.add_data("x", np.full((1, 3), 0.5))
        np.testing.assert_array_equal(sg.get_data("x", index=-1), [0.5, 0.5, 0.5])

    def test_onehot(self, sg: StoreGate) -> None:
        labels = np.array([0, 2, 1, 2])
        sg.add_data("y", labels, phase=(2, 1, 1))
        sg.onehot("y", 3, phase="all")
        out = sg.get_data("y", "all")
        assert out.shape == (4, 3)
        assert out.dtype == np.float64  # multiml's np.identity(num_classes)[labels]
        np.testing.assert_array_equal(out, np.eye(3)[labels])

    def test_onehot_one_phase_only(self, sg: StoreGate) -> None:
        sg.add_data("y", np.array([0, 1, 1, 0]), phase=(2, 2, 0))
        sg.onehot("y", 2, phase="valid")
        assert sg.get_var_shapes("y", "valid") == (2,)
        assert sg.get_var_shapes("y", "train") == ()

    def test_argmax(self, sg: StoreGate) -> None:
        data = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
        sg.add_data(["p", "q"], [data, data[:, None, :]])
        sg.argmax("p", axis=1)
        sg.argmax("q", axis=-1)
        np.testing.assert_array_equal(sg.get_data("p"), [1, 0, 2])
        np.testing.assert_array_equal(sg.get_data("q"), [[1], [0], [2]])

    def test_onehot_then_argmax_round_trip(self, sg: StoreGate) -> None:
        labels = np.array([3, 0, 1, 3, 2])
        sg.add_data("y", labels)
        sg.onehot("y", 4)
        sg.argmax("y", 1)
        np.testing.assert_array_equal(sg.get_data("y"), labels)

    def test_shuffle_keeps_rows_aligned_in_each_phase(self, sg: StoreGate) -> None:
        x = np.arange(20)
        sg.add_data(["x", "y"], [x, x * 10], phase=(10, 6, 4))
        sg.shuffle()
        for phase, rows in (("train", x[:10]), ("valid", x[10:16]), ("test", x[16:])):
            sx, sy = sg.get_data(["x", "y"], phase)
            assert sorted(sx.tolist()) == rows.tolist()
            np.testing.assert_array_equal(sy, sx * 10)
        assert not np.array_equal(sg.get_data("x", "train"), x[:10])

    def test_shuffle_one_phase(self, sg: StoreGate) -> None:
        x = np.arange(20)
        sg.add_data("x", x, phase=(10, 10, 0))
        sg.shuffle("valid", seed=1)
        np.testing.assert_array_equal(sg.get_data("x", "train"), x[:10])
        assert not np.array_equal(sg.get_data("x", "valid"), x[10:])

    def test_shuffle_seed_is_reproducible(self, sg: StoreGate) -> None:
        results = {}
        for data_id, seed in (("s1", 5), ("s2", 5), ("s3", 6)):
            sg.set_data_id(data_id)
            sg.add_data("x", np.arange(20))
            sg.shuffle("train", seed=seed)
            results[data_id] = sg.get_data("x")
        np.testing.assert_array_equal(results["s1"], results["s2"])
        assert not np.array_equal(results["s1"], results["s3"])

    def test_transforms_mark_stale(self, sg: StoreGate) -> None:
        sg.add_data("y", np.array([0, 1]), do_compile=True)
        sg.onehot("y", 2)
        assert sg.get_metadata()["compiled"] is False


class CompileTests:
    """compile, reset=True and the active variable."""

    def test_compile_records_state(self, sg: StoreGate) -> None:
        _split(sg)
        sg.compile()
        meta = sg.get_metadata()
        assert meta["compiled"] is True
        assert meta["sizes"] == {"train": 7, "valid": 2, "test": 1, "all": 10}

    def test_change_after_compile_marks_stale(self, sg: StoreGate) -> None:
        _split(sg)
        sg.compile()
        sg.add_data("x", _x(1), phase="test")
        assert sg.get_metadata()["compiled"] is False
        sg.compile()
        assert sg.get_metadata()["sizes"]["test"] == 2

    def test_unequal_lengths_in_a_phase_raise(self, sg: StoreGate) -> None:
        sg.add_data("x", _x(3))
        sg.add_data("y", _x(4))
        with pytest.raises(ValidationError, match="same number of rows"):
            sg.compile()
        assert sg.get_metadata()["compiled"] is False

    def test_row_shape_across_phases_must_agree(self, sg: StoreGate) -> None:
        sg.add_data("x", np.zeros((3, 2)), phase="train")
        sg.add_data("x", np.zeros((3, 4)), phase="test")
        with pytest.raises(ValidationError, match="'x'"):
            sg.compile()

    def test_dtype_across_phases_must_agree(self, sg: StoreGate) -> None:
        sg.add_data("x", np.zeros(3, dtype=np.float32), phase="train")
        sg.add_data("x", np.zeros(3, dtype=np.int8), phase="valid")
        with pytest.raises(ValidationError, match="dtype"):
            sg.compile()

    def test_reset_creates_active(self, sg: StoreGate) -> None:
        sg.add_data("x", _x(), phase=(8, 0, 2))
        sg.compile(reset=True)
        assert sg.get_var_names("valid") == []
        active = sg.get_data("active", "all")
        assert active.dtype == np.int64  # multiml: update_data('active', [1] * n)
        np.testing.assert_array_equal(active, np.ones(10, dtype=np.int64))
        assert sg.get_metadata()["compiled"] is True
        sg.update_data("active", [0, 1], phase="test")  # multiml's tasks may write 0 / 1 back
        assert sg.get_data("active", "test")[sg.get_data("active", "test") == True].size == 1  # noqa: E712 (multiml's metric)

    def test_reset_recreates_active(self, sg: StoreGate) -> None:
        sg.add_data("x", _x(3))
        sg.compile(reset=True)
        sg.update_data("active", False, index=1)
        sg.add_data("x", _x(2))
        sg.compile(reset=True)  # the old active (3 rows) is replaced, not validated
        np.testing.assert_array_equal(sg.get_data("active"), np.ones(5, dtype=np.int64))

    def test_reset_keeps_the_dtype_active_has(self, sg: StoreGate) -> None:
        sg.add_data(["x", "active"], [_x(3), np.zeros(3, dtype=bool)])
        sg.compile(reset=True)  # multiml's update_data casts the ones to the stored dtype
        assert sg.get_data("active").dtype == np.bool_
        np.testing.assert_array_equal(sg.get_data("active"), np.ones(3, dtype=bool))

    def test_compile_without_reset_keeps_active(self, sg: StoreGate) -> None:
        sg.add_data("x", _x(3))
        sg.compile(reset=True)
        sg["train"]["active"][0] = False
        sg.compile()
        np.testing.assert_array_equal(sg.get_data("active"), [False, True, True])

    def test_compile_show_info(self, sg: StoreGate, capsys: pytest.CaptureFixture[str]) -> None:
        sg.add_data("x", _x())
        sg.compile(show_info=True)
        out = capsys.readouterr().out
        assert "x" in out
        assert "compiled=True" in out

    def test_compile_empty_data_id(self, sg: StoreGate) -> None:
        sg.compile()
        assert sg.get_metadata()["compiled"] is True


class ItemSyntaxTests:
    """sg[phase][var_names][index], assignment, del, len, in, iteration."""

    def test_read(self, sg: StoreGate) -> None:
        data = _split(sg)
        np.testing.assert_array_equal(sg["train"]["x"][0:2], data[:2])
        np.testing.assert_array_equal(sg["valid"]["x"][-1], data[8])
        np.testing.assert_array_equal(sg["all"]["x"][:], data)

    def test_phase_defaults_to_train(self, sg: StoreGate) -> None:
        data = _split(sg)
        np.testing.assert_array_equal(sg["x"][:], data[:7])

    def test_read_list_and_tuple_across_phases(self, sg: StoreGate) -> None:
        data = np.arange(10 * 2).reshape(10, 2)
        sg.add_data(("a", "b"), data, phase=(0.7, 0.2, 0.1))
        a, b = sg["all"][["a", "b"]][:]
        np.testing.assert_array_equal(a, data[:, 0])
        np.testing.assert_array_equal(b, data[:, 1])
        np.testing.assert_array_equal(sg["all"][("a", "b")][5:9], data[5:9])

    def test_write_rows(self, sg: StoreGate) -> None:
        sg.add_data("x", _x())
        sg["train"]["x"][0:2] = -_x(2)
        sg["train"]["x"][-1] = [1, 1, 1]
        expected = _x()
        expected[:2], expected[-1] = -_x(2), 1
        np.testing.assert_array_equal(sg.get_data("x"), expected)

    def test_write_whole_variable(self, sg: StoreGate) -> None:
        sg["valid"]["x"] = _x(4)
        np.testing.assert_array_equal(sg.get_data("x", "valid"), _x(4))
        sg["valid"]["x"] = _x(4) + 1  # writes every row (numpy's assignment rule)
        np.testing.assert_array_equal(sg.get_data("x", "valid"), _x(4) + 1)
        sg["valid"]["x"] = [7, 8, 9]  # one row fills them all, as x[:] = row does
        np.testing.assert_array_equal(sg.get_data("x", "valid"), np.tile([7, 8, 9], (4, 1)))
        with pytest.raises(InvalidArgumentError, match="broadcast"):
            sg["valid"]["x"] = _x(2)  # an update never changes the number of rows

    def test_write_across_phases(self, sg: StoreGate) -> None:
        data = np.arange(10 * 2).reshape(10, 2)
        sg.add_data(("a", "b"), data, phase=(0.7, 0.2, 0.1))
        sg["all"][("a", "b")][:] = -data
        np.testing.assert_array_equal(sg.get_data("b", "test"), -data[9:, 1])
        sg["all"]["a"][[0, 8, 9]] = [5, 6, 7]
        expected = -data[:, 0]
        expected[[0, 8, 9]] = [5, 6, 7]
        np.testing.assert_array_equal(sg.get_data("a", "train"), expected[:7])
        np.testing.assert_array_equal(sg.get_data("a", "valid"), expected[7:9])
        np.testing.assert_array_equal(sg.get_data("a", "test"), expected[9:])

    def test_del(self, sg: StoreGate) -> None:
        _split(sg, "x")
        _split(sg, "y")
        del sg["train"]["x"]
        assert sg.get_var_names("train") == ["y"]
        del sg["all"][["x", "y"]]
        assert sg.get_var_names("all") == []
        del sg["test"]["absent"]

    def test_len(self, sg: StoreGate) -> None:
        assert len(sg["train"]) == 0
        _split(sg)
        assert len(sg["train"]) == 7
        assert len(sg["valid"]) == 2
        assert len(sg["all"]) == 10
        assert len(sg["test"]["x"]) == 1
        assert len(sg["all"]["x"]) == 10

    def test_len_of_unequal_phase_raises(self, sg: StoreGate) -> None:
        sg.add_data("x", _x(3))
        sg.add_data("y", _x(4))
        with pytest.raises(ValueError, match="same number of rows"):
            len(sg["train"])

    def test_contains(self, sg: StoreGate) -> None:
        sg.add_data("x", _x(2), phase="test")
        assert "x" in sg["test"]
        assert "x" not in sg["train"]
        assert "x" in sg["all"]
        assert "nope" not in sg["all"]
        assert 3 not in sg["test"]

    def test_iteration(self, sg: StoreGate) -> None:
        data = _split(sg)
        rows = list(sg["train"]["x"])
        assert len(rows) == 7
        np.testing.assert_array_equal(np.stack(rows), data[:7])
        np.testing.assert_array_equal(np.stack(list(sg["all"]["x"])), data)

    def test_iteration_over_list_names_yields_tuples(self, sg: StoreGate) -> None:
        sg.add_data(["a", "b"], [np.arange(3), np.arange(3) * 2.0])
        assert [(int(a), float(b)) for a, b in sg["train"][["a", "b"]]] == [(0, 0.0), (1, 2.0), (2, 4.0)]

    def test_views_are_independent(self, sg: StoreGate) -> None:
        data = _split(sg)
        train = sg["train"]
        test = sg["test"]
        x = train["x"]
        assert test["x"][:].shape == (1, 3)
        np.testing.assert_array_equal(train["x"][:], data[:7])
        np.testing.assert_array_equal(x[:], data[:7])

    def test_index_without_names_raises(self, sg: StoreGate) -> None:
        _split(sg)
        with pytest.raises(InvalidArgumentError, match="var_names"):
            sg["train"][0:2] = _x(2)
        with pytest.raises(InvalidArgumentError, match="var_names"):
            sg["train"][0]


class ShowInfoTests:
    """show_info and the notebook table."""

    def test_text_table(self, sg: StoreGate, capsys: pytest.CaptureFixture[str]) -> None:
        sg.add_data(["pixels", "label"], [np.zeros((4, 8, 8), dtype=np.float32), np.arange(4)], phase=(2, 1, 1))
        sg.show_info()
        out = capsys.readouterr().out
        for word in ("phase", "dtype", "rows", "pixels", "label", "float32", "(8, 8)", "conf"):
            assert word in out
        header, *rows = (re.split(r"\s{2,}", line.strip()) for line in out.splitlines()[1:] if "--" not in line)
        table = {(r[header.index("phase")], r[header.index("var_name")]): r for r in rows}
        assert table["train", "pixels"][header.index("rows")] == "2"
        assert table["test", "label"][header.index("rows")] == "1"
        assert table["valid", "pixels"][header.index("row shape")] == "(8, 8)"
        assert table["valid", "label"][header.index("dtype")] == "int64"

    def test_empty(self, sg: StoreGate, capsys: pytest.CaptureFixture[str]) -> None:
        sg.show_info()
        assert "no data" in capsys.readouterr().out

    def test_html_table(self, sg: StoreGate) -> None:
        sg.add_data("x<y", _x())
        html = sg._repr_html_()
        assert "<table>" in html
        assert "x&lt;y" in html
        assert "int64" in html


def _ragged(lengths: tuple[int, ...]) -> list[np.ndarray]:
    return [np.arange(n * 2, dtype=np.int64).reshape(n, 2) + 100 * i for i, n in enumerate(lengths)]


def _assert_rows(got: Any, expected: list[np.ndarray]) -> None:
    assert isinstance(got, list)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


class RaggedTests:
    """Ragged variables (rows of different lengths): stored as two plain arrays, so every backend holds them."""

    def test_ragged_round_trip(self, sg: StoreGate) -> None:
        rows = _ragged((3, 0, 5, 1))
        sg.add_data(["r", "y"], [rows, np.arange(4)], phase=(2, 1, 1))
        assert sg.get_var_names("train") == ["r", "y"]
        assert sg.get_var_shapes("r") == (None, 2)
        np.testing.assert_array_equal(sg.get_data("r", "train", 0), rows[0])
        _assert_rows(sg.get_data("r", "all"), rows)
        padded, lengths = sg.get_data("r", "all", [2, 3], batch_mode="pad")
        np.testing.assert_array_equal(lengths, [5, 1])
        np.testing.assert_array_equal(padded[1], np.pad(rows[3], ((0, 4), (0, 0))))

    def test_ragged_append_update_delete(self, sg: StoreGate) -> None:
        rows = _ragged((2, 4))
        sg.add_data("r", rows)
        sg.add_data("r", _ragged((1,)))
        sg.update_data("r", np.zeros((6, 2), np.int64), "train", 0)  # another length
        _assert_rows(sg.get_data("r"), [np.zeros((6, 2), np.int64), rows[1], _ragged((1,))[0]])
        assert sg.get_metadata()["sizes"]["train"] == 3
        sg.delete_data("r")
        assert sg.get_var_names() == []


#: Every mixin of the suite, one per operation; a backend that runs a subset picks from here.
MIXINS: tuple[type, ...] = (
    AddDataTests,
    UpdateDataTests,
    GetDataIndexTests,
    GetDataTests,
    DeleteTests,
    CreateEmptyTests,
    InspectionTests,
    TransformTests,
    CompileTests,
    ItemSyntaxTests,
    ShowInfoTests,
    RaggedTests,
)


class BackendConformance(*MIXINS):  # type: ignore[misc]
    """Every test above; set :attr:`backend` or override the ``sg`` fixture (see the module docs)."""

    #: The name the backend is registered under.
    backend: ClassVar[str | None] = None

    def backend_args(self, tmp_path: Path) -> dict[str, Any] | None:
        """``backend_args`` of each test's fresh store (``None`` by default)."""
        return None

    @pytest.fixture
    def sg(self, tmp_path: Path) -> StoreGate:
        """A fresh StoreGate on the backend, with ``data_id`` 'conf' and nothing stored."""
        if self.backend is None:
            raise TypeError(f"{type(self).__name__} must set backend = '<registered name>' or override sg.")
        return StoreGate(self.backend, self.backend_args(tmp_path), data_id="conf")
