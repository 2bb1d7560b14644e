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
  with ``concurrency`` 32 and 10, against ``s3fs.cat`` of the same objects.

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
ROUNDS = 3
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


def measure(endpoint: str) -> dict[str, list[float]]:
    """Seconds per round for each measurement."""
    import s3fs

    from storegate import StoreGate

    options: dict[str, Any] = {"key": "bench", "secret": "bench", "client_kwargs": {"endpoint_url": endpoint}}
    # The baseline may keep as many connections open as storegate's default S3 config.
    fs = s3fs.S3FileSystem(**options, config_kwargs={"max_pool_connections": 32})
    fs.mkdir(BUCKET)
    data = np.random.default_rng(0).random((N_CHUNKS * ROWS_PER_CHUNK, ROW), dtype=np.float32)
    rows = ROWS_PER_CHUNK
    chunks = {f"{BUCKET}/raw/c/{i}": data[i * rows : (i + 1) * rows].tobytes() for i in range(N_CHUNKS)}
    args = {"output_dir": f"s3://{BUCKET}/sg-32", "storage_options": options, "chunk": rows, "compressor": None}

    def raw_read() -> None:
        out = fs.cat(list(chunks))
        assert sum(len(v) for v in out.values()) == data.nbytes

    times: dict[str, list[float]] = {}
    for round_ in range(ROUNDS):
        # Writes first in every round (the reads need the data); within each kind the
        # order alternates. Readers are opened before their timing starts.
        # mode 'w' empties the prefix when the store opens, before the timing starts.
        writes: list[tuple[str, Callable[[], Any]]] = [("s3fs pipe", lambda: fs.pipe(chunks))]
        for n in (32, 10):
            where = {"output_dir": f"s3://{BUCKET}/sg-{n}", "mode": "w", "concurrency": n}
            writer = StoreGate("zarr", {**args, **where}, data_id="bench")
            writes.append((f"StoreGate write ({n} in flight)", lambda sg=writer: sg.add_data("x", data, phase="train")))
        for name, step in _alternate(writes, round_):
            times.setdefault(name, []).append(_timed(step))
        reads = [("s3fs cat", raw_read)]
        for n in (32, 10):
            reader = StoreGate("zarr", {**args, "mode": "r", "concurrency": n}, data_id="bench")
            reads.append((f"StoreGate read ({n} in flight)", lambda sg=reader: _check(sg.get_data("x", "train"), data)))
        for name, step in _alternate(reads, round_):
            times.setdefault(name, []).append(_timed(step))
    return times


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
        ("read", "StoreGate read (32 in flight)", "s3fs cat"),
        ("read", "StoreGate read (10 in flight)", "s3fs cat"),
    ]
    lines = [
        "## S3: full-phase throughput through StoreGate against s3fs (moto server in its own process)",
        "",
        f"{mb:.0f} MB of float32, {N_CHUNKS} uncompressed chunks of 4 MiB; the baseline moves the same "
        f"bytes in objects of the same size. Medians of {ROUNDS} interleaved rounds.",
        "",
        "| operation | StoreGate | MB/s | s3fs baseline | MB/s | ratio |",
        "|---|---|---:|---|---:|---:|",
    ]
    for op, ours, base in rows:
        lines.append(
            f"| {op} | {ours} | {speed[ours]:.0f} | {base} | {speed[base]:.0f} | {speed[ours] / speed[base]:.2f} |"
        )
    ratio = speed["StoreGate read (32 in flight)"] / speed["s3fs cat"]
    verdict = "met" if ratio >= READ_GOAL else "NOT met"
    lines += ["", f"Goal: StoreGate read >= {READ_GOAL}x s3fs cat: {verdict} ({ratio:.2f}x)."]
    return "\n".join(lines)


def main() -> str:
    """Run the S3 benchmark and return its Markdown section."""
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    with moto_process() as endpoint:
        return report(measure(endpoint))


if __name__ == "__main__":
    print(main())
