"""Row maps: which stored rows a view of a phase shows, in which order (torch-free, engine-free).

A view's rows are a small tree of :class:`RowMap` nodes (the whole phase, a range, a
filter on a label, a repetition, a seeded shuffle, a concatenation). A node holds only its
parameters; the row numbers it stands for are computed when first needed, from the rows of
its child and, for a filter, from the values of one label variable, read through the
``labels`` function the caller gives (so a pass over labels never reads anything else).
They are kept in the node for the process, and never pickled: a node pickles in a few
hundred bytes and a DataLoader worker computes its rows again on its first read.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from storegate.errors import InvalidArgumentError
from storegate.rules import as_array, is_int

__all__ = [
    "Concat",
    "Filter",
    "Labels",
    "Oversample",
    "Range",
    "Repeat",
    "RowMap",
    "Shuffle",
    "Whole",
    "Window",
    "check_bound",
    "check_classes",
    "check_repeat",
]

#: ``labels(var)``: every value of a variable over the rows of the view's phase, in order.
Labels = Callable[[str], np.ndarray]


class RowMap(ABC):
    """Positions of a view -> rows of its phase (or of phase ``'all'``), computed once per process."""

    def rows(self, labels: Labels) -> np.ndarray:
        """The phase rows the view shows, in its order: a 1-D int64 array (kept for the process)."""
        cached: np.ndarray | None = self.__dict__.get("_rows")
        if cached is None:
            cached = np.asarray(self._compute(labels), dtype=np.int64)
            cached.flags.writeable = False
            object.__setattr__(self, "_rows", cached)
        return cached

    def label_vars(self) -> frozenset[str]:
        """The variables whose values the rows depend on."""
        return frozenset().union(*(child.label_vars() for child in self._children()))

    @abstractmethod
    def _compute(self, labels: Labels) -> np.ndarray: ...

    def _children(self) -> tuple[RowMap, ...]:
        return ()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_rows"}  # rows are computed again

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@dataclass(frozen=True, eq=False)
class _Derived(RowMap):
    """A row map computed from one other row map, ``child``."""

    child: RowMap

    def _children(self) -> tuple[RowMap, ...]:
        return (self.child,)


@dataclass(frozen=True, eq=False)
class Whole(RowMap):
    """Every row of the phase, in order."""

    n_rows: int

    def _compute(self, labels: Labels) -> np.ndarray:
        return np.arange(self.n_rows, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Range(_Derived):
    """Positions ``[start, stop)`` of the child: ints as Python slices take them, or floats in
    ``[0, 1]`` as fractions of the child's rows (``floor(n * f)``, from ``f``'s decimal form)."""

    start: int | float | None
    stop: int | float | None

    def _compute(self, labels: Labels) -> np.ndarray:
        rows = self.child.rows(labels)
        n = rows.shape[0]
        start, stop, _ = slice(_bound(self.start, n), _bound(self.stop, n)).indices(n)
        return rows[start:stop]


@dataclass(frozen=True, eq=False)
class Filter(_Derived):
    """The child's rows whose value of ``var`` is (``keep``) or is not (``not keep``) one of ``values``."""

    var: str
    values: np.ndarray
    keep: bool

    def _compute(self, labels: Labels) -> np.ndarray:
        rows = self.child.rows(labels)
        inside = np.isin(_one_label_per_row(labels, self.var)[rows], self.values)
        return rows[inside if self.keep else ~inside]

    def label_vars(self) -> frozenset[str]:
        return self.child.label_vars() | {self.var}


@dataclass(frozen=True, eq=False)
class Oversample(_Derived):
    """The child's rows, then more rows of every class of ``var`` but the largest, cycled in
    order until each class has as many rows as the largest (KappaData's OversamplingWrapper)."""

    var: str

    def _compute(self, labels: Labels) -> np.ndarray:
        rows = self.child.rows(labels)
        _, classes, sizes = np.unique(
            _one_label_per_row(labels, self.var)[rows], return_inverse=True, return_counts=True
        )
        extra = [np.resize(rows[classes == c], int(sizes.max() - size)) for c, size in enumerate(sizes.tolist())]
        return np.concatenate([rows, *extra])

    def label_vars(self) -> frozenset[str]:
        return self.child.label_vars() | {self.var}


