"""Full-phase read and write throughput through StoreGate on S3, against plain s3fs.

A moto S3 server runs in its own process on 127.0.0.1 (``python -m moto.server``), so
the figures measure the transport that moto offers here; only the ratios carry over to
another server. The baseline is s3fs moving exactly the same bytes in objects of exactly
the same size, concurrently (``fs.pipe({key: bytes})`` and ``fs.cat([keys])``): the limit
of the transport for storegate, which writes and reads one object per zarr chunk.

Measurements, interleaved round by round (the order alternates) so that drift in the load
of the shared machine falls on both sides of each ratio:

- write: ``StoreGate.add_data`` of the whole array (uncompressed, 4 MiB chunks) into a
  store just opened with mode 'w' (untimed), with ``concurrency`` 32 (storegate's default
  for remote stores) and 10 (zarr's own default), against ``s3fs.pipe`` of the same chunks;
- read: ``StoreGate.get_data`` of the whole phase from a store opened with mode 'r'
  with ``concurrency`` 32 and 10, against ``s3fs.cat`` of the same objects;
- for reference, zarr-python alone writing and reading the same array on the same server
  (same chunks, S3 settings and concurrency as storegate's defaults): what zarr's own
  path costs on top of s3fs, which storegate inherits.

Goal (issue 3): StoreGate's read at least 0.8x the s3fs read.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

ROWS_PER_CHUNK = 1024
ROW = 1024  # float32 values per row: 4 KiB rows, 4 MiB chunks
N_CHUNKS = 52  # 52 x 4 MiB = 218 MB
ROUNDS = 5
READ_GOAL = 0.8
BUCKET = "bench-s3"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_process() -> Iterator[str]:
    """``python -m moto.server`` in its own process; yields its endpoint URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto.server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


Step = tuple[str, Callable[[], Any]]


def measure(endpoint: str) -> dict[str, list[float]]:
    """Seconds per round for each measurement."""
    import s3fs

    options: dict[str, Any] = {"key": "bench", "secret": "bench", "client_kwargs": {"endpoint_url": endpoint}}
    # The baselines may keep as many connections open as storegate's default S3 config.
    fs = s3fs.S3FileSystem(**options, config_kwargs={"max_pool_connections": 32})
    fs.mkdir(BUCKET)
    data = np.random.default_rng(0).random((N_CHUNKS * ROWS_PER_CHUNK, ROW), dtype=np.float32)
    times: dict[str, list[float]] = {}
    for round_ in range(ROUNDS):
        # Writes first in every round (the reads need the data); within each kind the
        # order alternates. Stores are opened (mode 'w' empties the prefix) untimed.
        for steps in (_write_steps(fs, options, data), _read_steps(fs, options, data)):
            for name, step in _alternate(steps, round_):
                times.setdefault(name, []).append(_timed(step))
    return times


def _chunk_keys() -> list[str]:
    return [f"{BUCKET}/raw/c/{i}" for i in range(N_CHUNKS)]


def _chunks(data: np.ndarray) -> dict[str, bytes]:
    rows = ROWS_PER_CHUNK
    return {key: data[i * rows : (i + 1) * rows].tobytes() for i, key in enumerate(_chunk_keys())}


def _sg_args(options: dict[str, Any], n: int, mode: str) -> dict[str, Any]:
    where = f"s3://{BUCKET}/sg-{n}"
    return {"output_dir": where, "storage_options": options, "chunk": ROWS_PER_CHUNK, "compressor": None, "mode": mode}


def _zarr_store(options: dict[str, Any], read_only: bool) -> Any:
    from zarr.storage import FsspecStore

    from storegate.locations import DEFAULT_S3_CONFIG

    opts = {**options, "config_kwargs": DEFAULT_S3_CONFIG}  # the same settings as storegate's
    return FsspecStore.from_url(f"s3://{BUCKET}/zarr", storage_options=opts, read_only=read_only)


