"""Ragged rows: rows whose length differs along their first inner axis (clips, sequences, point sets).

A ragged variable holds ``N`` rows, row ``i`` an array of shape ``(L_i, *inner)``. It is
stored as two ordinary arrays beside the other variables of its phase (see
:mod:`storegate.ragged_store` for the stored layout); this module holds what needs no store:

- **input**: :func:`rows_or_array` turns a list of arrays whose first axes differ into
  *rows*, a 1-D numpy object array of ``N`` arrays, which the write path splits, shuffles
  and indexes like any array of ``N`` rows;
- **packing**: :func:`pack` gives the flat values and the end offsets of rows;
- **batches**: :func:`batch` gives rows read together as a list, padded (lardon's
  ``batch_mode='pad'`` with ``np.pad``'s arguments) or cropped to one length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from storegate.errors import InvalidArgumentError, ValidationError
from storegate.rules import as_array, check_int, common_dtype

__all__ = [
    "BATCH_MODES",
    "batch",
    "check_batch_mode",
    "is_rows",
    "make_rows",
    "pack",
    "rows_of",
    "rows_or_array",
]

#: The per-read choices for a batch of ragged rows: ``'list'`` (the default: one array per
#: row), ``'pad'`` (``(padded, lengths)``) and ``'crop'`` (one array cut to one length).
BATCH_MODES = ("list", "pad", "crop")


def is_rows(array: object) -> bool:
    """True for ragged rows: a 1-D numpy object array (see :func:`make_rows`)."""
    return isinstance(array, np.ndarray) and array.dtype == object and array.ndim == 1


def make_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """A 1-D object array holding ``rows`` (numpy would try to stack them otherwise)."""
    out = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        out[i] = row
    return out


def rows_or_array(data: object, arg: str, ragged: bool = False) -> np.ndarray:
    """``data`` as an array, or as ragged rows when it is a list of arrays of different lengths.

    Parameters
    ----------
    data
        Array-like ``(N, ...)``; a list or tuple of array-likes ``(L_i, *inner)`` whose
        ``L_i`` differ; or ragged rows already (an object array of arrays).
    ragged
        Make rows even when every ``L_i`` is the same (an explicit ``ragged=True``).

    Raises
    ------
    InvalidArgumentError
        If the rows differ in inner shape, are 0-d, or their dtypes have no common dtype.
    """
    if isinstance(data, np.ndarray) and is_rows(data):
        return _checked_rows(list(data), arg)
    if isinstance(data, (list, tuple)) and data and (ragged or _differ_in_length(data)):
        return _checked_rows(list(data), arg)
    array = as_array(data, arg)
    if ragged:
        if array.ndim < 2:
            raise InvalidArgumentError(
                f"{arg} for a ragged variable must hold rows of shape (L, ...). Got shape {array.shape} instead: "
                "give a list of arrays, one per row."
            )
        return make_rows(list(array))
    return array


def _differ_in_length(data: list[Any] | tuple[Any, ...]) -> bool:
    lengths = set()
    for item in data:
        shape = np.shape(item) if not isinstance(item, np.ndarray) else item.shape
        if not shape:
            return False  # scalars: an ordinary 1-D variable
        lengths.add(shape[0])
    return len(lengths) > 1


def _checked_rows(items: list[Any], arg: str) -> np.ndarray:
    rows = [as_array(item, f"{arg}[{i}]") for i, item in enumerate(items)]
    inner = {row.shape[1:] for row in rows}
    if any(row.ndim == 0 for row in rows) or len(inner) > 1:
        shapes = sorted({row.shape for row in rows}, key=str)[:4]
        raise InvalidArgumentError(
            f"{arg} as ragged rows must hold arrays of shape (L_i, *inner) with one inner shape. Got shapes "
            f"{shapes} instead. Reshape the rows so only their first axis differs."
        )
    common_dtype_of(rows, arg)
    return make_rows(rows)


def common_dtype_of(rows: Sequence[np.ndarray], arg: str) -> np.dtype:
    """The dtype the rows' values concatenate to.

    Raises
    ------
    InvalidArgumentError
        If the rows mix kinds numpy cannot join (text with numbers).
    """
    if not rows:
        return np.dtype(np.float64)
    try:
        dtype = np.result_type(*(row.dtype for row in rows))
    except TypeError as exc:
        raise InvalidArgumentError(
            f"{arg} as ragged rows must share one kind of value. Got dtypes "
            f"{sorted({str(r.dtype) for r in rows})} instead ({exc}). Convert the rows to one dtype first."
        ) from None
    if dtype.kind in "US" and len({row.dtype.kind for row in rows}) > 1:
        raise InvalidArgumentError(
            f"{arg} as ragged rows mixes text with numbers (dtypes {sorted({str(r.dtype) for r in rows})}). "
            "Convert the rows to one dtype first."
        )
    try:  # numpy's promotion may lose values (int64 with float16 meet in float64): refused, as reads refuse it
        return common_dtype([row.dtype for row in rows], f"{arg} as ragged rows")
    except ValidationError as exc:
        fix = "Convert the phases to one dtype with astype(), as compile() requires."
        raise InvalidArgumentError(str(exc).replace(fix, "Convert the rows to one dtype first.")) from None


def rows_of(array: np.ndarray) -> list[np.ndarray]:
    """The rows of ragged rows, or of an ordinary array ``(N, L, ...)`` (each row a row)."""
    return list(array)


def pack(
    rows: Sequence[np.ndarray], inner: tuple[int, ...], dtype: np.dtype, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The flat values ``(sum L_i, *inner)`` of ``dtype`` and the int64 end offsets ``(N,)``.

    ``start`` is added to every end (the values already stored before these rows).
    """
    lengths = np.array([row.shape[0] for row in rows], dtype=np.int64)
    values = np.concatenate([np.asarray(row, dtype=dtype) for row in rows]) if rows else np.empty((0, *inner), dtype)
    return values.reshape((-1, *inner)), start + np.cumsum(lengths, dtype=np.int64)