@dataclass(frozen=True, eq=False)
class Repeat(_Derived):
    """The child's rows ``times`` times over, or as many whole times as reach ``min_rows``."""

    times: int | None
    min_rows: int | None

    def _compute(self, labels: Labels) -> np.ndarray:
        rows = self.child.rows(labels)
        n = rows.shape[0]
        times = self.times if self.times is not None else max(1, math.ceil((self.min_rows or 0) / max(n, 1)))
        return np.tile(rows, times)


@dataclass(frozen=True, eq=False)
class Shuffle(_Derived):
    """The child's rows in the order of ``np.random.default_rng(seed).permutation``."""

    seed: int

    def _compute(self, labels: Labels) -> np.ndarray:
        rows = self.child.rows(labels)
        return rows[np.random.default_rng(self.seed).permutation(rows.shape[0])]


@dataclass(frozen=True, eq=False)
class Window(_Derived):
    """A child over the rows ``[offset, offset + n_rows)`` of a larger base (a phase inside ``'all'``)."""

    offset: int
    n_rows: int

    def _compute(self, labels: Labels) -> np.ndarray:
        inner = lambda var: labels(var)[self.offset : self.offset + self.n_rows]  # noqa: E731
        return self.child.rows(inner) + self.offset


@dataclass(frozen=True, eq=False)
class Concat(RowMap):
    """The rows of each part, one part after the other."""

    parts: tuple[RowMap, ...]

    def _compute(self, labels: Labels) -> np.ndarray:
        return np.concatenate([np.zeros(0, dtype=np.int64), *(p.rows(labels) for p in self.parts)])

    def _children(self) -> tuple[RowMap, ...]:
        return self.parts


# --- argument checks (the view methods' arguments) -----------------------------------------


def check_bound(arg: str, value: object) -> int | float | None:
    """A range bound: None, an int (negatives count from the end) or a fraction in ``[0, 1]``."""
    if value is None or is_int(value):
        return None if value is None else int(value)
    if isinstance(value, (float, np.floating)) and 0.0 <= float(value) <= 1.0:
        return float(value)
    raise InvalidArgumentError(
        f"{arg} must be None, an int row position (negatives count from the end) or a float fraction in [0, 1] "
        f"(KappaData's from_percent / to_percent). Got {value!r} instead: e.g. subset(0.25, 0.75) or subset(10, 20)."
    )


def check_classes(keep: object, drop: object) -> tuple[np.ndarray, bool]:
    """The class values of a filter and whether they are kept: exactly one of ``keep`` and ``drop``."""
    if (keep is None) == (drop is None):
        raise InvalidArgumentError(
            "filter needs exactly one of keep= (the classes to keep) and drop= (the classes to drop). "
            f"Got keep={keep!r} and drop={drop!r} instead."
        )
    given = keep if keep is not None else drop
    arg = "keep" if keep is not None else "drop"
    values = as_array(list(given) if isinstance(given, (set, frozenset)) else given, arg).reshape(-1)
    return values, keep is not None


def check_repeat(times: object, min_rows: object) -> tuple[int | None, int | None]:
    """Exactly one of ``times`` (an int >= 1) and ``min_rows`` (an int >= 0)."""
    if (times is None) == (min_rows is None):
        raise InvalidArgumentError(
            "repeat needs exactly one of times= (whole repetitions, >= 1) and min_rows= (repeat until at least "
            f"that many rows). Got times={times!r} and min_rows={min_rows!r} instead."
        )
    if times is not None and (not is_int(times) or times < 1):
        raise InvalidArgumentError(f"times must be an int >= 1. Got {times!r} instead: e.g. repeat(2).")
    if min_rows is not None and (not is_int(min_rows) or min_rows < 0):
        raise InvalidArgumentError(
            f"min_rows must be an int >= 0. Got {min_rows!r} instead: e.g. repeat(min_rows=1000)."
        )
    return (None if times is None else int(times)), (None if min_rows is None else int(min_rows))


def _one_label_per_row(labels: Labels, var: str) -> np.ndarray:
    values = labels(var)
    if values.ndim != 1:
        raise InvalidArgumentError(
            f"var_name {var!r} must hold one label per row (shape (N,)) to choose rows by it. Got row shape "
            f"{values.shape[1:]} instead: use a variable of class labels (e.g. onehot.argmax(1))."
        )
    return values


def _bound(value: int | float | None, n: int) -> int | None:
    if value is None or isinstance(value, int):
        return value
    return math.floor(n * Fraction(repr(value)))
