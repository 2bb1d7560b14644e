"""Whole-variable transforms and shuffle (storegate.transforms): every result is computed,
and every argument checked, before anything is written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from storegate import InvalidArgumentError, NotFoundError, StoreGate, ValidationError
from storegate.testing import BACKEND_KINDS, assert_same_snapshot, make_gate, snapshot


@pytest.fixture(params=BACKEND_KINDS)
def sg(request: pytest.FixtureRequest, tmp_path: Path) -> StoreGate:
    return make_gate(request.param, tmp_path)


def test_onehot_with_a_bad_label_in_test_leaves_train_unchanged(sg: StoreGate) -> None:
    sg.add_data("y", np.array([0, 1, 2, 1, 0, 5]), phase=(3, 2, 1))
    before = snapshot(sg)
    with pytest.raises(InvalidArgumentError, match=r"\[0, 3\)"):
        sg.onehot("y", 3, phase="all")
    assert_same_snapshot(before, snapshot(sg))


def test_argmax_with_a_bad_axis_for_one_variable_changes_nothing(sg: StoreGate) -> None:
    sg.add_data(["p", "q"], [np.zeros((4, 3)), np.zeros((4, 3, 2))])
    before = snapshot(sg)
    with pytest.raises(InvalidArgumentError, match="axis"):
        sg.argmax(["q", "p"], axis=2)
    assert_same_snapshot(before, snapshot(sg))


def test_shuffle_checks_every_phase_before_writing(sg: StoreGate) -> None:
    sg.add_data(["x", "y"], [np.arange(10), np.arange(10)], phase=(6, 2, 2))
    sg.add_data("y", [99], phase="test")  # test phase now disagrees: x 2 rows, y 3
    before = snapshot(sg)
    with pytest.raises(ValidationError, match="'test'"):
        sg.shuffle("all", seed=1)
    assert_same_snapshot(before, snapshot(sg))


@pytest.mark.parametrize(
    "call",
    [
        lambda sg: sg.onehot(["a", "b", "c"], 0, phase="all"),
        lambda sg: sg.onehot(["a", "b", "c"], 2.5),
        lambda sg: sg.astype(["a", "b", "c"], "no-such-dtype", phase="all"),
        lambda sg: sg.shuffle("all", seed=-1),
        lambda sg: sg.shuffle("everything"),
        lambda sg: sg.argmax(["a", "b"], axis="1"),
    ],
    ids=["onehot-classes", "onehot-float", "astype-dtype", "shuffle-seed", "shuffle-phase", "argmax-axis"],
)
def test_bad_arguments_are_rejected_before_any_data_is_read(
    sg: StoreGate, monkeypatch: pytest.MonkeyPatch, call: Callable[[StoreGate], None]
) -> None:
    sg.add_data(["a", "b", "c"], [np.zeros((4, 2), "i8")] * 3, phase=(2, 1, 1))
    before = snapshot(sg)
    reads: list[Any] = []
    original = sg.backend_object.read
    monkeypatch.setattr(sg.backend_object, "read", lambda *args: reads.append(args) or original(*args))
    with pytest.raises(InvalidArgumentError):
        call(sg)
    assert len(reads) <= 1  # argmax can judge an axis only against the data's shape
    monkeypatch.undo()
    assert_same_snapshot(before, snapshot(sg))


def test_missing_variable_in_a_transform_changes_nothing(sg: StoreGate) -> None:
    sg.add_data("a", np.array([0, 1]))
    before = snapshot(sg)
    with pytest.raises(NotFoundError, match="'nope'"):
        sg.onehot(["a", "nope"], 2)
    assert_same_snapshot(before, snapshot(sg))
