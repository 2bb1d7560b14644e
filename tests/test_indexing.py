"""Unit tests of storegate.indexing: every index form -> one normalised selection."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from storegate.errors import IndexOutOfRangeError, InvalidArgumentError
from storegate.indexing import Piece, normalize_index, selection_length, split_selection

N = 10


def _rows(selection: Any) -> list[int]:
    """The row numbers a normalised selection stands for."""
    if isinstance(selection, int):
        return [selection]
    return np.arange(N)[selection].tolist()


@pytest.mark.parametrize(
    ("index", "reference"),
    [
        (None, slice(None)),
        (slice(None), slice(None)),
        (slice(2, 5), slice(2, 5)),
        (slice(-3, None), slice(-3, None)),
        (slice(-4, -1), slice(-4, -1)),
        (slice(None, -8), slice(None, -8)),
        (slice(-100, 100), slice(-100, 100)),
        (slice(5, 2), slice(5, 2)),
        (slice(1, None, 3), slice(1, None, 3)),
        (slice(None, None, -1), slice(None, None, -1)),
        (slice(8, 2, -2), slice(8, 2, -2)),
        ((2, 6), slice(2, 6)),
        ((-4, -1), slice(-4, -1)),
        ((np.int64(1), 3), slice(1, 3)),
        ([0, 3, 1], [0, 3, 1]),
        ([-1, -10], [-1, -10]),
        ([4, 4], [4, 4]),
        ([], []),
        (np.array([9, 0]), [9, 0]),
        (np.array([[1]]).ravel(), [1]),
        (np.array([2, 3], dtype=np.uint8), [2, 3]),
        (torch.tensor([5, 6]), [5, 6]),
        (np.arange(N) % 3 == 0, [0, 3, 6, 9]),
        ([True] * N, list(range(N))),
        (torch.arange(N) > 7, [8, 9]),
        (range(2, 5), [2, 3, 4]),
    ],
)
def test_forms_select_the_numpy_rows(index: Any, reference: Any) -> None:
    selection = normalize_index(index, N)
    expected = np.arange(N)[reference].tolist()
    assert _rows(selection) == expected
    assert selection_length(selection) == len(expected)


@pytest.mark.parametrize(("index", "row"), [(0, 0), (9, 9), (-1, 9), (-10, 0), (np.int32(3), 3), (np.uint8(4), 4)])
def test_int_is_one_row(index: Any, row: int) -> None:
    selection = normalize_index(index, N)
    assert selection == row
    assert type(selection) is int
    assert selection_length(selection) is None


def test_normalised_forms() -> None:
    """Slices get explicit non-negative bounds and step 1; everything else is an int64 array."""
    assert normalize_index(None, N) == slice(0, N, 1)
    assert normalize_index(slice(-3, None), N) == slice(7, 10, 1)
    assert normalize_index(slice(5, 2), N) == slice(5, 5, 1)
    assert normalize_index((3, 100), N) == slice(3, 10, 1)
    stepped = normalize_index(slice(None, None, 4), N)
    assert isinstance(stepped, np.ndarray)
    assert stepped.dtype == np.int64
    rows = normalize_index([-1, 2], N)
    assert isinstance(rows, np.ndarray)
    assert rows.dtype == np.int64
    assert rows.tolist() == [9, 2]


def test_input_arrays_are_not_changed() -> None:
    index = np.array([-1, -2])
    normalize_index(index, N)
    assert index.tolist() == [-1, -2]


def test_zero_rows() -> None:
    assert normalize_index(None, 0) == slice(0, 0, 1)
    assert selection_length(normalize_index(slice(None), 0)) == 0
    with pytest.raises(IndexOutOfRangeError):
        normalize_index(0, 0)


@pytest.mark.parametrize("index", [10, -11, 100, np.int64(-12)])
def test_int_out_of_range(index: Any) -> None:
    with pytest.raises(IndexOutOfRangeError, match=r"index must be in \[-10, 10\) for 10 rows") as info:
        normalize_index(index, N)
    assert f"Got {index} instead" in str(info.value)
    assert isinstance(info.value, IndexError)


@pytest.mark.parametrize("index", [[0, 10], [-11], np.array([3, 20]), torch.tensor([-50])])
def test_rows_out_of_range(index: Any) -> None:
    with pytest.raises(IndexOutOfRangeError, match=r"\[-10, 10\)") as info:
        normalize_index(index, N)
    bad = next(int(i) for i in np.asarray(index) if not -N <= i < N)
    assert f"Got {bad} instead" in str(info.value)


@pytest.mark.parametrize("length", [3, 11, 0])
def test_mask_of_wrong_length(length: int) -> None:
    with pytest.raises(InvalidArgumentError, match="boolean mask must have one entry per row") as info:
        normalize_index(np.ones(length, dtype=bool), N)
    assert f"length {length}" in str(info.value)


@pytest.mark.parametrize(
    "index",
    [1.5, "3", [1.0, 2.0], np.array([[1, 2]]), object(), True, b"x", {"a": 1}],
)
def test_unaccepted_forms(index: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="index must be None, an int, a slice") as info:
        normalize_index(index, N)
    assert "Got" in str(info.value)


@pytest.mark.parametrize("index", [(1, 2, 3), (1.0, 2), (slice(None), 0), (3,)])
def test_tuples_other_than_start_stop_are_not_rows(index: Any) -> None:
    """Any tuple but multiml's (start, stop) selects numpy-style (rows, inner...): not a row index."""
    with pytest.raises(InvalidArgumentError, match="index must select whole rows here") as info:
        normalize_index(index, N)
    assert "only reads accept" in str(info.value)


def test_bool_scalar_is_not_an_int() -> None:
    with pytest.raises(InvalidArgumentError):
        normalize_index(np.bool_(True), N)


SIZES = [7, 0, 2, 1]  # blocks, one of them empty


def _assemble(selection: Any, sizes: list[int]) -> list[int]:
    """Apply the pieces to concatenated blocks and return the rows they give, in order."""
    blocks = np.split(np.arange(sum(sizes)), np.cumsum(sizes)[:-1])
    if isinstance(selection, int):
        pieces = list(split_selection(selection, sizes))
        assert len(pieces) == 1
        return [int(blocks[pieces[0].part][pieces[0].local])]
    out = np.full(selection_length(selection) or 0, -1)
    for piece in split_selection(selection, sizes):
        assert isinstance(piece, Piece)
        assert sizes[piece.part] > 0
        out[piece.positions] = blocks[piece.part][piece.local]
    return out.tolist()


@pytest.mark.parametrize(
    "index",
    [
        None,
        0,
        6,
        7,
        9,
        -1,
        slice(5, 9),
        slice(-4, None),
        slice(8, 9),
        slice(3, 3),
        slice(None, None, 2),
        [9, 0, 7, 8, 7],
        [],
    ],
)
def test_split_selection_over_blocks(index: Any) -> None:
    n = sum(SIZES)
    selection = normalize_index(index, n)
    expected = np.arange(n)[index if index is not None else slice(None)]
    assert _assemble(selection, SIZES) == np.atleast_1d(expected).tolist()


def test_split_selection_slice_pieces() -> None:
    pieces = list(split_selection(slice(5, 10, 1), [7, 2, 1]))
    assert [(p.part, p.local, p.positions) for p in pieces] == [
        (0, slice(5, 7, 1), slice(0, 2)),
        (1, slice(0, 2, 1), slice(2, 4)),
        (2, slice(0, 1, 1), slice(4, 5)),
    ]
