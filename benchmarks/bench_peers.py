"""Peer benchmark: storegate beside litdata, mosaicml-streaming, webdataset and a numpy memmap.

The same rows (``--rows``, 100,000 by default: 784 float32, image-like, plus an int64 label
that is the row index) are written once per contender, in its own format, on local disk and
on an S3 server (moto's, in its own process on 127.0.0.1), each through its own S3 client:

- storegate: a StoreGate zarr store (default codec and chunking; s3fs with ``storage_options``).
  Read two ways: (1) ``StoreGateDataset`` + ``ChunkShuffleSampler`` + ``DataLoader(batch_size=256)``
  (per-sample collate) and (2) whole batches (``BatchSampler`` over the same sampler,
  ``batch_size=None``);
- litdata: ``litdata.optimize`` to chunk files (its boto3 client uploads to ``s3://``), read with
  ``StreamingDataset(shuffle=True)`` + ``StreamingDataLoader``; on S3 the endpoint and keys go in
  ``storage_options``, and with workers whole chunks are decoded (see
  ``LITDATA_S3_WORKERS_BATCH_DECODE``);
- mosaicml-streaming: ``MDSWriter`` (its own uploader for an ``s3://`` remote, endpoint from
  ``S3_ENDPOINT_URL``), read with ``StreamingDataset(shuffle=True)`` + ``DataLoader``;
- webdataset: tar shards written with ``ShardWriter`` (on S3, its ``post`` hook uploads each shard
  with boto3), read with ``shardshuffle`` and a shuffle buffer of 1,000 samples, batched in the
  pipeline; on S3 through its ``pipe:`` opener (webdataset has no S3 client: a command streams
  each shard to stdout, here boto3 in a subprocess, like the ``aws s3 cp`` of its docs);
- a numpy memmap of a ``.npy`` file with random per-sample access (local disk only: a memmap
  needs a file).

Each (contender, place, workers) runs one shuffled epoch of batch_size 256 in a fresh
subprocess, with 0 and 2 workers ('fork'). Its time includes starting the workers and, for
readers that copy remote data into a local cache first (litdata, mosaicml-streaming), the
download (the cache starts empty). Every run checks that each row arrived exactly once,
with its own features; a contender that fails, or delivers a row twice or never, fails the
benchmark. Peak memory is the peak of the summed PSS of the run's process and its
children (workers), sampled every 20 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_loader import DataPaths, MemmapDataset, PeakPss, make_rows, peak_rss_self_mb, run_measurement  # noqa: E402

N_ROWS = 100_000
N_FEATURES = 784
BATCH_SIZE = 256
WORKERS = (0, 2)
PLACES = ("local", "s3")
SEED = 0
SHUFFLE_BUFFER = 1_000  # webdataset's shuffle buffer (samples), as in the issue
SHARD_BYTES = 64 << 20  # litdata / MDS chunk and webdataset shard size
DATA_ID, PHASE = "bench", "train"
BUCKET = "bench-peers"
KEY, SECRET, REGION = "bench", "bench", "us-east-1"
RESULT_MARK = "BENCH_PEERS_RESULT "
RUN_TIMEOUT = 180.0  # seconds one run may take before it counts as failed
CONTENDERS = ("storegate_loader", "storegate", "storegate_batches", "litdata", "mds", "webdataset", "memmap")
PEER_CONTENDERS = frozenset({"litdata", "mds", "webdataset"})
LABELS = {
    "storegate_loader": "storegate: StoreGateDataLoader (the README's first call)",
    "storegate": "storegate: StoreGateDataset + ChunkShuffleSampler, per-sample collate",
    "storegate_batches": "storegate: whole batches (BatchSampler, batch_size=None)",
    "litdata": "litdata: StreamingDataset + StreamingDataLoader",
    "mds": "mosaicml-streaming: MDS + StreamingDataset",
    "webdataset": f"webdataset: tar shards, shuffle buffer {SHUFFLE_BUFFER:,}",
    "memmap": "numpy memmap per-sample",
}
#: The format each contender reads (the two storegate readers share one store).
FORMAT = {"storegate_batches": "storegate", "storegate_loader": "storegate"}
#: Contenders that cannot read from S3, and why (said in the report, not silently dropped).
NOT_ON_S3 = {"memmap": "np.memmap needs a local file"}


# --- where the data lives --------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """Local disk, or the S3 server at ``endpoint``; ``root`` is the local working directory."""

    name: str
    root: str
    endpoint: str = ""

    def env(self) -> dict[str, str]:
        """Environment for the peers' own S3 clients (boto3, the AWS CLI, mosaicml-streaming)."""
        if not self.endpoint:
            return {}
        return {
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "S3_ENDPOINT_URL": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def storage_options(self) -> dict[str, Any]:
        """s3fs options for storegate."""
        return {"key": KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": self.endpoint}}

    def litdata_storage_options(self) -> dict[str, Any]:
        """litdata's ``storage_options`` for an S3-compatible endpoint, as its README gives them.

        litdata passes them to ``boto3.client("s3", ...)`` and they travel with the pickled
        dataset into every worker (environment variables depend on the start method); its
        obstore path takes endpoint, region and keys from that boto3 client.
        """
        return {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": KEY,
            "aws_secret_access_key": SECRET,
            "region_name": REGION,
        }

    def url(self, name: str) -> str:
        """Where a format called ``name`` lives: a local directory or an ``s3://`` prefix."""
        return f"s3://{BUCKET}/{name}" if self.endpoint else str(Path(self.root) / name)

    def cache(self, name: str) -> str:
        """A fresh local directory (for caches and staging)."""
        path = Path(self.root) / "cache" / f"{name}-{time.time_ns()}"
        path.mkdir(parents=True)
        return str(path)


@contextlib.contextmanager
def peer_env(place: Place) -> Iterator[None]:
    """Set the peers' S3 environment for the duration (restoring what was there)."""
    saved = {k: os.environ.get(k) for k in place.env()}
    os.environ.update(place.env())
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3_client(place: Place) -> Any:
    """A boto3 client for the S3 server."""
    import boto3

    return boto3.client(
        "s3", endpoint_url=place.endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name=REGION
    )


# --- writing each format -----------------------------------------------------------------------


def write_storegate(place: Place, x: np.ndarray, y: np.ndarray) -> None:
    """A StoreGate zarr store with the default codec and chunking."""
    from storegate import StoreGate

    args: dict[str, Any] = {"output_dir": place.url("storegate.zarr"), "mode": "w"}
    if place.endpoint:
        args["storage_options"] = place.storage_options()
    sg = StoreGate(backend="zarr", backend_args=args, data_id=DATA_ID)
    sg.add_data("x", x, phase=PHASE)
    sg.add_data("y", y, phase=PHASE)
    sg.compile()


def write_memmap(place: Place, x: np.ndarray, y: np.ndarray) -> None:
    """A ``.npy`` pair (local only)."""
    np.save(Path(place.root) / "x.npy", x)
    np.save(Path(place.root) / "y.npy", y)


def import_litdata() -> Any:
    """litdata, allowed to talk to an ``http://`` S3 endpoint.

    litdata 0.2.76 moves chunks with obstore, whose client refuses plain http unless told
    ``allow_http``, and litdata passes fixed client options with no setting for it (moto here
    speaks http only): add it to those options (a private dict, changed in place). obstore's
    ``AWS_ALLOW_HTTP`` variable does not help: explicit client options replace those it reads
    from the environment (measured with obstore 0.12.1). The change lives in this process
    only, so it reaches DataLoader workers started with 'fork', not with 'spawn' (a spawned
    worker imports litdata afresh, and its first chunk GET fails with obstore's
    "builder error ... BadScheme", which is how the spawned S3 run failed). Related:
    https://github.com/developmentseed/obstore/issues/159 (allow_http goes in the client
    options); no litdata issue about it was found.
    """
    import litdata
    from litdata.streaming import downloader

    options = getattr(downloader, "_OBSTORE_CLIENT_OPTIONS", None)
    if isinstance(options, dict):
        options["allow_http"] = "true"
    return litdata


def _litdata_rows(bounds: tuple[int, int, str]) -> Iterator[dict[str, Any]]:
    start, stop, npy = bounds
    x = np.load(npy, mmap_mode="r")
    for i in range(start, stop):
        yield {"x": np.array(x[i]), "y": i}


def write_litdata(place: Place, x: np.ndarray, y: np.ndarray) -> None:
    """``litdata.optimize`` over ranges of rows (one worker: the machine has 2 cores)."""
    litdata = import_litdata()

    npy = str(Path(place.root) / "lit-source.npy")
    np.save(npy, x)  # optimize's workers read the rows from here rather than pickling them
    step = 5_000
    inputs = [(s, min(s + step, len(y)), npy) for s in range(0, len(y), step)]
    # optimize sets the process-wide start method to 'spawn' (force=True) and leaves it so; put
    # back the one this process had, as the benchmarks run after this one share the process.
    # Its spawned worker re-imports the caller's __main__, which must therefore be guarded.
    start_method = multiprocessing.get_start_method(allow_none=True)
    with peer_env(place), _start_method_restored(start_method):
        litdata.optimize(
            fn=_litdata_rows,
            inputs=inputs,
            output_dir=place.url("litdata"),
            chunk_bytes=SHARD_BYTES,
            num_workers=1,
            mode="overwrite",
            storage_options=place.litdata_storage_options() if place.endpoint else {},
            verbose=False,
        )
    os.remove(npy)


@contextlib.contextmanager
def _start_method_restored(method: str | None) -> Iterator[None]:
    try:
        yield
    finally:
        multiprocessing.set_start_method(method, force=True)


def import_streaming() -> Any:
    """mosaicml-streaming, importable beside a CPU torch.

    ``import streaming`` imports ``streaming.vision``, which imports torchvision; the only
    torchvision wheel for torch 2.13 on our package index is a CUDA build, whose import fails
    beside the CPU torch (``operator torchvision::nms does not exist``). MDS reading and writing
    never touch torchvision, so when it cannot be imported, a stand-in with the two names
    ``streaming.vision`` imports (which raise if called) takes its place.
    """
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        _stand_in_torchvision()
    return importlib.import_module("streaming")


def _stand_in_torchvision() -> None:
    import importlib.machinery
    import types

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("torchvision is not importable here (bench_peers' stand-in)")

    modules = {n: types.ModuleType(n) for n in ("torchvision", "torchvision.datasets", "torchvision.transforms")}
    modules["torchvision.transforms.functional"] = types.ModuleType("torchvision.transforms.functional")
    modules["torchvision.datasets"].VisionDataset = type("VisionDataset", (), {"__init__": unavailable})  # type: ignore[attr-defined]
    modules["torchvision.datasets"].CIFAR10 = unavailable  # type: ignore[attr-defined]
    modules["torchvision.transforms.functional"].to_tensor = unavailable  # type: ignore[attr-defined]
    for name, module in modules.items():  # find_spec (transformers asks) needs a spec
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    sys.modules.update(modules)


def write_mds(place: Place, x: np.ndarray, y: np.ndarray) -> None:
    """``MDSWriter``; on S3 it stages shards locally and uploads them with its own client."""
    MDSWriter = import_streaming().MDSWriter

    out: Any = place.url("mds")
    if place.endpoint:
        out = (str(Path(place.cache("mds")) / "staging"), out)  # MDSWriter wants a new directory
    columns = {"x": f"ndarray:float32:{N_FEATURES}", "y": "int64"}
    with peer_env(place), MDSWriter(out=out, columns=columns, size_limit=SHARD_BYTES, exist_ok=True) as writer:
        for i in range(len(y)):
            writer.write({"x": x[i], "y": y[i]})


def write_webdataset(place: Place, x: np.ndarray, y: np.ndarray) -> None:
    """``ShardWriter`` tar shards; on S3, each finished shard is uploaded with boto3."""
    import webdataset as wds

    local = Path(place.cache("wds-staging") if place.endpoint else place.url("webdataset"))
    local.mkdir(parents=True, exist_ok=True)
    client = s3_client(place) if place.endpoint else None

    def upload(path: str) -> None:
        if client is not None:
            client.upload_file(path, BUCKET, f"webdataset/{Path(path).name}")
            os.remove(path)

    with wds.ShardWriter(str(local / "shard-%06d.tar"), maxsize=SHARD_BYTES, post=upload, verbose=0) as sink:
        for i in range(len(y)):
            sink.write({"__key__": f"{i:08d}", "x.npy": x[i], "y.cls": int(y[i])})


WRITERS: dict[str, Callable[[Place, np.ndarray, np.ndarray], None]] = {
    "storegate": write_storegate,
    "litdata": write_litdata,
    "mds": write_mds,
    "webdataset": write_webdataset,
    "memmap": write_memmap,
}


#: webdataset has no S3 opener of its own; its documented way is a ``pipe:`` command that
#: writes the object to stdout. This one streams it with boto3 (endpoint and keys from the
#: environment), so it needs nothing beyond the bench extra.
S3_PIPE = (
    "import boto3, sys; body = boto3.client('s3').get_object(Bucket=sys.argv[1], Key=sys.argv[2])['Body']; "
    "[sys.stdout.buffer.write(b) for b in body.iter_chunks(1 << 20)]"
)


def webdataset_urls(place: Place) -> list[str]:
    """The shard URLs webdataset reads: local paths, or ``pipe:`` commands streaming from S3."""
    if not place.endpoint:
        return sorted(str(p) for p in Path(place.url("webdataset")).glob("shard-*.tar"))
    listed = s3_client(place).list_objects_v2(Bucket=BUCKET, Prefix="webdataset/")
    keys = sorted(o["Key"] for o in listed.get("Contents", []))
    return [f'pipe:{sys.executable} -c "{S3_PIPE}" {BUCKET} {k}' for k in keys]


# --- reading: one loader per contender, batches as (x, y) numpy arrays --------------------------


def _loader_options(num_workers: int) -> dict[str, Any]:
    options: dict[str, Any] = {"num_workers": num_workers}
    if num_workers:
        options["multiprocessing_context"] = "fork"
    return options


def _storegate(place: Place, num_workers: int, whole_batches: bool, loader: bool = False) -> Iterable[Any]:
    from torch.utils.data import BatchSampler, DataLoader

    from storegate import StoreGate
    from storegate.torch import ChunkShuffleSampler, StoreGateDataLoader, StoreGateDataset

    args: dict[str, Any] = {"output_dir": place.url("storegate.zarr"), "mode": "r"}
    if place.endpoint:
        args["storage_options"] = place.storage_options()
    sg = StoreGate(backend="zarr", backend_args=args, data_id=DATA_ID)
    dataset = StoreGateDataset(sg, PHASE, input_var_names="x", true_var_names="y")
    options = _loader_options(num_workers)
    if loader:
        return StoreGateDataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, seed=SEED, **options)
    sampler = ChunkShuffleSampler(dataset, seed=SEED)
    if whole_batches:
        return DataLoader(
            dataset, sampler=BatchSampler(sampler, BATCH_SIZE, drop_last=False), batch_size=None, **options
        )
    return DataLoader(dataset, sampler=sampler, batch_size=BATCH_SIZE, **options)


def _memmap(place: Place, num_workers: int) -> Iterable[Any]:
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    root = Path(place.root)
    paths = DataPaths(str(root), "", str(root / "x.npy"), str(root / "y.npy"), "", _n_rows(place), 0)
    dataset = MemmapDataset(paths)
    sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(SEED))
    return DataLoader(dataset, sampler=sampler, batch_size=BATCH_SIZE, **_loader_options(num_workers))


