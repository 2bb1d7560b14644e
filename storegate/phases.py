"""Phase names and phase specifications (fractions or counts) -> per-phase row counts,
and the seeded row order used to shuffle rows before they are split."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from storegate.errors import InvalidArgumentError

__all__ = [
    "ALL",
    "DEFAULT_SHUFFLE_SEED",
    "PHASES",
    "Split",
    "is_split",
    "parse_phase",
    "permutation",
    "phases_of",
    "resolve_phase",
    "split_counts",
]

PHASES: tuple[str, str, str] = ("train", "valid", "test")
ALL = "all"
_FRACTION_TOLERANCE = 1e-9
#: Seed used by ``add_data(shuffle=True)``, so separate calls stay aligned.
DEFAULT_SHUFFLE_SEED = 0


@dataclass(frozen=True)
class Split:
    """A checked split spec: three fractions (sum 1) or three counts for train / valid / test."""

    values: tuple[int | float, int | float, int | float]

    def counts(self, n_rows: int) -> tuple[int, int, int]:
        """Rows of each phase for ``n_rows`` rows (see :func:`split_counts`)."""
        return split_counts(self.values, n_rows)


def parse_phase(phase: object) -> str | Split:
    """A phase name (``None`` is ``'all'``) or a checked :class:`Split`.

    Raises
    ------
    InvalidArgumentError
        If ``phase`` is neither a known phase name nor three fractions or counts.
    """
    if is_split(phase):
        values = _check_spec(phase)  # type: ignore[arg-type]
        return Split((values[0], values[1], values[2]))  # type: ignore[arg-type]
    return resolve_phase(phase)


def phases_of(phase: str) -> tuple[str, ...]:
    """The stored phases a phase name stands for: all three for ``'all'``."""
    return PHASES if phase == ALL else (phase,)


def permutation(n_rows: int, seed: int) -> np.ndarray:
    """The row order that a seed gives: the same for every call with the same seed."""
    return np.random.default_rng(seed).permutation(n_rows)


def resolve_phase(phase: object, *, allow_all: bool = True) -> str:
    """Return ``phase`` as one of ``train``, ``valid``, ``test`` (or ``all``).

    Raises
    ------
    InvalidArgumentError
        If ``phase`` is not a known phase name.
    """
    if phase is None and allow_all:
        return ALL
    choices = (*PHASES, ALL) if allow_all else PHASES
    if isinstance(phase, str) and phase in choices:
        return phase
    raise InvalidArgumentError(f"phase must be one of {', '.join(map(repr, choices))}. Got {phase!r} instead.")


def is_split(phase: object) -> bool:
    """True when ``phase`` is a 3-element tuple or list of fractions or counts."""
    return isinstance(phase, (tuple, list))


def split_counts(phase: Sequence[object], n_rows: int) -> tuple[int, int, int]:
    """Rows that go to train, valid and test for a split spec of ``n_rows`` rows.

    Fractions must sum to 1 within a tolerance; split points are the floor of
    ``n_rows`` times the cumulative fraction, computed exactly from the decimal form
    of each float so rounding error cannot move a row. Integers must sum to ``n_rows``.

    Raises
    ------
    InvalidArgumentError
        If the spec is not three non-negative numbers of one kind, or does not add up.
    """
    values = _check_spec(phase)
    if all(isinstance(v, int) for v in values):
        return _int_counts(values, n_rows)  # type: ignore[arg-type]
    return _fraction_counts(values, n_rows)


def _check_spec(phase: Sequence[object]) -> list[object]:
    values = [_as_number(v) for v in phase]
    ok = len(values) == 3 and all(v is not None and v >= 0 for v in values)
    if not ok:
        raise InvalidArgumentError(
            "phase must be a phase name or a tuple/list of three non-negative fractions "
            f"(summing to 1) or three ints (summing to the number of rows). Got {phase!r} instead."
        )
    return [v for v in values if v is not None]


def _as_number(value: object) -> int | float | None:
    """An int or float (numpy scalars too: counts are often computed with numpy); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def _int_counts(values: list[int], n_rows: int) -> tuple[int, int, int]:
    if sum(values) != n_rows:
        raise InvalidArgumentError(
            f"phase counts must sum to the number of rows ({n_rows}). "
            f"Got {tuple(values)!r} (sum {sum(values)}) instead."
        )
    return values[0], values[1], values[2]


def _fraction_counts(values: list[object], n_rows: int) -> tuple[int, int, int]:
    total = math.fsum(float(v) for v in values)  # type: ignore[arg-type]
    if abs(total - 1.0) > _FRACTION_TOLERANCE:
        raise InvalidArgumentError(f"phase fractions must sum to 1. Got {tuple(values)!r} (sum {total!r}) instead.")
    exact = [Fraction(repr(float(v))) for v in values]  # type: ignore[arg-type]
    train_end = _split_point(n_rows, exact[0])
    valid_end = min(n_rows, _split_point(n_rows, exact[0] + exact[1]))
    return train_end, valid_end - train_end, n_rows - valid_end


def _split_point(n_rows: int, cumulative: Fraction) -> int:
    """Floor of ``n_rows * cumulative``, but a product within rounding error of an integer is it.

    The decimal form fixes ``0.7 + 0.2``; the snap fixes fractions with no short decimal
    form (``1/3`` is stored as ``0.3333333333333333``, and 3 rows must still split 1 / 1 / 1).
    """
    product = n_rows * cumulative
    nearest = round(product)
    if abs(product - nearest) <= _FRACTION_TOLERANCE + n_rows * 1e-12:
        return int(nearest)
    return math.floor(product)
