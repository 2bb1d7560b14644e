"""The engine of one data_id (storegate.engine): reads across phases, lengths, plans, compile state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from storegate.backends import Backend, create_backend
from storegate.engine import ACTIVE, GroupEngine, validate
from storegate.errors import InvalidArgumentError, NotFoundError, ValidationError
from storegate.names import parse_var_names
from storegate.phases import Split


@pytest.fixture(params=["numpy", "zarr"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    args = {"output_dir": str(tmp_path / "e.zarr"), "chunk": 3} if request.param == "zarr" else None
    made = create_backend(request.param, args)
    made.create_data_id("d")
    return made


@pytest.fixture
def engine(backend: Backend) -> GroupEngine:
    engine = GroupEngine(backend, "d")
    x = parse_var_names(["x", "y"])
    arrays = [np.arange(20).reshape(10, 2), np.arange(10, dtype="f4")]
    engine.run(engine.plan_add(x, arrays, Split((0.7, 0.2, 0.1)), {}))
    return engine


def test_layout_across_phases(engine: GroupEngine) -> None:
    layout = engine.layout("x")
    assert layout.sizes == [7, 2, 1]
    assert layout.row_shape == (2,)
    assert [p for p, _ in layout.parts] == ["train", "valid", "test"]
    assert engine.shape("all", "x") == (10, 2)
    with pytest.raises(NotFoundError, match="var_name 'nope' does not exist in any phase"):
        engine.layout("nope")


def test_phase_length_checks_every_variable(engine: GroupEngine) -> None:
    assert engine.phase_length("all") == 10
    engine.run(engine.plan_add(parse_var_names("y"), [np.zeros(1, "f4")], "valid", {}))
    with pytest.raises(ValidationError, match="every variable of phase 'valid' in data_id 'd' must have the same"):
        engine.phase_length("valid")


def test_read_of_all_concatenates_in_phase_order(engine: GroupEngine) -> None:
    np.testing.assert_array_equal(engine.read("all", "x", [9, 0, 7]), [[18, 19], [0, 1], [14, 15]])
    assert engine.get(parse_var_names("y"), "all", -1) == np.float32(9)


def test_split_by_current_lengths_for_all(engine: GroupEngine) -> None:
    pieces = engine.split([np.arange(10)], "all")
    assert {p: len(a[0]) for p, a in pieces.items()} == {"train": 7, "valid": 2, "test": 1}
    with pytest.raises(InvalidArgumentError, match="shares rows out as the phases hold them"):
        engine.split([np.arange(9)], "all")


def test_a_plan_is_checked_before_anything_is_written(engine: GroupEngine) -> None:
    before = engine.fingerprint()
    plan = engine.plan_add(parse_var_names("x"), [np.zeros((2, 2), "i8")], "train", {})
    assert plan.layouts == {("train", "x"): [9, np.dtype("i8").str, [2]]}
    with pytest.raises(ValidationError, match="same number of rows"):
        engine.run(plan, compile=True)  # y would keep 7 rows in train
    assert engine.fingerprint() == before
    with pytest.raises(InvalidArgumentError, match="row shape"):
        engine.plan_add(parse_var_names("x"), [np.zeros((2, 3), "i8")], "train", {})


def test_an_empty_plan_changes_nothing_not_even_the_state(engine: GroupEngine) -> None:
    engine.compile()
    engine.run(engine.plan_delete(parse_var_names("absent"), "all"))
    assert engine.metadata()["compiled"]
    engine.run(engine.plan_delete(parse_var_names("y"), "test"))
    assert not engine.metadata()["compiled"]


def test_compile_in_the_same_transaction_as_the_write(engine: GroupEngine) -> None:
    plan = engine.plan_add(parse_var_names(["x", "y"]), [np.zeros((2, 2), "i8"), np.zeros(2, "f4")], "test", {})
    engine.run(plan, compile=True)
    meta = engine.metadata()
    assert meta["compiled"]
    assert meta["sizes"] == {"train": 7, "valid": 2, "test": 3, "all": 12}


def test_compile_reset_writes_active(engine: GroupEngine) -> None:
    engine.compile(reset=True)
    np.testing.assert_array_equal(engine.read("train", ACTIVE, None), np.ones(7, bool))
    assert engine.metadata()["compiled"]


def test_validate_names_the_variable_with_two_layouts() -> None:
    fingerprint = {"train": {"x": [2, "<f4", [3]]}, "valid": {"x": [1, "<f8", [3]]}, "test": {}}
    with pytest.raises(ValidationError, match="var_name 'x' must have one dtype and row shape across phases"):
        validate(fingerprint)
