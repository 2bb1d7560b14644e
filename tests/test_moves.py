"""Moves between the tiers of the hybrid backend: StoreGate.to_memory / to_storage (storegate.moves).

Each move is one transaction: tests/test_transaction.py fails it at every step; here the
callback, the names and the tier the caller is in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from storegate import InvalidArgumentError, StoreGate


@pytest.fixture
def hybrid(tmp_path: Path) -> StoreGate:
    sg = StoreGate("hybrid", {"output_dir": str(tmp_path / "h.zarr")}, data_id="h")
    sg.add_data(["x", "y"], [np.arange(10).reshape(5, 2), np.arange(5.0)], phase=(3, 1, 1))
    return sg


def test_callback_receives_the_output_names(hybrid: StoreGate) -> None:
    seen: list[Any] = []

    def callback(names: Any, data: Any) -> tuple[Any, Any]:
        seen.append((names, [d.copy() for d in data]))
        return names, [d * 2 for d in data]

    hybrid.to_memory(["x", "y"], phase="train", output_var_names=["mx", "my"], callback=callback)
    assert [names for names, _ in seen] == [["mx", "my"]]
    np.testing.assert_array_equal(seen[0][1][0], np.arange(6).reshape(3, 2))
    hybrid.set_mode("numpy")
    np.testing.assert_array_equal(hybrid.get_data("mx"), np.arange(6).reshape(3, 2) * 2)
    hybrid.set_mode("zarr")  # a transfer copies (multiml): the source is kept
    np.testing.assert_array_equal(hybrid.get_data("x", "train"), np.arange(6).reshape(3, 2))
    assert hybrid.get_var_names("train") == ["x", "y"]


def test_callback_without_output_names_gets_var_names(hybrid: StoreGate) -> None:
    seen: list[Any] = []
    hybrid.to_memory("x", phase="all", callback=lambda n, d: (seen.append(n), (n, d))[1])
    assert seen == ["x", "x", "x"]
    hybrid.set_mode("numpy")
    np.testing.assert_array_equal(hybrid.get_data("x", "all"), np.arange(10).reshape(5, 2))
    hybrid.to_storage("x", phase="all", output_var_names="z")
    hybrid.set_mode("zarr")
    np.testing.assert_array_equal(hybrid.get_data("z", "all"), np.arange(10).reshape(5, 2))


@pytest.mark.parametrize("start_mode", ["numpy", "zarr"])
def test_mode_is_restored_when_the_callback_raises(hybrid: StoreGate, start_mode: str) -> None:
    def callback(names: Any, data: Any) -> tuple[Any, Any]:
        raise RuntimeError("callback failed")

    hybrid.set_mode("numpy")
    hybrid.add_data("m", np.arange(4))
    hybrid.set_mode(start_mode)
    with pytest.raises(RuntimeError, match="callback failed"):
        hybrid.to_memory("x", phase="train", callback=callback)
    assert hybrid.mode == start_mode
    with pytest.raises(RuntimeError, match="callback failed"):
        hybrid.to_storage("m", phase="train", callback=callback)
    assert hybrid.mode == start_mode
    hybrid.set_mode("zarr")
    np.testing.assert_array_equal(hybrid.get_data("x"), np.arange(6).reshape(3, 2))
    assert "m" not in hybrid.get_var_names()
    hybrid.set_mode("numpy")
    np.testing.assert_array_equal(hybrid.get_data("m"), np.arange(4))
    assert "x" not in hybrid.get_var_names()


def test_mode_is_restored_and_source_kept_when_a_write_raises(
    hybrid: StoreGate, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = hybrid.backend_object.tiers()["numpy"]

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(memory, "create", broken)
    hybrid.set_mode("numpy")
    with pytest.raises(OSError, match="disk full"):
        hybrid.to_memory(["x", "y"], phase="train")
    assert hybrid.mode == "numpy"
    hybrid.set_mode("zarr")
    np.testing.assert_array_equal(hybrid.get_data("x"), np.arange(6).reshape(3, 2))
    np.testing.assert_array_equal(hybrid.get_data("y"), np.arange(3.0))


def test_mode_is_restored_when_a_cast_is_refused(hybrid: StoreGate) -> None:
    hybrid.set_mode("numpy")
    hybrid.add_data("y", np.zeros(3, dtype=np.int64))  # the destination holds y as ints
    with pytest.raises(InvalidArgumentError, match="same_kind"):
        hybrid.to_memory("y", phase="train")
    assert hybrid.mode == "numpy"
    hybrid.set_mode("zarr")
    np.testing.assert_array_equal(hybrid.get_data("y"), np.arange(3.0))
