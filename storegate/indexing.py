"""The one place that turns every accepted index form into a normalised selection.

A selection of rows is an ``int`` (one row, in range), a ``slice`` with non-negative
start, stop and step 1, or a 1-D ``int64`` array of in-range row numbers.

An index may also select inside rows, numpy-style: a tuple ``(rows, *inner)`` whose first
item chooses rows (any accepted row form) and whose other items choose along the axes of a
row (ints, slices of any step, one Ellipsis, random windows of :mod:`storegate.windows`,
and a list / array / mask of positions on one axis when no other item is an int or a list,
so that numpy's result is the orthogonal one).
One tuple keeps multiml's meaning instead: two ints (or None), ``(start, stop)``, are the
rows ``start:stop``. So ``x[3, 5]`` is rows 3 and 4 (``x[3:5]``); write ``x[3, 5:6]`` or
``x[3][5]`` for one element. :func:`parse_index` splits such a tuple, :func:`normalize_inner` checks its
inner items against a row's shape (an :class:`InnerSelection`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Union

import numpy as np

from storegate.errors import IndexOutOfRangeError, InvalidArgumentError
from storegate.windows import RandomWindow

__all__ = [
    "Inner",
    "InnerSelection",
    "ParsedIndex",
    "Piece",
    "Selection",
    "as_row_index",
    "clip_rows",
    "has_list",
    "inner_shape",
    "is_row",
    "no_draw",
    "normalize_index",
    "normalize_inner",
    "parse_index",
    "selection_length",
    "selection_span",
    "selects_inside",
    "split_selection",
]

Selection = Union[int, slice, np.ndarray]
#: A selection inside rows, one item per axis of a row: an in-range int (the axis is
#: dropped), a slice with ``0 <= start <= stop`` and ``step >= 1``, or (on one axis at most,
#: and then with no int item) a 1-D int64 array of in-range positions. What backends read.
Inner = tuple[Union[int, slice, np.ndarray], ...]


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
    if isinstance(index, RandomWindow):  # a random run of rows, drawn now
        return _normalize_slice(index.draw(n_rows), n_rows)
    if is_row(index):
        return _normalize_int(operator.index(index), n_rows)  # type: ignore[arg-type]
    if isinstance(index, slice):
        return _normalize_slice(index, n_rows)
    if isinstance(index, tuple):
        # Only (start, stop): a longer tuple read as a row list would make (1, 5) and (1, 5, 6) disagree.
        # multiml took it as slice(start, stop), so None stands for an open end there too.
        if _is_pair(index):
            return _normalize_slice(slice(index[0], index[1]), n_rows)
        raise InvalidArgumentError(
            f"index must select whole rows here. Got {index!r:.80}, a tuple that selects inside rows (numpy-style "
            "(rows, ...)), which only reads accept (item syntax, get_data). Give the rows alone."
        )
    return _normalize_array(index, n_rows)


def _is_pair(index: tuple[object, ...]) -> bool:
    """multiml's ``(start, stop)``: two ints (or None)."""
    return len(index) == 2 and all(i is None or _is_int(i) for i in index)


def selects_inside(index: object) -> bool:
    """True for a numpy-style tuple ``(rows, *inner)``: any tuple but multiml's ``(start, stop)``."""
    return isinstance(index, tuple) and not _is_pair(index)


@dataclass(frozen=True)
class ParsedIndex:
    """An index split into its rows and what it selects inside them.

    ``rows`` is the row index (any accepted row form, not yet normalised); ``inner`` holds
    one item per axis of a row (the Ellipsis expanded), or ``None`` when it takes whole rows.
    """

    rows: object
    inner: tuple[object, ...] | None


def parse_index(index: object, ndim: int) -> ParsedIndex:
    """Split ``index`` for a variable of ``ndim`` axes (rows included), as numpy reads a tuple.

    Raises
    ------
    InvalidArgumentError
        If the tuple holds more than one Ellipsis, more items than the variable has axes,
        or a tuple as its row item.
    """
    if not selects_inside(index):
        return ParsedIndex(index, None)
    assert isinstance(index, tuple)
    items = _expand_ellipsis(index, ndim)
    if not items:
        return ParsedIndex(None, None)
    if isinstance(items[0], tuple):
        raise InvalidArgumentError(
            f"index's row item (its first) must be an int, a slice, a list/array of rows or a mask. Got the tuple "
            f"{items[0]!r:.60} inside {index!r:.80} instead: give several rows as a list."
        )
    inner = items[1:]
    if all(isinstance(i, slice) and i == slice(None) for i in inner):
        return ParsedIndex(items[0], None)  # whole rows: the plain row read
    return ParsedIndex(items[0], inner + (slice(None),) * (ndim - len(items)))


