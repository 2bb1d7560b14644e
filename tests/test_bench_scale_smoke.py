"""The scale benchmark's own code works, on tiny data (no timing, no memory thresholds).

``make bench`` runs it on a store of 4 GB and more; here the same functions run on a few
MB: the data generator and its checks, one epoch in this process and one with two forked
workers in a subprocess, two DDP ranks and one on the S3 server, and the report.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.benchmark_modules import load

N_ROWS = 4_500  # 14 MB of features, two blocks of the generator
DDP_ROWS = 1_000
CACHE = 10 << 20  # 4 chunks of x and y (8.4 MB) fit, the 14 MB of data do not


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load("bench_scale")


@pytest.fixture(scope="module")
def store(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("scale") / "store.zarr"
    bench.build_scale_store(path, N_ROWS, min_disk=10**6)
    return str(path)


def test_a_row_regenerated_alone_is_the_row_written(bench: ModuleType) -> None:
    x, y = bench.block_rows(1, 2 * bench.BLOCK_ROWS)
    np.testing.assert_array_equal(y, np.arange(bench.BLOCK_ROWS, 2 * bench.BLOCK_ROWS))
    for r in (0, 1, 777, bench.BLOCK_ROWS - 1):
        np.testing.assert_array_equal(bench.expected_row(int(y[r])), x[r])
    assert 0.4 < float(x[:, 1:].mean()) < 0.6  # random features, not zeros that compress away


def test_a_batch_with_another_row_s_features_is_refused(bench: ModuleType) -> None:
    x, y = bench.block_rows(0, 300)
    rng = np.random.default_rng(0)
    bench.check_batch(x, y, rng)
    with pytest.raises(RuntimeError, match="does not hold the features of its labels"):
        bench.check_batch(x[::-1].copy(), y, rng)
    x[:, 5] += 1  # feature 0 still right: the rows checked whole catch it
    with pytest.raises(RuntimeError, match="arrived with features that are not its own"):
        bench.check_batch(x, y, rng)


@pytest.mark.parametrize("form", ["loader", "batches"])
def test_one_epoch_in_this_process(bench: ModuleType, store: str, form: str) -> None:
    result = bench.measure_epoch(store, N_ROWS, num_workers=0, cache_bytes=CACHE, form=form)
    assert (result.rows, result.num_workers, result.cache_bytes, result.form) == (N_ROWS, 0, CACHE, form)
    assert result.order_mb > 0
    assert result.overhead["VmRSS"] > result.overhead["RssAnon"] > 0
    assert result.peak_main["VmRSS"] >= result.overhead["VmRSS"]
    assert result.peak_worker == {}
    assert set(result.quarter_main) == set(bench.STATUS_FIELDS)  # the first quarter was marked


@pytest.mark.timeout(120)
def test_two_forked_workers_in_a_subprocess(bench: ModuleType, store: str) -> None:
    result = bench.measure_in_subprocess(store, N_ROWS, 2, CACHE, "loader")
    assert (result.rows, result.num_workers, result.form) == (N_ROWS, 2, "loader")
    assert result.peak_worker["VmRSS"] > 0
    assert result.worker_maxrss_mb > 0
    assert result.peak_pss_total_mb > 0


def test_rows_beyond_those_asked_for_fail_the_epoch(bench: ModuleType, store: str) -> None:
    with pytest.raises(RuntimeError, match=f"gave more than the {N_ROWS - 1:,} rows asked for"):
        bench.measure_epoch(store, N_ROWS - 1, 0, CACHE)


@pytest.mark.s3
@pytest.mark.timeout(180)
def test_ddp_ranks_on_s3_share_every_row_once(bench: ModuleType, s3_server: object, s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/scale.zarr"
    options = s3_server.storage_options
    bench.write_store(url, DDP_ROWS, options)
    two = bench.run_ranks(url, DDP_ROWS, 2, options, timeout=150)
    assert (two.world, two.rows, sum(two.rank_rows)) == (2, DDP_ROWS, DDP_ROWS)
    assert two.rank_rows == [DDP_ROWS // 2] * 2
    assert two.seconds > 0


def test_when_a_rank_fails_the_others_are_killed(bench: ModuleType) -> None:
    failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    waiting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # as at a barrier
    start = time.monotonic()
    assert bench.wait_all([failing, waiting], timeout=50) == {0: "exit code 3", 1: "killed after another rank failed"}
    assert time.monotonic() - start < 30
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert bench.wait_all([slow], timeout=0.5) == {0: "killed: no end within 0 s"}


def test_ranks_must_share_the_rows_evenly(bench: ModuleType) -> None:
    with pytest.raises(ValueError, match="multiple of world"):
        bench.run_ranks("unused", 7, 2, {}, timeout=1)


def test_children_older_than_the_sampling_are_not_counted_as_workers(bench: ModuleType) -> None:
    older = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with bench.RssPeaks(every=0.01) as peaks:
            newer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
            time.sleep(0.2)
        newer.kill()
        newer.wait()
    finally:
        older.kill()
        older.wait()
    assert set(peaks.workers) == {newer.pid}
    assert peaks.main["VmRSS"] > 0


def test_too_little_free_disk_is_refused(bench: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="GB free under"):
        bench.check_free_disk(tmp_path, 10**18)


def test_a_store_smaller_than_asked_is_refused_and_removed(bench: ModuleType, tmp_path: Path) -> None:
    root = tmp_path / "scale"
    with pytest.raises(RuntimeError, match="less than the"):
        bench.main(n_rows=500, ddp_rows=DDP_ROWS, min_disk=10**12, root=root)
    assert not root.exists()


def _measurement(bench: ModuleType, workers: int, cache: int, growth: float) -> object:
    base = {"VmRSS": 300.0, "RssAnon": 200.0, "RssFile": 100.0, "RssShmem": 0.0}
    peak = {**base, "VmRSS": 300.0 + growth, "RssAnon": 200.0 + growth}
    main, worker = (base, peak) if workers else (peak, {})
    return bench.ScaleMeasurement(workers, cache, 1000, 2.0, base, main, worker, base, worker, 300.0 + growth, 400.0)


def test_report_states_growth_and_the_verdict(bench: ModuleType) -> None:
    data = bench.ScaleData(rows=1000, chunk_rows=334, disk_bytes=5 * 10**9, write_seconds=3.0)
    results = [
        _measurement(bench, 0, 64 << 20, 80.0),
        _measurement(bench, 0, 256 << 20, 270.0),
        _measurement(bench, 2, 64 << 20, 90.0),
        _measurement(bench, 2, 256 << 20, 600.0),  # past the limit
    ]
    ddp = [bench.DdpMeasurement(w, 100, 1.0 * w, [100 // w] * w, [1.0] * w) for w in (1, 2)]
    text = bench.report(data, results, (ddp, 1.0, 3.0), " Load.")
    assert "5.00 GB on disk" in text
    assert text.count("| yes |") == 3
    assert text.count("| NO |") == 1
    assert "NOT met" in text
    assert "from 80 to 270 MiB when the bound went from 64 to 256 MiB" in text
    assert "2 ranks: 0.50x one rank (medians; round by round: 0.50)" in text
