"""DataLoader workers ('fork' and 'spawn') reading a local zarr store and zarr on S3.

Each test reads in the parent process first, so that a worker which reused the parent's
open store (its fsspec/s3fs client, its zarrs pipeline) would fail or hang; the DataLoader
``timeout`` and pytest-timeout turn a hang into a failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from storegate import StoreGate
from storegate.codecs import zarrs_available
from storegate.torch import ChunkShuffleSampler, StoreGateDataset
from tests.conftest import S3Server

pytestmark = [
    pytest.mark.timeout(300),
    # Python >= 3.12 warns when a process with threads (zarr's and fsspec's event loops) forks;
    # forking such a process safely is what these tests check.
    pytest.mark.filterwarnings(r"ignore:.*use of fork\(\) may lead to deadlocks:DeprecationWarning"),
]

N = 240
CHUNK = 16
CONTEXTS = ["fork", "spawn"]
LOADER_TIMEOUT = 90  # seconds a worker may take for one batch before the loader fails


def _fill(sg: StoreGate) -> StoreGate:
    rows = np.arange(N)
    sg.add_data("x", rows[:, None].astype(np.float32) * np.ones(4, dtype=np.float32), phase=(0.75, 0.25, 0.0))
    sg.add_data("y", rows, phase=(0.75, 0.25, 0.0))
    return sg


def _epoch(sg: StoreGate, phase: str, context: str, **loader: Any) -> list[int]:
    """Row ids of one epoch through 2 workers, after the parent has read the store itself."""
    dataset = StoreGateDataset(sg, phase, "x", "y")
    parent_x, parent_y = dataset[len(dataset) - 1]  # the parent opens and decodes first
    assert float(parent_x[0]) == float(parent_y)
    sampler = ChunkShuffleSampler(dataset, seed=1, window=2)
    loader_ = DataLoader(
        dataset,
        batch_size=25,
        sampler=sampler,
        num_workers=2,
        multiprocessing_context=context,
        timeout=LOADER_TIMEOUT,
        **loader,
    )
    seen: list[int] = []
    for x, y in loader_:
        assert torch.equal(x, y[:, None].float().expand(-1, 4))
        seen += y.tolist()
    # The parent's own handle still works after the workers ran.
    assert torch.equal(dataset[0][1], torch.tensor(int(sg.get_data("y", phase, 0))))
    return seen


def _expected(sg: StoreGate, phase: str) -> list[int]:
    return sorted(int(v) for v in sg.get_data("y", phase))


# 'spawn' starts a fresh interpreter that imports torch (slow on 2 cores): one case each.
@pytest.mark.parametrize(("context", "phase"), [("fork", "train"), ("fork", "all"), ("spawn", "all")])
def test_local_store_every_row_once(tmp_path: Path, context: str, phase: str) -> None:
    sg = _fill(StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "chunk": CHUNK}, data_id="d"))
    seen = _epoch(sg, phase, context)
    assert sorted(seen) == _expected(sg, phase)


def test_temporary_store_every_row_once() -> None:
    sg = _fill(StoreGate("zarr", {"chunk": CHUNK}, data_id="d"))  # output_dir=None: a temporary directory
    assert sorted(_epoch(sg, "train", "fork")) == _expected(sg, "train")


def test_data_in_memory_every_row_once() -> None:
    sg = _fill(StoreGate("numpy", data_id="d"))  # carried: pickled into spawned workers
    assert sorted(_epoch(sg, "valid", "spawn", persistent_workers=True)) == _expected(sg, "valid")


@pytest.mark.s3
@pytest.mark.parametrize("context", CONTEXTS)
def test_s3_store_every_row_once(s3_server: S3Server, s3_bucket: str, context: str) -> None:
    args = {"output_dir": f"s3://{s3_bucket}/loader", "storage_options": s3_server.storage_options, "chunk": CHUNK}
    sg = _fill(StoreGate("zarr", args, data_id="d"))
    assert sorted(_epoch(sg, "train", context)) == _expected(sg, "train")


@pytest.mark.skipif(not zarrs_available(), reason="the zarrs extra is not installed")
def test_forked_workers_after_the_parent_decoded_with_zarrs(tmp_path: Path) -> None:
    args = {"output_dir": str(tmp_path / "z.zarr"), "chunk": CHUNK, "codec_pipeline": "zarrs"}
    sg = _fill(StoreGate("zarr", args, data_id="d"))
    sg.get_data("x", "train")  # decoded by zarrs in the parent
    assert sorted(_epoch(sg, "train", "fork")) == _expected(sg, "train")
