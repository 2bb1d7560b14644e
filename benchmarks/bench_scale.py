"""Scale benchmark: bounded memory over a store far larger than the chunk cache, and DDP on S3.

(1) Bounded memory (issue 12, item 5). The benchmark writes a StoreGate zarr store of at
least 4 GB on local disk (``SCALE_ROWS`` rows of 784 random float32, which zstd cannot
shrink much, plus an int64 label that is the row index), block by block through
``StoreGate.writer`` so the generator holds one block at a time, and removes it afterwards
(on failure too). One shuffled epoch then runs through ``StoreGateDataset`` +
``ChunkShuffleSampler`` + ``DataLoader`` in whole batches (``BatchSampler(sampler, 256)``,
``batch_size=None``), with 0 and 2 workers ('fork') and two chunk cache bounds
(``chunk_cache_bytes``), each in a fresh subprocess. A thread samples the resident set
(VmRSS, with its anonymous / file / shared-memory parts) of the main process and of each
worker every 20 ms, and bench_loader's PeakPss the summed PSS. The fixed overhead is the
main process's RSS once everything is imported, the dataset and loader are built and one
just before the epoch starts (the workers fork from that state); the growth of a process is
its peak anonymous memory minus the overhead's, which should stay within the cache bound,
the epoch order's memory (it grows with the rows: see :func:`epoch_order_mb`) and a small
working allowance (one batch being read: ``window`` chunks of each variable, their
compressed bytes, the batch and the prefetched batches, and the allocator's slack). The
peak over the first quarter of the epoch beside the peak over the whole epoch shows whether
memory still grows once the cache is full.

(2) DDP on S3. A smaller store (``DDP_ROWS`` rows) is written to moto's S3 server (in its
own process on 127.0.0.1) and read by two ranks (``torch.distributed``, gloo,
``tcp://127.0.0.1``), each with ``ChunkShuffleSampler(dataset, seed, num_replicas=2,
rank=r)``, and by one rank reading every row; the ranks gather the labels they saw and
rank 0 checks that every row arrived exactly once over all ranks. Aggregate throughput is
rows over the wall time from a barrier before the epoch to a barrier after it.

Every epoch checks exactly-once delivery (the label is the row index), feature 0 of every
row (it encodes the row index) and every feature of 8 rows of each batch against values
regenerated from the seed. Any failure raises: ``make bench`` stops with the error.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_loader import PeakPss, run_measurement  # noqa: E402
from bench_peers import BUCKET, Place, exactly_once, s3_client  # noqa: E402

N_FEATURES = 784
ROW_BYTES = N_FEATURES * 4 + 8  # float32 features and an int64 label, decoded
BATCH_SIZE = 256
SEED = 0
DATA_ID, PHASE = "bench", "train"
#: Rows of the bounded-memory store: 1.6M x 3,136 bytes of features is 5.0 GB before zstd.
SCALE_ROWS = 1_600_000
MIN_DISK_BYTES = 4 * 10**9  # the store must hold at least this much on disk (issue 12: 4 GB)
BLOCK_ROWS = 4_096  # rows generated (and handed to the writer) at a time: 12.8 MB
CACHE_BOUNDS = (64 << 20, 256 << 20)  # chunk_cache_bytes tried: the default, and 4x it
WORKERS = (0, 2)
#: Short names of FORMS, for the table.
FORM_NAMES = {"loader": "StoreGateDataLoader", "batches": "DataLoader + BatchSampler"}
#: The loaders measured: the one call, and the DataLoader arguments it stands for.
FORMS = {
    "loader": "StoreGateDataLoader(dataset, 256, shuffle=True)",
    "batches": "DataLoader(dataset, sampler=BatchSampler(ChunkShuffleSampler(dataset), 256), batch_size=None)",
}
#: Memory a process may use beyond its chunk cache while it reads a batch (see the module docstring).
WORKING_ALLOWANCE_MB = 64.0  # MiB
CHECKED_ROWS = 8  # rows of each batch whose every feature is compared with regenerated values
SAMPLE_EVERY = 0.02  # seconds between two samples of /proc
#: Rows of the S3 store read by the DDP ranks (even: the two ranks' shares need no padding).
DDP_ROWS = 100_000
RANKS = (1, 2)
RESULT_MARK = "BENCH_SCALE_RESULT "
RUN_TIMEOUT = 1_800.0


# --- data ------------------------------------------------------------------------------------


def block_rows(block: int, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of block ``block`` (``BLOCK_ROWS`` rows, fewer in the last): features and labels.

    Features are uniform float32 from a generator seeded with ``(SEED, block)`` (random
    mantissas: zstd keeps about 89% of their bytes); feature 0 of row ``i`` is
    ``(i % 256) / 255`` so that a reader can check every row cheaply. The label is the row index.
    """
    start = block * BLOCK_ROWS
    y = np.arange(start, min(start + BLOCK_ROWS, n_rows), dtype=np.int64)
    x = np.random.default_rng([SEED, block]).random((len(y), N_FEATURES), dtype=np.float32)
    x[:, 0] = feature0(y)
    return x, y


