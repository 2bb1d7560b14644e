"""Loader benchmark: one shuffled epoch through a torch DataLoader, five ways to read the same rows.

One data set (``N_ROWS`` rows of 784 float32 plus an int64 label) is written once as
(1) a zarr store through StoreGate's zarr backend with the default codec and chunking,
(2) a ``.npy`` file and (3) an HDF5 file with the same rows per chunk. Each configuration
then runs in a fresh subprocess, so its peak memory is its own:

(a) a naive per-sample Dataset whose ``__getitem__`` does ``arr[i]`` on the zarr arrays,
(b) ``StoreGateDataset`` with ``ChunkShuffleSampler`` (batched, chunk-aware reads),
(c) a numpy memmap of the ``.npy`` file with random per-sample access,
(d) h5py per-sample access,
(e) an in-memory ``TensorDataset``.

Per-sample reads from compressed chunks ((a) and (d)) decompress a whole chunk for each
row, so they are timed on a fixed random subset of rows; throughput is samples per second
in every case. The label is the row index, so each run checks that every row it asked for
arrived exactly once, with its own features.

A second table counts decode work: the chunks the zarr backend reads in one epoch of (b),
over every process (a counter in shared memory, incremented by a patched
``ZarrBackend.read`` that forked workers inherit), with 0 and 2 workers, each worker with
its own chunk cache or all of them sharing one (``shared_cache_bytes``, KappaData's
SharedDictDataset), and the peak memory of the parent and its workers together (the sum of
their proportional set sizes, PSS, sampled every 20 ms: a shared page counts once in total).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sized
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
N_ROWS = 100_000
N_FEATURES = 784
BATCH_SIZE = 256
PER_SAMPLE_SUBSET = 1_000
WORKERS = (0, 2)
SEED = 0
DATA_ID = "bench"
PHASE = "train"
H5_COMPRESSION = "gzip"  # h5py has no zstd without a plugin; gzip is its built-in codec
KINDS = ("naive_zarr", "storegate", "storegate_batches", "memmap", "h5py", "tensor")
LABELS = {
    "naive_zarr": "(a) naive zarr per-sample",
    "storegate": "(b) StoreGateDataset + ChunkShuffleSampler",
    "storegate_batches": "(b') as (b), whole batches: BatchSampler, batch_size=None",
    "memmap": "(c) numpy memmap per-sample",
    "h5py": f"(d) h5py per-sample ({H5_COMPRESSION})",
    "tensor": "(e) in-memory TensorDataset",
}
#: Configurations timed on a random subset of rows, because per-row decompression is slow.
SUBSET_KINDS = frozenset({"naive_zarr", "h5py"})
RESULT_MARK = "BENCH_LOADER_RESULT "
#: Decode-work configurations: (workers, shared cache bytes, per-process cache bytes).
SHARED_CACHE_BYTES = 64 << 20
LOCAL_CACHE_BYTES = 64 << 20  # StoreGateDataset's default
DECODE_RUNS = (  # (workers, shared cache bytes, per-process cache bytes, StoreGateDataLoader)
    (0, 0, LOCAL_CACHE_BYTES, False),
    (2, 0, LOCAL_CACHE_BYTES, False),
    (2, SHARED_CACHE_BYTES, 0, False),
    (2, SHARED_CACHE_BYTES, LOCAL_CACHE_BYTES, False),
    (2, 0, LOCAL_CACHE_BYTES, True),
)


@dataclass(frozen=True)
class DataPaths:
    """Where one copy of the benchmark data lives in each format."""

    root: str
    zarr_dir: str
    npy_x: str
    npy_y: str
    h5: str
    n_rows: int
    chunk_rows: int

    @property
    def zarr_x(self) -> str:
        """The zarr array of features inside the StoreGate store."""
        return str(Path(self.zarr_dir) / DATA_ID / PHASE / "x")

    @property
    def zarr_y(self) -> str:
        """The zarr array of labels inside the StoreGate store."""
        return str(Path(self.zarr_dir) / DATA_ID / PHASE / "y")


# --- data --------------------------------------------------------------------------------


def make_rows(n_rows: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Image-like rows (mostly zeros, 8-bit grey levels) and their labels (the row index).

    Feature 0 of row ``i`` is ``(i % 256) / 255``, so a reader can check that features and
    labels arrive paired.
    """
    rng = np.random.default_rng(seed)
    levels = rng.integers(0, 256, size=(n_rows, N_FEATURES), dtype=np.uint8)
    levels[rng.random((n_rows, N_FEATURES), dtype=np.float32) < 0.8] = 0  # sparse like MNIST
    x = levels.astype(np.float32) / np.float32(255)
    y = np.arange(n_rows, dtype=np.int64)
    x[:, 0] = _feature0(y)
    return x, y


