"""Unit tests of storegate.phases: phase names and split specs -> per-phase row counts."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from storegate.errors import InvalidArgumentError
from storegate.phases import ALL, PHASES, is_split, resolve_phase, split_counts


@pytest.mark.parametrize("phase", ["train", "valid", "test", "all"])
def test_resolve_phase_names(phase: str) -> None:
    assert resolve_phase(phase) == phase


def test_resolve_phase_none_is_all() -> None:
    assert resolve_phase(None) == ALL
    assert PHASES == ("train", "valid", "test")


@pytest.mark.parametrize("phase", ["Train", "training", "", 0, ("train",), None, "all"])
def test_resolve_phase_rejects_without_all(phase: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"phase must be one of 'train', 'valid', 'test'\. Got") as info:
        resolve_phase(phase, allow_all=False)
    assert repr(phase) in str(info.value)


@pytest.mark.parametrize("phase", ["Train", "x", 1.5, ["train"]])
def test_resolve_phase_rejects_unknown(phase: object) -> None:
    with pytest.raises(InvalidArgumentError, match="'all'") as info:
        resolve_phase(phase)
    assert f"Got {phase!r} instead" in str(info.value)


@pytest.mark.parametrize(
    ("phase", "expected"), [((1, 2, 3), True), ([0.5, 0.5, 0], True), ("train", False), (None, False)]
)
def test_is_split(phase: object, expected: bool) -> None:
    assert is_split(phase) is expected


@pytest.mark.parametrize(
    ("spec", "n", "counts"),
    [
        ((0.7, 0.2, 0.1), 10, (7, 2, 1)),  # 0.7 + 0.2 == 0.8999999999999999 in floating point
        ((0.1, 0.7, 0.2), 10, (1, 7, 2)),  # 0.1 + 0.7 == 0.7999999999999999
        ((0.6, 0.3, 0.1), 10, (6, 3, 1)),
        ((0.7, 0.2, 0.1), 100, (70, 20, 10)),
        ((0.8, 0.1, 0.1), 1797, (1437, 180, 180)),
        ((1 / 3, 1 / 3, 1 / 3), 3, (1, 1, 1)),  # 1/3 is stored as 0.3333333333333333
        ((1 / 3, 1 / 3, 1 / 3), 9, (3, 3, 3)),
        ((2 / 3, 1 / 6, 1 / 6), 6, (4, 1, 1)),
        ((0.5, 0.25, 0.25), 7, (3, 2, 2)),
        ((0.5, 0.5, 0.0), 5, (2, 3, 0)),
        ((1.0, 0.0, 0.0), 4, (4, 0, 0)),
        ((0, 0.0, 1.0), 4, (0, 0, 4)),  # any float makes the spec fractions
    ],
)
def test_fraction_counts(spec: tuple[float, float, float], n: int, counts: tuple[int, int, int]) -> None:
    assert split_counts(spec, n) == counts
    assert split_counts(list(spec), n) == counts


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 10, 99, 1000, 12345])
@pytest.mark.parametrize(
    "spec", [(0.7, 0.2, 0.1), (0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.9, 0.05, 0.05), (0.5, 0.3, 0.2)]
)
def test_fraction_counts_follow_the_decimal_fractions(spec: tuple[float, float, float], n: int) -> None:
    """Split points are floor(n * cumulative fraction) of the fractions as written in decimal."""
    exact = [Fraction(str(f)) for f in spec]
    train_end = int(n * exact[0])
    valid_end = int(n * (exact[0] + exact[1]))
    assert split_counts(spec, n) == (train_end, valid_end - train_end, n - valid_end)


def test_fractions_sum_within_tolerance() -> None:
    assert 0.7 + 0.2 + 0.1 != 1.0  # the reason for the tolerance
    assert split_counts((0.7, 0.2, 0.1), 10) == (7, 2, 1)
    assert split_counts((0.7, 0.2, 0.1 + 1e-12), 10) == (7, 2, 1)


def test_int_counts() -> None:
    assert split_counts((5, 3, 2), 10) == (5, 3, 2)
    assert split_counts([0, 0, 4], 4) == (0, 0, 4)
    assert split_counts((np.int64(1), np.int32(2), 3), 6) == (1, 2, 3)
    assert split_counts((np.float64(0.5), 0.5, 0), 4) == (2, 2, 0)


@pytest.mark.parametrize(
    "spec",
    [
        (0.5, 0.3, 0.1),  # sums to 0.9
        (0.5, 0.5, 0.5),
        [0.5, 0.5],  # a list is validated like a tuple
        (0.5, 0.5),
        (0.25, 0.25, 0.25, 0.25),
        [-0.1, 0.6, 0.5],
        ("0.5", 0.25, 0.25),
        (True, False, False),
        [None, 1, 0],
        (float("nan"), 0.5, 0.5),
        (5, 3, 1),  # ints must sum to the number of rows (10)
        [5, 3, 3],
    ],
)
def test_bad_specs_raise(spec: object) -> None:
    with pytest.raises(InvalidArgumentError, match="phase") as info:
        split_counts(spec, 10)  # type: ignore[arg-type]
    message = str(info.value)
    assert "Got" in message
    assert str(tuple(spec)) in message or repr(spec) in message  # type: ignore[arg-type]


def test_bad_spec_messages_say_what_is_expected() -> None:
    with pytest.raises(InvalidArgumentError, match="sum to 1") as info:
        split_counts((0.5, 0.3, 0.1), 10)
    assert "0.9" in str(info.value)
    with pytest.raises(InvalidArgumentError, match=r"sum to the number of rows \(10\)") as info:
        split_counts((5, 3, 1), 10)
    assert "sum 9" in str(info.value)
    with pytest.raises(InvalidArgumentError, match="three"):
        split_counts([0.5, 0.5], 10)


@given(st.lists(st.integers(0, 50), min_size=3, max_size=3).filter(lambda w: sum(w) > 0), st.integers(0, 500))
def test_a_phase_weighted_zero_gets_no_row_in_any_precision(weights: list[int], n_rows: int) -> None:
    # Weights normalised in float32 sum to 1 only within rounding: the shares are taken of
    # their own sum, so a phase given 0 gets no row and the counts add up to n_rows.
    for dtype in (np.float32, np.float64):
        shares = np.array(weights, dtype) / np.array(weights, dtype).sum()
        counts = split_counts(tuple(shares), n_rows)
        assert sum(counts) == n_rows
        assert all(c == 0 for c, w in zip(counts, weights, strict=True) if w == 0)