def _litdata(place: Place, num_workers: int) -> Iterable[Any]:
    litdata = import_litdata()
    StreamingDataLoader, StreamingDataset = litdata.StreamingDataLoader, litdata.StreamingDataset
    extra: dict[str, Any] = {}
    if place.endpoint:
        # litdata copies remote chunks into cache_dir; a local input_dir is read in place.
        extra = {"cache_dir": place.cache("litdata"), "storage_options": place.litdata_storage_options()}
        if num_workers:
            extra["batch_decode"] = LITDATA_S3_WORKERS_BATCH_DECODE
    dataset = StreamingDataset(place.url("litdata"), shuffle=True, seed=SEED, **extra)
    # 'fork' like every other reader: litdata 0.2.76 fetches index.json with boto3, not obstore,
    # so the parent starts no obstore runtime before the fork (its README, "Multi-worker s3://").
    return StreamingDataLoader(dataset, batch_size=BATCH_SIZE, **_loader_options(num_workers))


#: litdata's ``batch_decode`` for S3 runs with workers: the whole chunk, not its default window.
#: With its default (256 rows for these samples) an epoch of 100,000 rows on S3 with 2 workers
#: would take about 13 minutes (measured: 7,168 rows in 57 s), which is how it "hung" until the
#: timeout. Two litdata 0.2.76 behaviours meet there. (1) A chunk whose rows are split between
#: two workers is not memory-mapped (item_loader's ``_mmap_allowed_chunks`` leaves shared chunks
#: out, https://github.com/Lightning-AI/litData/pull/849), and an unmapped chunk's decode window
#: is filled by ``_fill_decode_window_path``, which reads the whole chunk file (64 MiB here)
#: again for each window. (2) The in-chunk shuffle (``_block_shuffle``) cuts a worker's part of
#: a chunk into blocks of 256 counted from where that part starts, while decode windows are
#: counted from the chunk's first row; the second worker's part starts mid-chunk, so each block
#: straddles two windows and they keep evicting each other (measured: 722 whole-file reads, 40 ms
#: each, for that worker's first 1,716 rows). With one window per chunk, each chunk is read and
#: decoded once per worker. Local runs read chunks in place (mapped), and without workers no
#: chunk is shared, so those keep the default. No litdata issue about this was found.
LITDATA_S3_WORKERS_BATCH_DECODE = "all"


