"""A writer process of tests/test_icechunk.py, in a module of its own: spawned children import
only this (not the conformance suite, which imports torch)."""

from __future__ import annotations

import numpy as np

from storegate import ConflictError, StoreGate

#: add_data calls of each process.
CALLS = 6


def append_until_committed(path: str, worker: int) -> None:
    """add_data CALLS times, retrying each call after a ConflictError (as a user would)."""
    sg = StoreGate("icechunk", {"output_dir": path}, data_id="d")
    for call in range(CALLS):
        rows = np.full(2, worker * 100 + call)
        while True:
            try:
                sg.add_data(["x", "y"], [rows, rows], phase="train")
                break
            except ConflictError:
                continue
