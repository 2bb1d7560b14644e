"""Phase names and phase specifications (fractions or counts) -> per-phase row counts,
and the seeded row order used to shuffle rows before they are split."""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Union

import numpy as np

from storegate.errors import InvalidArgumentError
from storegate.rules import is_tensor

__all__ = [
    "ALL",
    "AUTO",
    "DEFAULT_SHUFFLE_SEED",
    "PHASES",
    "PHASE_WORDS",
    "Split",
    "closest_phase",
    "is_split",
    "parse_phase",
    "permutation",
    "phases_of",
    "resolve_phase",
    "split_counts",
]

PHASES: tuple[str, str, str] = ("train", "valid", "test")
ALL = "all"
#: multiml's alias of ``'all'`` (its task code passes it to update_data).
AUTO = "auto"
#: Words that name phases in a call or in the item syntax; no variable may take them.
PHASE_WORDS = frozenset((*PHASES, ALL, AUTO))
_FRACTION_TOLERANCE = 1e-9
#: Seed used by ``add_data(shuffle=True)``, so separate calls stay aligned: multiml seeds
#: numpy with ``int(shuffle)``, so ``True`` is seed 1.
DEFAULT_SHUFFLE_SEED = 1


@dataclass(frozen=True)
class Split:
    """A checked split spec: three fractions (sum 1) or three counts for train / valid / test."""

    values: tuple[object, object, object]

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
        _check_spec(phase)  # first: its message shows the spec as the caller wrote it
        values = phase.tolist() if isinstance(phase, np.ndarray) or is_tensor(phase) else list(phase)  # type: ignore[attr-defined, call-overload]
        return Split((values[0], values[1], values[2]))
    return resolve_phase(phase)


def phases_of(phase: str) -> tuple[str, ...]:
    """The stored phases a phase name stands for: all three for ``'all'``."""
    return PHASES if phase == ALL else (phase,)


def permutation(n_rows: int, seed: int) -> np.ndarray:
    """The row order that a seed gives, as multiml's shuffles give it.

    multiml seeds numpy's global legacy generator and calls ``np.random.shuffle``; that
    moves rows as ``RandomState(seed).permutation(n_rows)`` orders them, which this uses
    without touching numpy's global random state.
    """
    return np.random.RandomState(seed).permutation(n_rows)


def resolve_phase(phase: object, *, allow_all: bool = True) -> str:
    """Return ``phase`` as one of ``train``, ``valid``, ``test`` (or ``all``).

    ``None`` and multiml's ``'auto'`` are aliases of ``'all'``.

    Raises
    ------
    InvalidArgumentError
        If ``phase`` is not a known phase name (the message names the closest one).
    """
    if allow_all and (phase is None or phase == AUTO):
        return ALL
    choices = (*PHASES, ALL) if allow_all else PHASES
    if isinstance(phase, str) and phase in choices:
        return phase
    raise InvalidArgumentError(
        f"phase must be one of {', '.join(map(repr, choices))}. Got {phase!r} instead.{closest_phase(phase, choices)}"
    )


def closest_phase(word: object, choices: Sequence[str] = (*PHASES, ALL)) -> str:
    """`` Did you mean 'valid'?`` for a near miss of one of ``choices``, else an empty string."""
    if not isinstance(word, str):
        return ""
    match = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return f" Did you mean {match[0]!r}?" if match else ""


def is_split(phase: object) -> bool:
    """True when ``phase`` is a sequence of fractions or counts: a tuple, list, array or tensor
    (checked to be three numbers by :func:`split_counts`)."""
    return isinstance(phase, (tuple, list, np.ndarray)) or is_tensor(phase)


def split_counts(phase: Sequence[object], n_rows: int) -> tuple[int, int, int]:
    """Rows that go to train, valid and test for a split spec of ``n_rows`` rows.

    Fractions must sum to 1 within the rounding of their precision; split points are the
    floor of ``n_rows`` times the cumulative fraction, computed exactly from the shortest
    decimal form of each value in its own precision (float32 ``0.7`` is 0.7, not
    0.699999988...) so that rounding error cannot move a row. Integers must sum to ``n_rows``.

    Raises
    ------
    InvalidArgumentError
        If the spec is not three non-negative numbers of one kind, or does not add up.
    """
    values = _check_spec(phase)
    exact = [Fraction(v) for v, _ in values]
    counts = all(isinstance(v, int) for v, _ in values) or (
        all(f.denominator == 1 for f in exact) and sum(exact) != 1  # (7, 2, 1.0): counts, as multiml read them
    )
    if counts:
        return _int_counts([int(f) for f in exact], n_rows)
    return _fraction_counts(values, n_rows, phase)