def _mds(place: Place, num_workers: int) -> Iterable[Any]:
    from torch.utils.data import DataLoader

    StreamingDataset = import_streaming().StreamingDataset

    if place.endpoint:
        dataset = StreamingDataset(
            remote=place.url("mds"), local=place.cache("mds"), shuffle=True, shuffle_seed=SEED, batch_size=BATCH_SIZE
        )
    else:
        dataset = StreamingDataset(local=place.url("mds"), shuffle=True, shuffle_seed=SEED, batch_size=BATCH_SIZE)
    return DataLoader(dataset, batch_size=BATCH_SIZE, **_loader_options(num_workers))


def _webdataset(place: Place, num_workers: int) -> Iterable[Any]:
    import webdataset as wds

    urls = webdataset_urls(place)
    dataset = (
        wds.WebDataset(urls, shardshuffle=len(urls), seed=SEED, nodesplitter=wds.single_node_only, empty_check=False)
        .shuffle(SHUFFLE_BUFFER, seed=SEED)
        .decode()
        .to_tuple("x.npy", "y.cls")
        .batched(BATCH_SIZE)
    )
    return wds.WebLoader(dataset, batch_size=None, **_loader_options(num_workers))


def make_loader(contender: str, place: Place, num_workers: int) -> Iterable[Any]:
    """The loader of one contender over the data at ``place``."""
    if contender in ("storegate", "storegate_batches", "storegate_loader"):
        return _storegate(place, num_workers, contender == "storegate_batches", contender == "storegate_loader")
    readers: dict[str, Callable[[Place, int], Iterable[Any]]] = {
        "memmap": _memmap,
        "litdata": _litdata,
        "mds": _mds,
        "webdataset": _webdataset,
    }
    if contender not in readers:
        raise ValueError(f"contender must be one of {CONTENDERS}. Got {contender!r} instead.")
    return readers[contender](place, num_workers)


