"""Stratified and k-fold splits (storegate.splits): property tests, errors, and every backend."""

from __future__ import annotations

import pickle
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from storegate import InvalidArgumentError, KFold, StoreGate, StratifiedSplit
from storegate.phases import PHASES, split_counts
from storegate.splits import phase_rows, stratified_counts
from storegate.testing import BACKEND_KINDS, make_gate

SETTINGS = settings(max_examples=60, deadline=None)

fractions_st = st.sampled_from(
    [(0.8, 0.1, 0.1), (0.7, 0.2, 0.1), (0.5, 0.5, 0.0), (1 / 3, 1 / 3, 1 / 3), (0.6, 0, 0.4)]
)
# Labels of 1 to 6 classes, each with at least 3 rows (one per phase).
labels_st = st.lists(st.integers(3, 40), min_size=1, max_size=6).flatmap(
    lambda sizes: st.permutations(np.repeat(np.arange(len(sizes)), sizes).tolist()).map(np.array)
)


def _as_rows(part: Any, n: int) -> np.ndarray:
    return np.arange(n)[part]


@SETTINGS
@given(st.lists(st.integers(0, 60), min_size=1, max_size=8), fractions_st)
def test_stratified_counts_round_every_share_and_keep_both_sums(
    class_sizes: list[int], fractions: tuple[float, float, float]
) -> None:
    sizes = np.array(class_sizes)
    total = int(sizes.sum())
    phase_sizes = np.array(split_counts(fractions, total))
    counts = stratified_counts(sizes, phase_sizes)
    np.testing.assert_array_equal(counts.sum(axis=1), sizes)
    np.testing.assert_array_equal(counts.sum(axis=0), phase_sizes)
    for c, p in np.ndindex(counts.shape):
        share = Fraction(int(sizes[c]) * int(phase_sizes[p]), max(total, 1))
        assert abs(counts[c, p] - share) < 1


@SETTINGS
@given(labels_st, fractions_st, st.integers(0, 2**32 - 1))
def test_stratified_split_keeps_class_proportions_within_one_row(
    labels: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> None:
    n = labels.shape[0]
    spec = StratifiedSplit(fractions, by=labels, seed=seed)
    parts = [_as_rows(p, n) for p in phase_rows(spec, n)]
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))  # a partition of the rows
    assert tuple(len(p) for p in parts) == split_counts(fractions, n)  # the plain split's phase sizes
    for rows in parts:
        assert np.all(np.diff(rows) > 0)  # original order within a phase
        for c in np.unique(labels):
            share = Fraction(int((labels == c).sum()) * len(rows), n)
            assert abs(int((labels[rows] == c).sum()) - share) < 1
    again = [_as_rows(p, n) for p in phase_rows(StratifiedSplit(fractions, by=labels.tolist(), seed=seed), n)]
    for a, b in zip(parts, again, strict=True):
        np.testing.assert_array_equal(a, b)  # reproducible, from a list as from an array


@SETTINGS
@given(st.integers(2, 12), st.integers(0, 200), st.integers(0, 2**32 - 1))
def test_kfold_folds_partition_the_rows(k: int, extra: int, seed: int) -> None:
    n = k + extra
    valids, sizes = [], []
    for fold in range(k):
        train, valid, test = (_as_rows(p, n) for p in phase_rows(KFold(k, fold, seed=seed), n))
        assert test.size == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([train, valid])), np.arange(n))
        assert np.all(np.diff(valid) > 0)
        assert np.all(np.diff(train) > 0)
        valids.append(valid)
        sizes.append(valid.size)
    np.testing.assert_array_equal(np.sort(np.concatenate(valids)), np.arange(n))  # each row valid exactly once
    assert max(sizes) - min(sizes) <= 1


def test_seeds_choose_different_rows() -> None:
    labels = np.repeat([0, 1], 50)
    a, b = (phase_rows(StratifiedSplit((0.8, 0.1, 0.1), by=labels, seed=s), 100)[1] for s in (0, 1))
    assert not np.array_equal(a, b)
    a, b = (phase_rows(KFold(4, 0, seed=s), 100)[1] for s in (0, 1))
    assert not np.array_equal(a, b)


def test_splits_pickle_small() -> None:
    for spec in (KFold(5, 2, seed=7), StratifiedSplit((0.8, 0.1, 0.1), by="y", seed=3)):
        back = pickle.loads(pickle.dumps(spec))
        assert repr(back) == repr(spec)
        assert len(pickle.dumps(spec)) < 1024


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: KFold(1), ["k must be an int >= 2", "Got 1", "phase=(0.8, 0.2, 0.0)"]),
        (lambda: KFold(2.0), ["k must be an int >= 2", "Got 2.0"]),  # type: ignore[arg-type]
        (lambda: KFold(5, 5), ["fold must be an int in [0, 4]", "Got 5", "range(5)"]),
        (lambda: KFold(5, -1), ["fold must be an int in [0, 4]", "Got -1"]),
        (lambda: KFold(5, 0, seed=-1), ["seed must be", "Got -1"]),
        (lambda: StratifiedSplit((0.5, 0.5), by=[0, 1]), ["fractions must be three", "Got (0.5, 0.5)"]),
        (lambda: StratifiedSplit("train", by=[0, 1]), ["fractions must be three", "Got 'train'"]),
        (lambda: StratifiedSplit((0.8, 0.1, 0.1), by=np.zeros((4, 2))), ["by must be labels of shape (N,)", "(4, 2)"]),
        (lambda: StratifiedSplit((0.8, 0.1, 0.1), by=[0, 1], seed="a"), ["seed must be", "'a'"]),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_raise_naming_the_argument(make: Any, words: list[str]) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        make()
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("spec", "n", "words"),
    [
        (KFold(5), 3, ["KFold(k=5) needs at least one row per fold", "Got 3 rows", "lower k"]),
        (StratifiedSplit((0.8, 0.1, 0.1), by=[0] * 9), 10, ["one label per row: 10 rows", "Got 9 labels"]),
        (StratifiedSplit((0.8, 0.1, 0.1), by=[0] * 8 + [1] * 2), 10, ["at least one row per phase", "class 1"]),
        (StratifiedSplit((0.8, 0.1, 0.1), by="y"), 10, ["by must name a variable given in the same call", "'y'"]),
        (StratifiedSplit((7, 2, 2), by=[0] * 10), 10, ["phase counts must sum to the number of rows (10)"]),
        (StratifiedSplit((0.5, 0.4, 0.4), by=[0] * 10), 10, ["phase fractions must sum to 1", "(0.5, 0.4, 0.4)"]),
    ],
)
def test_bad_splits_raise_when_they_split(spec: Any, n: int, words: list[str]) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        phase_rows(spec, n)
    for word in words:
        assert word in str(info.value)


