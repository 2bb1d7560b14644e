"""The conformance suite on the numpy (in-memory) backend."""

from __future__ import annotations

import pytest

from storegate import StoreGate
from tests.conformance import BackendConformance


class TestNumpyBackend(BackendConformance):
    @pytest.fixture
    def sg(self) -> StoreGate:
        return StoreGate("numpy", data_id="conf")