def check_batch_mode(batch_mode: object, batch_args: object) -> tuple[str, dict[str, Any]]:
    """Parse ``batch_mode`` (None is ``'list'``) and ``batch_args`` (a dict or None).

    Raises
    ------
    InvalidArgumentError
        For an unknown mode, arguments that are not a dict, or a bad ``length``.
    """
    mode = "list" if batch_mode is None else batch_mode
    if mode not in BATCH_MODES:
        raise InvalidArgumentError(
            f"batch_mode must be one of {list(BATCH_MODES)} or None (lardon's batch_mode). Got {batch_mode!r} instead."
        )
    if batch_args is None:
        batch_args = {}
    if not isinstance(batch_args, dict):
        raise InvalidArgumentError(
            "batch_args must be a dict of np.pad's arguments (e.g. {'constant_values': 0}) and 'length'. "
            f"Got {type(batch_args).__name__} instead."
        )
    args = dict(batch_args)
    if "length" in args and args["length"] is not None:
        args["length"] = check_int("batch_args['length']", args["length"], minimum=0)
    if mode != "pad" and set(args) - {"length"}:
        raise InvalidArgumentError(
            f"batch_args of batch_mode {mode!r} may only hold 'length' (np.pad's arguments go with 'pad'). Got "
            f"{sorted(args)} instead."
        )
    return mode, args


def batch(rows: Sequence[np.ndarray], mode: str, args: dict[str, Any], empty: np.ndarray | None = None) -> Any:
    """Rows read together, in the form of ``mode`` (parsed by :func:`check_batch_mode`).

    - ``'list'``: a list of arrays ``(L_i, *inner)``;
    - ``'pad'``: ``(padded, lengths)``: ``padded`` ``(n, length, *inner)`` with every row
      padded at its end by ``np.pad(row, ..., **args)`` (default mode 'constant', zeros),
      ``length`` the longest row unless given; ``lengths`` int64 ``(n,)``, so a mask is
      ``np.arange(length) < lengths[:, None]``;
    - ``'crop'``: ``(n, length, *inner)``, each row's first ``length`` values, ``length``
      the shortest row unless given.

    ``empty``, an array ``(0, *inner)`` of the values' dtype, gives a batch of no row its
    inner shape and dtype.

    Raises
    ------
    InvalidArgumentError
        If a row is longer than a padding ``length`` or shorter than a cropping one.
    """
    if mode == "list":
        return list(rows)
    pad_args = dict(args)
    given = pad_args.pop("length", None)
    lengths = np.array([row.shape[0] for row in rows], dtype=np.int64)
    if mode == "crop":
        length = (int(lengths.min()) if lengths.size else 0) if given is None else int(given)
        _check_fits(lengths, length, lambda n: n < length, "shorter", "pad")
        return _stack([row[:length] for row in rows], length, empty)
    length = (int(lengths.max()) if lengths.size else 0) if given is None else int(given)
    _check_fits(lengths, length, lambda n: n > length, "longer", "crop")
    try:
        padded = [np.pad(row, [(0, length - row.shape[0])] + [(0, 0)] * (row.ndim - 1), **pad_args) for row in rows]
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"batch_args for batch_mode 'pad' must be np.pad's keyword arguments (mode, constant_values, ...) "
            f"and 'length'. Got {sorted(args)}, which np.pad refuses ({exc}). Fix the arguments."
        ) from None
    return _stack(padded, length, empty), lengths


def _stack(rows: list[np.ndarray], length: int, empty: np.ndarray | None) -> np.ndarray:
    if rows:
        return np.stack(rows)
    template = np.empty((0,), dtype=np.float64) if empty is None else empty
    return np.empty((0, length, *template.shape[1:]), dtype=template.dtype)


def _check_fits(lengths: np.ndarray, length: int, bad: Any, word: str, fix: str) -> None:
    wrong = [i for i, n in enumerate(lengths.tolist()) if bad(n)]
    if wrong:
        raise InvalidArgumentError(
            f"batch_args['length'] must fit every row of the batch. Got length {length}, and row {wrong[0]} is "
            f"{word} ({int(lengths[wrong[0]])}). Give another length, or use batch_mode={fix!r}."
        )
