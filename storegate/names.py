"""var_names forms (str / tuple / list) and the matching data layouts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from storegate.errors import InvalidArgumentError
from storegate.phases import PHASE_WORDS
from storegate.rules import as_array, common_length, with_rows

__all__ = ["VarNames", "check_data_id", "parse_var_names"]

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

    def split(self, data: object) -> list[np.ndarray]:
        """Split caller data into one array per name (no copy: callers copy on store)."""
        if self.form == "str":
            return [with_rows(as_array(data, "data"), "data")]
        if self.form == "tuple":
            return self._split_tuple(data)
        return self._split_list(data)

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

    def _split_list(self, data: object) -> list[np.ndarray]:
        m = len(self.names)
        if isinstance(data, np.ndarray) or not isinstance(data, (list, tuple)):
            raise InvalidArgumentError(
                f"data for a list of {m} var_names must be a list of {m} arrays. Got {type(data).__name__} instead."
            )
        if len(data) != m:
            raise InvalidArgumentError(
                f"data for var_names {list(self.names)} must hold {m} arrays. Got {len(data)} instead."
            )
        arrays = [with_rows(as_array(d, f"data[{i}]"), f"data[{i}]") for i, d in enumerate(data)]
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


def check_data_id(data_id: object) -> str:
    """A data_id: a non-empty str without '/' that does not start with '.'.

    Raises
    ------
    InvalidArgumentError
        Naming what is expected and what was given.
    """
    if not isinstance(data_id, str) or not data_id or "/" in data_id or data_id.startswith("."):
        raise InvalidArgumentError(
            f"data_id must be a non-empty str without '/' and not starting with '.'. Got {data_id!r} instead."
        )
    return data_id


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise InvalidArgumentError(
            f"each var_name must be a non-empty str without '/' and not starting with '.'. Got {name!r} instead."
        )
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
