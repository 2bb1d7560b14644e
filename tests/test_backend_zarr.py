"""The conformance suite on the zarr backend: a local directory and an in-memory zarr store."""

from __future__ import annotations

from pathlib import Path

import pytest
import zarr

from storegate import StoreGate
from tests.conformance import BackendConformance


class TestZarrLocalDirectory(BackendConformance):
    @pytest.fixture
    def sg(self, tmp_path: Path) -> StoreGate:
        return StoreGate("zarr", {"output_dir": str(tmp_path / "store.zarr")}, data_id="conf")


class TestZarrMemoryStore(BackendConformance):
    @pytest.fixture
    def sg(self) -> StoreGate:
        return StoreGate("zarr", {"output_dir": zarr.storage.MemoryStore()}, data_id="conf")
