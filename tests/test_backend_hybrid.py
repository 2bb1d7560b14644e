"""The hybrid backend: the conformance suite in each of its two tiers, and what is its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from storegate import StoreGate
from storegate.testing import BackendConformance


class TestHybridZarrMode(BackendConformance):
    @pytest.fixture
    def sg(self, tmp_path: Path) -> StoreGate:
        return StoreGate("hybrid", {"output_dir": str(tmp_path / "store.zarr")}, data_id="conf")


class TestHybridNumpyMode(BackendConformance):
    @pytest.fixture
    def sg(self, tmp_path: Path) -> StoreGate:
        sg = StoreGate("hybrid", {"output_dir": str(tmp_path / "store.zarr")})
        sg.set_mode("numpy")
        sg.set_data_id("conf")
        return sg


def test_hybrid_data_ids_of_both_stores(tmp_path: Path) -> None:
    sg = StoreGate("hybrid", {"output_dir": str(tmp_path / "h.zarr")})
    sg.set_data_id("on_disk")
    sg.set_mode("numpy")
    sg.set_data_id("in_memory")
    assert set(sg.get_data_ids()) == {"on_disk", "in_memory"}
    sg.set_mode("zarr")
    assert set(sg.get_data_ids()) == {"on_disk", "in_memory"}