def feature0(y: np.ndarray) -> np.ndarray:
    """Feature 0 of rows ``y``: their index modulo 256, scaled to [0, 1]."""
    return (y % 256).astype(np.float32) / np.float32(255)


def expected_row(i: int) -> np.ndarray:
    """Row ``i``'s features, regenerated alone.

    numpy draws a float32 from half of one 64-bit PCG64 output and 784 is even, so row
    ``r`` of a block starts ``r * 392`` outputs into its block's stream: ``advance`` skips there.
    """
    block, r = divmod(int(i), BLOCK_ROWS)
    bits = np.random.PCG64(np.random.SeedSequence([SEED, block]))
    bits.advance(r * N_FEATURES // 2)
    x = np.random.Generator(bits).random(N_FEATURES, dtype=np.float32)
    x[0] = feature0(np.array([i]))[0]
    return x


def check_batch(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
    """Refuse a batch whose features are not those of its labels (feature 0 of every row,
    every feature of ``CHECKED_ROWS`` rows drawn with ``rng``)."""
    if x.shape != (len(y), N_FEATURES) or not np.array_equal(x[:, 0], feature0(y)):
        raise RuntimeError(f"a batch of shape {x.shape} does not hold the features of its labels")
    for k in rng.choice(len(y), size=min(CHECKED_ROWS, len(y)), replace=False):
        if not np.array_equal(x[k], expected_row(int(y[k]))):
            raise RuntimeError(f"row {int(y[k])} arrived with features that are not its own")


def write_store(url: str, n_rows: int, storage_options: dict[str, Any] | None = None) -> float:
    """Write ``n_rows`` rows to a new StoreGate zarr store at ``url``, one block at a time; seconds taken."""
    from storegate import StoreGate

    args: dict[str, Any] = {"output_dir": url, "mode": "w"}
    if storage_options:
        args["storage_options"] = storage_options
    start = time.perf_counter()
    sg = StoreGate(backend="zarr", backend_args=args, data_id=DATA_ID)
    with sg.writer(phase=PHASE) as writer:
        for block in range(-(-n_rows // BLOCK_ROWS)):
            x, y = block_rows(block, n_rows)
            writer.add({"x": x, "y": y})
    sg.compile()
    return time.perf_counter() - start


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def check_free_disk(root: Path, needed: int) -> None:
    """Refuse to start when the disk under ``root`` has less than ``needed`` bytes free (and 1 GB to spare)."""
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < needed + 10**9:
        raise RuntimeError(
            f"bench_scale needs {(needed + 10**9) / 1e9:.1f} GB free under {root} for its store. Got "
            f"{free / 1e9:.1f} GB free instead: free some disk, or run the other benchmarks alone."
        )


# --- memory sampling -------------------------------------------------------------------------

#: The lines of /proc/<pid>/status sampled (kB): the resident set and its three parts.
STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def status_kb(pid: int) -> dict[str, int]:
    """``STATUS_FIELDS`` of one process (empty once it has exited)."""
    found = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in STATUS_FIELDS:
                found[name] = int(value.split()[0])
    return found


def children(pid: int) -> list[int]:
    """The child processes of ``pid``'s main thread (DataLoader workers fork from it)."""
    with contextlib.suppress(OSError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


class RssPeaks:
    """The largest value of each of ``STATUS_FIELDS`` (kB) of this process and of each child,
    sampled every ``every`` seconds in a thread.

    :meth:`mark` records the peaks reached so far (the first quarter of an epoch), so the
    report can tell a bounded process (its peak is reached early) from a growing one. Children
    that exist already when sampling starts are not the epoch's workers: they are left out.
    """

    def __init__(self, every: float = SAMPLE_EVERY) -> None:
        self.every = every
        self._others = set(children(os.getpid()))
        self.main: dict[str, int] = {}
        self.workers: dict[int, dict[str, int]] = {}
        self.marked: tuple[dict[str, int], dict[str, int]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssPeaks:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mark(self) -> None:
        """Remember the peaks of the main process and of the workers reached so far."""
        self.marked = (dict(self.main), self.worker_peaks())

    def worker_peaks(self) -> dict[str, int]:
        """The largest value of each field over every worker (empty without workers)."""
        return {k: max(w.get(k, 0) for w in self.workers.values()) for k in STATUS_FIELDS} if self.workers else {}

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def _sample(self) -> None:
        me = os.getpid()
        _keep_max(self.main, status_kb(me))
        for pid in children(me):
            if pid not in self._others:
                _keep_max(self.workers.setdefault(pid, {}), status_kb(pid))


def _keep_max(peaks: dict[str, int], sample: dict[str, int]) -> None:
    for k, v in sample.items():
        peaks[k] = max(peaks.get(k, 0), v)


# --- one bounded-memory epoch ----------------------------------------------------------------


def _mb(kb: dict[str, int]) -> dict[str, float]:
    return {k: v / 1024 for k, v in kb.items()}


@dataclass(frozen=True)
class ScaleMeasurement:
    """One epoch over the large store: what arrived, its time and the memory of each process.

    Memory figures are dicts of MiB by ``STATUS_FIELDS`` (each field's own peak).
    """

    num_workers: int
    cache_bytes: int
    rows: int
    seconds: float
    overhead: dict[str, float]  # the main process before the epoch, everything built
    peak_main: dict[str, float]
    peak_worker: dict[str, float]  # the largest over the workers (empty without workers)
    quarter_main: dict[str, float]  # peaks over the first quarter of the epoch
    quarter_worker: dict[str, float]
    worker_maxrss_mb: float  # RUSAGE_CHILDREN: the exact peak RSS of the largest worker
    peak_pss_total_mb: float
    order_mb: float = 0.0  # the peak memory of computing one epoch's order (see epoch_order_mb)
    form: str = "loader"  # one of FORMS

    @property
    def samples_per_s(self) -> float:
        """Rows delivered per second of the epoch."""
        return self.rows / self.seconds

    @property
    def bound_mb(self) -> float:
        """The chunk cache bound, in MiB (as every memory figure here)."""
        return self.cache_bytes / 2**20

    @property
    def reader(self) -> dict[str, float]:
        """Peaks of the process that reads: the main process without workers, else the largest worker."""
        return self.peak_worker if self.num_workers else self.peak_main

    @property
    def growth_mb(self) -> float:
        """The reader's peak anonymous memory above the main process's before the epoch.

        A forked worker starts with the main process's anonymous pages; it maps the libraries'
        file pages again only as it runs them, so its whole RSS would understate its growth.
        """
        return self.reader["RssAnon"] - self.overhead["RssAnon"]

    @property
    def quarter_growth_mb(self) -> float:
        """:attr:`growth_mb` over the first quarter of the epoch."""
        quarter = self.quarter_worker if self.num_workers else self.quarter_main
        return quarter.get("RssAnon", 0.0) - self.overhead["RssAnon"]

    @property
    def limit_mb(self) -> float:
        """The RSS no process may pass: the fixed overhead, the epoch order, the cache bound and the working
        allowance."""
        return self.overhead["VmRSS"] + self.order_mb + self.bound_mb + WORKING_ALLOWANCE_MB

    @property
    def within(self) -> bool:
        """Whether every process's peak RSS (and the workers' exact maxrss) stayed within :attr:`limit_mb`."""
        peaks = [self.peak_main["VmRSS"], self.peak_worker.get("VmRSS", 0.0), self.worker_maxrss_mb]
        return max(peaks) <= self.limit_mb


def make_loader(
    url: str,
    num_workers: int,
    cache_bytes: int,
    storage_options: dict[str, Any] | None = None,
    form: str = "loader",
    **sampler_args: Any,
) -> Any:
    """Whole batches of the store at ``url`` in a chunk-aware shuffled order, in one of :data:`FORMS`;
    ``sampler_args`` go to the sampler (``num_replicas``, ``rank``)."""
    from torch.utils.data import BatchSampler, DataLoader

    from storegate import StoreGate
    from storegate.torch import ChunkShuffleSampler, StoreGateDataLoader, StoreGateDataset

    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}. Got {form!r} instead.")

    args: dict[str, Any] = {"output_dir": url, "mode": "r"}
    if storage_options:
        args["storage_options"] = storage_options
    sg = StoreGate(backend="zarr", backend_args=args, data_id=DATA_ID)
    dataset = StoreGateDataset(sg, PHASE, input_var_names="x", true_var_names="y", chunk_cache_bytes=cache_bytes)
    options: dict[str, Any] = {"num_workers": num_workers}
    if num_workers:
        options["multiprocessing_context"] = "fork"  # local files: fork is safe and cheapest
    if form == "loader":
        return StoreGateDataLoader(dataset, BATCH_SIZE, shuffle=True, seed=SEED, **sampler_args, **options)
    sampler = BatchSampler(ChunkShuffleSampler(dataset, seed=SEED, **sampler_args), BATCH_SIZE, drop_last=False)
    return DataLoader(dataset, sampler=sampler, batch_size=None, **options)


def chunk_sampler(loader: Any) -> Any:
    """The ChunkShuffleSampler behind a loader of :func:`make_loader`."""
    return loader.chunk_sampler if hasattr(loader, "chunk_sampler") else loader.sampler.sampler


def run_epoch(
    batches: Iterable[Any], n_rows: int, on_quarter: Any = None, seen: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Iterate once, checking every batch; the labels seen (in order) and the seconds taken.

    Labels go into one array of ``n_rows`` allocated up front (``seen``, when given: a caller
    that measures memory touches it before), so no per-batch garbage adds to the peak;
    ``on_quarter()`` is called once a quarter of ``n_rows`` has arrived.
    """
    seen = np.empty(n_rows, dtype=np.int64) if seen is None else seen
    filled, quarter = 0, max(1, n_rows // 4)
    rng = np.random.default_rng(SEED)
    start = time.perf_counter()
    for x, y in batches:
        labels = y.numpy()
        check_batch(x.numpy(), labels, rng)
        if filled + len(labels) > n_rows:
            raise RuntimeError(f"the loader gave more than the {n_rows:,} rows asked for")
        seen[filled : filled + len(labels)] = labels
        if on_quarter is not None and filled < quarter <= filled + len(labels):
            on_quarter()
        filled += len(labels)
    return seen[:filled], time.perf_counter() - start


def measure_epoch(url: str, n_rows: int, num_workers: int, cache_bytes: int, form: str = "loader") -> ScaleMeasurement:
    """One checked epoch of the store at ``url`` in this process, with its memory; raises on a lost or repeated row."""
    loader = make_loader(url, num_workers, cache_bytes, form=form)
    labels = np.full(n_rows, -1, dtype=np.int64)  # the benchmark's own record: in the overhead, not the growth
    order_mb = epoch_order_mb(chunk_sampler(loader))
    gc.collect()
    overhead = status_kb(os.getpid())
    with PeakPss(SAMPLE_EVERY) as pss, RssPeaks() as rss:
        seen, seconds = run_epoch(loader, n_rows, rss.mark, labels)
        del loader  # joins the workers while they are still sampled
    problem = exactly_once(seen, n_rows)
    if problem:
        raise RuntimeError(f"{FORMS[form]}, {num_workers} workers, cache {cache_bytes >> 20} MiB: {problem}")
    quarter_main, quarter_worker = rss.marked or ({}, {})
    return ScaleMeasurement(
        num_workers=num_workers,
        cache_bytes=cache_bytes,
        rows=len(seen),
        seconds=seconds,
        overhead=_mb(overhead),
        peak_main=_mb(rss.main),
        peak_worker=_mb(rss.worker_peaks()),
        quarter_main=_mb(quarter_main),
        quarter_worker=_mb(quarter_worker),
        worker_maxrss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if num_workers else 0.0,
        peak_pss_total_mb=pss.peak_mb,
        order_mb=order_mb,
        form=form,
    )


def epoch_order_mb(sampler: Any) -> float:
    """The peak memory (MiB) of computing one epoch's order: the sampler's permutation of the rows.

    Measured with tracemalloc (numpy reports its buffers to it), so the figure does not depend
    on what the allocator keeps: an int64 per row for the order itself and about 4x that in
    numpy temporaries while it is computed. glibc keeps those temporaries in its heap once freed
    (its mmap threshold rises to their size after the first epoch), so they stay resident.
    This is the part of the main process's memory that grows with the rows, not with the bytes
    of data or the cache bound.
    """
    tracemalloc.start()
    try:
        sampler.epoch_order()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def measure_in_subprocess(
    url: str, n_rows: int, num_workers: int, cache_bytes: int, form: str = "loader"
) -> ScaleMeasurement:
    """:func:`measure_epoch` in a fresh interpreter (its memory is its own); fails loudly."""
    epoch = {"url": url, "n_rows": n_rows, "num_workers": num_workers, "cache_bytes": cache_bytes, "form": form}
    what = f"bench_scale epoch of {FORMS[form]} with {num_workers} workers and a {cache_bytes >> 20} MiB cache"
    request = {"epoch": epoch}
    return ScaleMeasurement(**run_measurement(Path(__file__), request, RESULT_MARK, RUN_TIMEOUT, what))


# --- DDP ranks on S3 -------------------------------------------------------------------------


@dataclass(frozen=True)
class DdpMeasurement:
    """One epoch read by ``world`` ranks together: rows delivered over all ranks and the wall time."""

    world: int
    rows: int
    seconds: float  # from a barrier before the epoch to a barrier after it
    rank_rows: list[int]
    rank_seconds: list[float]  # each rank's own loop

    @property
    def rows_per_s(self) -> float:
        """Aggregate rows per second of all ranks."""
        return self.rows / self.seconds


def rank_main(rank: int, world: int, port: int, url: str, n_rows: int, storage_options: dict[str, Any]) -> None:
    """One rank: its share of one checked epoch; rank 0 checks the union and prints the result."""
    from datetime import timedelta

    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=600)
    )
    try:
        options = {"num_replicas": world, "rank": rank, "storage_options": storage_options}
        loader = make_loader(url, 0, 64 << 20, form="batches", **options)
        dist.barrier()
        start = time.perf_counter()
        seen, seconds = run_epoch(loader, -(-n_rows // world))
        dist.barrier()
        wall = time.perf_counter() - start
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, (seen, seconds))
    finally:
        dist.destroy_process_group()
    if rank == 0:
        problem = exactly_once(np.concatenate([s for s, _ in gathered]), n_rows)
        if problem:
            raise RuntimeError(f"{world} DDP ranks together: {problem}")
        result = DdpMeasurement(world, n_rows, wall, [len(s) for s, _ in gathered], [t for _, t in gathered])
        print(RESULT_MARK + json.dumps(asdict(result)), flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of the call)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_ranks(url: str, n_rows: int, world: int, storage_options: dict[str, Any], timeout: float) -> DdpMeasurement:
    """``world`` rank processes reading the store at ``url`` together; rank 0's result.

    Fails loudly: when a rank fails, the others (waiting at a barrier for it) are killed.
    """
    if n_rows % world:
        raise ValueError(f"n_rows must be a multiple of world ({world}) so that no rank pads. Got {n_rows} instead.")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-scale-ranks-") as logs:
        procs = []
        for rank in range(world):
            request = {"rank": rank, "world": world, "port": port, "url": url, "n_rows": n_rows}
            request["storage_options"] = storage_options
            command = [sys.executable, str(Path(__file__).resolve()), "--rank", json.dumps(request)]
            with Path(logs, f"{rank}.out").open("w") as out, Path(logs, f"{rank}.err").open("w") as err:
                procs.append(subprocess.Popen(command, stdout=out, stderr=err, text=True))
        failed = wait_all(procs, timeout)
        stdout = Path(logs, "0.out").read_text()
        errors = {r: Path(logs, f"{r}.err").read_text()[-3000:] for r in range(world)}
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_MARK)]
    if failed or not lines:
        detail = "\n".join(f"rank {r}: {why}\n{errors[r]}" for r, why in (failed or {0: "printed no result"}).items())
        raise RuntimeError(f"{world} DDP rank(s) on S3 failed:\n{detail}")
    return DdpMeasurement(**json.loads(lines[-1].removeprefix(RESULT_MARK)))


def wait_all(procs: list[subprocess.Popen[str]], timeout: float) -> dict[int, str]:
    """Wait for every process; once one fails or the time is up, kill those still running.

    Returns what went wrong, by rank (empty when every process exited with 0).
    """
    deadline, failed = time.monotonic() + timeout, {}
    while any(p.poll() is None for p in procs):
        failed = {r: f"exit code {p.returncode}" for r, p in enumerate(procs) if p.returncode}
        if failed or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    why = "killed after another rank failed" if failed else f"killed: no end within {timeout:.0f} s"
    for rank, proc in enumerate(procs):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            failed[rank] = why
        elif proc.returncode:
            failed[rank] = f"exit code {proc.returncode}"
    return failed


def run_ddp(n_rows: int = DDP_ROWS, rounds: int = 5) -> tuple[list[DdpMeasurement], float, float]:
    """Write ``n_rows`` to moto's S3 server (own process), read them once to warm up, then with 1 and
    2 ranks, ``rounds`` times interleaved; the runs, the write seconds and the stored MB."""
    from bench_s3 import moto_process

    with moto_process() as endpoint:
        place = Place("s3", "", endpoint)
        client = s3_client(place)
        client.create_bucket(Bucket=BUCKET)
        url, options = place.url("scale.zarr"), place.storage_options()
        write_seconds = write_store(url, n_rows, options)
        listed = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="scale.zarr/")
        stored = sum(o["Size"] for page in listed for o in page.get("Contents", []))
        print(f"  S3 store written in {write_seconds:.0f} s ({stored / 1e6:,.0f} MB)", flush=True)
        run_ranks(url, n_rows, 1, options, RUN_TIMEOUT)  # warm-up, not reported: the first read ran 2-3x slower
        runs = []
        for k in range(rounds):
            for world in RANKS if k % 2 == 0 else RANKS[::-1]:
                runs.append(run_ranks(url, n_rows, world, options, RUN_TIMEOUT))
                print(f"  {world} rank(s): {runs[-1].rows_per_s:,.0f} rows/s", flush=True)
    return runs, write_seconds, stored / 1e6


# --- the report ----------------------------------------------------------------------------------


def scale_table(results: list[ScaleMeasurement]) -> str:
    """The Markdown table of the bounded-memory epochs (MiB)."""
    header = (
        "| loader | workers | chunk cache | rows/s | fixed overhead: RSS (anon) | epoch order | peak RSS main "
        "| peak RSS per worker (maxrss) "
        "| reader's anon growth: 1/4 epoch, whole epoch | peak PSS, all | limit on RSS | within |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in results:
        o, worker = r.overhead, "-"
        if r.num_workers:
            worker = f"{r.peak_worker['VmRSS']:,.0f} ({r.worker_maxrss_mb:,.0f})"
        lines.append(
            f"| {FORM_NAMES[r.form]} | {r.num_workers} | {r.cache_bytes >> 20} MiB | {r.samples_per_s:,.0f} "
            f"| {o['VmRSS']:,.0f} ({o['RssAnon']:,.0f}) | {r.order_mb:,.0f} | {r.peak_main['VmRSS']:,.0f} | {worker} "
            f"| {r.quarter_growth_mb:,.0f}, {r.growth_mb:,.0f} | {r.peak_pss_total_mb:,.0f} | {r.limit_mb:,.0f} "
            f"| {'yes' if r.within else 'NO'} |"
        )
    return header + "\n".join(lines)


def parts_note(results: list[ScaleMeasurement]) -> str:
    """The peak of each part of the reader's resident set (anonymous, file, shared memory)."""
    notes = []
    for r in results:
        text = ", ".join(f"{k.removeprefix('Rss').lower()} {r.reader.get(k, 0):,.0f}" for k in STATUS_FIELDS[1:])
        notes.append(f"{FORM_NAMES[r.form]}, {r.num_workers} workers, {r.cache_bytes >> 20} MiB: {text}")
    return "Peaks of the reader's resident set by kind (MiB): " + "; ".join(notes) + "."


def growth_note(results: list[ScaleMeasurement]) -> str:
    """How the growth followed the cache bound (the same loader and worker count, two bounds)."""
    lines = []
    for form, w in [(f, w) for f in FORMS for w in WORKERS]:
        runs = sorted((r for r in results if (r.form, r.num_workers) == (form, w)), key=lambda r: r.cache_bytes)
        if len(runs) == 2:
            low, high = runs
            lines.append(
                f"{FORM_NAMES[form]}, {w} workers: the reader's growth went from {low.growth_mb:,.0f} to "
                f"{high.growth_mb:,.0f} MiB "
                f"when the bound went from {low.bound_mb:,.0f} to {high.bound_mb:,.0f} MiB "
                f"({high.growth_mb - low.growth_mb:+,.0f} MiB for {high.bound_mb - low.bound_mb:+,.0f} MiB)."
            )
    return " ".join(lines)


def ddp_table(runs: list[DdpMeasurement]) -> str:
    """The Markdown table of the DDP runs and the 2-rank / 1-rank ratio of medians."""
    header = (
        "| ranks | rows | seconds (barrier to barrier) | aggregate rows/s | rows per rank | each rank's loop (s) |\n"
    )
    header += "|---:|---:|---:|---:|---|---|\n"
    lines = [
        f"| {r.world} | {r.rows:,} | {r.seconds:.1f} | {r.rows_per_s:,.0f} "
        f"| {', '.join(f'{n:,}' for n in r.rank_rows)} | {', '.join(f'{t:.1f}' for t in r.rank_seconds)} |"
        for r in runs
    ]
    return header + "\n".join(lines)


def ddp_ratio(runs: list[DdpMeasurement]) -> float:
    """Median aggregate rows/s of 2 ranks over the median of 1 rank."""
    rate = {w: float(np.median([r.rows_per_s for r in runs if r.world == w])) for w in RANKS}
    return rate[RANKS[-1]] / rate[RANKS[0]]


def round_ratios(runs: list[DdpMeasurement]) -> list[float]:
    """2 ranks over 1 rank in each round (runs come in interleaved pairs)."""
    pairs = [runs[i : i + len(RANKS)] for i in range(0, len(runs), len(RANKS))]
    rates = [{r.world: r.rows_per_s for r in pair} for pair in pairs]
    return [r[RANKS[-1]] / r[RANKS[0]] for r in rates if len(r) == len(RANKS)]


@dataclass(frozen=True)
class ScaleData:
    """The large store as written: rows, bytes on disk and decoded, seconds to write."""

    rows: int
    chunk_rows: int
    disk_bytes: int
    write_seconds: float

    @property
    def memory_bytes(self) -> int:
        """Bytes of every row decoded (features and label)."""
        return self.rows * ROW_BYTES


def report(
    data: ScaleData, results: list[ScaleMeasurement], ddp: tuple[list[DdpMeasurement], float, float], load: str
) -> str:
    """The Markdown section for RESULTS.md."""
    runs, ddp_write, ddp_mb = ddp
    goal = "met in every run" if all(r.within for r in results) else "NOT met in every run (see 'within')"
    largest = max(CACHE_BOUNDS)
    return (
        "## Scale: bounded memory over a store larger than the chunk cache; DDP ranks on S3\n\n"
        f"### Bounded memory: one epoch over {data.disk_bytes / 1e9:.2f} GB on disk\n\n"
        f"{data.rows:,} rows of {N_FEATURES} random float32 plus an int64 label (the row index): "
        f"{data.disk_bytes / 1e9:.2f} GB on local disk (zstd, the default codec; {data.chunk_rows} rows per chunk), "
        f"{data.memory_bytes / 1e9:.2f} GB decoded, {data.memory_bytes / largest:.0f}x the largest cache bound "
        f"tried; written block by block through `StoreGate.writer` in {data.write_seconds:.0f} s and removed after "
        "the runs. One shuffled epoch per row of the table, each in a fresh subprocess, over "
        f"`StoreGateDataset(chunk_cache_bytes=...)` through `{FORMS['loader']}` or `{FORMS['batches']}`, "
        "workers started with 'fork'. Every row arrived exactly once with its own features. Memory in MiB, "
        "sampled from /proc every 20 ms. The fixed overhead is the main process's "
        "RSS (its anonymous part in brackets) with everything imported and the dataset and loader built, just "
        "before the epoch; workers fork from that state. The epoch order (the sampler's permutation, made in "
        "the main process at the start of each epoch) is the one part that grows with the rows, not with the "
        f"bytes of data or the cache: an int64 per row ({data.rows * 8 / 2**20:,.0f} MiB here) held during the "
        "epoch, and about 4x that in numpy temporaries while it is computed, which glibc keeps in its heap "
        "once freed (its mmap threshold rises to their size); 'epoch order' is the peak of computing it, "
        "measured with tracemalloc. The reader is the main process without workers, the "
        "largest worker with them; its growth is its peak anonymous memory minus the overhead's (a forked "
        "worker maps the libraries' file pages again only as it runs them, so whole-RSS differences would "
        "understate a worker's growth). Limit on RSS: fixed overhead + epoch order + cache bound + "
        f"{WORKING_ALLOWANCE_MB:.0f} MiB of working memory for the batch being read; 'within' when every "
        "process's peak RSS (and the workers' exact maxrss, RUSAGE_CHILDREN) stays under it. The OS page cache "
        "holding the store's files is no process's RSS. Peak PSS sums the main process and its workers "
        f"(shared pages once).{load}\n\n"
        f"{scale_table(results)}\n\n"
        f"Goal (peak RSS within the cache bound plus a fixed overhead): {goal}. {growth_note(results)} "
        f"{parts_note(results)}\n\n"
        f"### DDP: {RANKS[-1]} ranks (gloo, 127.0.0.1) reading one S3 store, against 1 rank\n\n"
        f"{runs[0].rows:,} rows (as above; {ddp_mb:,.0f} MB stored, written in {ddp_write:.0f} s) on moto's S3 "
        "server in its own process. Each rank: `ChunkShuffleSampler(dataset, seed, num_replicas, rank)` in whole "
        "batches of 256, 0 workers; the ranks gather their labels and rank 0 checked that every row arrived "
        "exactly once over the ranks. After one untimed warm-up epoch (1 rank), runs interleaved; every "
        "process (ranks and the S3 server) shares the machine's cores.\n\n"
        f"{ddp_table(runs)}\n\n"
        f"Aggregate throughput of {RANKS[-1]} ranks: {ddp_ratio(runs):.2f}x one rank (medians; round by round: "
        f"{', '.join(f'{r:.2f}' for r in round_ratios(runs))}). The S3 server is one process on the same 2 cores "
        "as the ranks, so the ratio says more about this machine than about storegate."
    )


def main(
    n_rows: int = SCALE_ROWS, ddp_rows: int = DDP_ROWS, min_disk: int = MIN_DISK_BYTES, root: Path | None = None
) -> str:
    """Write the large store under ``root``, run every epoch, remove it (on failure too); then the
    DDP runs on S3. The Markdown section."""
    root = HERE / "_data" / "scale" if root is None else root
    shutil.rmtree(root, ignore_errors=True)
    check_free_disk(root.parent, n_rows * N_FEATURES * 4)
    try:
        data = build_scale_store(root / "store.zarr", n_rows, min_disk)
        load_before = os.getloadavg()[0]
        results = []
        for form in FORMS:
            for workers in WORKERS:
                for cache in CACHE_BOUNDS:
                    results.append(measure_in_subprocess(str(root / "store.zarr"), n_rows, workers, cache, form))
                    growth = results[-1].growth_mb
                    print(f"  {form}, {workers} workers, {cache >> 20} MiB: growth {growth:,.0f} MiB", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load = f" Load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f}."
    return report(data, results, run_ddp(ddp_rows), load)


def build_scale_store(path: Path, n_rows: int, min_disk: int) -> ScaleData:
    """Write the large store and refuse it when it holds less than ``min_disk`` bytes on disk."""
    import zarr

    seconds = write_store(str(path), n_rows)
    disk = dir_bytes(path)
    print(f"  store written in {seconds:.0f} s: {disk / 1e9:.2f} GB on disk", flush=True)
    if disk < min_disk:
        raise RuntimeError(f"the store holds {disk:,} bytes on disk, less than the {min_disk:,} asked for: add rows")
    chunk_rows = zarr.open_array(str(path / DATA_ID / PHASE / "x"), mode="r").chunks[0]
    return ScaleData(n_rows, int(chunk_rows), disk, seconds)


def _cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Scale benchmark; without options, run it all.")
    parser.add_argument("--rows", type=int, default=SCALE_ROWS, help=f"rows of the large store ({SCALE_ROWS:,})")
    parser.add_argument("--ddp-rows", type=int, default=DDP_ROWS, help=f"rows of the S3 store ({DDP_ROWS:,})")
    parser.add_argument("--measure", metavar="JSON", help="(internal) run one epoch in this process")
    parser.add_argument("--rank", metavar="JSON", help="(internal) run one DDP rank in this process")
    args = parser.parse_args(argv)
    if args.measure:
        request = json.loads(args.measure)["epoch"]
        print(RESULT_MARK + json.dumps(asdict(measure_epoch(**request))), flush=True)
    elif args.rank:
        rank_main(**json.loads(args.rank))
    else:
        print(main(args.rows, args.ddp_rows, MIN_DISK_BYTES if args.rows == SCALE_ROWS else 0))


if __name__ == "__main__":
    _cli(sys.argv[1:])
