"""The `make demo` script, run in-process on a temporary directory."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import zarr
from sklearn.datasets import load_digits

from storegate import StoreGate

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "demo.py"


def _load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("storegate_demo", DEMO)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    return _load_demo()


def _expected_counts(n: int) -> tuple[int, int, int]:
    # floor(N * 0.8) and floor(N * 0.9) in integer arithmetic; test takes the rest.
    train_end, valid_end = n * 8 // 10, n * 9 // 10
    return train_end, valid_end - train_end, n - valid_end


def test_main_writes_the_digits_and_reports_the_round_trip(
    demo: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "digits.zarr"
    assert demo.main(["--output-dir", str(out_dir)]) == 0
    out = capsys.readouterr().out

    digits = load_digits()
    counts = _expected_counts(len(digits.target))
    assert counts == (1437, 180, 180)
    assert "Round trip OK" in out
    assert f"The store lives at {out_dir}" in out
    table = [line.split() for line in out.splitlines() if line.startswith(("train ", "valid ", "test "))]
    rows = {(cells[0], cells[2]): cells for cells in table}
    for phase, n in zip(("train", "valid", "test"), counts, strict=True):
        assert rows[(phase, "images")][3:7] == ["float32", "(8,", "8)", str(n)]
        assert rows[(phase, "labels")][3:6] == ["int64", "()", str(n)]


def test_store_on_disk_holds_the_source_split_in_order(demo: ModuleType, tmp_path: Path) -> None:
    out_dir = tmp_path / "digits.zarr"
    assert demo.main(["--output-dir", str(out_dir)]) == 0
    # Read with zarr-python itself, not through storegate.
    root = zarr.open_group(str(out_dir), mode="r")
    digits = load_digits()
    train, valid, _ = _expected_counts(len(digits.target))
    bounds = {"train": slice(0, train), "valid": slice(train, train + valid), "test": slice(train + valid, None)}
    for phase, rows in bounds.items():
        images = root[f"digits/{phase}/images"][:]
        labels = root[f"digits/{phase}/labels"][:]
        assert images.dtype == np.float32
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(images, digits.images[rows].astype(np.float32))
        np.testing.assert_array_equal(labels, digits.target[rows])


def test_rerun_replaces_the_store(demo: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "again.zarr"
    assert demo.main(["--output-dir", str(out_dir)]) == 0
    assert demo.main(["--output-dir", str(out_dir)]) == 0
    capsys.readouterr()
    sg = StoreGate("zarr", {"output_dir": str(out_dir), "mode": "r"}, data_id=demo.DATA_ID)
    assert sg.get_metadata()["sizes"]["all"] == len(load_digits().target)


def test_main_exits_non_zero_when_the_round_trip_fails(
    demo: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_build = demo.build_store

    def build_then_corrupt(output_dir: Any) -> StoreGate:
        sg = real_build(output_dir)
        label = sg["valid"]["labels"][3]
        sg["valid"]["labels"][3] = (label + 1) % 10
        return sg

    monkeypatch.setattr(demo, "build_store", build_then_corrupt)
    assert demo.main(["--output-dir", str(tmp_path / "bad.zarr")]) == 1
    captured = capsys.readouterr()
    assert "Round trip FAILED" in captured.err
    assert "valid/labels: 1 values differ" in captured.err
    assert "all/labels: 1 values differ" in captured.err
    # The write after compile() makes the recorded state stale, and the check sees it.
    assert "not marked compiled" in captured.err
    assert "Round trip OK" not in captured.out


def test_check_round_trip_reports_a_dtype_change(demo: ModuleType, tmp_path: Path) -> None:
    out_dir = tmp_path / "dtype.zarr"
    sg = demo.build_store(out_dir)
    sg.astype("images", "float64", phase="all")
    sg.compile()
    problems = demo.check_round_trip(out_dir, demo.load_source())
    assert any(p.startswith("train/images: expected float32") for p in problems), problems


def test_default_store_lives_in_the_repository(demo: ModuleType) -> None:
    assert demo.DEFAULT_OUTPUT_DIR == REPO / "demo-store.zarr"


def test_script_exit_status(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(DEMO), "--output-dir", str(tmp_path / "cli.zarr")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"The store lives at {tmp_path / 'cli.zarr'}" in done.stdout


def test_the_demo_checks_a_view_of_rows(demo: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "digits.zarr"
    demo.build_store(out_dir)
    assert demo.check_view(out_dir, demo.load_source()) == []
    out = capsys.readouterr().out
    assert "View of train: the 3s and 8s, oversampled to" in out
    source = demo.load_source()
    source[demo.IMAGES] = source[demo.IMAGES] + 1  # a source the store does not hold: the check must see it
    problems = demo.check_view(out_dir, source)
    assert len(problems) == 1
    assert problems[0].startswith("view of train: ")
    assert "values differ from the source" in problems[0]
