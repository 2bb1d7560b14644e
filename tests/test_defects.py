"""One test (or a few) per defect of multiml's StoreGate that storegate fixes (issue 2, item 4).

Each section names the defect; tests run on every backend unless the defect is about one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from storegate import InvalidArgumentError, StoreGate, ValidationError
from storegate.testing import BACKEND_KINDS, assert_same_snapshot, make_gate, snapshot

SUBPROCESS_TIMEOUT = 120


@pytest.fixture(params=BACKEND_KINDS)
def sg(request: pytest.FixtureRequest, tmp_path: Path) -> StoreGate:
    return make_gate(request.param, tmp_path)


def _sizes(sg: StoreGate) -> tuple[int, int, int]:
    meta = sg.get_metadata()["sizes"]
    return meta["train"], meta["valid"], meta["test"]


# --- fractions are checked with a tolerance; list phases are validated like tuples ------------


@pytest.mark.parametrize("spec", [(0.7, 0.2, 0.1), [0.7, 0.2, 0.1]])
def test_fraction_split_of_ten_rows_is_7_2_1(sg: StoreGate, spec: Any) -> None:
    assert 0.7 + 0.2 < 0.9  # what multiml's arithmetic tripped on
    sg.add_data("x", np.arange(10), phase=spec)
    assert _sizes(sg) == (7, 2, 1)
    np.testing.assert_array_equal(sg.get_data("x", "valid"), [7, 8])


def test_thirds_split_evenly(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(9), phase=(1 / 3, 1 / 3, 1 / 3))
    assert _sizes(sg) == (3, 3, 3)


@pytest.mark.parametrize(
    "spec",
    [[0.5, 0.5], [0.5, 0.3, 0.1], [5, 3, 1], ["train", 0.5, 0.5], [0.5, 0.25, 0.25, 0.0], [-1, 6, 5]],
)
def test_list_phases_are_validated_like_tuples(sg: StoreGate, spec: list[Any]) -> None:
    before = snapshot(sg)
    for form in (spec, tuple(spec)):
        with pytest.raises(InvalidArgumentError, match="phase"):
            sg.add_data("x", np.arange(10), phase=form)
    assert_same_snapshot(before, snapshot(sg))


# --- reads work without compile(); compile() still validates and records ----------------------


def test_reads_work_without_compile(sg: StoreGate) -> None:
    data = np.arange(20).reshape(10, 2)
    sg.add_data("x", data, phase=(0.7, 0.2, 0.1))
    assert sg.get_metadata()["compiled"] is False
    np.testing.assert_array_equal(sg.get_data("x", "valid"), data[7:9])
    np.testing.assert_array_equal(sg.get_data("x", "all"), data)
    np.testing.assert_array_equal(sg["test"]["x"][0], data[9])
    assert len(sg["train"]) == 7
    assert len(sg["all"]) == 10
    assert [r.tolist() for r in sg["valid"]["x"]] == data[7:9].tolist()


def test_compile_still_validates_and_records(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(5))
    sg.add_data("y", np.arange(4))
    with pytest.raises(ValidationError, match=r"'x': 5, 'y': 4"):
        sg.compile()
    assert sg.get_metadata()["compiled"] is False
    sg.add_data("y", [4])
    sg.compile()
    assert sg.get_metadata()["compiled"] is True


def test_len_of_a_phase_whose_variables_disagree_raises(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(5))
    sg.add_data("y", np.arange(4))
    with pytest.raises(ValidationError, match="same number of rows"):
        len(sg["train"])


# --- Python index semantics; 'all' with slices and index lists --------------------------------


def test_python_index_semantics(sg: StoreGate) -> None:
    data = np.arange(10) * 10
    sg.add_data("x", data)
    assert sg.get_data("x", index=-1) == 90  # multiml read -1 as "all rows"
    assert sg["train"]["x"][-1] == 90
    np.testing.assert_array_equal(sg.get_data("x", index=slice(-3, None)), [70, 80, 90])
    np.testing.assert_array_equal(sg["train"]["x"][-4:-1], [60, 70, 80])
    np.testing.assert_array_equal(sg["train"]["x"][::-3], data[::-3])
    np.testing.assert_array_equal(sg.get_data("x", index=None), data)
    np.testing.assert_array_equal(sg.get_data("x"), data)
    sg.update_data("x", -1, index=-1)
    assert sg.get_data("x", index=9) == -1


def test_all_supports_slices_and_index_lists(sg: StoreGate) -> None:
    data = np.arange(10) * 10
    sg.add_data("x", data, phase=(0.7, 0.2, 0.1))
    np.testing.assert_array_equal(sg["all"]["x"][5:9], data[5:9])
    np.testing.assert_array_equal(sg["all"]["x"][-2:], data[-2:])
    np.testing.assert_array_equal(sg["all"]["x"][[9, 0, 7]], data[[9, 0, 7]])
    np.testing.assert_array_equal(sg.get_data("x", "all", np.array([8, 1])), data[[8, 1]])
    assert sg["all"]["x"][-1] == 90
    sg["all"]["x"][[6, 7, 9]] = [-6, -7, -9]
    np.testing.assert_array_equal(sg.get_data("x", "valid"), [-7, 80])
    np.testing.assert_array_equal(sg.get_data("x", "test"), [-9])
    sg.update_data("x", [1, 2, 3], phase="all", index=slice(6, 9))
    np.testing.assert_array_equal(sg.get_data("x", "all")[5:10], [50, 1, 2, 3, -9])


# --- the store never aliases the caller's array; shuffle= never mutates it -------------------


def test_store_does_not_alias_input_or_output(sg: StoreGate) -> None:
    data = np.arange(12).reshape(6, 2)
    sg.add_data("x", data)
    data[:] = -1
    np.testing.assert_array_equal(sg.get_data("x"), np.arange(12).reshape(6, 2))
    out = sg.get_data("x")
    out[:] = -2
    row = sg.get_data("x", index=0)
    row[:] = -3
    np.testing.assert_array_equal(sg.get_data("x"), np.arange(12).reshape(6, 2))
    new = np.zeros((6, 2), dtype=np.int64)
    sg.update_data("x", new)
    new[:] = 5
    np.testing.assert_array_equal(sg.get_data("x"), np.zeros((6, 2)))


def test_tuple_and_list_inputs_are_copied(sg: StoreGate) -> None:
    data = np.arange(12).reshape(3, 2, 2)
    parts = [np.arange(3), np.arange(3.0)]
    sg.add_data(("a", "b"), data)
    sg.add_data(["c", "d"], parts)
    data[:] = -1
    parts[0][:] = -1
    parts[1][:] = -1
    np.testing.assert_array_equal(sg.get_data(("a", "b")), np.arange(12).reshape(3, 2, 2))
    np.testing.assert_array_equal(sg.get_data("c"), np.arange(3))


@pytest.mark.parametrize("shuffle", [True, 7])
def test_shuffle_argument_never_mutates_the_callers_array(sg: StoreGate, shuffle: bool | int) -> None:
    data = np.arange(20).reshape(10, 2)
    pair = [np.arange(10), np.arange(10.0)]
    cube = np.arange(30).reshape(10, 3, 1)
    originals = [data.copy(), pair[0].copy(), pair[1].copy(), cube.copy()]
    sg.add_data("x", data, shuffle=shuffle)
    sg.add_data(["a", "b"], pair, phase=(0.5, 0.3, 0.2), shuffle=shuffle)
    sg.add_data(("c", "d", "e"), cube, shuffle=shuffle)
    for given, original in zip([data, *pair, cube], originals, strict=True):
        np.testing.assert_array_equal(given, original)
    assert not np.array_equal(sg.get_data("x"), data)  # it did shuffle the stored copy


# --- row shape after append; get_var_shapes takes a tuple; astype a list -----------------------


def test_row_shape_after_append(sg: StoreGate) -> None:
    sg.add_data("x", np.zeros((3, 4, 2)))
    sg.add_data("x", np.ones((5, 4, 2)))
    assert sg.get_var_shapes("x") == (4, 2)  # the row shape (multiml)
    assert sg.get_data("x").shape == (8, 4, 2)
    sg.add_data(("a", "b"), np.zeros((2, 2, 3)))
    sg.add_data(("a", "b"), np.zeros((4, 2, 3)))
    assert sg.get_var_shapes(("a", "b")) == [(3,), (3,)]
    assert len(sg["train"]["a"]) == 6
    with pytest.raises(InvalidArgumentError, match=r"row shape \(4, 2\)"):
        sg.add_data("x", np.ones((1, 2, 4)))
    assert sg.get_data("x").shape == (8, 4, 2)


def test_get_var_shapes_takes_a_tuple_and_astype_a_list(sg: StoreGate) -> None:
    sg.add_data(["a", "b", "c"], [np.zeros((2, 3), "i4"), np.zeros(2, "i4"), np.zeros(2, "i4")])
    assert sg.get_var_shapes(("a", "b")) == [(3,), ()]
    assert sg.get_var_shapes(["b", "a"]) == [(), (3,)]
    sg.astype(["a", "b"], "f8")
    assert [sg.get_data(v).dtype for v in ("a", "b", "c")] == [np.float64, np.float64, np.int32]
    sg.astype(("c",), "i2")
    assert sg.get_data("c").dtype == np.int16


# --- one dtype policy for every backend: numpy's same_kind rule -------------------------------

# Signed ints into unsigned ones are accepted when the values fit (numpy does so for Python ints).
SAME_KIND_OK = [
    ("i8", "i4"),
    ("i4", "i8"),
    ("i2", "u1"),
    ("f4", "f8"),
    ("f8", "i4"),
    ("f2", "f8"),
    ("i4", "?"),
    ("u1", "i8"),
]
SAME_KIND_BAD = [("i8", "f8"), ("?", "i1"), ("f4", "c8"), ("i4", "f4")]


@pytest.mark.parametrize(("stored", "given"), SAME_KIND_OK)
def test_same_kind_casts_are_accepted(sg: StoreGate, stored: str, given: str) -> None:
    sg.add_data("x", np.zeros((2, 2), stored))
    sg.add_data("x", np.ones((1, 2), given))
    sg.update_data("x", np.full((2,), 1, given), index=0)
    sg.update_data("x", np.ones((3, 2), given), index=None, do_compile=False)  # every row
    out = sg.get_data("x")
    assert out.dtype == np.dtype(stored)
    np.testing.assert_array_equal(out, np.ones((3, 2)))


@pytest.mark.parametrize(("stored", "given"), SAME_KIND_BAD)
def test_other_casts_raise(sg: StoreGate, stored: str, given: str) -> None:
    sg.add_data("x", np.zeros((2, 2), stored), phase=(1, 1, 0))
    before = snapshot(sg)
    calls: list[Callable[[], None]] = [
        lambda: sg.add_data("x", np.ones((1, 2), given)),
        lambda: sg.update_data("x", np.ones(2, given), index=0),
        lambda: sg.update_data("x", np.ones((1, 2), given)),
        lambda: sg.update_data("x", np.ones((2, 2), given), phase="all"),
        lambda: sg.add_data("x", np.ones((2, 2), given), phase=(1, 1, 0)),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError, match="same_kind") as info:
            call()
        assert str(np.dtype(given)) in str(info.value)
        assert str(np.dtype(stored)) in str(info.value)
    assert_same_snapshot(before, snapshot(sg))


def _dtype_history(sg: StoreGate) -> list[str]:
    """The same calls on any backend; the dtypes they leave behind."""
    sg.add_data("a", np.arange(3, dtype=np.int32))
    sg.add_data("a", np.arange(2, dtype=np.int64))
    sg.add_data("b", [0.5, 1.5])
    sg.add_data("c", [True, False])
    sg.add_data(("d", "e"), np.zeros((2, 2), dtype=np.float16))
    sg.add_data("f", np.arange(4), phase=(0.5, 0.25, 0.25))
    sg.update_data("b", np.float32([2.5]), index=[0], do_compile=False)
    sg.create_empty("g", (2, 3))
    sg.astype("c", "u1")
    sg.onehot("c", 2)
    return [f"{p}/{v}:{sg.get_data(v, p).dtype}" for p in ("train", "valid", "test") for v in sg.get_var_names(p)]


def test_every_backend_gives_the_same_dtypes(tmp_path: Path) -> None:
    histories = {kind: _dtype_history(make_gate(kind, tmp_path / kind)) for kind in BACKEND_KINDS}
    assert "train/a:int32" in histories["numpy"]
    assert "train/c:float64" in histories["numpy"]  # onehot gives float64, as np.identity does in multiml
    for kind, history in histories.items():
        assert history == histories["numpy"], kind


# --- create_empty marks the data_id as not compiled -------------------------------------------


def test_create_empty_marks_not_compiled(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(4))
    sg.compile()
    assert sg.get_metadata()["compiled"] is True
    sg.create_empty("y", (4,), dtype="i8")
    assert sg.get_metadata()["compiled"] is False


# --- compile state and sizes persist in the zarr store ----------------------------------------


def _run_python(code: str, *args: str) -> Any:
    """Run ``code`` in a new Python process (the venv's interpreter); return its JSON output."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else None


READER = """
    import json, sys
    from storegate import StoreGate
    sg = StoreGate("zarr", {"output_dir": sys.argv[1], "mode": "r"}, data_id="d")
    print(json.dumps({
        "metadata": sg.get_metadata(),
        "x": [v for p in ("train", "valid", "test") for v in sg.get_data("x", p).tolist()],
        "valid": sg["valid"]["x"][:].tolist(),
        "len_test": len(sg["test"]),
        "ids": sg.get_data_ids(),
    }))
"""


def _compiled_store(tmp_path: Path) -> tuple[str, np.ndarray]:
    path = str(tmp_path / "persist.zarr")
    sg = StoreGate("zarr", {"output_dir": path}, data_id="d")
    data = np.arange(20).reshape(10, 2)
    sg.add_data("x", data, phase=(0.7, 0.2, 0.1))
    sg.compile()
    return path, data


@pytest.mark.timeout(300)
def test_new_process_reads_metadata_and_data_read_only_without_compile(tmp_path: Path) -> None:
    path, data = _compiled_store(tmp_path)
    out = _run_python(READER, path)
    assert out["metadata"]["compiled"] is True
    assert out["metadata"]["sizes"] == {"train": 7, "valid": 2, "test": 1, "all": 10}
    assert out["metadata"]["valid_phases"] == ["train", "valid", "test"]
    assert out["x"] == data.tolist()
    assert out["valid"] == data[7:9].tolist()
    assert out["len_test"] == 1
    assert out["ids"] == ["d"]


def test_state_is_in_the_group_attributes(tmp_path: Path) -> None:
    path, _ = _compiled_store(tmp_path)
    group = zarr.open_group(path, mode="r")
    state = group["d"].attrs["storegate"]
    assert state["compiled"] is True
    assert state["sizes"] == {"train": 7, "valid": 2, "test": 1}
    assert isinstance(state["format_version"], int)
    assert group["d/valid/x"].shape == (2, 2)  # layout <root>/<data_id>/<phase>/<var_name>


def test_reopened_store_needs_no_compile(tmp_path: Path) -> None:
    path, _ = _compiled_store(tmp_path)
    for mode in ("r", "a"):
        again = StoreGate("zarr", {"output_dir": path, "mode": mode}, data_id="d")
        assert again.get_metadata()["compiled"] is True


def test_read_only_compile_writes_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "ro.zarr")
    StoreGate("zarr", {"output_dir": path}, data_id="d").add_data("x", np.arange(3))
    reader = StoreGate("zarr", {"output_dir": path, "mode": "r"}, data_id="d")
    reader.compile()
    assert reader.get_metadata()["compiled"] is True  # for this process
    assert StoreGate("zarr", {"output_dir": path, "mode": "r"}, data_id="d").get_metadata()["compiled"] is False