def test_a_phase_with_no_rows_needs_no_row_of_a_class() -> None:
    labels = np.array([0, 0, 0, 1, 1])  # two rows of class 1, two phases get rows
    _, valid, test = phase_rows(StratifiedSplit((0.6, 0.4, 0.0), by=labels), 5)
    assert len(test) == 0
    assert set(labels[valid].tolist()) == {0, 1}


# --- every backend -------------------------------------------------------------------------


@pytest.fixture(params=BACKEND_KINDS)
def sg(request: pytest.FixtureRequest, tmp_path: Path) -> StoreGate:
    return make_gate(request.param, tmp_path)


def _expected(data: np.ndarray, spec: Any, named: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    parts = phase_rows(spec, data.shape[0], named)
    return {p: data[part] for p, part in zip(PHASES, parts, strict=True)}


def _stored(sg: StoreGate, var: str) -> dict[str, np.ndarray]:
    return {p: sg.get_data(var, p) if var in sg[p] else np.zeros(0, dtype=np.int64) for p in PHASES}


def test_stratified_add_data_on_every_backend(sg: StoreGate) -> None:
    x = np.arange(60, dtype=np.int64) * 10
    y = np.repeat([0, 1, 2], [30, 20, 10])
    spec = StratifiedSplit((0.6, 0.2, 0.2), by="y", seed=5)
    sg.add_data(["x", "y"], [x, y], phase=spec)
    expected = _expected(x, spec, {"x": x, "y": y})
    for phase in PHASES:
        np.testing.assert_array_equal(sg.get_data("x", phase), expected[phase])
    # Exact shares here: 36 / 12 / 12 rows, each with the classes' 3 : 2 : 1.
    assert [np.bincount(sg.get_data("y", p)).tolist() for p in PHASES] == [[18, 12, 6], [6, 4, 2], [6, 4, 2]]
    # Another variable of the same rows, in another call with the labels as a tensor, lines up.
    sg.add_data("z", x + 1, phase=StratifiedSplit((0.6, 0.2, 0.2), by=torch.from_numpy(y), seed=5))
    for phase in PHASES:
        np.testing.assert_array_equal(sg.get_data("z", phase), sg.get_data("x", phase) + 1)


def test_stratified_add_data_with_shuffle(sg: StoreGate) -> None:
    x = np.arange(40, dtype=np.int64)
    y = (x % 4 == 0).astype(np.int64)  # 10 of class 1, in the order of x
    sg.add_data(["x", "y"], [x, y], phase=StratifiedSplit((0.5, 0.3, 0.2), by="y", seed=1), shuffle=3)
    sg.add_data("x2", x, phase=StratifiedSplit((0.5, 0.3, 0.2), by=y, seed=1), shuffle=3)  # labels follow their rows
    for phase in PHASES:
        np.testing.assert_array_equal(sg.get_data("x2", phase), sg.get_data("x", phase))
        np.testing.assert_array_equal(sg.get_data("y", phase), (sg.get_data("x", phase) % 4 == 0))
    assert [int(sg.get_data("y", p).sum()) for p in PHASES] == [5, 3, 2]


def test_kfold_on_every_backend(sg: StoreGate) -> None:
    x = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
    seen = []
    for fold in range(4):
        sg.set_data_id(f"fold{fold}")
        sg.add_data("x", x, phase=KFold(4, fold, seed=9))
        stored = _stored(sg, "x")
        expected = _expected(x, KFold(4, fold, seed=9))
        np.testing.assert_array_equal(stored["train"], expected["train"])
        np.testing.assert_array_equal(stored["valid"], expected["valid"])
        assert "x" not in sg["test"]
        seen.append(stored["valid"][:, 0])
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), x[:, 0])


def test_update_and_create_empty_take_the_new_splits(sg: StoreGate) -> None:
    x = np.arange(12, dtype=np.int64)
    sg.update_data("x", x, phase=KFold(3, 2, seed=0))
    np.testing.assert_array_equal(sg.get_data("x", "valid"), _expected(x, KFold(3, 2, seed=0))["valid"])
    sg.set_data_id("empty")
    sg.create_empty("e", (12, 2), phase=StratifiedSplit((0.5, 0.5, 0.0), by=x % 2), dtype="f4")
    assert [sg.get_var_shapes("e", p) for p in ("train", "valid")] == [(2,), (2,)]
    assert (len(sg["train"]), len(sg["valid"])) == (6, 6)
    with pytest.raises(InvalidArgumentError, match="one label per row"):
        sg.add_data("w", np.arange(5), phase=StratifiedSplit((0.5, 0.5, 0.0), by=x % 2))
    assert "w" not in sg["train"]  # nothing written
