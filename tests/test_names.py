"""var_names forms (storegate.names): str, tuple and list, and the data layouts they take."""

from __future__ import annotations

import re

import numpy as np
import pytest

from storegate.errors import InvalidArgumentError
from storegate.names import parse_var_names


@pytest.mark.parametrize(
    ("given", "names", "form"), [("x", ("x",), "str"), (("a", "b"), ("a", "b"), "tuple"), (["a"], ("a",), "list")]
)
def test_forms(given: object, names: tuple[str, ...], form: str) -> None:
    parsed = parse_var_names(given)
    assert (parsed.names, parsed.form) == (names, form)


@pytest.mark.parametrize("given", ["", (), [], ("a", "a"), ("a", 1), "a/b", ".hidden", None, 3])
def test_bad_names_are_refused(given: object) -> None:
    with pytest.raises(InvalidArgumentError, match="var_name"):
        parse_var_names(given)


def test_tuple_splits_the_second_axis_without_copying() -> None:
    data = np.arange(12).reshape(3, 2, 2)
    a, b = parse_var_names(("a", "b")).split(data)
    np.testing.assert_array_equal(b, data[:, 1])
    assert np.shares_memory(a, data)  # a view: the store copies when it writes
    with pytest.raises(InvalidArgumentError, match=r"shape \(N, 3, ...\). Got shape \(3, 2, 2\)"):
        parse_var_names(("a", "b", "c")).split(data)


def test_list_needs_one_array_per_name_of_one_length() -> None:
    names = parse_var_names(["a", "b"])
    with pytest.raises(InvalidArgumentError, match=re.escape("must hold 2 arrays. Got 1")):
        names.split([np.zeros(2)])
    with pytest.raises(InvalidArgumentError, match=re.escape("same number of rows. Got {'a': 2, 'b': 3}")):
        names.split([np.zeros(2), np.zeros(3)])


def test_join_gives_the_shape_of_the_form() -> None:
    arrays = [np.zeros((4, 2)), np.ones((4, 2))]
    assert parse_var_names(("a", "b")).join(arrays, scalar=False).shape == (4, 2, 2)
    assert parse_var_names(("a", "b")).join([a[0] for a in arrays], scalar=True).shape == (2, 2)
    assert isinstance(parse_var_names(["a", "b"]).join(arrays, scalar=False), list)
    with pytest.raises(InvalidArgumentError, match="use a list"):
        parse_var_names(("a", "b")).join([np.zeros(2), np.zeros(3)], scalar=False)
