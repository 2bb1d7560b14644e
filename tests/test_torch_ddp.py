"""Two torch.distributed processes (gloo on 127.0.0.1) share an epoch through ChunkShuffleSampler."""

from __future__ import annotations

import json
import socket
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from storegate import StoreGate
from storegate.torch import ChunkShuffleSampler, StoreGateDataset

pytestmark = pytest.mark.timeout(300)

WORLD = 2
N_TRAIN = 101  # odd: one rank gets a padded row, or one row is dropped
JOIN_TIMEOUT = 240.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank_main(rank: int, port: int, store_dir: str, out_dir: str) -> None:
    """One DDP rank: read its shards of epoch 1 (padded and with drop_last) and gather them."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=120)
    )
    try:
        sg = StoreGate("zarr", {"output_dir": store_dir, "mode": "r"}, data_id="d")
        dataset = StoreGateDataset(sg, "train", "x", "y")
        result: dict[str, object] = {}
        for drop_last in (False, True):
            sampler = ChunkShuffleSampler(dataset, seed=7, drop_last=drop_last, window=2)  # replicas from dist
            sampler.set_epoch(1)
            rows = [int(v) for x, y in DataLoader(dataset, batch_size=16, sampler=sampler) for v in y]
            gathered: list[object] = [None] * WORLD
            dist.all_gather_object(gathered, rows)
            result[f"drop_last={drop_last}"] = {"replicas": [sampler.num_replicas, sampler.rank], "gathered": gathered}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, dict[str, object]]]:
    root = tmp_path_factory.mktemp("ddp")
    store_dir, out_dir = str(root / "s.zarr"), root / "out"
    out_dir.mkdir()
    sg = StoreGate("zarr", {"output_dir": store_dir, "chunk": 8}, data_id="d")
    rows = np.arange(N_TRAIN + 20)
    sg.add_data("x", rows[:, None].astype(np.float32), phase=(N_TRAIN, 20, 0))
    sg.add_data("y", rows, phase=(N_TRAIN, 20, 0))
    context = mp.start_processes(
        _rank_main, args=(_free_port(), store_dir, str(out_dir)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + JOIN_TIMEOUT
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {WORLD} ranks did not finish within {JOIN_TIMEOUT} s")
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(WORLD)]


def _shards(results: list[dict[str, dict[str, object]]], key: str) -> list[list[int]]:
    gathered = results[0][key]["gathered"]
    assert isinstance(gathered, list)
    return gathered


@pytest.mark.parametrize("key", ["drop_last=False", "drop_last=True"])
def test_each_rank_takes_its_replica_and_rank_from_torch_distributed(
    results: list[dict[str, dict[str, object]]], key: str
) -> None:
    assert [r[key]["replicas"] for r in results] == [[WORLD, rank] for rank in range(WORLD)]
    assert results[1][key]["gathered"] == results[0][key]["gathered"]  # all_gather agrees


def test_padded_shards_cover_the_phase_and_overlap_only_by_the_padding(
    results: list[dict[str, dict[str, object]]],
) -> None:
    shards = _shards(results, "drop_last=False")
    assert [len(s) for s in shards] == [51, 51]
    assert set(shards[0]) | set(shards[1]) == set(range(N_TRAIN))
    assert len(set(shards[0]) & set(shards[1])) == 1
    assert len(set(shards[0])) == len(set(shards[1])) == 51


def test_drop_last_shards_are_disjoint_and_leave_out_one_row(results: list[dict[str, dict[str, object]]]) -> None:
    shards = _shards(results, "drop_last=True")
    assert [len(s) for s in shards] == [50, 50]
    assert not set(shards[0]) & set(shards[1])
    assert len(set(shards[0]) | set(shards[1])) == N_TRAIN - 1
