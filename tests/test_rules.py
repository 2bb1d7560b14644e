"""The shared rules (storegate.rules): each check is written once and raises one message."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from storegate.errors import InvalidArgumentError, ValidationError
from storegate.rules import (
    as_array,
    cast,
    check_dtype,
    check_int,
    check_positive,
    check_row_shape,
    check_seed,
    check_shape,
    common_length,
    convert,
    is_int,
    with_rows,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, True), (np.int8(3), True), (True, False), (np.bool_(1), False), (3.0, False), ("3", False)],
)
def test_is_int_excludes_bools(value: object, expected: bool) -> None:
    assert is_int(value) is expected


def test_check_int_names_the_range() -> None:
    assert check_int("n", np.int64(5), minimum=0, maximum=9) == 5
    with pytest.raises(InvalidArgumentError, match=r"n must be an int in \[0, 9\]. Got 10 instead"):
        check_int("n", 10, minimum=0, maximum=9)
    with pytest.raises(InvalidArgumentError, match=re.escape("w must be an int >= 1. Got True instead")):
        check_int("w", True, minimum=1)
    with pytest.raises(InvalidArgumentError, match=re.escape("k must be an int <= 2. Got 3")):
        check_int("k", 3, maximum=2)


def test_positive_and_seed() -> None:
    assert check_positive("chunk", 1) == 1
    with pytest.raises(InvalidArgumentError, match=re.escape("chunk must be a positive int. Got 0 instead")):
        check_positive("chunk", 0)
    assert check_seed(np.uint8(7)) == 7
    with pytest.raises(InvalidArgumentError, match=re.escape("a non-negative int up to 2**32 - 1. Got -1")):
        check_seed(-1)


@given(st.dictionaries(st.text(min_size=1, max_size=3), st.integers(0, 3), max_size=5))
def test_common_length_is_the_one_length_or_an_error(lengths: dict[str, int]) -> None:
    if len(set(lengths.values())) > 1:
        with pytest.raises(ValidationError, match="must have the same number of rows"):
            common_length(lengths, "every variable")
    else:
        assert common_length(lengths, "every variable") == next(iter(lengths.values()), 0)


def test_common_length_error_kind_and_context() -> None:
    with pytest.raises(InvalidArgumentError, match=r"rows in phase 'train'. Got \{'a': 1, 'b': 2\}"):
        common_length({"a": 1, "b": 2}, "the writer", InvalidArgumentError, " in phase 'train'")


def test_as_array_takes_lists_and_tensors_and_refuses_ragged() -> None:
    np.testing.assert_array_equal(as_array([[1, 2]], "data"), [[1, 2]])
    assert as_array(torch.ones(2, dtype=torch.float16), "data").dtype == np.float16
    with pytest.raises(InvalidArgumentError, match=re.escape("data must be array-like. Got list")):
        as_array([np.zeros(2), np.zeros(3)], "data")  # ragged rows
    with pytest.raises(InvalidArgumentError, match="data must hold numbers, strings, bytes or dates"):
        as_array(np.array([1, "a", None], dtype=object), "data")
    # pandas gives strings as object arrays: they are strings
    assert as_array(np.array(["cat", "elephant"], dtype=object), "data").dtype == np.dtype("<U8")
    assert as_array(np.array([b"ab"], dtype=object), "data").dtype == np.dtype("S2")
    with pytest.raises(InvalidArgumentError, match=re.escape("data[0] must have a leading row axis")):
        with_rows(np.float32(1), "data[0]")


def test_row_shape_and_cast() -> None:
    check_row_shape("x", "train", (3,), (3,))
    with pytest.raises(InvalidArgumentError, match=r"row shape \(3,\) like the stored rows. Got row shape \(4,\)"):
        check_row_shape("x", "train", (3,), (4,))
    assert cast(np.arange(3, dtype=np.int8), np.dtype("i8"), "x").dtype == np.int64
    with pytest.raises(InvalidArgumentError, match=re.escape("'same_kind' rule. Got dtype float64")):
        cast(np.zeros(2), np.dtype("i8"), "x")


def test_shape_and_dtype() -> None:
    assert check_shape([2, np.int32(3)]) == (2, 3)
    with pytest.raises(InvalidArgumentError, match="shape must be a tuple of non-negative ints"):
        check_shape((2, -1))
    assert check_dtype("f4") == np.float32
    with pytest.raises(InvalidArgumentError, match="dtype must be a numpy dtype or its name"):
        check_dtype(object())


@given(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["int8", "uint8", "int32", "int64", "uint64"]))
def test_convert_to_ints_keeps_the_truncated_value_or_raises(value: float, dtype: str) -> None:
    # The rule for astype: floats lose their fraction, nothing else; never a wrapped value.
    info = np.iinfo(dtype)
    fits = np.isfinite(value) and info.min <= int(np.trunc(value)) <= info.max
    if fits:
        assert int(convert(np.array([value]), np.dtype(dtype), "v")[0]) == int(np.trunc(value))
    else:
        with pytest.raises(InvalidArgumentError, match="cannot hold"):
            convert(np.array([value]), np.dtype(dtype), "v")


@given(st.complex_numbers(allow_nan=True, allow_infinity=True, max_magnitude=None))
def test_cast_into_complex64_keeps_each_finite_part_finite(value: complex) -> None:
    source = np.array([value], dtype=np.complex128)
    with np.errstate(over="ignore"):
        stored = source.astype(np.complex64)
    lost = any(np.isfinite(p(source)[0]) and not np.isfinite(p(stored)[0]) for p in (np.real, np.imag))
    if lost:
        with pytest.raises(InvalidArgumentError):
            cast(source, np.dtype(np.complex64), "v")
    else:
        np.testing.assert_array_equal(cast(source, np.dtype(np.complex64), "v"), stored)