def _write_steps(fs: Any, options: dict[str, Any], data: np.ndarray) -> list[Step]:
    import zarr

    from storegate import StoreGate

    chunks = _chunks(data)
    steps: list[Step] = [("s3fs pipe", lambda: fs.pipe(chunks))]
    for n in (32, 10):
        writer = StoreGate("zarr", {**_sg_args(options, n, "w"), "concurrency": n}, data_id="bench")
        steps.append((f"StoreGate write ({n} in flight)", lambda sg=writer: sg.add_data("x", data, phase="train")))
    array = zarr.create_array(
        _zarr_store(options, False),
        shape=data.shape,
        dtype=data.dtype,
        chunks=(ROWS_PER_CHUNK, ROW),
        compressors=None,
        fill_value=0.0,
        overwrite=True,
    )

    def raw_zarr() -> None:
        with zarr.config.set({"async.concurrency": 32}):
            array[...] = data

    return [*steps, ("zarr-python write (32 in flight)", raw_zarr)]


def _read_steps(fs: Any, options: dict[str, Any], data: np.ndarray) -> list[Step]:
    import zarr

    from storegate import StoreGate

    keys = _chunk_keys()

    def cat() -> None:
        if sum(len(v) for v in fs.cat(keys).values()) != data.nbytes:
            raise AssertionError("s3fs read back a different number of bytes")

    steps: list[Step] = [("s3fs cat", cat)]
    for n in (32, 10):
        reader = StoreGate("zarr", {**_sg_args(options, 32, "r"), "concurrency": n}, data_id="bench")
        steps.append((f"StoreGate read ({n} in flight)", lambda sg=reader: _check(sg.get_data("x", "train"), data)))
    array = zarr.open_array(_zarr_store(options, True), mode="r")

    def raw_zarr() -> None:
        with zarr.config.set({"async.concurrency": 32}):
            _check(array[...], data)

    return [*steps, ("zarr-python read (32 in flight)", raw_zarr)]


def _alternate(steps: list[tuple[str, Callable[[], Any]]], round_: int) -> list[tuple[str, Callable[[], Any]]]:
    return steps if round_ % 2 == 0 else steps[::-1]


def _check(out: np.ndarray, data: np.ndarray) -> None:
    if out.shape != data.shape or not np.array_equal(out[:: ROWS_PER_CHUNK // 4], data[:: ROWS_PER_CHUNK // 4]):
        raise AssertionError("StoreGate read back different data")


def report(times: dict[str, list[float]]) -> str:
    mb = N_CHUNKS * ROWS_PER_CHUNK * ROW * 4 / 1e6
    speed = {name: mb / statistics.median(ts) for name, ts in times.items()}
    rows = [
        ("write", "StoreGate write (32 in flight)", "s3fs pipe"),
        ("write", "StoreGate write (10 in flight)", "s3fs pipe"),
        ("write", "zarr-python write (32 in flight)", "s3fs pipe"),
        ("read", "StoreGate read (32 in flight)", "s3fs cat"),
        ("read", "StoreGate read (10 in flight)", "s3fs cat"),
        ("read", "zarr-python read (32 in flight)", "s3fs cat"),
    ]
    lines = [
        "## S3: full-phase throughput through StoreGate against s3fs (moto server in its own process)",
        "",
        f"{mb:.0f} MB of float32, {N_CHUNKS} uncompressed chunks of 4 MiB; the baseline moves the same "
        f"bytes in objects of the same size. MB/s: medians of {ROUNDS} interleaved rounds; ratio: median "
        "of the per-round speed ratios contender / s3fs (min - max over rounds).",
        "",
        "| operation | contender | MB/s | s3fs baseline | MB/s | ratio | range |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    ratios = {ours: _ratios(times[ours], times[base]) for _, ours, base in rows}
    for op, ours, base in rows:
        r = ratios[ours]
        lines.append(
            f"| {op} | {ours} | {speed[ours]:.0f} | {base} | {speed[base]:.0f} | "
            f"{statistics.median(r):.2f} | {min(r):.2f} - {max(r):.2f} |"
        )
    ratio = statistics.median(ratios["StoreGate read (32 in flight)"])
    verdict = "met" if ratio >= READ_GOAL else "NOT met"
    lines += ["", f"Goal: StoreGate read (default concurrency) >= {READ_GOAL}x s3fs cat: {verdict} ({ratio:.2f}x)."]
    return "\n".join(lines)


def _ratios(ours: list[float], base: list[float]) -> list[float]:
    """Per-round speed ratios ours / base (times are seconds, so base / ours)."""
    return [b / o for o, b in zip(ours, base, strict=True)]


def main() -> str:
    """Run the S3 benchmark and return its Markdown section."""
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    with moto_process() as endpoint:
        return report(measure(endpoint))


if __name__ == "__main__":
    print(main())