def _feature0(y: np.ndarray) -> np.ndarray:
    return (y % 256).astype(np.float32) / np.float32(255)


def build_data(root: str | Path, n_rows: int = N_ROWS, chunk_rows: int | None = None) -> DataPaths:
    """Write the same rows as a StoreGate zarr store, a ``.npy`` pair and an HDF5 file.

    ``chunk_rows=None`` keeps StoreGate's default chunking; the HDF5 file copies it.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    x, y = make_rows(n_rows)
    zarr_dir = root / "store.zarr"
    chunk_rows = _write_storegate(zarr_dir, x, y, chunk_rows)
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", y)
    _write_h5(root / "data.h5", x, y, chunk_rows)
    return DataPaths(
        root=str(root),
        zarr_dir=str(zarr_dir),
        npy_x=str(root / "x.npy"),
        npy_y=str(root / "y.npy"),
        h5=str(root / "data.h5"),
        n_rows=n_rows,
        chunk_rows=chunk_rows,
    )


def _write_storegate(path: Path, x: np.ndarray, y: np.ndarray, chunk_rows: int | None) -> int:
    from storegate import StoreGate

    args: dict[str, Any] = {"output_dir": str(path), "mode": "w"}
    if chunk_rows is not None:
        args["chunk"] = chunk_rows
    sg = StoreGate(backend="zarr", backend_args=args, data_id=DATA_ID)
    sg.add_data("x", x, phase=PHASE)
    sg.add_data("y", y, phase=PHASE)
    sg.compile()
    chunk_rows = sg.backend_object.info(DATA_ID, PHASE, "x").chunk_rows
    assert chunk_rows is not None
    return chunk_rows


def _write_h5(path: Path, x: np.ndarray, y: np.ndarray, chunk_rows: int) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=x, chunks=(min(chunk_rows, len(x)), N_FEATURES), compression=H5_COMPRESSION)
        f.create_dataset("y", data=y, chunks=(min(chunk_rows, len(y)),), compression=H5_COMPRESSION)


def describe_data(paths: DataPaths) -> dict[str, Any]:
    """Codec, chunking and bytes on disk of each copy, for the report."""
    import zarr

    array = zarr.open_array(paths.zarr_x, mode="r")
    codecs = ", ".join(type(c).__name__.removesuffix("Codec") for c in array.compressors) or "none"
    return {
        "zarr_codec": codecs,
        "zarr_mb": _dir_bytes(Path(paths.zarr_dir)) / 1e6,
        "npy_mb": (Path(paths.npy_x).stat().st_size + Path(paths.npy_y).stat().st_size) / 1e6,
        "h5_mb": Path(paths.h5).stat().st_size / 1e6,
    }


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- per-sample datasets (opened lazily, so only paths cross into workers) -------------------


class _LazyPerSample:
    """A per-sample map-style dataset over two row arrays opened on first use in each process."""

    def __init__(self, paths: DataPaths) -> None:
        self.paths = paths
        self._arrays: tuple[Any, Any] | None = None

    def __len__(self) -> int:
        return self.paths.n_rows

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        import torch

        if self._arrays is None:
            self._arrays = self._open()
        x, y = self._arrays
        # np.array copies: torch refuses to wrap read-only buffers without a warning.
        return torch.from_numpy(np.array(x[i])), torch.from_numpy(np.array(y[i]))

    def __getstate__(self) -> dict[str, Any]:
        return {"paths": self.paths, "_arrays": None}

    def _open(self) -> tuple[Any, Any]:
        raise NotImplementedError


class NaiveZarrDataset(_LazyPerSample):
    """(a) ``arr[i]`` on the zarr arrays of the StoreGate store: one zarr call per row and array."""

    def _open(self) -> tuple[Any, Any]:
        import zarr

        return zarr.open_array(self.paths.zarr_x, mode="r"), zarr.open_array(self.paths.zarr_y, mode="r")


class MemmapDataset(_LazyPerSample):
    """(c) ``np.load(mmap_mode='r')`` and per-row indexing."""

    def _open(self) -> tuple[Any, Any]:
        return np.load(self.paths.npy_x, mmap_mode="r"), np.load(self.paths.npy_y, mmap_mode="r")


class H5Dataset(_LazyPerSample):
    """(d) h5py per-row indexing with h5py's default chunk cache."""

    def _open(self) -> tuple[Any, Any]:
        import h5py

        f = h5py.File(self.paths.h5, "r")
        return f["x"], f["y"]