#: A value of a split spec, exact, and the rounding its precision allows (0 for ints).
_Exact = tuple[Union[int, Fraction], float]


def _check_spec(phase: object) -> list[_Exact]:
    if isinstance(phase, np.ndarray) or is_tensor(phase):
        items = phase.tolist() if getattr(phase, "ndim", 0) == 1 else []  # type: ignore[attr-defined]
    else:
        items = list(phase)  # type: ignore[call-overload]
    values = [_as_number(v) for v in items]
    ok = len(values) == 3 and all(v is not None and v[0] >= 0 for v in values)
    if not ok:
        raise InvalidArgumentError(
            "phase must be a phase name or a tuple/list of three non-negative fractions "
            f"(summing to 1) or three ints (summing to the number of rows). Got {phase!r} instead."
        )
    return [v for v in values if v is not None]


def _as_number(value: object) -> _Exact | None:
    """An int, or a float as the exact shortest decimal of its own precision; None otherwise.

    numpy scalars count (counts and fractions are often computed with numpy). A Python float
    that a float32 holds exactly (``torch.tensor([.8, .1, .1]).tolist()``) is read as that
    float32: ``0.800000011920929`` is 0.8.
    """
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):
        return int(value), 0.0
    if isinstance(value, np.floating) and np.isfinite(value):
        return _shortest(value), float(np.finfo(value.dtype).eps)
    if isinstance(value, numbers.Real) and math.isfinite(float(value)):
        single = np.float32(float(value))
        if float(single) == float(value):
            return _shortest(single), float(np.finfo(np.float32).eps)
        return Fraction(repr(float(value))), float(np.finfo(np.float64).eps)
    return None


def _shortest(value: np.floating[Any]) -> Fraction:
    """The value as the shortest decimal that reads back as it in its own precision."""
    return Fraction(np.format_float_positional(value, unique=True, trim="0"))


def _int_counts(values: list[int], n_rows: int) -> tuple[int, int, int]:
    if sum(values) != n_rows:
        raise InvalidArgumentError(
            f"phase counts must sum to the number of rows ({n_rows}). "
            f"Got {tuple(values)!r} (sum {sum(values)}) instead."
        )
    return values[0], values[1], values[2]


def _fraction_counts(values: list[_Exact], n_rows: int, given: object) -> tuple[int, int, int]:
    exact = [Fraction(v) for v, _ in values]
    # Each value may be off by the rounding of its precision (float32 thirds sum to 1.00000002).
    tolerance = max(_FRACTION_TOLERANCE, 2 * sum(eps for _, eps in values))
    total = sum(exact, Fraction(0))
    if abs(float(total - 1)) > tolerance:
        shown = tuple(given.tolist() if is_tensor(given) else given)  # type: ignore[attr-defined, arg-type]
        raise InvalidArgumentError(f"phase fractions must sum to 1. Got {shown!r} (sum {float(total)!r}) instead.")
    # Shares of their own sum: within rounding of 1, yet a phase given 0 gets no row and the
    # phases given everything get every row (float32 (1/6, 5/6, 0) sums to 0.99999997).
    train_end = _split_point(n_rows, exact[0] / total)
    valid_end = min(n_rows, _split_point(n_rows, (exact[0] + exact[1]) / total))
    return train_end, valid_end - train_end, n_rows - valid_end


def _split_point(n_rows: int, cumulative: Fraction) -> int:
    """Floor of ``n_rows * cumulative``, but a product within rounding error of an integer is it.

    The decimal form fixes ``0.7 + 0.2`` (and float32 ``0.7``); the snap fixes fractions
    with no short decimal form (``1/3`` is stored as ``0.3333333333333333``, and 3 rows must
    still split 1 / 1 / 1). The snap is float64's rounding only: a float32 fraction is read
    as its exact decimal, so 0.8 of 1,000,001 rows is 800,000 whatever its precision.
    """
    product = n_rows * cumulative
    nearest = round(product)
    if abs(product - nearest) <= _FRACTION_TOLERANCE + n_rows * 1e-12:
        return int(nearest)
    return math.floor(product)
