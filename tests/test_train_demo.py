"""The demo's training step (examples/train.py) on the digits store that examples/demo.py writes."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.timeout(300)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def modules() -> tuple[ModuleType, ModuleType]:
    sys.path.insert(0, str(EXAMPLES))  # demo.py imports train.py the same way
    try:
        return importlib.import_module("demo"), importlib.import_module("train")
    finally:
        sys.path.remove(str(EXAMPLES))


@pytest.fixture(scope="module")
def store(modules: tuple[ModuleType, ModuleType], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("train") / "digits.zarr"
    modules[0].build_store(path)
    return path


def test_training_reaches_90_percent_test_accuracy(
    modules: tuple[ModuleType, ModuleType], store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = modules[1]
    result = train.train(store, progress=False)
    assert result.test_accuracy >= 0.9
    assert len(result.losses) == 10
    assert result.losses[-1] < result.losses[0] / 5
    out = capsys.readouterr().out
    assert out.count("loss ") == 10
    assert f"test accuracy {result.test_accuracy:.3f}" in out


def test_training_is_reproducible(modules: tuple[ModuleType, ModuleType], store: Path) -> None:
    train = modules[1]
    first = train.train(store, epochs=2, seed=3, progress=False)
    second = train.train(store, epochs=2, seed=3, progress=False)
    other = train.train(store, epochs=2, seed=4, progress=False)
    assert first == second
    assert other.losses != first.losses


def test_the_demo_fails_below_the_accuracy_goal(
    modules: tuple[ModuleType, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo, train = modules

    def poor(store: Path, data_id: str) -> object:
        return train.TrainResult([2.0], [0.5], test_accuracy=0.5)

    monkeypatch.setattr(train, "train", poor)
    assert demo.main(["--output-dir", str(tmp_path / "d.zarr")]) == 1