# --- one measurement ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """One timed epoch (or subset) and the memory it used."""

    kind: str
    num_workers: int
    rows: int
    seconds: float
    rss_imports_mb: float
    peak_rss_main_mb: float
    peak_rss_worker_mb: float

    @property
    def samples_per_s(self) -> float:
        """Rows delivered per second of the timed loop."""
        return self.rows / self.seconds


def make_loader(kind: str, paths: DataPaths, num_workers: int, subset: int | None) -> tuple[Any, np.ndarray]:
    """The DataLoader of one configuration and the rows it will deliver (in no order)."""
    import torch
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SubsetRandomSampler, TensorDataset

    generator = torch.Generator().manual_seed(SEED)
    options: dict[str, Any] = {"batch_size": BATCH_SIZE, "num_workers": num_workers}
    if num_workers:
        options["multiprocessing_context"] = "fork"  # local files: fork is safe and fastest to start
    if kind == "storegate":
        dataset, sampler = _storegate_dataset(paths)
        return DataLoader(dataset, sampler=sampler, **options), np.arange(paths.n_rows)
    if kind == "storegate_batches":
        # dataset[list] returns the batch as tensors: no per-sample split and re-stack.
        dataset, sampler = _storegate_dataset(paths)
        options["sampler"] = BatchSampler(sampler, options.pop("batch_size"), drop_last=False)
        return DataLoader(dataset, batch_size=None, **options), np.arange(paths.n_rows)
    dataset: Any
    if kind == "tensor":
        x, y = np.load(paths.npy_x), np.load(paths.npy_y)
        dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    else:
        dataset = {"naive_zarr": NaiveZarrDataset, "memmap": MemmapDataset, "h5py": H5Dataset}[kind](paths)
    if subset is None:
        rows = np.arange(paths.n_rows)
        sampler: Any = RandomSampler(dataset, generator=generator)
    else:
        rows = np.sort(np.random.default_rng(SEED).choice(paths.n_rows, size=subset, replace=False))
        sampler = SubsetRandomSampler(rows.tolist(), generator=generator)
    return DataLoader(dataset, sampler=sampler, **options), rows


def _storegate_dataset(paths: DataPaths) -> tuple[Sized, Any]:
    from storegate import StoreGate
    from storegate.torch import ChunkShuffleSampler, StoreGateDataset

    sg = StoreGate(backend="zarr", backend_args={"output_dir": paths.zarr_dir, "mode": "r"}, data_id=DATA_ID)
    dataset = StoreGateDataset(sg, PHASE, input_var_names="x", true_var_names="y")
    return dataset, ChunkShuffleSampler(dataset, seed=SEED)


