"""var_names forms (str / tuple / list) and the matching data layouts."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from storegate.errors import InvalidArgumentError
from storegate.phases import PHASE_WORDS
from storegate.ragged import rows_or_array
from storegate.rules import as_array, common_length, with_rows

__all__ = [
    "MAX_NAME_BYTES",
    "OFFSETS",
    "ROW_DIMENSION",
    "VALUES",
    "ZARR_KEYS",
    "VarNames",
    "check_data_id",
    "check_name",
    "dimension_names",
    "parse_var_names",
]

Form = Literal["str", "tuple", "list"]


@dataclass(frozen=True)
class VarNames:
    """Parsed ``var_names``: the names and the form they were given in.

    - ``str``: one variable, data ``(N, ...)``.
    - ``tuple``: data ``(N, M, ...)`` split into (or stacked from) M variables.
    - ``list``: one array per name.
    """

    names: tuple[str, ...]
    form: Form

    def given(self) -> str | tuple[str, ...] | list[str]:
        """The var_names in the form the caller gave them (for messages and reprs)."""
        if self.form == "str":
            return self.names[0]
        return self.names if self.form == "tuple" else list(self.names)

    def split(self, data: object, ragged: bool = False) -> list[np.ndarray]:
        """Split caller data into one array per name (no copy: callers copy on store).

        A list of arrays whose first axes differ (or any list of rows, with ``ragged``) is
        ragged rows (:func:`storegate.ragged.rows_or_array`), for the str and list forms.
        """
        if self.form == "str":
            return [with_rows(rows_or_array(data, "data", ragged), "data")]
        if self.form == "tuple":
            if ragged:
                raise InvalidArgumentError(
                    "ragged=True needs var_names as a str or a list: a tuple stacks its variables. "
                    f"Got {self.names!r} instead."
                )
            return self._split_tuple(data)
        return self._split_list(data, ragged)

    def join(self, arrays: Sequence[np.ndarray], scalar: bool) -> Any:
        """Join arrays read per name into the shape this form returns."""
        if self.form == "str":
            return arrays[0]
        if self.form == "list":
            return list(arrays)
        _check_stackable(self.names, arrays)
        return np.stack(arrays, axis=0 if scalar else 1)

    def _split_tuple(self, data: object) -> list[np.ndarray]:
        array = as_array(data, "data")
        m = len(self.names)
        if array.ndim < 2 or array.shape[1] != m:
            raise InvalidArgumentError(
                f"data for a tuple of {m} var_names must have shape (N, {m}, ...). Got shape {array.shape} instead."
            )
        # One strided view per variable: vectorised, no loop over rows.
        return [array[:, i] for i in range(m)]

    def _split_list(self, data: object, ragged: bool = False) -> list[np.ndarray]:
        m = len(self.names)
        if isinstance(data, np.ndarray) or not isinstance(data, (list, tuple)):
            raise InvalidArgumentError(
                f"data for a list of {m} var_names must be a list of {m} arrays. Got {type(data).__name__} instead."
            )
        if len(data) != m:
            raise InvalidArgumentError(
                f"data for var_names {list(self.names)} must hold {m} arrays. Got {len(data)} instead."
            )
        arrays = [with_rows(rows_or_array(d, f"data[{i}]", ragged), f"data[{i}]") for i, d in enumerate(data)]
        lengths = {name: a.shape[0] for name, a in zip(self.names, arrays, strict=True)}
        common_length(lengths, "data for a list of var_names", InvalidArgumentError)
        return arrays


def parse_var_names(var_names: object) -> VarNames:
    """Parse ``var_names`` given as a str, a tuple of str or a list of str.

    Raises
    ------
    InvalidArgumentError
        If ``var_names`` is empty, holds a non-str or repeats a name.
    """
    if type(var_names) is str:  # the common case, checked once per name (not a subclass: np.str_)
        return _one_name(var_names)
    if isinstance(var_names, str):
        return VarNames((_check_name(var_names),), "str")
    if isinstance(var_names, (tuple, list)) and var_names:
        names = tuple(_check_name(n) for n in var_names)
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"var_names must not repeat a name. Got {var_names!r} instead.")
        return VarNames(names, "tuple" if isinstance(var_names, tuple) else "list")
    raise InvalidArgumentError(
        f"var_names must be a str, a non-empty tuple of str or a non-empty list of str. Got {var_names!r} instead."
    )


@functools.lru_cache(maxsize=1024)
def _one_name(name: str) -> VarNames:
    """One var_name, checked once: every ``sg[phase][name][i]`` parses it (a bad name raises, uncached)."""
    return VarNames((_check_name(name),), "str")


#: Longest name, in UTF-8 bytes: a path component on local disks and NAS folders.
MAX_NAME_BYTES = 255
#: Names a zarr store reserves for its own metadata documents.
ZARR_KEYS = frozenset(("zarr.json",))
#: Characters no name may hold: path separators, and fsspec's glob characters (an object
#: store deletes 'a*' as a pattern: every variable whose name starts with 'a').
FORBIDDEN = frozenset("/\\*?[]")
_NAME_RULE = (
    "a non-empty str of at most 255 UTF-8 bytes, without '/', '\\', '*', '?', '[', ']' or control "
    "characters, not starting with '.' and not 'zarr.json' (names every backend and every location can hold)"
)


def check_data_id(data_id: object) -> str:
    """A data_id: one name rule for every backend and location (see :func:`check_name`).

    Raises
    ------
    InvalidArgumentError
        Naming what is expected and what was given.
    """
    return check_name(data_id, "data_id")


def check_name(name: object, arg: str) -> str:
    """A data_id or var_name that every backend and every location can hold.

    A local or NAS folder takes each name as a directory (``'a\\b'`` would become two on
    some systems, a NUL byte or 300 characters none), a zarr store reserves ``zarr.json``
    for itself, and names starting with '.' are storegate's (and zarr v2's).

    Raises
    ------
    InvalidArgumentError
        Naming the argument, the rule and the name given.
    """
    if not isinstance(name, str):
        raise InvalidArgumentError(f"{arg} must be {_NAME_RULE}. Got {type(name).__name__} {name!r:.80} instead.")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: no file or object can be named so
        size = 0
    ok = (
        0 < size <= MAX_NAME_BYTES
        and not any(ch in FORBIDDEN for ch in name)
        and not any(ord(ch) < 32 or ord(ch) == 127 for ch in name)
        and not name.startswith(".")
        and name not in ZARR_KEYS
    )
    if not ok:
        raise InvalidArgumentError(f"{arg} must be {_NAME_RULE}. Got {name!r:.300} instead.")
    return name


def _check_name(given: object) -> str:
    name = check_name(given, "each var_name")
    if name in PHASE_WORDS:
        raise InvalidArgumentError(
            f"var_name {name!r} is a phase name: sg[{name!r}] selects the phase, so the item syntax could "
            f"never read such a variable. Choose another name (phase names: {sorted(PHASE_WORDS)})."
        )
    return name


def _check_stackable(names: tuple[str, ...], arrays: Sequence[np.ndarray]) -> None:
    shapes = {name: a.shape for name, a in zip(names, arrays, strict=True)}
    if len(set(shapes.values())) > 1:
        raise InvalidArgumentError(
            "var_names given as a tuple are stacked and must share one shape; use a list "
            f"to read variables of different shapes. Got shapes {shapes} instead."
        )


#: The name of the first axis of every variable: the rows, shared by the variables of a phase.
ROW_DIMENSION = "row"
#: Suffixes of the two stored arrays of a ragged variable (:mod:`storegate.ragged_store`): its
#: values, one row after another, and the end offset of each row.
VALUES = "@values"
OFFSETS = "@offsets"


def dimension_names(var: str, ndim: int) -> tuple[str, ...]:
    """The dimension names of a stored array of ``ndim`` axes, as written in zarr v3 and given to xarray.

    The rows share one name (:data:`ROW_DIMENSION`) so that ``xarray.open_zarr`` aligns the
    variables of a phase; the other axes are ``'<var>_dim_1'``, ``'<var>_dim_2'``... (xarray's
    own ``dim_<n>`` names, made unique per variable, since row shapes differ between them). A
    ragged variable's values (``'<var>@values'``) are not rows: their first axis is
    ``'<var>_value'``, the others those of the variable's rows.
    """
    if var.endswith(VALUES):
        base = var[: -len(VALUES)]
        return (f"{base}_value", *(f"{base}_dim_{axis}" for axis in range(1, ndim)))
    return (ROW_DIMENSION, *(f"{var}_dim_{axis}" for axis in range(1, ndim)))
