"""The conformance suite on the hybrid backend, in each of its two modes."""

from __future__ import annotations

from pathlib import Path

import pytest

from storegate import StoreGate
from tests.conformance import BackendConformance


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