RAW_APPEND = """
    import sys, numpy as np, zarr
    array = zarr.open_array(sys.argv[1] + "/d/train/x", mode="a")
    array.append(np.zeros((3, 2), dtype=array.dtype), axis=0)
"""

RAW_RETYPE = """
    import sys, numpy as np, zarr
    group = zarr.open_group(sys.argv[1] + "/d/test", mode="a")
    old = group["x"][:]
    group.create_array("x", shape=old.shape, dtype="f4", overwrite=True)[...] = old
"""

STOREGATE_APPEND = """
    import sys, numpy as np
    from storegate import StoreGate
    StoreGate("zarr", {"output_dir": sys.argv[1]}, data_id="d").add_data("x", np.zeros((3, 2), "i8"), phase="test")
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("change", [RAW_RETYPE, STOREGATE_APPEND], ids=["raw-dtype", "sg"])
def test_state_made_stale_by_another_process_is_detected(tmp_path: Path, change: str) -> None:
    path, _ = _compiled_store(tmp_path)
    _run_python(change, path)
    for mode in ("r", "a"):
        assert StoreGate("zarr", {"output_dir": path, "mode": mode}, data_id="d").get_metadata()["compiled"] is False
    assert _run_python(READER, path)["metadata"]["compiled"] is False


@pytest.mark.timeout(300)
@pytest.mark.parametrize("change", [STOREGATE_APPEND], ids=["sg"])
def test_open_gate_detects_a_change_made_by_another_process(tmp_path: Path, change: str) -> None:
    path, _ = _compiled_store(tmp_path)
    sg = StoreGate("zarr", {"output_dir": path, "mode": "r"}, data_id="d")
    assert sg.get_metadata()["compiled"] is True
    sg.get_data("x", "all")  # warm any cache
    _run_python(change, path)
    meta = sg.get_metadata()
    assert meta["compiled"] is False
    assert meta["sizes"]["all"] == 13


@pytest.mark.timeout(300)
def test_rows_another_tool_appends_past_the_commit_stay_unseen_and_verify_reports_them(tmp_path: Path) -> None:
    # Since commit records (issue 9), rows appended without a commit are what a killed writer
    # leaves: readers see the committed data (which the compile state describes), and
    # verify() names the rest.
    path, _ = _compiled_store(tmp_path)
    sg = StoreGate("zarr", {"output_dir": path, "mode": "r"}, data_id="d")
    before = sg.get_metadata()
    _run_python(RAW_APPEND, path)
    for handle in (sg, StoreGate("zarr", {"output_dir": path, "mode": "r"}, data_id="d")):
        assert handle.get_metadata() == before
    assert "3 rows past the last commit" in str(sg.verify())


def test_stale_state_written_by_raw_zarr_in_process(tmp_path: Path) -> None:
    path, _ = _compiled_store(tmp_path)
    zarr.open_array(path + "/d/valid/x", mode="a").resize((1, 2))
    meta = StoreGate("zarr", {"output_dir": path}, data_id="d").get_metadata()
    assert meta["compiled"] is False
    assert meta["sizes"]["valid"] == 1


# --- a list of names with a different number of arrays raises; deleting absent is a no-op ----


@pytest.mark.parametrize("n_arrays", [1, 2, 4])
def test_list_names_and_arrays_must_match(sg: StoreGate, n_arrays: int) -> None:
    sg.add_data("keep", np.arange(3))
    before = snapshot(sg)
    arrays = [np.arange(3)] * n_arrays
    for call in (
        lambda: sg.add_data(["a", "b", "c"], arrays),
        lambda: sg.update_data(["a", "b", "c"], arrays),
    ):
        with pytest.raises(InvalidArgumentError, match=f"must hold 3 arrays. Got {n_arrays} instead"):
            call()
    assert_same_snapshot(before, snapshot(sg))


def test_deleting_an_absent_variable_is_a_no_op(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(3), do_compile=True)
    before = snapshot(sg)
    sg.delete_data("absent")
    sg.delete_data(["absent", "other"], phase="all")
    del sg["valid"]["x"]
    del sg["test"][["absent"]]
    assert_same_snapshot(before, snapshot(sg))


# --- the tuple path is vectorised ---------------------------------------------------------------


def test_large_tuple_add_is_correct(sg: StoreGate) -> None:
    n, m, k = 20_000, 4, 3
    data = np.random.default_rng(0).standard_normal((n, m, k)).astype(np.float32)
    sg.add_data(("a", "b", "c", "d"), data, phase=(0.8, 0.1, 0.1))
    for i, name in enumerate("abcd"):
        np.testing.assert_array_equal(sg.get_data(name, "all"), data[:, i])
    np.testing.assert_array_equal(sg.get_data(("d", "a"), "valid"), data[16_000:18_000][:, [3, 0]])


@pytest.mark.parametrize("n_rows", [10, 5_000])
def test_tuple_add_makes_one_backend_call_per_variable(
    sg: StoreGate, monkeypatch: pytest.MonkeyPatch, n_rows: int
) -> None:
    calls: Counter[str] = Counter()
    backend = sg.backend_object
    for method in ("create", "append", "write", "replace"):
        original = getattr(backend, method)

        def counted(*args: Any, _original: Any = original, _name: str = method, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(backend, method, counted)
    data = np.arange(n_rows * 3 * 2).reshape(n_rows, 3, 2)
    sg.add_data(("a", "b", "c"), data)
    assert calls == Counter(create=3)
    sg.add_data(("a", "b", "c"), data)
    assert calls == Counter(create=3, append=3)
    sg.add_data(("a", "b", "c"), data, phase=(0.5, 0.25, 0.25))
    assert calls == Counter(create=9, append=6)  # appends to train, creates in valid and test
    half = n_rows // 2
    np.testing.assert_array_equal(sg.get_data("c"), np.concatenate([data[:, 2], data[:, 2], data[:half, 2]]))
    np.testing.assert_array_equal(sg.get_data("b", "test"), data[half + n_rows // 4 :, 1])
