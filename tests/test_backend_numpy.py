"""The conformance suite on the numpy (in-memory) backend."""

from __future__ import annotations

from storegate.testing import BackendConformance


class TestNumpyBackend(BackendConformance):
    backend = "numpy"