def run_epoch(loader: Any, expected_rows: int) -> tuple[np.ndarray, float]:
    """Iterate the loader once; return the labels seen (in order) and the seconds it took.

    The time includes starting the workers, as a training epoch pays it too. Labels go into
    one array allocated up front: keeping a small array per batch alive would fragment the
    heap and add its own growth to the loader's peak memory.
    """
    seen = np.empty(expected_rows, dtype=np.int64)
    filled = 0
    start = time.perf_counter()
    for x, y in loader:
        labels = y.numpy()
        _check_pairs(x.numpy(), labels)
        if filled + len(labels) > expected_rows:
            raise RuntimeError(f"the loader gave more than the {expected_rows} rows asked for")
        seen[filled : filled + len(labels)] = labels
        filled += len(labels)
    seconds = time.perf_counter() - start
    return seen[:filled], seconds


def _check_pairs(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape != (len(y), N_FEATURES) or not np.array_equal(x[:, 0], _feature0(y)):
        raise RuntimeError(f"a batch of shape {x.shape} does not hold the features of its labels")


def measure(kind: str, paths: DataPaths, num_workers: int, subset: int | None = None) -> Measurement:
    """Time one shuffled pass of configuration ``kind`` in this process and check its rows."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}. Got {kind!r} instead.")
    rss_imports = peak_rss_self_mb()
    loader, rows = make_loader(kind, paths, num_workers, subset)
    seen, seconds = run_epoch(loader, len(rows))
    if not np.array_equal(np.sort(seen), rows):
        raise RuntimeError(f"{kind}: {len(seen)} rows arrived, expected each of {len(rows)} rows once")
    del loader
    gc.collect()  # workers are joined by now; RUSAGE_CHILDREN covers them
    return Measurement(
        kind=kind,
        num_workers=num_workers,
        rows=len(seen),
        seconds=seconds,
        rss_imports_mb=rss_imports,
        peak_rss_main_mb=peak_rss_self_mb(),
        peak_rss_worker_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if num_workers else 0.0,
    )


def peak_rss_self_mb() -> float:
    # Linux keeps the largest ru_maxrss across exec, so a fresh interpreter would report its
    # parent's peak; the high-water mark of this process's own memory (VmHWM) has no such carry-over.
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def measure_in_subprocess(
    kind: str, paths: DataPaths, num_workers: int, subset: int | None = None, timeout: float = 600
) -> Measurement:
    """Run :func:`measure` in a fresh interpreter, so peak memory belongs to this configuration."""
    request = {"kind": kind, "paths": asdict(paths), "num_workers": num_workers, "subset": subset}
    found = run_measurement(Path(__file__), request, RESULT_MARK, timeout, f"{kind} with {num_workers} workers")
    return Measurement(**found)


def run_measurement(script: Path, request: dict[str, Any], mark: str, timeout: float, what: str) -> dict[str, Any]:
    """Run ``script --measure <request as JSON>`` in a fresh interpreter and return the JSON it
    printed after ``mark`` (its last such line); a failure raises, naming ``what``."""
    done = subprocess.run(
        [sys.executable, str(script.resolve()), "--measure", json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(mark)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{what} failed (exit code {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    found: dict[str, Any] = json.loads(lines[-1].removeprefix(mark))
    return found


def _measure_main(request: str) -> None:
    # Import the heavy libraries before the baseline, as every configuration pays them.
    import h5py  # noqa: F401
    import torch  # noqa: F401
    import zarr  # noqa: F401

    import storegate  # noqa: F401

    args = json.loads(request)
    result = measure(args["kind"], DataPaths(**args["paths"]), args["num_workers"], args["subset"])
    print(RESULT_MARK + json.dumps(asdict(result)), flush=True)


# --- decode work: per-process caches against one shared cache -----------------------------------


@dataclass(frozen=True)
class DecodeMeasurement:
    """One epoch of (b): the chunks decoded in every process, its speed and memory."""

    num_workers: int
    shared_bytes: int
    local_bytes: int
    rows: int
    seconds: float
    decoded: int
    chunks: int
    waits: int
    peak_pss_total_mb: float
    peak_rss_main_mb: float
    peak_rss_worker_mb: float
    loader: bool = False  # StoreGateDataLoader rather than DataLoader + ChunkShuffleSampler

    @property
    def samples_per_s(self) -> float:
        """Rows delivered per second of the timed loop."""
        return self.rows / self.seconds

    @property
    def caches(self) -> str:
        """The chunk caches, for the table."""
        local = f"per-process {self.local_bytes >> 20} MiB" if self.local_bytes else ""
        shared = f"shared {self.shared_bytes >> 20} MiB" if self.shared_bytes else ""
        caches = " + ".join(c for c in (shared, local) if c) or "none"
        return f"{caches}, StoreGateDataLoader" if self.loader else caches


def measure_decodes(
    paths: DataPaths, num_workers: int, shared_bytes: int, local_bytes: int, loader: bool = False
) -> DecodeMeasurement:
    """One shuffled epoch of (b) in this process, counting the chunks every process decodes.

    ``loader``: read with StoreGateDataLoader (whole batches, each worker its own run of batches).
    """
    import multiprocessing as mp

    from torch.utils.data import DataLoader

    from storegate import StoreGate
    from storegate.torch import ChunkShuffleSampler, StoreGateDataLoader, StoreGateDataset

    counter = mp.get_context("fork").Value("q", 0)
    sg = StoreGate(backend="zarr", backend_args={"output_dir": paths.zarr_dir, "mode": "r"}, data_id=DATA_ID)
    chunk_rows = {var: sg.backend_object.info(DATA_ID, PHASE, var).chunk_rows or paths.n_rows for var in ("x", "y")}
    options: dict[str, Any] = {"batch_size": BATCH_SIZE, "num_workers": num_workers}
    if num_workers:
        options["multiprocessing_context"] = "fork"
    with _counting_decodes(counter, chunk_rows):
        dataset = StoreGateDataset(sg, PHASE, "x", "y", chunk_cache_bytes=local_bytes, shared_cache_bytes=shared_bytes)
        epoch: Any = (
            StoreGateDataLoader(dataset, shuffle=True, seed=SEED, **options)
            if loader
            else DataLoader(dataset, sampler=ChunkShuffleSampler(dataset, seed=SEED), **options)
        )
        with PeakPss() as pss:
            seen, seconds = run_epoch(epoch, paths.n_rows)
        del epoch
        shared = dataset.shared_cache
        waits = 0 if shared is None else shared.stats().waits
        dataset.close()
    if not np.array_equal(np.sort(seen), np.arange(paths.n_rows)):
        raise RuntimeError(f"{len(seen)} rows arrived, expected each of {paths.n_rows} rows once")
    gc.collect()
    chunks = sum(-(-paths.n_rows // rows) for rows in chunk_rows.values())
    return DecodeMeasurement(
        num_workers=num_workers,
        shared_bytes=shared_bytes,
        local_bytes=local_bytes,
        rows=len(seen),
        seconds=seconds,
        decoded=int(counter.value),
        chunks=chunks,
        waits=waits,
        peak_pss_total_mb=pss.peak_mb,
        peak_rss_main_mb=peak_rss_self_mb(),
        peak_rss_worker_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if num_workers else 0.0,
        loader=loader,
    )


@contextlib.contextmanager
def _counting_decodes(counter: Any, chunk_rows: dict[str, int]) -> Iterator[None]:
    """While it runs, ZarrBackend.read adds the chunks of x and y it reads to ``counter``
    (forked workers inherit the patch and the shared counter)."""
    from storegate.backends.zarr_backend import ZarrBackend

    read = ZarrBackend.read

    def counting(self: Any, data_id: str, phase: str, var: str, selection: Any) -> np.ndarray:
        out = read(self, data_id, phase, var, selection)
        if isinstance(selection, slice) and var in chunk_rows:
            size = chunk_rows[var]
            with counter.get_lock():
                counter.value += (selection.stop - 1) // size - selection.start // size + 1
        return out

    ZarrBackend.read = counting  # type: ignore[method-assign]
    try:
        yield
    finally:
        ZarrBackend.read = read  # type: ignore[method-assign]


class PeakPss:
    """The peak of the summed PSS of this process and its children, sampled in a thread."""

    def __init__(self, every: float = 0.02) -> None:
        import threading

        self.every, self.peak_mb = every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # a run shorter than one interval still gets a figure

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def _sample(self) -> None:
        self.peak_mb = max(self.peak_mb, sum(_pss_kb(pid) for pid in _self_and_children()) / 1024)


def _self_and_children() -> list[int]:
    me = os.getpid()
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{me}/task/{me}/children").read_text().split()
        return [me, *map(int, children)]
    return [me]


def _pss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def measure_decodes_in_subprocess(
    paths: DataPaths, num_workers: int, shared_bytes: int, local_bytes: int, loader: bool = False
) -> DecodeMeasurement:
    """Run :func:`measure_decodes` in a fresh interpreter, so peak memory belongs to it alone."""
    request = json.dumps(
        {
            "paths": asdict(paths),
            "num_workers": num_workers,
            "shared_bytes": shared_bytes,
            "local_bytes": local_bytes,
            "loader": loader,
        }
    )
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--decodes", request],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"decode run with {num_workers} workers failed:\n{done.stdout}\n{done.stderr}")
    return DecodeMeasurement(**json.loads(lines[-1].removeprefix(RESULT_MARK)))


def _decodes_main(request: str) -> None:
    import torch  # noqa: F401
    import zarr  # noqa: F401

    import storegate  # noqa: F401

    args = json.loads(request)
    result = measure_decodes(
        DataPaths(**args["paths"]), args["num_workers"], args["shared_bytes"], args["local_bytes"], args["loader"]
    )
    print(RESULT_MARK + json.dumps(asdict(result)), flush=True)


def run_decodes(paths: DataPaths) -> list[DecodeMeasurement]:
    """Every configuration of :data:`DECODE_RUNS`, each in its own subprocess."""
    results = []
    for workers, shared, local, loader in DECODE_RUNS:
        result = measure_decodes_in_subprocess(paths, workers, shared, local, loader)
        print(f"  {result.caches}, {workers} workers: {result.decoded} chunks decoded", flush=True)
        results.append(result)
    return results


def decode_report(paths: DataPaths, results: list[DecodeMeasurement], load: str = "") -> str:
    """The Markdown section on decode work."""
    header = (
        "| chunk caches | workers | chunks decoded | x the data's chunks | waited for another worker | samples/s "
        "| peak PSS, main + workers (MB) | peak RSS main (MB) | peak RSS per worker (MB) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r.caches} | {r.num_workers} | {r.decoded:,} "
        f"| {r.decoded / r.chunks:.2f} | {r.waits:,} | {r.samples_per_s:,.0f} | {r.peak_pss_total_mb:,.0f} "
        f"| {r.peak_rss_main_mb:,.0f} | {r.peak_rss_worker_mb:,.0f} |"
        for r in results
    ]
    return (
        "### Decode work: each worker's chunk cache against one shared cache\n\n"
        f"One shuffled epoch of (b) ({paths.n_rows:,} rows, batch_size {BATCH_SIZE}, ChunkShuffleSampler's "
        "default window of 4 chunks), counting the chunks of x and y that the zarr backend reads in every "
        "process, and the chunks a worker waited for while another one decoded them. A per-process "
        "cache (`chunk_cache_bytes`, 64 MiB by default) is each process's own; the "
        "shared cache (`shared_cache_bytes`) is one arena in /dev/shm for all of them, asked after the "
        "process's own. Peak PSS sums the proportional set size of the main process and its workers "
        "(sampled every 20 ms): pages they share, the arena included, count once in total. "
        "`StoreGateDataLoader` reads whole batches and deals each worker a run of consecutive batches, "
        "so that each chunk is read by one worker. Workers start "
        f"with 'fork'; each configuration runs in a fresh subprocess.{load}\n\n" + header + "\n".join(lines)
    )


# --- the report --------------------------------------------------------------------------------


def run_all(paths: DataPaths, subset: int = PER_SAMPLE_SUBSET) -> list[Measurement]:
    """Every configuration with every worker count, each in its own subprocess."""
    results = []
    for num_workers in WORKERS:
        for kind in KINDS:
            rows = min(subset, paths.n_rows) if kind in SUBSET_KINDS else None
            result = measure_in_subprocess(kind, paths, num_workers, rows)
            print(f"  {LABELS[kind]}, {num_workers} workers: {result.samples_per_s:,.0f} samples/s", flush=True)
            results.append(result)
    return results


def format_table(results: list[Measurement]) -> str:
    """A Markdown table; ratios compare configurations with the same number of workers."""
    by_key = {(r.kind, r.num_workers): r for r in results}
    header = (
        "| configuration | workers | rows timed | samples/s | x (a) | x (c) "
        "| RSS after imports (MB) | peak RSS main (MB) | peak RSS per worker (MB) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in results:
        a, c = by_key.get(("naive_zarr", r.num_workers)), by_key.get(("memmap", r.num_workers))
        subset = " (random subset)" if r.kind in SUBSET_KINDS else ""
        lines.append(
            f"| {LABELS[r.kind]} | {r.num_workers} | {r.rows:,}{subset} | {r.samples_per_s:,.0f} "
            f"| {_ratio(r, a)} | {_ratio(r, c)} | {r.rss_imports_mb:,.0f} | {r.peak_rss_main_mb:,.0f} "
            f"| {r.peak_rss_worker_mb:,.0f} |"
        )
    return header + "\n".join(lines)


def _ratio(result: Measurement, base: Measurement | None) -> str:
    if base is None:
        return "n/a"
    ratio = result.samples_per_s / base.samples_per_s
    return f"{ratio:,.1f}" if ratio >= 0.1 else f"{ratio:.2g}"


def goals(results: list[Measurement]) -> str:
    """Whether (b) (and (b'), when measured) reach 50x (a) and 0.5x (c) at each worker count."""
    by_key = {(r.kind, r.num_workers): r for r in results}
    lines = []
    for w in WORKERS:
        a, c = by_key.get(("naive_zarr", w)), by_key.get(("memmap", w))
        for kind, name in (("storegate", "(b)"), ("storegate_batches", "(b')")):
            b = by_key.get((kind, w))
            if b is None or a is None or c is None:
                continue
            vs_a, vs_c = b.samples_per_s / a.samples_per_s, b.samples_per_s / c.samples_per_s
            lines.append(
                f"- {w} workers: {name} is {vs_a:,.0f}x (a) (goal 50x: {_met(vs_a >= 50)}) and "
                f"{vs_c:.2f}x (c) (goal 0.5x: {_met(vs_c >= 0.5)})."
            )
    return "\n".join(lines)


def workers_note(results: list[Measurement]) -> str:
    """Which configurations ran slower with workers than without, in this run."""
    by_key = {(r.kind, r.num_workers): r for r in results}
    slower = [
        f"{LABELS[kind].split(' ', 1)[0]} ({by_key[(kind, w)].samples_per_s / by_key[(kind, 0)].samples_per_s:.2f}x)"
        for kind in KINDS
        for w in WORKERS[1:]
        if (kind, 0) in by_key
        and (kind, w) in by_key
        and by_key[(kind, w)].samples_per_s < by_key[(kind, 0)].samples_per_s
    ]
    found = ", ".join(slower) if slower else "none"
    return (
        "With 2 cores, worker processes share the CPU with the main process, and every batch they "
        "make is copied through shared memory: for cheap batches that costs more than it saves. "
        f"Slower with {WORKERS[-1]} workers than with none in this run (speed relative to 0 workers): {found}."
    )


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(paths: DataPaths, results: list[Measurement], build_seconds: float, load: str = "") -> str:
    """The Markdown section for RESULTS.md; ``load`` notes how busy the machine was."""
    d = describe_data(paths)
    return (
        "## Loader: one shuffled epoch through a torch DataLoader\n\n"
        f"{paths.n_rows:,} rows of {N_FEATURES} float32 (image-like: 80% zeros, 8-bit levels) plus an "
        f"int64 label, written once ({build_seconds:.0f} s) as: a StoreGate zarr store (default codec: "
        f"{d['zarr_codec']}, {paths.chunk_rows} rows per chunk, {d['zarr_mb']:.0f} MB on disk), a `.npy` "
        f"pair ({d['npy_mb']:.0f} MB) and an HDF5 file ({H5_COMPRESSION} at h5py's default level, "
        f"{paths.chunk_rows} rows per chunk, {d['h5_mb']:.0f} MB). batch_size {BATCH_SIZE}; workers start "
        "with 'fork'; each configuration runs in a fresh subprocess and its time includes starting the "
        "workers. (a) and (d) decompress a whole chunk per row, so they are timed on the same fixed random "
        f"subset of {PER_SAMPLE_SUBSET:,} rows (in random order); the others run a full shuffled epoch. "
        "Every run checks that each requested row arrived exactly once with its own features. "
        "Ratios (x (a), x (c)) compare runs with the same number of workers. Peak RSS per worker is the "
        "largest worker's (RUSAGE_CHILDREN); after a fork it counts the pages a worker shares with the "
        f"main process.{load}\n\n"
        f"{format_table(results)}\n\n"
        f"Goals:\n{goals(results)}\n\n"
        f"{workers_note(results)}"
    )


def main() -> str:
    """Build the data, run every configuration, remove the data, return the Markdown section."""
    root = HERE / "_data" / "loader"
    shutil.rmtree(root, ignore_errors=True)
    try:
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        paths = build_data(root)
        build_seconds = time.perf_counter() - start
        print(f"  data written in {build_seconds:.0f} s", flush=True)
        results = run_all(paths)
        # Other work on the machine slows every configuration, not always equally: say how much.
        load = f" Load average (1 min) before / after the runs: {load_before:.1f} / {os.getloadavg()[0]:.1f}."
        load_before = os.getloadavg()[0]
        decodes = run_decodes(paths)
        decode_load = f" Load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f}."
        return report(paths, results, build_seconds, load) + "\n\n" + decode_report(paths, decodes, decode_load)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def decodes_only() -> str:
    """Build the data and run the decode-work table alone (``--decodes-only``)."""
    root = HERE / "_data" / "loader_decodes"
    shutil.rmtree(root, ignore_errors=True)
    try:
        paths = build_data(root)
        load_before = os.getloadavg()[0]
        decodes = run_decodes(paths)
        load = f" Load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f}."
        return decode_report(paths, decodes, load)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Loader benchmark; without options, run it all.")
    parser.add_argument("--measure", metavar="JSON", help="(internal) run one configuration in this process")
    parser.add_argument("--decodes", metavar="JSON", help="(internal) run one decode-work configuration")
    parser.add_argument("--decodes-only", action="store_true", help="build the data and run the decode table only")
    args = parser.parse_args(argv)
    if args.measure:
        _measure_main(args.measure)
    elif args.decodes:
        _decodes_main(args.decodes)
    elif args.decodes_only:
        print(decodes_only())
    else:
        print(main())


if __name__ == "__main__":
    _cli(sys.argv[1:])
