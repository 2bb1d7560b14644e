"""The loader benchmark's own code works: a tiny store through every configuration (no timing)."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from tests.benchmark_modules import load

pytest.importorskip("torch")
pytest.importorskip("h5py")

N_ROWS, CHUNK_ROWS, SUBSET = 300, 32, 50
KINDS = ["naive_zarr", "storegate", "storegate_batches", "memmap", "h5py", "tensor"]


def _load_bench() -> ModuleType:
    return load("bench_loader")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _load_bench()


@pytest.fixture(scope="module")
def paths(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> object:
    return bench.build_data(tmp_path_factory.mktemp("loader"), n_rows=N_ROWS, chunk_rows=CHUNK_ROWS)


def test_build_data_writes_the_same_rows_in_every_format(bench: ModuleType, paths: object) -> None:
    import h5py
    import zarr

    x, y = bench.make_rows(N_ROWS)
    assert paths.chunk_rows == CHUNK_ROWS
    np.testing.assert_array_equal(np.asarray(zarr.open_array(paths.zarr_x, mode="r")[:]), x)
    np.testing.assert_array_equal(np.asarray(zarr.open_array(paths.zarr_y, mode="r")[:]), y)
    np.testing.assert_array_equal(np.load(paths.npy_x), x)
    with h5py.File(paths.h5, "r") as f:
        assert f["x"].chunks == (CHUNK_ROWS, bench.N_FEATURES)
        np.testing.assert_array_equal(f["x"][:], x)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_measure_delivers_each_row_once(bench: ModuleType, paths: object, kind: str) -> None:
    subset = SUBSET if kind in bench.SUBSET_KINDS else None
    result = bench.measure(kind, paths, num_workers=0, subset=subset)
    assert (result.kind, result.num_workers) == (kind, 0)
    assert result.rows == (subset or N_ROWS)
    assert result.seconds > 0
    assert result.samples_per_s > 0
    assert result.peak_rss_main_mb >= result.rss_imports_mb > 0


@pytest.mark.timeout(300)
def test_subprocess_with_forked_workers(bench: ModuleType, paths: object) -> None:
    # One configuration: the subprocess path is the same for all (about 10 s of imports each).
    result = bench.measure_in_subprocess("storegate", paths, num_workers=2, timeout=240)
    assert (result.kind, result.num_workers, result.rows) == ("storegate", 2, N_ROWS)
    assert result.peak_rss_worker_mb > 0


def test_every_configuration_is_tested(bench: ModuleType) -> None:
    assert list(bench.KINDS) == KINDS


def test_unknown_kind_is_refused(bench: ModuleType, paths: object) -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        bench.measure("parquet", paths, num_workers=0)


def test_pair_check_catches_features_of_another_row(bench: ModuleType) -> None:
    x, y = bench.make_rows(8)
    bench._check_pairs(x, y)
    with pytest.raises(RuntimeError, match="does not hold the features of its labels"):
        bench._check_pairs(x[::-1].copy(), y)


def test_report_has_a_row_per_configuration_and_judges_the_goals(bench: ModuleType, paths: object) -> None:
    results = [
        bench.Measurement(kind, w, 100, seconds, 1.0, 2.0, 3.0 if w else 0.0)
        for w in bench.WORKERS
        for kind, seconds in zip(bench.KINDS, [10.0, 0.1, 0.08, 0.1, 10.0, 0.05], strict=True)
    ]
    text = bench.report(paths, results, build_seconds=1.0)
    for label in bench.LABELS.values():
        assert text.count(f"| {label} |") == len(bench.WORKERS)
    # In these made-up figures (b) is 100x (a) and 1.0x (c), (b') 125x and 1.25x.
    assert text.count("(goal 50x: met)") == 2 * len(bench.WORKERS)
    assert text.count("(goal 0.5x: met)") == 2 * len(bench.WORKERS)
    slow = [
        bench.Measurement(r.kind, r.num_workers, 100, 1.0, 1, 2, 3) if r.kind == "storegate" else r for r in results
    ]
    assert "NOT met" in bench.report(paths, slow, build_seconds=1.0)


def test_workers_note_names_the_configurations_slower_with_workers(bench: ModuleType) -> None:
    results = [bench.Measurement(kind, w, 100, 1.0, 1, 2, 3) for w in bench.WORKERS for kind in bench.KINDS]
    assert bench.workers_note(results).endswith(": none.")
    slow_tensor = [
        bench.Measurement("tensor", r.num_workers, 100, 4.0, 1, 2, 3)
        if (r.kind, r.num_workers) == ("tensor", bench.WORKERS[-1])
        else r
        for r in results
    ]
    assert bench.workers_note(slow_tensor).endswith(": (e) (0.25x).")


@pytest.mark.timeout(120)
def test_decode_work_is_counted_in_every_process(bench: ModuleType, paths: object) -> None:
    from storegate.backends.zarr_backend import ZarrBackend

    read = ZarrBackend.read
    chunks = 2 * -(-N_ROWS // CHUNK_ROWS)  # x and y
    alone = bench.measure_decodes(paths, num_workers=0, shared_bytes=0, local_bytes=1 << 20)
    assert (alone.decoded, alone.chunks, alone.rows) == (chunks, chunks, N_ROWS)
    shared = bench.measure_decodes(paths, num_workers=2, shared_bytes=1 << 20, local_bytes=0)
    assert shared.decoded == chunks  # the shared cache holds all: one decode per chunk over both workers
    assert shared.peak_pss_total_mb > 0
    assert ZarrBackend.read is read  # the counting patch is gone
    text = bench.decode_report(paths, [alone, shared])
    assert "| per-process 1 MiB | 0 |" in text
    assert "| shared 1 MiB | 2 |" in text