def as_arrays(batch: Any) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a batch given as a pair or a dict of tensors or arrays."""
    x, y = (batch["x"], batch["y"]) if isinstance(batch, dict) else batch
    return np.asarray(x), np.asarray(y)


def _n_rows(place: Place) -> int:
    return int(json.loads((Path(place.root) / "rows.json").read_text()))


# --- one measurement -------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """One shuffled epoch of one contender: its time, what arrived and the memory it used."""

    contender: str
    place: str
    num_workers: int
    rows: int
    seconds: float
    delivered: int
    distinct: int
    peak_pss_total_mb: float
    peak_rss_main_mb: float

    @property
    def samples_per_s(self) -> float:
        """Rows delivered per second of the epoch."""
        return self.delivered / self.seconds


def run_epoch(loader: Iterable[Any], n_rows: int) -> tuple[np.ndarray, float]:
    """Iterate once; the labels seen (in order) and the seconds it took (starting workers included)."""
    seen = np.empty(2 * n_rows, dtype=np.int64)  # room for a peer that repeats rows: counted, then refused
    filled = 0
    start = time.perf_counter()
    for batch in loader:
        x, y = as_arrays(batch)
        y = y.astype(np.int64).reshape(-1)
        check_features(x, y)
        if filled + len(y) > len(seen):
            raise RuntimeError(f"the loader gave more than {len(seen)} rows for {n_rows} rows")
        seen[filled : filled + len(y)] = y
        filled += len(y)
    return seen[:filled], time.perf_counter() - start


def check_features(x: np.ndarray, y: np.ndarray) -> None:
    """Refuse a batch whose features are not those of its labels (feature 0 encodes the row)."""
    expected = (y % 256).astype(np.float32) / np.float32(255)
    if x.shape != (len(y), N_FEATURES) or not np.array_equal(x[:, 0], expected):
        raise RuntimeError(f"a batch of shape {x.shape} does not hold the features of its labels")


def exactly_once(seen: np.ndarray, n_rows: int) -> str:
    """An empty string when each of ``n_rows`` rows was seen once; else what went wrong."""
    counts = np.bincount(seen, minlength=n_rows) if len(seen) else np.zeros(n_rows, dtype=np.int64)
    if len(counts) == n_rows and np.all(counts == 1):
        return ""
    missing, repeated = int(np.sum(counts[:n_rows] == 0)), int(np.sum(counts > 1))
    return f"{len(seen):,} rows arrived for {n_rows:,}: {missing:,} never, {repeated:,} more than once"


def measure(contender: str, place: Place, num_workers: int) -> Measurement:
    """One epoch of ``contender`` in this process; raises if a row is missing or repeated."""
    n_rows = _n_rows(place)
    with peer_env(place):
        loader = make_loader(contender, place, num_workers)
        with PeakPss() as pss:
            seen, seconds = run_epoch(loader, n_rows)
    problem = exactly_once(seen, n_rows)
    if problem:
        raise RuntimeError(f"{LABELS[contender]} on {place.name} with {num_workers} workers: {problem}")
    return Measurement(
        contender=contender,
        place=place.name,
        num_workers=num_workers,
        rows=n_rows,
        seconds=seconds,
        delivered=len(seen),
        distinct=len(np.unique(seen)),
        peak_pss_total_mb=pss.peak_mb,
        peak_rss_main_mb=peak_rss_self_mb(),
    )


def measure_in_subprocess(contender: str, place: Place, num_workers: int, timeout: float = 900) -> Measurement:
    """:func:`measure` in a fresh interpreter (its peak memory is its own); fails loudly."""
    request = {"contender": contender, "place": asdict(place), "num_workers": num_workers}
    what = f"{LABELS[contender]} on {place.name} with {num_workers} workers"
    return Measurement(**run_measurement(Path(__file__), request, RESULT_MARK, timeout, what))


def _measure_main(request: str) -> None:
    args = json.loads(request)
    result = measure(args["contender"], Place(**args["place"]), args["num_workers"])
    print(RESULT_MARK + json.dumps(asdict(result)), flush=True)


# --- the run ---------------------------------------------------------------------------------


def available(contenders: Iterable[str] = CONTENDERS) -> list[str]:
    """The contenders whose packages are installed (storegate and memmap always are)."""
    module = {"litdata": "litdata", "mds": "streaming", "webdataset": "webdataset"}
    return [c for c in contenders if c not in module or importlib.util.find_spec(module[c]) is not None]


def write_all(place: Place, contenders: list[str], n_rows: int) -> dict[str, float]:
    """Write every format the contenders read at ``place``; seconds per format."""
    x, y = make_rows(n_rows)
    Path(place.root).mkdir(parents=True, exist_ok=True)
    (Path(place.root) / "rows.json").write_text(json.dumps(n_rows))
    seconds = {}
    for fmt in dict.fromkeys(FORMAT.get(c, c) for c in contenders):
        if place.endpoint and fmt in NOT_ON_S3:
            continue
        start = time.perf_counter()
        WRITERS[fmt](place, x, y)
        seconds[fmt] = time.perf_counter() - start
        print(f"  {place.name}: {fmt} written in {seconds[fmt]:.1f} s", flush=True)
    return seconds


@dataclass(frozen=True)
class Failure:
    """A peer's run that raised, lost or repeated a row, or did not end in time."""

    contender: str
    place: str
    num_workers: int
    reason: str