def _expand_ellipsis(index: tuple[object, ...], ndim: int) -> tuple[object, ...]:
    at = [i for i, item in enumerate(index) if item is Ellipsis]
    if len(at) > 1:
        raise InvalidArgumentError(f"index may hold one Ellipsis (...). Got {len(at)} in {index!r:.80} instead.")
    if at:
        fill = ndim - (len(index) - 1)
        index = index[: at[0]] + (slice(None),) * max(fill, 0) + index[at[0] + 1 :]
    if len(index) > ndim:
        raise InvalidArgumentError(
            f"index must have at most one item per axis of the variable ({ndim}: the rows, then {ndim - 1} inside "
            f"a row). Got {len(index)} items in {index!r:.80} instead. (x[3, 5] is multiml's rows 3:5; write "
            "x[3, 5:6] or x[3][5] for one element.)"
        )
    return index


@dataclass(frozen=True)
class InnerSelection:
    """A checked selection inside rows: one item per axis of a row.

    ``items`` holds in-range ints, slices with ``0 <= start <= stop`` and ``step >= 1``,
    and random windows (drawn per row by :meth:`resolve`); ``flips`` is true on an axis
    selected by a slice of negative step, read forwards by the backend then reversed.
    """

    items: tuple[int | slice | np.ndarray | RandomWindow, ...]
    flips: tuple[bool, ...]

    @property
    def windows(self) -> bool:
        """True when some axis takes a random window (each row then draws its own)."""
        return any(isinstance(i, RandomWindow) for i in self.items)

    def resolve(self, row_shape: tuple[int, ...], draw: Callable[[RandomWindow, int], slice]) -> Inner:
        """The items with each window drawn: ``draw(window, axis_length)`` gives its slice."""
        return tuple(
            draw(i, n) if isinstance(i, RandomWindow) else i for i, n in zip(self.items, row_shape, strict=True)
        )

    def reverse(self, out: np.ndarray, row_axis: bool) -> np.ndarray:
        """``out`` (as read with the resolved items) with the axes of negative-step slices reversed."""
        if not any(self.flips):
            return out
        kept = [flip for item, flip in zip(self.items, self.flips, strict=True) if not isinstance(item, int)]
        post = (slice(None),) * row_axis + tuple(slice(None, None, -1) if f else slice(None) for f in kept)
        return out[post]

    def take(self, rows: np.ndarray, draw: Callable[[RandomWindow, int], slice]) -> np.ndarray:
        """Select inside each row of an in-memory batch ``rows`` of shape ``(n, *row_shape)``.

        Windows are drawn per row, ``draw(window, axis_length)``, in row order.
        """
        row_shape = tuple(rows.shape[1:])
        if not self.windows:
            return self.reverse(rows[(slice(None), *self.resolve(row_shape, no_draw))], True)
        parts = [self.reverse(row[self.resolve(row_shape, draw)], False) for row in rows]
        return np.stack(parts) if parts else np.zeros((0, *self.window_shape(row_shape)), dtype=rows.dtype)

    def window_shape(self, row_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one row as selected (every window is ``length`` long, wherever it lies)."""
        return inner_shape(self.resolve(row_shape, lambda w, n: slice(0, w.length, 1)), row_shape)


def no_draw(window: RandomWindow, axis_length: int) -> slice:
    """The ``draw`` of a selection without windows: never called."""
    raise AssertionError(f"a selection without windows has nothing to draw. Got {window!r}")  # pragma: no cover


def normalize_inner(items: tuple[object, ...], row_shape: tuple[int, ...], rows: object = None) -> InnerSelection:
    """Check the inner items of a :class:`ParsedIndex` against the shape of a row.

    ``rows`` is the row item of the index: a list inside a row is accepted only with rows
    chosen by a slice (or all rows) and no int item, where numpy's result is orthogonal.

    Raises
    ------
    IndexOutOfRangeError
        If an int or a listed position lies outside its axis.
    InvalidArgumentError
        If an item is neither an int, a slice, a random window nor a 1-D list / array /
        mask of positions (floats, bools, None are refused), a slice has a zero step or
        non-int bounds, or a list inside a row comes with an int or another list.
    """
    normalised = [_inner_item(item, axis + 1, n) for axis, (item, n) in enumerate(zip(items, row_shape, strict=True))]
    selection = InnerSelection(tuple(i for i, _ in normalised), tuple(f for _, f in normalised))
    _check_one_list(selection.items, rows, items)
    return selection


def _check_one_list(items: tuple[object, ...], rows: object, given: tuple[object, ...]) -> None:
    """numpy pairs lists up, and moves their axis first beside ints: only one list, alone, is orthogonal."""
    lists = sum(isinstance(i, np.ndarray) for i in items)
    if not lists:
        return
    rows_basic = rows is None or isinstance(rows, (slice, RandomWindow))
    if lists > 1 or not rows_basic or any(isinstance(i, int) for i in items):
        raise InvalidArgumentError(
            "index may hold a list / array inside a row on one axis only, with the rows chosen by a slice and no "
            f"int item (numpy would pair the lists up or move their axis first). Got rows {rows!r:.40} and inner "
            f"items {given!r:.80} instead: read in two steps, e.g. x[rows][:, [0, 2]], or use slices."
        )


def _inner_item(item: object, axis: int, n: int) -> tuple[int | slice | np.ndarray | RandomWindow, bool]:
    if isinstance(item, RandomWindow):
        return item, False
    if isinstance(item, (list, np.ndarray)) or (hasattr(item, "ndim") and getattr(item, "ndim", 0) == 1):
        try:
            return _normalize_array(item, n), False
        except (InvalidArgumentError, IndexOutOfRangeError) as exc:  # its message says rows: say which axis
            raise type(exc)(f"index item {axis} (positions along axis {axis} of {n}): {exc}") from None
    if is_row(item):
        value = operator.index(item)  # type: ignore[arg-type]
        if not -n <= value < n:
            raise IndexOutOfRangeError(
                f"index item {axis} must be in [{-n}, {n}) for axis {axis} of {n} positions. Got {value} instead."
            )
        return value + n if value < 0 else value, False
    if isinstance(item, slice):
        _check_slice(item, f"index item {axis}")
        start, stop, step = item.indices(n)
        if step > 0:
            return slice(start, max(start, stop), step), False
        positions = range(start, stop, step)
        if not positions:
            return slice(0, 0, 1), False
        return slice(positions[-1], positions[0] + 1, -step), True
    raise InvalidArgumentError(
        f"index item {axis} (axis {axis}, inside a row) must be an int, a slice, an Ellipsis, a randslice or a 1-D "
        f"list / array / mask of positions. Got {type(item).__name__} {item!r:.60} instead (None / np.newaxis, "
        "floats and bools are not accepted)."
    )


def inner_shape(inner: Inner, row_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one row as ``inner`` (resolved) selects it."""
    return tuple(
        len(i) if isinstance(i, np.ndarray) else len(range(*i.indices(n)))
        for i, n in zip(inner, row_shape, strict=True)
        if not isinstance(i, int)
    )


def has_list(inner: Inner) -> bool:
    """True when an axis of ``inner`` is chosen by an array of positions (an orthogonal read)."""
    return any(isinstance(i, np.ndarray) for i in inner)


def as_row_index(rows: np.ndarray) -> int | slice | np.ndarray:
    """Row numbers as an index to read: an int, a run of rows as a slice (one contiguous read), or the rows."""
    if np.ndim(rows) == 0:
        return int(rows)
    if rows.shape[0] and rows[-1] - rows[0] == rows.shape[0] - 1 and bool(np.all(np.diff(rows) == 1)):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


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


def _check_slice(index: slice, what: str = "index as a slice") -> None:
    if index.step == 0:  # slice.indices would raise a bare ValueError
        raise InvalidArgumentError(f"{what} must have a non-zero step. Got {index!r} instead.")
    bounds = (index.start, index.stop, index.step)
    if any(isinstance(b, (bool, np.bool_)) for b in bounds):
        # slice(True, 3) would be slice(1, 3): a bool is refused as a bound, as it is as an index.
        raise InvalidArgumentError(
            f"{what} must have int (or None) start, stop and step, not bools. Got {index!r} instead."
        )
    if any(b is not None and not is_row(b) for b in bounds):  # slice(0, 1.5), slice('a', 2)
        raise InvalidArgumentError(f"{what} must have int (or None) start, stop and step. Got {index!r} instead.")


def _normalize_slice(index: slice, n_rows: int) -> Selection:
    _check_slice(index)
    start, stop, step = index.indices(n_rows)
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
