"""The rules every layer checks, each written once: integers, lengths, shapes, dtypes, casts.

This module sits at the bottom of the package (it imports only :mod:`storegate.errors`),
so that the parsing modules, the backends, the engine and the adapters all raise the same
error with the same message for the same fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

import numpy as np

from storegate.errors import InvalidArgumentError, ValidationError

__all__ = [
    "as_array",
    "cast",
    "check_dtype",
    "check_int",
    "check_positive",
    "check_row_shape",
    "check_seed",
    "check_shape",
    "common_length",
    "is_int",
    "with_rows",
]


def is_int(value: object) -> TypeGuard[int | np.integer[Any]]:
    """True for a Python or numpy integer that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(arg: str, value: object, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int within ``[minimum, maximum]``.

    Raises
    ------
    InvalidArgumentError
        Naming ``arg``, the accepted range and the value given.
    """
    if not is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InvalidArgumentError(f"{arg} must be an int{_range_text(minimum, maximum)}. Got {value!r} instead.")
    return int(value)


def _range_text(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def check_positive(arg: str, value: object) -> int:
    """``value`` as an int >= 1 (a count or a size)."""
    if not is_int(value) or value < 1:
        raise InvalidArgumentError(f"{arg} must be a positive int. Got {value!r} instead.")
    return int(value)


def check_seed(seed: object, arg: str = "seed") -> int:
    """A random seed: a non-negative int (``True`` is not a seed here)."""
    if not is_int(seed) or seed < 0:
        raise InvalidArgumentError(f"{arg} must be a bool or a non-negative int. Got {seed!r} instead.")
    return int(seed)


def common_length(
    lengths: Mapping[str, int], what: str, error: type[Exception] = ValidationError, context: str = ""
) -> int:
    """The one length that every entry of ``lengths`` has (0 when there is none).

    Parameters
    ----------
    lengths
        Rows per variable name.
    what
        What must agree, for the message, e.g. ``"every variable of phase 'train'"``.
    error
        :class:`ValidationError` for stored data (the default), :class:`InvalidArgumentError`
        for data given by the caller.
    context
        Words after "rows" in the message, e.g. ``" in phase 'train' before writing"``.
    """
    values = set(lengths.values())
    if len(values) > 1:
        raise error(f"{what} must have the same number of rows{context}. Got {dict(lengths)} instead.")
    return values.pop() if values else 0


def as_array(data: object, arg: str) -> np.ndarray:
    """``data`` as a numpy array, accepting lists, numpy arrays and torch tensors.

    Raises
    ------
    InvalidArgumentError
        If numpy cannot convert ``data`` or gives an object array (ragged rows, mixed types).
    """
    if hasattr(data, "detach") and hasattr(data, "cpu"):  # torch.Tensor, without importing torch
        data = data.detach().cpu().numpy()
    try:
        array = np.asarray(data)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"{arg} must be array-like. Got {type(data).__name__} that numpy cannot convert ({exc})."
        ) from exc
    if array.dtype == object:
        raise InvalidArgumentError(
            f"{arg} must be a numeric array with one shape per row. Got an object array "
            "(ragged rows or mixed types) instead."
        )
    return array


def with_rows(array: np.ndarray, arg: str) -> np.ndarray:
    """``array`` unchanged when it has a leading row axis ``(N, ...)``."""
    if array.ndim == 0:
        raise InvalidArgumentError(f"{arg} must have a leading row axis (N, ...). Got a scalar instead.")
    return array


def check_row_shape(var: str, phase: str, stored: tuple[int, ...], given: tuple[int, ...]) -> None:
    """Rows written to a stored variable must have its row shape."""
    if stored != given:
        raise InvalidArgumentError(
            f"data for var_name {var!r} in phase {phase!r} must have row shape {stored} like the "
            f"stored rows. Got row shape {given} instead."
        )


def cast(array: np.ndarray, dtype: np.dtype, var: str) -> np.ndarray:
    """``array`` in the stored ``dtype``, allowed by numpy's ``same_kind`` rule."""
    if not np.can_cast(array.dtype, dtype, casting="same_kind"):
        raise InvalidArgumentError(
            f"data for var_name {var!r} must be castable to the stored dtype {dtype} under numpy's "
            f"'same_kind' rule. Got dtype {array.dtype} instead; use astype() to change the stored dtype."
        )
    return array.astype(dtype, copy=False)


def check_shape(shape: Any) -> tuple[int, ...]:
    """A full shape ``(N, ...)`` of non-negative ints."""
    ok = isinstance(shape, (tuple, list)) and len(shape) >= 1 and all(is_int(d) and d >= 0 for d in shape)
    if not ok:
        raise InvalidArgumentError(f"shape must be a tuple of non-negative ints (N, ...). Got {shape!r} instead.")
    return tuple(int(d) for d in shape)


def check_dtype(dtype: Any) -> np.dtype:
    """A numpy dtype from a dtype or its name."""
    try:
        return np.dtype(dtype)  # type: ignore[no-any-return]
    except TypeError as exc:
        raise InvalidArgumentError(f"dtype must be a numpy dtype or its name. Got {dtype!r} instead.") from exc
