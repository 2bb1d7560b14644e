"""No silent wrong answers (issue 8): every case of the issue, and the other members of each kind.

Each test names its case. multiml's documented behaviour (seed 001_eb7e268b467e8f40.txt) is
the reference for the drop-in cases; every test runs on every backend. The store-side cases
(zarr v2 stores, objects other tools leave, mode 'w' on a foreign folder, S3 listings) are
in tests/test_backend_zarr_v2.py, tests/test_migrate.py, tests/test_backend_zarr.py,
tests/test_locations.py and tests/test_backend_s3.py.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from storegate import (
    IndexOutOfRangeError,
    InvalidArgumentError,
    NotFoundError,
    StorageError,
    StoreGate,
    ValidationError,
)
from storegate.testing import BACKEND_KINDS, assert_same_snapshot, make_gate, snapshot


@pytest.fixture(params=BACKEND_KINDS)
def sg(request: pytest.FixtureRequest, tmp_path: Path) -> StoreGate:
    return make_gate(request.param, tmp_path)


def multiml_shuffled(array: np.ndarray, seed: int) -> np.ndarray:
    """What multiml's StoreGate does with shuffle=seed: seed numpy's global generator, shuffle."""
    state = np.random.get_state()  # noqa: NPY002 (multiml's own legacy generator is the reference)
    np.random.seed(seed)  # noqa: NPY002
    out = array.copy()
    np.random.shuffle(out)  # noqa: NPY002
    np.random.set_state(state)  # noqa: NPY002
    return out


# --- 1-5, 7: drop-in fidelity with multiml -----------------------------------------------------


def test_1_get_var_shapes_is_the_row_shape_and_none_when_absent(sg: StoreGate) -> None:
    sg.add_data("x", np.zeros((6, 3, 4)))
    assert sg.get_var_shapes("x", "train") == (3, 4)
    assert sg.get_var_shapes("absent", "train") is None
    assert sg.get_var_shapes(["x", "absent"]) == [(3, 4), None]
    sg.add_data("x", np.zeros((4, 3, 4)), phase="valid")
    assert sg.get_var_shapes("x", "all") == (3, 4)


def test_2_the_update_example_of_multiml_docs(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(10), phase=(6, 2, 2))
    sg.update_data("x", [100], phase="train", index=1)
    assert sg.get_data("x", "train").tolist() == [0, 100, 2, 3, 4, 5]
    sg.update_data("x", 7, phase="valid", index=-1)  # a scalar fills one row too
    assert sg.get_data("x", "valid").tolist() == [6, 7]


def test_2_other_members_numpy_assignment_rule(sg: StoreGate) -> None:
    sg.add_data("m", np.zeros((4, 3)))
    sg["train"]["m"][0:2] = 5  # a scalar fills the rows
    sg["train"]["m"][2] = [1, 2, 3]  # a row without a row axis
    sg.update_data("m", [[9, 9, 9]], index=[3])  # (1, 3) into one selected row
    np.testing.assert_array_equal(sg.get_data("m"), [[5, 5, 5], [5, 5, 5], [1, 2, 3], [9, 9, 9]])
    with pytest.raises(InvalidArgumentError, match=re.escape("broadcast to the selected rows, shape (1, 3)")):
        sg.update_data("m", [1, 2], index=1)
    with pytest.raises(InvalidArgumentError) as info:
        sg.update_data("m", np.zeros((2, 3)), index=0)
    assert "(1, )" not in str(info.value)  # no stray space in shapes


def test_3_auto_is_all(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(10), phase=(0.7, 0.2, 0.1))
    sg.update_data("y", np.arange(10) * 2, phase="auto")
    np.testing.assert_array_equal(sg.get_data("y", "auto"), np.arange(10) * 2)
    assert sg.get_data("y", "valid").tolist() == [14, 16]
    assert len(sg["auto"]) == 10


def test_4_view_to_list_as_multiml_tasks_call_it() -> None:
    names, arrays = StoreGate._view_to_list(("a", "b"), np.arange(6).reshape(3, 2))
    assert names == ["a", "b"]
    assert [a.tolist() for a in arrays] == [[0, 2, 4], [1, 3, 5]]
    assert StoreGate._view_to_list("x", [1, 2]) == (["x"], [[1, 2]])
    with pytest.raises(InvalidArgumentError, match=re.escape("shape (N, 3, ...)")):
        StoreGate._view_to_list(("a", "b", "c"), np.zeros((3, 2)))


@pytest.mark.parametrize("shuffle", [True, 1, 5, 123])
def test_5_add_data_shuffles_as_multiml(sg: StoreGate, shuffle: bool | int) -> None:
    x, y = np.arange(20), np.arange(20) * 10
    state = np.random.get_state()  # noqa: NPY002
    sg.add_data(["x", "y"], [x, y], phase=(0.6, 0.2, 0.2), shuffle=shuffle)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), state, strict=True))  # noqa: NPY002
    expected = multiml_shuffled(x, int(shuffle))
    np.testing.assert_array_equal(sg.get_data("x", "all"), expected)
    np.testing.assert_array_equal(sg.get_data("y", "all"), expected * 10)  # aligned
    np.testing.assert_array_equal(sg.get_data("x", "test"), expected[16:])  # the same test set as multiml


def test_5_shuffle_zero_and_false_keep_the_order(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(5), shuffle=0)
    sg.add_data("y", np.arange(5), shuffle=False)
    assert sg.get_data("x").tolist() == sg.get_data("y").tolist() == [0, 1, 2, 3, 4]


def test_5_shuffle_orders_each_phase_as_multiml(sg: StoreGate) -> None:
    sg.add_data(["x", "y"], [np.arange(12), np.arange(12) + 100], phase=(8, 2, 2))
    sg.shuffle("all", seed=4)
    np.testing.assert_array_equal(sg.get_data("x", "train"), multiml_shuffled(np.arange(8), 4))
    np.testing.assert_array_equal(sg.get_data("y", "valid"), multiml_shuffled(np.arange(8, 10) + 100, 4))
    with pytest.raises(InvalidArgumentError, match=re.escape("up to 2**32 - 1")):
        sg.shuffle(seed=2**32)


def test_7_every_example_of_multiml_docs(sg: StoreGate) -> None:
    var_names = ["var0", "var1", "var2"]
    data = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    # The class example gives 3 names and 4 arrays: multiml dropped the 4th silently, storegate
    # raises (documented in "Coming from multiml").
    with pytest.raises(InvalidArgumentError, match=re.escape("must hold 3 arrays. Got 4")):
        sg.add_data(var_names=var_names, data=data, phase=(0.5, 0.25, 0.25))
    sg.add_data(var_names=var_names, data=data[:3], phase=(0.5, 0.25, 0.25))
    assert [a.tolist() for a in sg.get_data(var_names=var_names, phase="train")] == [[0], [3], [6]]
    assert [a.tolist() for a in sg["train"][var_names][0]] == [0, 3, 6]
    assert sg["train"]["var0"][:].tolist() == [0]
    assert sg["train"]["var0"][0:2].tolist() == [0]
    assert [int(v) for v in sg["train"]["var0"]] == [0]
    sg["train"]["var0"][:] = [5]
    sg["train"]["var0"][0:2] = np.array([6])
    assert sg.get_data("var0", "train").tolist() == [6]
    del sg["train"]["var0"]
    assert "var0" not in sg["train"]
    assert "var1" in sg["test"]
    assert len(sg["train"]) == 1
    assert len(sg["test"]) == 1
    sg.set_data_id("docs_update")  # the add / update / get examples on a data_id of their own
    sg.add_data(var_names="var0", data=np.array([0, 1, 2]), phase="train")
    sg.update_data(var_names="var0", data=[1], phase="train", index=1)
    assert sg.get_data(var_names="var0", phase="train", index=1) == 1
    meta = sg.get_metadata()
    assert set(meta) == {"compiled", "total_events", "sizes", "valid_phases"}
    assert set(meta["sizes"]) == {"train", "valid", "test", "all"}


# --- 8, 9: selections that read something else than what was asked ----------------------------


def test_8_a_misspelt_phase_raises_naming_the_phases(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(4))
    with pytest.raises(NotFoundError, match=r"'validation' is neither a phase.*Did you mean 'valid'\?"):
        sg["validation"]
    with pytest.raises(NotFoundError, match="Did you mean 'train'"):
        "x" in sg["training"]  # noqa: B015
    with pytest.raises(InvalidArgumentError, match="Did you mean 'test'"):
        sg.get_data("x", phase="tests")


def test_8_var_names_and_phase_are_chosen_once(sg: StoreGate) -> None:
    sg.add_data(["x", "y"], [np.arange(4), np.arange(4) * 2])
    with pytest.raises(InvalidArgumentError, match="chooses var_names once"):
        sg["train"]["x"]["y"]
    with pytest.raises(InvalidArgumentError, match="chooses phase once"):
        sg["train"]["valid"]
    with pytest.raises(InvalidArgumentError, match="'in' asks a phase"):
        "x" in sg["y"]  # noqa: B015
    assert sg["x"][1] == 1  # a stored variable as the first key reads train, as get_data does


@pytest.mark.parametrize("name", ["train", "valid", "test", "all", "auto"])
def test_9_phase_names_are_refused_as_var_names(sg: StoreGate, name: str) -> None:
    before = snapshot(sg)
    with pytest.raises(InvalidArgumentError, match=f"var_name '{name}' is a phase name"):
        sg.add_data(name, np.arange(3))
    assert_same_snapshot(before, snapshot(sg))


@pytest.mark.parametrize("name", ["a\\b", "x\x00y", "zarr.json", "tab\tname", "é" * 128, ".hidden", "a/b", ""])
def test_9_other_members_names_every_location_can_hold(sg: StoreGate, name: str) -> None:
    before = snapshot(sg)
    with pytest.raises(InvalidArgumentError, match="at most 255 UTF-8 bytes"):
        sg.add_data(name, np.arange(3))
    with pytest.raises(InvalidArgumentError, match="data_id must be"):
        sg.set_data_id(name)
    assert_same_snapshot(before, snapshot(sg))


# --- 10-13: values changed by a cast without a word ----------------------------------------------


def test_10_strings_longer_than_the_stored_ones_raise(sg: StoreGate) -> None:
    sg.add_data("label", np.array(["cat", "dog"]))
    with pytest.raises(InvalidArgumentError, match=r"holds 'elephant'.*<U3.*'ele'.*astype\('label', '<U8'"):
        sg.add_data("label", np.array(["elephant"]))
    with pytest.raises(InvalidArgumentError, match="holds 'hippopotamus'"):
        sg.update_data("label", "hippopotamus", index=0)
    assert sg.get_data("label").tolist() == ["cat", "dog"]
    sg.add_data("b", np.array([b"ab"]))
    with pytest.raises(InvalidArgumentError, match="holds b'abc'"):
        sg.add_data("b", np.array([b"abc"]))


def test_11_a_value_that_overflows_raises(sg: StoreGate) -> None:
    sg.add_data("h", np.ones(2, np.float16))
    with pytest.raises(InvalidArgumentError, match=r"holds 1099511627777.*float16.*inf"):
        sg.add_data("h", np.array([2**40 + 1]))
    sg.add_data("h", np.array([1e4]))  # precision may go, magnitude stays: allowed
    sg.add_data("i", np.zeros(2, np.int8))
    with pytest.raises(InvalidArgumentError, match=r"holds 300.*int8.*44"):
        sg.add_data("i", np.array([300]))
    sg.add_data("u", np.zeros(2, np.int64))
    with pytest.raises(InvalidArgumentError, match="holds 9223372036854775808"):
        sg.add_data("u", np.array([2**63], np.uint64))  # same_kind, but it would wrap negative
    sg.add_data("t", np.array(["2020-01-01T00:00:00"], "M8[s]"))
    with pytest.raises(InvalidArgumentError, match="datetime64"):
        sg.add_data("t", np.array(["2020-01-01T00:00:00.5"], "M8[ms]"))
    assert sg.get_data("h").tolist() == [1.0, 1.0, 1e4]


def test_12_byte_order_is_normalised(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(3, dtype=">i4"))
    assert sg.get_data("x").dtype == np.dtype("<i4")
    sg.add_data("x", np.arange(3, dtype="<i4"))
    sg.compile()
    assert sg.get_metadata()["compiled"]
    sg.create_empty("e", (2,), dtype=">f8")
    assert sg.get_data("e").dtype == np.dtype("<f8")


@pytest.mark.parametrize("call", ["add", "update", "writer"])
def test_13_torch_dtypes_numpy_lacks_are_refused_with_the_fix(sg: StoreGate, call: str) -> None:
    sg.add_data("h", np.zeros((2, 2), np.float32))
    before = snapshot(sg)
    tensor = torch.ones(2, 2, dtype=torch.bfloat16)
    calls = {
        "add": lambda: sg.add_data("h", tensor),
        "update": lambda: sg.update_data("h", tensor, index=[0, 1]),
        "writer": lambda: sg.writer().add({"h": tensor}),
    }
    with pytest.raises(InvalidArgumentError, match=r"torch.bfloat16.*tensor.float\(\)"):
        calls[call]()
    assert_same_snapshot(before, snapshot(sg))


def test_13_every_torch_dtype_is_stored_faithfully_or_refused(sg: StoreGate) -> None:
    dtypes = {getattr(torch, n) for n in dir(torch) if isinstance(getattr(torch, n), torch.dtype)}
    for dtype in sorted(dtypes, key=str):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch warns that complex32 is experimental
                tensor = torch.zeros(3, dtype=dtype)
        except (RuntimeError, NotImplementedError, TypeError):
            continue  # torch cannot make one of these (quantized, bit types)
        name = "t_" + str(dtype).removeprefix("torch.")
        refused = _refusal(lambda n=name, t=tensor: sg.add_data(n, t))
        if refused is not None:
            assert str(dtype) in refused
            assert "Convert it first" in refused
            continue
        np.testing.assert_array_equal(sg.get_data(name), tensor.numpy())
        assert sg.get_data(name).dtype == tensor.numpy().dtype


def _refusal(call: Any) -> str | None:
    """The message of the InvalidArgumentError ``call`` raises, or None when it succeeds."""
    try:
        call()
    except InvalidArgumentError as err:
        return str(err)
    return None


@pytest.mark.parametrize(
    "dtype",
    ["O", "V8", [("a", "f4")], "g", "M8", "S0", ("i4", -1)],
    ids=["object", "void", "struct", "f128", "M8", "S0", "bad"],
)
def test_13_other_members_dtypes_no_backend_stores_alike(sg: StoreGate, dtype: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="dtype"):
        sg.create_empty("e", (2,), dtype=dtype)
    assert sg.get_var_names() == []


# --- 14-16: inputs that are right but refused, or wrong but accepted -------------------------


@pytest.mark.parametrize(
    ("spec", "counts"),
    [
        (tuple(np.array([0.7, 0.2, 0.1], np.float32)), (7, 2, 1)),
        (torch.tensor([0.8, 0.1, 0.1]).tolist(), (8, 1, 1)),
        (torch.tensor([0.8, 0.1, 0.1]), (8, 1, 1)),
        (np.array([0.7, 0.2, 0.1], np.float32), (7, 2, 1)),
        (tuple(np.full(3, 1 / 3, np.float32)), (3, 3, 4)),
        (tuple(np.array([0.5, 0.25, 0.25], np.float16)), (5, 2, 3)),
    ],
    ids=["np-float32", "torch-tolist", "tensor", "ndarray", "thirds-float32", "float16"],
)
def test_14_float32_fractions_split_as_written(sg: StoreGate, spec: Any, counts: tuple[int, int, int]) -> None:
    sg.add_data("x", np.arange(10), phase=spec)
    assert tuple(len(sg[p]) for p in ("train", "valid", "test")) == counts


def test_14_fractions_that_do_not_sum_to_one_still_raise(sg: StoreGate) -> None:
    with pytest.raises(InvalidArgumentError, match="must sum to 1"):
        sg.add_data("x", np.arange(10), phase=tuple(np.array([0.7, 0.2, 0.2], np.float32)))


def test_15_one_rule_for_empty_phases(sg: StoreGate) -> None:
    # multiml's rule, on every call and backend: a phase that gets no row gets no variable.
    sg.add_data("n", np.arange(3), phase=(0.8, 0.1, 0.1))  # 2 / 0 / 1
    assert sg.get_var_names("valid") == []
    with pytest.raises(NotFoundError, match="'n' does not exist in data_id 'conf', phase 'valid'"):
        sg.get_data("n", "valid")
    assert sg.get_data("n", "all").tolist() == [0, 1, 2]  # 'all' reads the phases that hold rows
    sg.add_data("e", np.zeros(0), phase=(0.8, 0.1, 0.1))
    sg.add_data("f", np.zeros(0), phase="train")
    assert sg.get_var_names("train") == ["n"]
    assert sg.get_var_names("test") == ["n"]
    # An empty batch still must fit what the phase stores.
    with pytest.raises(InvalidArgumentError, match=r"row shape"):
        sg.add_data("n", np.zeros((0, 3)), phase="train")
    sg.update_data("n", np.zeros(0, np.int64), phase="valid", do_compile=False)
    assert sg.get_var_names("valid") == []
    # A phase that gets no row keeps what it holds.
    sg.update_data("n", np.array([7, 8]), phase=(2, 0, 0), do_compile=False)
    assert sg.get_data("n", "test").tolist() == [2]
    assert sg.get_data("n", "train").tolist() == [7, 8]


def test_16_a_callback_that_drops_rows_moves_nothing(tmp_path: Path) -> None:
    hs = StoreGate("hybrid", {"output_dir": str(tmp_path / "h.zarr")}, data_id="h")
    hs.add_data("x", np.arange(6))
    with pytest.raises(InvalidArgumentError, match=r"every row it was given: 6 rows.*\{'x': 1\}"):
        hs.to_memory("x", callback=lambda names, data: (names, data[:1]))
    with pytest.raises(InvalidArgumentError, match=r"must return \(var_names, data\)"):
        hs.to_memory("x", callback=lambda names, data: None)  # type: ignore[arg-type,return-value]
    assert hs.get_data("x").tolist() == list(range(6))
    hs.set_mode("numpy")
    assert hs.get_var_names() == []


def test_16_other_members_names_no_phase_holds_raise(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(4, dtype=np.int64))
    for call in (
        lambda: sg.astype("lables", "f4", phase="all"),
        lambda: sg.onehot("lables", 3, phase="all"),
        lambda: sg.argmax("lables", 1, phase="all"),
    ):
        with pytest.raises(NotFoundError, match="'lables' does not exist in any phase"):
            call()


# --- the breakers' finds: more members of the kinds above -------------------------------------


def test_uint64_indices_never_wrap(sg: StoreGate) -> None:
    sg.add_data("v", np.arange(10) * 10)
    for index in ([2**64 - 1], np.array([2**63], np.uint64), np.array([10], np.uint64)):
        with pytest.raises(IndexOutOfRangeError, match=r"Got (18446744073709551615|9223372036854775808|10) instead"):
            sg.get_data("v", index=index)
        with pytest.raises(IndexOutOfRangeError):
            sg.update_data("v", [-1], index=index)
    assert sg.get_data("v", index=np.array([9], np.uint64)).tolist() == [90]


@pytest.mark.parametrize("index", [slice(0, 1.5), slice("a", 2), slice(0, 2, 0.5)])
def test_slice_bounds_must_be_ints(sg: StoreGate, index: slice) -> None:
    sg.add_data("v", np.arange(4))
    with pytest.raises(InvalidArgumentError, match=re.escape("int (or None) start, stop and step")):
        sg.get_data("v", index=index)


def test_zero_d_integer_arrays_and_tensors_index_one_row(sg: StoreGate) -> None:
    sg.add_data(("a", "b"), np.arange(20).reshape(10, 2))
    assert sg["train"]["a"][torch.tensor(4)] == 8
    assert sg.get_data(("a", "b"), index=np.array(3)).tolist() == [6, 7]


def test_a_tensor_without_values_is_refused(sg: StoreGate) -> None:
    with pytest.raises(InvalidArgumentError, match="'meta' device"):
        sg.add_data("m", torch.ones(3, device="meta"))


def test_running_out_of_memory_is_a_storage_error() -> None:
    sg = StoreGate("numpy", data_id="d")
    sg.add_data("y", np.arange(4))
    with pytest.raises(StorageError, match="more memory"):
        sg.onehot("y", 2**40)
    assert sg.get_data("y").tolist() == [0, 1, 2, 3]


# --- the second round of breakers' finds ---------------------------------------------------


def _raises(call: Any, error: type[Exception], match: str, sg: StoreGate) -> None:
    """``call`` raises ``error`` and leaves the store as it was."""
    before = snapshot(sg)
    with pytest.raises(error, match=match):
        call()
    assert_same_snapshot(before, snapshot(sg))


def test_astype_never_wraps_at_the_ends_of_the_int_range(sg: StoreGate) -> None:
    # float(iinfo(int64).max) is 2**63: a bound of <= let 2**63 through, which wraps.
    sg.add_data(
        ["f", "g", "h"], [np.array([2.0**63, 1.0]), np.array([2.0**64, 0.0]), np.array([2.0**63 - 1024, -(2.0**63)])]
    )
    _raises(lambda: sg.astype("f", "int64"), InvalidArgumentError, r"holds 9\.223372036854776e\+18", sg)
    _raises(lambda: sg.astype("g", "uint64"), InvalidArgumentError, "uint64 cannot hold", sg)
    sg.astype("h", "int64")  # the largest float below 2**63, and -2**63, fit
    assert sg.get_data("h").tolist() == [2**63 - 1024, -(2**63)]


def test_complex_values_keep_both_parts_or_raise(sg: StoreGate) -> None:
    sg.add_data("c", np.array([1 + 1j], np.complex64))
    sg.add_data("r", np.array([1 + 0j, 2 + 0j]))
    sg.add_data("i", np.array([1 + 1j, 2]))
    # The real part overflows complex64 although the imaginary part is NaN.
    _raises(lambda: sg.add_data("c", np.array([complex(1e300, np.nan)])), InvalidArgumentError, "complex64", sg)
    _raises(lambda: sg.astype("i", "f8"), InvalidArgumentError, r"holds \(1\+1j\)", sg)  # the imaginary part
    sg.astype("r", "f8")  # nothing to drop
    assert sg.get_data("r").tolist() == [1.0, 2.0]


def test_astype_to_text_and_dates_raises_storegate_errors_only(sg: StoreGate) -> None:
    sg.add_data(
        ["fr", "n", "i", "u"], [np.array([1.7, 1e20]), np.array([np.nan, 1.5]), np.array([1, 2]), np.array([-1.5, 1])]
    )
    _raises(lambda: sg.astype("fr", "U2"), InvalidArgumentError, r"holds 1\.7.*e\.g\. '<U32'", sg)
    _raises(lambda: sg.astype("u", "uint8"), InvalidArgumentError, r"holds -1\.5", sg)  # the value given
    sg.astype("n", "U4")  # NaN reads back as NaN
    assert sg.get_data("n").tolist() == ["nan", "1.5"]
    sg.astype("i", "datetime64[s]")
    assert sg.get_data("i").tolist() == [np.datetime64(1, "s").item(), np.datetime64(2, "s").item()]


def test_dates_in_messages_are_dates(sg: StoreGate) -> None:
    sg.add_data("t", np.array(["2020-01-01T00:00:00.5"], "M8[ns]"))
    _raises(lambda: sg.astype("t", "M8[s]"), InvalidArgumentError, r"holds '2020-01-01T00:00:00\.500000000'", sg)


def test_bytes_and_str_phases_are_not_read_as_one_array(sg: StoreGate) -> None:
    sg.add_data("s", np.array([b"\xff"]), phase="train")
    sg.add_data("s", np.array(["a"]), phase="valid")
    with pytest.raises(ValidationError, match="dtypes that one dtype holds exactly"):
        sg.get_data("s", "all")  # decoding b'\xff' as text failed with a bare UnicodeDecodeError


def test_lists_numpy_would_change_silently_are_refused(sg: StoreGate) -> None:
    _raises(lambda: sg.add_data("a", [1, "a"]), InvalidArgumentError, "mixes text with int", sg)
    _raises(lambda: sg.add_data("b", [2**63, 1]), InvalidArgumentError, "float64 cannot hold exactly", sg)
    _raises(lambda: sg.add_data("c", [[0.5, 2**60]]), InvalidArgumentError, "float64 cannot hold exactly", sg)
    sg.add_data("d", [2**53, 1.5])  # exact in float64
    assert sg.get_data("d").tolist() == [2.0**53, 1.5]


@pytest.mark.parametrize("phase", [np.array([[1, 1, 1]]), np.array(0.5), torch.tensor([[1, 1, 1]])])
def test_phase_arrays_must_be_three_numbers(sg: StoreGate, phase: Any) -> None:
    _raises(lambda: sg.add_data("y", np.arange(3), phase=phase), InvalidArgumentError, "three non-negative", sg)


def test_a_split_that_gives_a_phase_nothing_gives_it_no_row(sg: StoreGate) -> None:
    weights = np.array([1, 5, 0], np.float32)
    sg.add_data("x", np.arange(12), phase=tuple(weights / weights.sum()))  # float32 sum 0.99999997
    assert [len(sg[p]) for p in ("train", "valid", "test")] == [2, 10, 0]


def test_bool_slice_bounds_are_refused(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(4))
    with pytest.raises(InvalidArgumentError, match="not bools"):
        sg["train"]["x"][True:3]


def test_assignment_chooses_var_names_once(sg: StoreGate) -> None:
    sg.add_data(["x", "y"], [np.arange(3), np.arange(3)])
    _raises(lambda: sg["train"]["x"].__setitem__("y", np.zeros(3, int)), InvalidArgumentError, "once", sg)
    _raises(lambda: sg["train"].__setitem__("valid", 1), InvalidArgumentError, "needs var_names", sg)
    sg["x"] = np.array([5, 6, 7])  # multiml's StoreGate supports item assignment and del too
    del sg["y"]
    assert sg.get_data("x").tolist() == [5, 6, 7]
    assert sg.get_var_names() == ["x"]


def test_row_shape_of_all_needs_one_row_shape(sg: StoreGate) -> None:
    sg.add_data("c", np.zeros((2, 2)), phase="train")
    sg.add_data("c", np.zeros((1, 3)), phase="valid")
    with pytest.raises(ValidationError, match="one row shape"):
        sg.get_var_shapes("c", "all")
    assert sg.get_var_shapes("c", "valid") == (3,)


def test_messages_say_what_to_do(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(6), phase=(6, 0, 0))
    _raises(lambda: sg.update_data("x", np.arange(10)), InvalidArgumentError, "in phase 'train'.*delete_data", sg)
    _raises(lambda: sg.update_data("x", [7, 8], index=-1), InvalidArgumentError, "multiml used -1 for every row", sg)
    _raises(lambda: sg.create_empty("z", (4,), phase="all"), InvalidArgumentError, "shares rows out", sg)
    sg.add_data("y", np.arange(5))  # now train disagrees
    _raises(lambda: sg.delete_data("absent", "all"), ValidationError, "Pass do_compile=False", sg)


@pytest.mark.parametrize(
    "call",
    [
        lambda sg: sg.compile(reset="x"),
        lambda sg: sg.add_data("x", np.arange(3), do_compile="yes"),
        lambda sg: sg.update_data("x", np.arange(3), do_compile=1),
        lambda sg: sg.writer(total=-1),
        lambda sg: sg.writer(progress="no"),
    ],
)
def test_flags_are_bools_and_counts_are_counts(sg: StoreGate, call: Any) -> None:
    sg.add_data("x", np.arange(3))
    _raises(lambda: call(sg), InvalidArgumentError, "must be", sg)
