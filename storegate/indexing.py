"""The one place that turns every accepted index form into a normalised selection.

A selection is an ``int`` (one row, in range), a ``slice`` with non-negative start,
stop and step 1, or a 1-D ``int64`` array of in-range row numbers.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Union

import numpy as np

from storegate.errors import IndexOutOfRangeError, InvalidArgumentError

__all__ = [
    "Piece",
    "Selection",
    "clip_rows",
    "is_row",
    "normalize_index",
    "selection_length",
    "selection_span",
    "split_selection",
]

Selection = Union[int, slice, np.ndarray]


def normalize_index(index: object, n_rows: int) -> Selection:
    """Normalise ``index`` against ``n_rows`` rows.

    Accepts ``None`` (all rows), an int (negatives count from the end), a slice, a
    ``(start, stop)`` tuple, a list / ndarray / torch tensor of ints, or a boolean mask.

    Raises
    ------
    IndexOutOfRangeError
        If an integer index lies outside ``[-n_rows, n_rows)``.
    InvalidArgumentError
        If the index has a form that is not accepted.
    """
    if index is None:
        return slice(0, n_rows, 1)
    if is_row(index):
        return _normalize_int(operator.index(index), n_rows)  # type: ignore[arg-type]
    if isinstance(index, slice):
        return _normalize_slice(index, n_rows)
    if isinstance(index, tuple):
        # Only (start, stop): a longer tuple read as a row list would make (1, 5) and (1, 5, 6) disagree.
        # multiml took it as slice(start, stop), so None stands for an open end there too.
        if len(index) == 2 and all(i is None or _is_int(i) for i in index):
            return _normalize_slice(slice(index[0], index[1]), n_rows)
        raise _bad_index(index)
    return _normalize_array(index, n_rows)


def selection_length(selection: Selection) -> int | None:
    """Rows selected, or ``None`` for a scalar (int) selection."""
    if isinstance(selection, int):
        return None
    if isinstance(selection, slice):
        return int(selection.stop - selection.start)
    return int(selection.shape[0])


def selection_span(selection: Selection) -> slice:
    """The smallest step-1 slice that holds every row of a normalised selection."""
    if isinstance(selection, int):
        return slice(selection, selection + 1, 1)
    if isinstance(selection, slice):
        return selection
    if selection.size == 0:
        return slice(0, 0, 1)
    return slice(int(selection.min()), int(selection.max()) + 1, 1)


def clip_rows(rows: slice | None, n_rows: int) -> slice:
    """``rows`` as a step-1 slice within ``[0, n_rows]``; every row for ``None``."""
    if rows is None:
        return slice(0, n_rows, 1)
    start = min(max(rows.start or 0, 0), n_rows)
    stop = min(max(n_rows if rows.stop is None else rows.stop, start), n_rows)
    return slice(start, stop, 1)


@dataclass(frozen=True)
class Piece:
    """The part of a selection over concatenated blocks that falls in one block.

    ``part`` is the block's number, ``local`` the selection inside that block and
    ``positions`` where its rows go in the result (a slice or an int array).
    """

    part: int
    local: Selection
    positions: slice | np.ndarray


def split_selection(selection: Selection, sizes: list[int]) -> Iterator[Piece]:
    """Split a selection over the concatenation of blocks of ``sizes`` rows."""
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    if isinstance(selection, int):
        part = int(np.searchsorted(offsets, selection, side="right")) - 1
        yield Piece(part, selection - int(offsets[part]), slice(0, 0))
        return
    if isinstance(selection, slice):
        yield from _split_slice(selection, offsets)
        return
    yield from _split_array(selection, offsets)


def _split_slice(selection: slice, offsets: np.ndarray) -> Iterator[Piece]:
    for part in range(len(offsets) - 1):
        lo, hi = int(offsets[part]), int(offsets[part + 1])
        start, stop = max(selection.start, lo), min(selection.stop, hi)
        if start < stop:
            out = slice(start - selection.start, stop - selection.start)
            yield Piece(part, slice(start - lo, stop - lo, 1), out)


def _split_array(selection: np.ndarray, offsets: np.ndarray) -> Iterator[Piece]:
    parts = np.searchsorted(offsets, selection, side="right") - 1
    for part in np.unique(parts):
        positions = np.flatnonzero(parts == part)
        local = selection[positions] - offsets[part]
        yield Piece(int(part), local, positions)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_row(index: object) -> bool:
    """True for an index of one row: an int, or a 0-d integer array or tensor (``torch.tensor(4)``).

    Reads with such an index drop the row axis, as numpy's do.
    """
    if _is_int(index):
        return True
    dtype = getattr(index, "dtype", None)
    if getattr(index, "ndim", None) != 0 or dtype is None:
        return False
    kind = np.dtype(dtype).kind if isinstance(dtype, np.dtype) else str(dtype).removeprefix("torch.")
    return kind in ("i", "u") or kind.startswith(("int", "uint"))


def _normalize_int(index: int, n_rows: int) -> int:
    if not -n_rows <= index < n_rows:
        raise IndexOutOfRangeError(f"index must be in [{-n_rows}, {n_rows}) for {n_rows} rows. Got {index} instead.")
    return index + n_rows if index < 0 else index


def _normalize_slice(index: slice, n_rows: int) -> Selection:
    if index.step == 0:  # slice.indices would raise a bare ValueError
        raise InvalidArgumentError(f"index as a slice must have a non-zero step. Got {index!r} instead.")
    if any(isinstance(b, (bool, np.bool_)) for b in (index.start, index.stop, index.step)):
        # slice(True, 3) would be slice(1, 3): a bool is refused as a bound, as it is as an index.
        raise InvalidArgumentError(
            f"index as a slice must have int (or None) start, stop and step, not bools. Got {index!r} instead."
        )
    try:
        start, stop, step = index.indices(n_rows)
    except TypeError:  # a bound that is not an int or None: slice(0, 1.5), slice('a', 2)
        raise InvalidArgumentError(
            f"index as a slice must have int (or None) start, stop and step. Got {index!r} instead."
        ) from None
    if step == 1:
        return slice(start, max(start, stop), 1)
    return np.arange(start, stop, step, dtype=np.int64)


def _normalize_array(index: object, n_rows: int) -> np.ndarray:
    try:
        array = np.asarray(index)
    except Exception as exc:  # e.g. a tensor on a GPU, or an unrelated object
        raise _bad_index(index) from exc
    if array.size == 0 and array.ndim == 1 and array.dtype != np.bool_:  # [] is float64 to numpy
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1:
        raise _bad_index(index)
    if array.dtype == np.bool_:
        return _mask_to_rows(array, n_rows)
    if not np.issubdtype(array.dtype, np.integer):
        raise _bad_index(index)
    if array.dtype.kind == "u" and array.size and array.max() >= n_rows:  # before int64 could wrap it
        raise IndexOutOfRangeError(
            f"index values must be in [{-n_rows}, {n_rows}) for {n_rows} rows. Got {int(array.max())} instead."
        )
    return _wrap_rows(array.astype(np.int64), n_rows)


def _mask_to_rows(mask: np.ndarray, n_rows: int) -> np.ndarray:
    if mask.shape[0] != n_rows:
        raise InvalidArgumentError(
            f"index as a boolean mask must have one entry per row ({n_rows}). "
            f"Got a mask of length {mask.shape[0]} instead."
        )
    return np.flatnonzero(mask).astype(np.int64)


def _wrap_rows(rows: np.ndarray, n_rows: int) -> np.ndarray:
    bad = (rows < -n_rows) | (rows >= n_rows)
    if bad.any():
        raise IndexOutOfRangeError(
            f"index values must be in [{-n_rows}, {n_rows}) for {n_rows} rows. Got {int(rows[bad][0])} instead."
        )
    return np.where(rows < 0, rows + n_rows, rows)


def _bad_index(index: object) -> InvalidArgumentError:
    return InvalidArgumentError(
        "index must be None, an int, a slice, a (start, stop) tuple, a 1-D list/array/tensor "
        f"of ints or a boolean mask. Got {type(index).__name__} {index!r:.80} instead."
    )
