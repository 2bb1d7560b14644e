"""StoreGateDataset(shared_cache_bytes=...): DataLoader workers share decoded chunks (KappaData's
SharedDictDataset): each chunk decoded once per epoch in total with 2 workers ('fork' and
'spawn', a directory and the S3 server), exact values on every backend, and no segment or
resource_tracker warning left behind, even when the loop is left early or a worker is killed."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch.utils.data import DataLoader

from storegate import InvalidArgumentError, StoreGate
from storegate.backends.zarr_backend import ZarrBackend
from storegate.testing import BACKEND_KINDS, make_gate
from storegate.torch import ChunkShuffleSampler, StoreGateDataset
from tests.conftest import S3Server
from tests.shm_segments import no_leak, segments  # noqa: F401 (no_leak: an autouse fixture)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings(r"ignore:.*use of fork\(\) may lead to deadlocks:DeprecationWarning"),
]

N, CHUNK = 200, 8
X = np.arange(N, dtype=np.float32)[:, None] * np.ones(3, dtype=np.float32)
Y = np.arange(N) % 5
SHARED = 1 << 20  # holds every chunk of these data
MEMORY_KINDS = {"numpy", "zarr-memory", "hybrid-numpy"}  # carried in memory: nothing to decode


def _fill(sg: StoreGate) -> StoreGate:
    sg.add_data(["x", "y", "id"], [X, Y, np.arange(N)], phase=(0.8, 0.2, 0.0))
    return sg


def _zarr(tmp_path: Path) -> StoreGate:
    return _fill(StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "chunk": CHUNK}, data_id="d"))


def _view(sg: StoreGate) -> Any:
    """Classes 1 and 3 of train, shuffled, three times over: every chunk is needed three times."""
    return sg["train"].filter("y", keep=[1, 3]).shuffled(7).repeat(3)


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Chunks the zarr backend reads, counted in every forked process too (a shared counter)."""
    counter = mp.get_context("fork").Value("q", 0)
    read = ZarrBackend.read

    def counting(self: ZarrBackend, data_id: str, phase: str, var: str, selection: Any) -> np.ndarray:
        out = read(self, data_id, phase, var, selection)
        if isinstance(selection, slice):
            with counter.get_lock():
                counter.value += -(-out.shape[0] // CHUNK)
        return out

    monkeypatch.setattr(ZarrBackend, "read", counting)
    return counter


def _epoch(dataset: StoreGateDataset, workers: int, context: str = "fork", **options: Any) -> list[int]:
    """One epoch of ids; batches of 12 rows straddle the sampler's windows of 2 chunks of 8 rows."""
    sampler = ChunkShuffleSampler(dataset, seed=1, window=2)
    if workers:
        options.update(num_workers=workers, multiprocessing_context=context, timeout=90)
    seen = []
    for x, ids in DataLoader(dataset, batch_size=12, sampler=sampler, **options):
        np.testing.assert_array_equal(x.numpy(), X[ids.numpy()])
        seen += ids.tolist()
    return seen


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_every_backend_gives_numpy_indexing(kind: str, tmp_path: Path) -> None:
    sg = _fill(make_gate(kind, tmp_path))
    with StoreGateDataset(sg, _view(sg), "x", "id", shared_cache_bytes=4096, chunk_cache_bytes=0) as dataset:
        assert (dataset.shared_cache is None) == (kind in MEMORY_KINDS)
        x, ids = dataset[:]
        train = np.arange(160)
        picked = train[np.isin(Y[train], [1, 3])]
        expected = np.tile(picked[np.random.default_rng(7).permutation(picked.shape[0])], 3)
        np.testing.assert_array_equal(ids.numpy(), expected)
        np.testing.assert_array_equal(x.numpy(), X[expected])
        assert [int(item[1]) for item in dataset.__getitems__([5, 0, 5])] == expected[[5, 0, 5]].tolist()


@pytest.mark.parametrize("context", ["fork", "spawn"])
@pytest.mark.parametrize("over", ["phase", "view"])
def test_two_workers_decode_what_no_workers_decode(tmp_path: Path, decoded: Any, context: str, over: str) -> None:
    sg = _zarr(tmp_path)

    def phase() -> Any:
        return "train" if over == "phase" else _view(sg)

    alone = StoreGateDataset(sg, phase(), "x", "id")
    expected = sorted(_epoch(alone, workers=0))
    once = decoded.value
    # Every chunk of train once: x and id, and for the view its label y (read to find its rows).
    assert once == (2 if over == "phase" else 3) * 160 // CHUNK
    decoded.value = 0
    with StoreGateDataset(sg, phase(), "x", "id", shared_cache_bytes=SHARED) as shared:
        assert sorted(_epoch(shared, workers=2, context=context)) == expected
        assert shared.shared_cache is not None
        assert shared.shared_cache.stats().decoded == once  # not once per worker
        if context == "fork":  # the patched read runs in the workers too
            assert decoded.value == once


def test_without_the_shared_cache_two_workers_decode_more(tmp_path: Path, decoded: Any) -> None:
    sg = _zarr(tmp_path)
    _epoch(StoreGateDataset(sg, "train", "x", "id"), workers=2)
    assert decoded.value > 2 * 160 // CHUNK  # batches of both workers share chunks: the motivation


def test_later_epochs_decode_nothing_while_the_cache_holds_the_data(tmp_path: Path) -> None:
    sg = _zarr(tmp_path)
    with StoreGateDataset(sg, "train", "x", "id", shared_cache_bytes=SHARED, chunk_cache_bytes=0) as dataset:
        sampler = ChunkShuffleSampler(dataset, seed=0)
        loader = DataLoader(
            dataset,
            batch_size=16,
            sampler=sampler,
            num_workers=2,
            multiprocessing_context="spawn",
            persistent_workers=True,
            timeout=90,
        )
        for epoch in range(3):
            sampler.set_epoch(epoch)
            assert sorted(int(i) for _, ids in loader for i in ids) == list(range(160))
        assert dataset.shared_cache is not None
        assert dataset.shared_cache.stats().decoded == 2 * 160 // CHUNK
        del loader


def test_a_shared_cache_smaller_than_the_data_gives_exact_values(tmp_path: Path) -> None:
    sg = _zarr(tmp_path)
    bound = 3 * CHUNK * 12 + 3 * CHUNK * 8  # about three chunks of each variable
    with StoreGateDataset(sg, _view(sg), "x", "id", shared_cache_bytes=bound, chunk_cache_bytes=0) as dataset:
        assert dataset.shared_cache is not None
        assert 0 < dataset.shared_cache.held_bytes <= bound
        seen = _epoch(dataset, workers=2)
        assert sorted(seen) == sorted(dataset[:][1].tolist())
        assert dataset.shared_cache.stats().evictions > 0


def test_a_write_of_this_process_drops_every_shared_chunk(tmp_path: Path) -> None:
    sg = _zarr(tmp_path)
    with StoreGateDataset(sg, "train", "y", shared_cache_bytes=SHARED, chunk_cache_bytes=0) as dataset:
        assert dataset[:].tolist() == Y[:160].tolist()
        sg.update_data("y", np.full(160, 9, dtype=np.int64))
        assert set(dataset[:].tolist()) == {9}
        assert dataset.shared_cache is not None
        assert dataset.shared_cache.stats().decoded == 2 * 160 // CHUNK


def test_close_releases_the_memory_and_reads_go_on(tmp_path: Path) -> None:
    sg = _zarr(tmp_path)
    dataset = StoreGateDataset(sg, "train", "x", "id", shared_cache_bytes=SHARED)
    assert dataset.shared_cache is not None
    name = dataset.shared_cache.name
    assert name in segments()
    dataset.close()
    assert name not in segments()
    np.testing.assert_array_equal(dataset[[3, 150]][0].numpy(), X[[3, 150]])
    assert sorted(_epoch(dataset, workers=2)) == list(range(160))  # workers read the store


def test_bad_shared_cache_bytes_are_refused(tmp_path: Path) -> None:
    sg = _zarr(tmp_path)
    for bad in (-1, 1.5, "1MB"):
        with pytest.raises(InvalidArgumentError, match=r"shared_cache_bytes must be an int.*Got"):
            StoreGateDataset(sg, "train", "x", shared_cache_bytes=bad)


@pytest.mark.s3
def test_on_s3_two_workers_decode_each_chunk_once(s3_server: S3Server, s3_bucket: str) -> None:
    args = {"output_dir": f"s3://{s3_bucket}/shared", "storage_options": s3_server.storage_options, "chunk": CHUNK}
    sg = _fill(StoreGate("zarr", args, data_id="d"))
    with StoreGateDataset(sg, "train", "x", "id", shared_cache_bytes=SHARED) as dataset:
        assert sorted(_epoch(dataset, workers=2, context="fork")) == list(range(160))
        assert dataset.shared_cache is not None
        assert dataset.shared_cache.stats().decoded == 2 * 160 // CHUNK


# --- teardown: left early, a killed worker, no leak, no warning --------------------------------

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, get_worker_info
    from storegate import StoreGate
    from storegate.torch import StoreGateDataset

    def die_in_worker_1(x, y):
        info = get_worker_info()
        if info is not None and info.id == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return x, y

    def main(root, context):
        sg = StoreGate("zarr", {"output_dir": root + "/s.zarr", "chunk": 8}, data_id="d")
        sg.add_data(["x", "y"], [np.arange(400, dtype=np.float32), np.arange(400)], phase="train")
        dataset = StoreGateDataset(sg, "train", "x", "y", shared_cache_bytes=1 << 20)
        options = dict(batch_size=16, num_workers=2, multiprocessing_context=context, timeout=90)
        for x, y in DataLoader(dataset, **options):
            break  # left early: the workers are shut down with the iterator
        killer = StoreGateDataset(sg, "train", "x", "y", callbacks=[die_in_worker_1], shared_cache_bytes=1 << 20)
        try:
            for x, y in DataLoader(killer, **options):
                pass
        except RuntimeError as exc:
            print("worker killed:", "exited unexpectedly" in str(exc))
        names = [d.shared_cache.name for d in (dataset, killer)]
        print("held:", all(os.path.exists("/dev/shm/" + n) for n in names))
        del dataset, killer
        import gc; gc.collect()
        print("left:", [n for n in names if os.path.exists("/dev/shm/" + n)])

    if __name__ == "__main__":
        main(sys.argv[1], sys.argv[2])
    """
)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_no_segment_and_no_resource_tracker_warning_is_left(tmp_path: Path, context: str) -> None:
    script = tmp_path / "teardown.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-W", "default", str(script), str(tmp_path), context],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["worker killed: True", "held: True", "left: []"], done.stdout
    assert "resource_tracker" not in done.stderr, done.stderr
    assert "leaked" not in done.stderr, done.stderr


@pytest.mark.parametrize(("context", "shared"), [("fork", SHARED), ("spawn", SHARED), ("fork", 0), ("spawn", 0)])
def test_persistent_workers_read_what_a_write_between_epochs_committed(
    tmp_path: Path, context: str, shared: int
) -> None:
    """Workers that live across epochs (persistent_workers=True) keep their chunk caches: after
    a write of the parent (or any process), the next epoch must read the new values."""
    sg = _zarr(tmp_path)
    dataset = StoreGateDataset(sg, "train", "x", "id", shared_cache_bytes=shared, chunk_cache_bytes=1 << 20)
    loader = DataLoader(
        dataset, batch_size=16, num_workers=2, persistent_workers=True, multiprocessing_context=context, timeout=90
    )
    try:
        first = {int(i): float(x[0]) for xs, ids in loader for x, i in zip(xs, ids, strict=True)}
        assert first == {i: float(i) for i in range(160)}
        sg.update_data("x", -X[:160], "train")  # same layout, new values
        other = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr")}, data_id="d")
        second = {int(i): float(x[0]) for xs, ids in loader for x, i in zip(xs, ids, strict=True)}
        assert second == {i: -float(i) for i in range(160)}
        other.update_data("x", X[:160] * 2, "train")  # another handle (another process alike) writes
        third = {int(i): float(x[0]) for xs, ids in loader for x, i in zip(xs, ids, strict=True)}
        assert third == {i: 2.0 * i for i in range(160)}
    finally:
        dataset.close()
        del loader