#: The failures of the last :func:`main`; run_all.py exits non-zero when there are any.
FAILURES: list[Failure] = []


def run_place(
    place: Place, contenders: list[str], n_rows: int, timeout: float = RUN_TIMEOUT
) -> tuple[dict[str, float], list[Measurement], list[Failure]]:
    """Write the formats at ``place`` and run every contender with every worker count.

    storegate's and the memmap's failures raise at once; a peer's is recorded and the run goes on,
    so one peer that hangs does not hide every other figure.
    """
    writes = write_all(place, contenders, n_rows)
    results, failures = [], []
    for workers in WORKERS:
        for c in contenders:
            if place.endpoint and c in NOT_ON_S3:
                continue
            try:
                result = measure_in_subprocess(c, place, workers, timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                if c not in PEER_CONTENDERS:
                    raise
                failures.append(Failure(c, place.name, workers, _reason(exc)))
                print(f"  FAILED: {place.name}, {c}, {workers} workers: {failures[-1].reason}", file=sys.stderr)
                continue
            print(f"  {place.name}, {c}, {workers} workers: {result.samples_per_s:,.0f} samples/s", flush=True)
            results.append(result)
    return writes, results, failures


#: A traceback's closing line: an exception's (dotted) name, then its message or nothing.
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(:|$)")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"did not finish within {exc.timeout:.0f} s"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # A peer may print more after its traceback (obstore a multi-line debug dump whose lines
    # hold "Error" too), so the reason is the last line that opens like an exception's.
    errors = [line for line in lines if _ERROR_LINE.match(line)]
    return (errors or lines or [type(exc).__name__])[-1][:300]


def versions() -> str:
    """Versions of the peers and of torch, for the report."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("storegate", "torch", "litdata", "mosaicml-streaming", "webdataset", "boto3"):
        with contextlib.suppress(PackageNotFoundError):
            out.append(f"{dist} {version(dist)}")
    return ", ".join(out)


def format_table(results: list[Measurement], writes: dict[tuple[str, str], float]) -> str:
    """A Markdown table; 'x memmap' and 'x storegate' compare runs with the same workers, on local disk."""
    by_key = {(r.contender, r.place, r.num_workers): r for r in results}
    header = (
        "| contender | place | workers | samples/s | x memmap (local) | x storegate (same place) "
        "| write s | peak PSS, main + workers (MB) | peak RSS main (MB) |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in results:
        base = by_key.get(("memmap", "local", r.num_workers))
        sg = by_key.get(("storegate", r.place, r.num_workers))
        write = writes.get((r.place, FORMAT.get(r.contender, r.contender)))
        lines.append(
            f"| {LABELS[r.contender]} | {r.place} | {r.num_workers} | {r.samples_per_s:,.0f} "
            f"| {_ratio(r, base)} | {_ratio(r, sg)} | {'' if write is None else f'{write:.1f}'} "
            f"| {r.peak_pss_total_mb:,.0f} | {r.peak_rss_main_mb:,.0f} |"
        )
    return header + "\n".join(lines)


#: storegate's readers and the least each should reach against the fastest peer (issue 12, item 2).
GOALS = {"storegate_loader": 1.3, "storegate_batches": 1.3, "storegate": 1.0}


def goals_table(results: list[Measurement]) -> str:
    """storegate's readers against the fastest peer of each place and worker count (same run)."""
    lines = [
        "| place | workers | fastest peer (samples/s) | "
        + " | ".join(f"{LABELS[c].split(': ', 1)[1]}: x peer (goal {g})" for c, g in GOALS.items())
        + " |",
        "|---|---:|---|" + "---:|" * len(GOALS),
    ]
    for place in dict.fromkeys(r.place for r in results):
        for workers in dict.fromkeys(r.num_workers for r in results):
            here = {r.contender: r for r in results if r.place == place and r.num_workers == workers}
            peers = [r for c, r in here.items() if c in PEER_CONTENDERS]
            if not peers:
                continue
            best = max(peers, key=lambda r: r.samples_per_s)
            cells = []
            for c, goal in GOALS.items():
                ratio = here[c].samples_per_s / best.samples_per_s if c in here else None
                cells.append("n/a" if ratio is None else f"{ratio:.2f} {'met' if ratio >= goal else '**not met**'}")
            label = LABELS[best.contender].split(":", 1)[0]
            lines.append(f"| {place} | {workers} | {label} ({best.samples_per_s:,.0f}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio(result: Measurement, base: Measurement | None) -> str:
    return "n/a" if base is None else f"{result.samples_per_s / base.samples_per_s:.2f}"


def report(
    n_rows: int,
    results: list[Measurement],
    writes: dict[tuple[str, str], float],
    notes: str,
    failures: list[Failure] | None = None,
) -> str:
    """The Markdown section for RESULTS.md."""
    missing = [c for c in CONTENDERS if c not in available()]
    skipped = f" Not installed, so not run: {', '.join(missing)}." if missing else ""
    not_on_s3 = "; ".join(f"{c}: {why}" for c, why in NOT_ON_S3.items())
    return (
        "## Peers: storegate beside litdata, mosaicml-streaming, webdataset and a memmap\n\n"
        f"{n_rows:,} rows of {N_FEATURES} float32 (image-like) plus an int64 label (the row index), "
        "one shuffled epoch, batch_size "
        f"{BATCH_SIZE}, 0 and {WORKERS[-1]} workers ('fork'), each run in a fresh subprocess; the time includes "
        "starting the workers and, on S3, litdata's and mosaicml-streaming's download of chunks into an empty "
        "local cache. Every run checked that each row arrived exactly once with its own features. A failure of "
        "storegate or the memmap stops the benchmark; a peer's (an error, a row lost or repeated, or no end "
        f"within {RUN_TIMEOUT:.0f} s) is listed under the table and makes `make bench` exit non-zero. "
        "Each contender wrote its own format (write s: from in-memory arrays, "
        f"chunks/shards of {SHARD_BYTES >> 20} MiB for the peers, storegate's default chunking and codec) and "
        "read it through its own S3 client from moto's server in its own process. Not on S3: "
        f"{not_on_s3}.{skipped} Versions: {versions()}.{notes}\n\n"
        + format_table(results, writes)
        + "\n\nGoals (issue 12): the default path (`StoreGateDataLoader`, which reads whole batches) and the "
        "whole-batch path at least 1.3 x the fastest peer of the same place and worker count, the ordinary "
        "per-sample `DataLoader` at least 1.0 x (a peer that failed has no figure, so it is not the fastest). "
        "In the two hand-built paths (an ordinary `DataLoader` over `ChunkShuffleSampler`) the dataset "
        "recognises the calls that are the sampler's next batch (storegate/passes.py), so like "
        "`StoreGateDataLoader` its processes read the commit record (one GET on S3) at a pass's start and "
        "after reading chunks, not before every batch. With workers torch deals consecutive batches, which "
        "share chunks, to different workers, so each worker reads most chunks; in a pass a process reads the "
        "chunks of its batch 8 batches ahead in a thread (from local disk, and from S3 in workers: "
        "storegate/readahead.py). `StoreGateDataLoader` deals each "
        "worker a run of consecutive batches, so each chunk is read once.\n\n"
        + goals_table(results)
        + _failed(failures)
        + f"\n\n{PEER_NOTES}"
    )


#: What each peer needed to run here, said with the figures.
PEER_NOTES = (
    "How the peers ran here: litdata 0.2.76 gets the endpoint and keys as `storage_options` (its README's "
    "way for an S3-compatible endpoint) and moves S3 chunks with obstore, which refuses an http:// "
    "endpoint and takes no setting for it from litdata, so the benchmark adds `allow_http` to litdata's "
    "obstore client options (moto speaks http only; the change reaches 'fork' workers, not 'spawn' ones); "
    "on S3 with workers litdata decodes whole chunks (`batch_decode='all'`): with its default window a "
    "chunk split between two workers is not memory-mapped and its whole 64 MiB file is read again for "
    "about every other row, so an epoch would take about 13 minutes at the rate measured (bench_peers.py "
    "says more); mosaicml-streaming 0.13.0 pins numpy<2.2, so it is "
    "installed with --no-deps beside numpy 2.4, and its package import pulls in torchvision, whose only wheel "
    "here is a CUDA build that cannot load beside the CPU torch: a stand-in module replaces it (MDS never "
    "calls it); webdataset has no S3 client, so it reads S3 through its `pipe:` opener, one boto3 subprocess "
    "streaming each shard (its docs use `aws s3 cp` the same way), and on S3 its shards are uploaded by "
    "ShardWriter's `post` hook with boto3. mosaicml-streaming's StreamingDataset gets batch_size 256 and its "
    "default shuffle (py1e); litdata's StreamingDataset shuffle=True; webdataset shardshuffle over all shards."
)


def _failed(failures: list[Failure] | None) -> str:
    if not failures:
        return "\n\nEvery run delivered each row exactly once."
    lines = [f"- {LABELS[f.contender]}, {f.place}, {f.num_workers} workers: {f.reason}" for f in failures]
    return "\n\n**Failed runs** (not in the table):\n\n" + "\n".join(lines)


def main(n_rows: int = N_ROWS, places: tuple[str, ...] = PLACES) -> str:
    """Write the data, run every contender at every place, clean up, return the Markdown section."""
    from bench_s3 import moto_process

    root = HERE / "_data" / "peers"
    shutil.rmtree(root, ignore_errors=True)
    contenders = available()
    results: list[Measurement] = []
    writes: dict[tuple[str, str], float] = {}
    FAILURES.clear()
    load_before = os.getloadavg()[0]
    try:
        if "local" in places:
            w, r, f = run_place(Place("local", str(root / "local")), contenders, n_rows)
            writes.update({("local", k): v for k, v in w.items()})
            results, FAILURES[:] = results + r, FAILURES + f
        if "s3" in places:
            with moto_process() as endpoint:
                s3_client(Place("s3", "", endpoint)).create_bucket(Bucket=BUCKET)
                w, r, f = run_place(Place("s3", str(root / "s3"), endpoint), contenders, n_rows)
            writes.update({("s3", k): v for k, v in w.items()})
            results, FAILURES[:] = results + r, FAILURES + f
    finally:
        shutil.rmtree(root, ignore_errors=True)
    notes = f" Load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f}."
    return report(n_rows, results, writes, notes, FAILURES)


def _cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Peer benchmark; without options, run it all.")
    parser.add_argument("--rows", type=int, default=N_ROWS, help=f"rows of the data set (default {N_ROWS:,})")
    parser.add_argument("--places", default=",".join(PLACES), help="local, s3 or both (comma-separated)")
    parser.add_argument("--measure", metavar="JSON", help="(internal) run one configuration in this process")
    args = parser.parse_args(argv)
    if args.measure:
        _measure_main(args.measure)
    else:
        print(main(args.rows, tuple(args.places.split(","))))
        if FAILURES:
            sys.exit(f"bench_peers: {len(FAILURES)} peer run(s) failed (listed above)")


if __name__ == "__main__":
    _cli(sys.argv[1:])
