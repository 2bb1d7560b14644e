"""Codecs, chunk size, sharding, codec pipelines and the streaming writer, in one run.

Data: float32 "images" (N, 3, 32, 32) with the structure of normalised 8-bit pictures
(smooth gradients plus pixel noise, quantised to 1/255) and int64 labels: what a vision
preprocessing job writes. Every figure is compared with a baseline measured in the same
run; timings are medians of interleaved rounds.

Local work is timed in CPU seconds of this process (all its threads, zarr's codec threads
and zarrs' Rust threads included): the 2-core machine is shared with other jobs, and wall
time there mostly measures their load. Speeds are therefore MiB per CPU second, a measure
of cost; what parallel decoding gains in wall time on an idle many-core machine is not
shown. S3 work is timed by the wall clock, because the server runs in another process.

(a) codecs: bytes stored, write and full-read speed of none, lz4, blosc-lz4, zstd,
    blosc-zstd and gzip, against no compression;
(b) codec pipelines: zarrs against zarr's own, full reads and writes, raw and zstd;
(c) chunk size and sharding on random row reads (one row per read, as a map-style
    Dataset's ``__getitem__`` does: each read decodes one chunk, as in a large store) and full
    reads, local disk (the page cache: this measures decoding, not the disk), against
    the 1 MiB chunks that were the default when this benchmark was written;
(d) the same on S3 (moto's server in its own process on 127.0.0.1);
(e) the streaming writer: K appends of B rows against one add_data of K*B rows.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from storegate import StoreGate
from storegate.backends.zarr_backend import DEFAULT_CHUNK_BYTES, DEFAULT_REMOTE_CHUNK_BYTES
from storegate.codecs import zarrs_available

HERE = Path(__file__).resolve().parent
SEED = 0
MB = 1 << 20

# Sizes: the whole benchmark takes 2 to 3 minutes on a 2-core machine shared with other work.
N_IMAGES = 2048  # 24 MiB of float32 images
CODEC_IMAGES = 1024  # 12 MiB: gzip writes slowly
CODECS = ("none", "lz4", "blosc-lz4", "zstd", "blosc-zstd", "gzip")
CODEC_ROUNDS = 3
PIPELINE_ROUNDS = 3
BASE_CHUNK = 1 * MB  # the baseline of (c) and (d)
LAYOUTS: tuple[tuple[int, int | None], ...] = (
    (64 << 10, None),
    (256 << 10, None),
    (1 * MB, None),
    (4 * MB, None),
    (16 * MB, None),
    (64 << 10, 16 * MB),
    (256 << 10, 16 * MB),
)
# 64 KiB chunks without shards make 400 objects: minutes on moto for nothing new.
S3_LAYOUTS = tuple(layout for layout in LAYOUTS if layout[0] >= 256 << 10)
LAYOUT_ROUNDS = 2
#: The default chunk size is the smallest whose score is within this factor of the best:
#: smaller chunks serve random row reads and keep the torch loader's chunk cache small.
CHOICE_TOLERANCE = 0.9
LOCAL_READS = 60  # random single-row reads per layout and round
S3_READS = 20
WRITER_K, WRITER_B = 64, 16  # 1024 rows (12 MiB) in batches of 16
WRITER_ROUNDS = 3


def main() -> str:
    """Run every comparison and return the Markdown section."""
    root = Path(tempfile.mkdtemp(prefix="bench_codecs-", dir=_data_dir()))
    images, labels = make_images(N_IMAGES)
    try:
        local = _local_layouts(root, images)
        s3, s3_note = _s3_layouts(images)
        sections = [
            _codec_section(root, images[:CODEC_IMAGES], labels[:CODEC_IMAGES]),
            _pipeline_section(root, images[:CODEC_IMAGES]),
            _layout_section("(c) Chunk size and sharding, local disk", local, images.nbytes),
            _layout_section("(d) Chunk size and sharding on S3 (moto's server in its own process)", s3, images.nbytes)
            if s3
            else f"### (d) Chunk size and sharding on S3\n\nskipped: {s3_note}",
            _chunk_choice(local, s3),
            _writer_section(root, images, labels),
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return "## Codecs, chunking, sharding, pipelines, writer (bench_codecs)\n\n" + "\n\n".join(sections)


def make_images(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """``n`` structured float32 images (n, 3, 32, 32) in [0, 1] and int64 labels."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(0, 2 * np.pi, 32, dtype="f4")
    fy, fx, phase = (rng.uniform(0.3, 2.5, size=(n, 3, 1, 1)).astype("f4") for _ in range(3))
    smooth = np.sin(fy * axis[:, None] + phase) * np.cos(fx * axis[None, :])
    noisy = 0.5 + 0.35 * smooth + rng.normal(0, 0.04, size=smooth.shape).astype("f4")
    images = np.round(np.clip(noisy, 0, 1) * 255) / 255
    return images.astype("f4"), rng.integers(0, 10, size=n)


# --- (a) codecs ----------------------------------------------------------------------------------


def _codec_section(root: Path, images: np.ndarray, labels: np.ndarray) -> str:
    stored: dict[str, int] = {}
    runs: dict[str, Callable[[], tuple[float, float]]] = {}
    for codec in CODECS:
        path = root / f"codec-{codec}"

        def run(codec: str = codec, path: Path = path) -> tuple[float, float]:
            shutil.rmtree(path, ignore_errors=True)
            sg = StoreGate("zarr", {"output_dir": str(path), "compressor": codec}, data_id="d")
            write = _timed(lambda: sg.add_data(["x", "y"], [images, labels]))
            read = _timed(lambda: sg.get_data("x"))
            stored[codec] = _disk_bytes(path / "d" / "train" / "x")
            return write, read

        runs[codec] = run
    times = _interleaved(runs, CODEC_ROUNDS)
    size = images.nbytes / MB
    rows = []
    base_w, base_r = (statistics.median(t[i] for t in times["none"]) for i in (0, 1))
    for codec in CODECS:
        write, read = (statistics.median(t[i] for t in times[codec]) for i in (0, 1))
        rows.append(
            f"| {codec} | {stored[codec] / MB:.1f} | {images.nbytes / stored[codec]:.2f} | "
            f"{size / write:.0f} | {base_w / write:.2f} | {size / read:.0f} | {base_r / read:.2f} |"
        )
    return (
        f"### (a) Codecs: {size:.0f} MiB of float32 images, 1 MiB chunks, local disk\n\n"
        "Speeds in MiB of uncompressed data per CPU second; 'x none' is the speed relative to no compression.\n\n"
        "| codec | stored MiB | ratio | write MiB/s | write x none | read MiB/s | read x none |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )


# --- (b) codec pipelines -------------------------------------------------------------------------


def _pipeline_section(root: Path, images: np.ndarray) -> str:
    if not zarrs_available():
        return "### (b) Codec pipelines\n\nzarrs is not installed (`pip install 'storegate[zarrs]'`): skipped."
    rows = []
    size = images.nbytes / MB
    for codec in ("none", "zstd"):
        runs = {}
        for pipeline in ("default", "zarrs"):
            path = root / f"pipe-{codec}-{pipeline}"

            def run(pipeline: str = pipeline, path: Path = path, codec: str = codec) -> tuple[float, float]:
                shutil.rmtree(path, ignore_errors=True)
                args = {"output_dir": str(path), "compressor": codec, "codec_pipeline": pipeline}
                sg = StoreGate("zarr", args, data_id="d")
                write = _timed(lambda: sg.add_data("x", images))
                reader = StoreGate("zarr", {**args, "mode": "r"}, data_id="d")
                return write, _timed(lambda: reader.get_data("x"))

            runs[pipeline] = run
        times = _interleaved(runs, PIPELINE_ROUNDS)
        med = {p: [statistics.median(t[i] for t in times[p]) for i in (0, 1)] for p in runs}
        rows.append(
            f"| {codec} | {size / med['default'][0]:.0f} | {size / med['zarrs'][0]:.0f} | "
            f"{med['default'][0] / med['zarrs'][0]:.2f} | {size / med['default'][1]:.0f} | "
            f"{size / med['zarrs'][1]:.0f} | {med['default'][1] / med['zarrs'][1]:.2f} |"
        )
    return (
        f"### (b) Codec pipelines: zarr's own against zarrs, {size:.0f} MiB, 1 MiB chunks, local disk\n\n"
        "MiB per CPU second; 'x' is zarrs' speed relative to zarr's own pipeline.\n\n"
        "| codec | write zarr | write zarrs | write x | read zarr | read zarrs | read x |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )


# --- (c, d) chunk size and sharding --------------------------------------------------------------


def _local_layouts(root: Path, images: np.ndarray) -> list[dict[str, Any]]:
    def place(chunk: int, shard: int | None) -> dict[str, Any]:
        return {"output_dir": str(root / f"layout-{chunk}-{shard}")}

    def count(args: dict[str, Any]) -> int:
        return sum(1 for p in (Path(args["output_dir"]) / "d" / "train" / "x" / "c").rglob("*") if p.is_file())

    return _measure_layouts(place, count, images, LOCAL_READS, LAYOUTS)


def _s3_layouts(images: np.ndarray) -> tuple[list[dict[str, Any]], str]:
    try:
        import boto3
        import s3fs

        with _moto_server() as endpoint:
            options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}}
            bucket = f"bench-{uuid.uuid4().hex[:10]}"
            boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                region_name="us-east-1",
            ).create_bucket(Bucket=bucket)
            fs = s3fs.S3FileSystem(**options)

            def place(chunk: int, shard: int | None) -> dict[str, Any]:
                return {"output_dir": f"s3://{bucket}/layout-{chunk}-{shard}", "storage_options": options}

            def count(args: dict[str, Any]) -> int:
                return len(fs.find(args["output_dir"].removeprefix("s3://") + "/d/train/x/c"))

            return _measure_layouts(place, count, images, S3_READS, S3_LAYOUTS), ""
    except (ImportError, RuntimeError, OSError) as exc:
        return [], str(exc)


def _measure_layouts(
    place: Callable[[int, int | None], dict[str, Any]],
    count: Callable[[dict[str, Any]], int],
    images: np.ndarray,
    reads: int,
    layouts: tuple[tuple[int, int | None], ...],
) -> list[dict[str, Any]]:
    """Write, random-read and full-read each layout, rounds interleaved; medians."""
    runs = {
        layout: (lambda layout=layout: _measure_layout(place(*layout), layout, images, reads)) for layout in layouts
    }
    rounds = _interleaved(runs, LAYOUT_ROUNDS)
    results = []
    for (chunk, shard), measured in rounds.items():
        med = {key: statistics.median(m[key] for m in measured) for key in ("write", "random", "full")}
        results.append({"chunk": chunk, "shard": shard, "objects": count(place(chunk, shard)), **med})
    return results


def _measure_layout(
    args: dict[str, Any], layout: tuple[int, int | None], images: np.ndarray, reads: int
) -> dict[str, float]:
    chunk, shard = layout
    sg = StoreGate("zarr", {**args, "chunk_bytes": chunk, "shard_bytes": shard, "mode": "w"}, data_id="d")
    # CPU time misses the S3 server's work, so remote stores are timed by the wall clock.
    clock = time.perf_counter if "://" in str(args["output_dir"]) else time.process_time
    write = _timed(lambda: sg.add_data("x", images), clock)
    reader = StoreGate("zarr", {**args, "mode": "r"}, data_id="d")
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, len(images), size=reads)
    view = reader["train"]["x"]
    random = _timed(lambda: [view[int(i)] for i in picks], clock)
    full = _timed(lambda: reader.get_data("x"), clock)
    return {
        "write": images.nbytes / MB / write,
        "random": reads / random,
        "full": images.nbytes / MB / full,
    }


def _layout_section(title: str, results: list[dict[str, Any]], nbytes: int) -> str:
    base = _base(results)
    rows = [
        f"| {_size(r['chunk'])} | {_size(r['shard']) if r['shard'] else '-'} | {r['objects']} | "
        f"{r['random']:.0f} | {r['random'] / base['random']:.2f} | {r['full']:.0f} | "
        f"{r['full'] / base['full']:.2f} | {r['write']:.0f} | {r['write'] / base['write']:.2f} |"
        for r in results
    ]
    return (
        f"### {title}, {nbytes / MB:.0f} MiB\n\n"
        "Random reads: one random row per read, `sg['train']['x'][i]` (rows/s); full read and "
        "write in MiB/s (per CPU second locally, wall clock on S3); 'x 1 MiB' is relative to 1 MiB "
        f"chunks without shards. zstd; medians of {LAYOUT_ROUNDS} interleaved rounds.\n\n"
        "| chunk | shard | objects | random rows/s | x 1 MiB | full read MiB/s | x 1 MiB | write MiB/s | x 1 MiB |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )


def _chunk_choice(local: list[dict[str, Any]], s3: list[dict[str, Any]]) -> str:
    """Score each unsharded chunk size by the geometric mean of its speed ratios, per place; pick one per place."""
    keys = [("local", "random", local), ("local", "full", local)]
    keys += [("S3", "random", s3), ("S3", "full", s3)] if s3 else []
    sizes = sorted({r["chunk"] for r in local if r["shard"] is None} & {r["chunk"] for r in s3 or local})
    places = ["local", "S3"] if s3 else ["local"]
    scores: dict[str, dict[int, float]] = {place: {} for place in places}
    rows = []
    for chunk in sizes:
        ratios = [_find(results, chunk)[key] / _base(results)[key] for _, key, results in keys]
        for place in places:
            mine = [r for (where, _, _), r in zip(keys, ratios, strict=True) if where == place]
            scores[place][chunk] = float(np.prod(mine) ** (1 / len(mine)))
        cells = [f"{x:.2f}" for x in ratios] + [f"{scores[place][chunk]:.2f}" for place in places]
        rows.append(f"| {_size(chunk)} | " + " | ".join(cells) + " |")
    reads = {"local": local, "S3": s3}
    full = {place: {c: _find(reads[place], c)["full"] / _base(reads[place])["full"] for c in sizes} for place in places}
    picks = {place: _pick(scores[place], full[place]) for place in places}
    defaults = {"local": DEFAULT_CHUNK_BYTES, "S3": DEFAULT_REMOTE_CHUNK_BYTES}
    said = "; ".join(
        f"{'a local disk' if place == 'local' else 'an object store'}: **{_size(picks[place])}** "
        f"(storegate's default there is {_size(defaults[place])})"
        for place in places
    )
    header = (
        "| chunk | "
        + " | ".join(f"{where} {key}" for where, key, _ in keys)
        + " | "
        + " | ".join(f"{place} score" for place in places)
        + " |"
    )
    return (
        "### Default chunk size\n\n"
        "Speed ratios of each unsharded chunk size (against 1 MiB), and per place the geometric mean of its "
        f"random-row and full-read ratios. Rule: the smallest chunk whose score is at least {CHOICE_TOLERANCE} x "
        "the best and whose full reads are at least as fast as 1 MiB's (times the same tolerance), since smaller "
        "chunks serve random row reads and keep the loader's chunk cache small while full reads feed the loader. "
        f"This run picks, for {said}.\n\n"
        f"{header}\n|" + "---|" * (len(keys) + len(places) + 1) + "\n" + "\n".join(rows)
    )


def _pick(scores: dict[int, float], full: dict[int, float]) -> int:
    """The smallest chunk near the best score whose full reads keep up (else the smallest near the best)."""
    near = [c for c, score in scores.items() if score >= CHOICE_TOLERANCE * max(scores.values())]
    return min([c for c in near if full[c] >= CHOICE_TOLERANCE] or near)


def _base(results: list[dict[str, Any]]) -> dict[str, Any]:
    return _find(results, BASE_CHUNK)


def _find(results: list[dict[str, Any]], chunk: int) -> dict[str, Any]:
    return next(r for r in results if r["chunk"] == chunk and r["shard"] is None)


@contextmanager
def _moto_server() -> Iterator[str]:
    """``python -m moto.server`` on a free port of 127.0.0.1, stopped on exit."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_for(endpoint, proc)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_for(endpoint: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2):
                return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    raise RuntimeError(f"moto.server did not answer at {endpoint}")


# --- (e) the streaming writer --------------------------------------------------------------------


def _writer_section(root: Path, images: np.ndarray, labels: np.ndarray) -> str:
    k, b = WRITER_K, WRITER_B
    xs, ys = images[: k * b], labels[: k * b]

    def fresh(name: str) -> StoreGate:
        return StoreGate("zarr", {"output_dir": str(root / f"writer-{name}"), "mode": "w"}, data_id="d")

    def one_append() -> float:
        sg = fresh("one")
        return _timed(lambda: sg.add_data(["x", "y"], [xs, ys]))

    def writer() -> float:
        sg = fresh("writer")

        def run() -> None:
            with sg.writer() as w:
                for i in range(k):
                    w.add({"x": xs[i * b : (i + 1) * b], "y": ys[i * b : (i + 1) * b]})

        return _timed(run)

    def add_data_loop() -> float:
        sg = fresh("loop")

        def run() -> None:
            for i in range(k):
                sg.add_data(["x", "y"], [xs[i * b : (i + 1) * b], ys[i * b : (i + 1) * b]])

        return _timed(run)

    times = _interleaved({"one": one_append, "writer": writer, "loop": add_data_loop}, WRITER_ROUNDS)
    base = statistics.median(times["one"])
    ratios = {name: statistics.median(t / o for t, o in zip(times[name], times["one"], strict=True)) for name in times}
    size = (xs.nbytes + ys.nbytes) / MB
    rows = [
        f"| {label} | {statistics.median(times[name]) * 1000:.0f} | {ratios[name]:.2f} |"
        for name, label in (
            ("one", f"one add_data of {k * b} rows (baseline)"),
            ("writer", f"sg.writer(): {k} x w.add of {b} rows"),
            ("loop", f"{k} x add_data of {b} rows"),
        )
    ]
    return (
        f"### (e) Streaming writer: {size:.0f} MiB of images and labels, 1 MiB chunks, local disk\n\n"
        f"Baseline {base * 1000:.0f} CPU ms. Goal: the writer within about 1.3x of one big append.\n\n"
        "| how | CPU ms | x one append |\n|---|---|---|\n" + "\n".join(rows)
    )


# --- helpers -------------------------------------------------------------------------------------


def _timed(fn: Callable[[], object], clock: Callable[[], float] = time.process_time) -> float:
    """Seconds ``fn`` takes: CPU seconds of this process (every thread) by default."""
    start = clock()
    fn()
    return clock() - start


def _interleaved(runs: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[Any]]:
    """Call each run once per round, rotating the order so that no run always goes first."""
    labels = list(runs)
    out: dict[str, list[Any]] = {label: [] for label in labels}
    for r in range(rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            out[label].append(runs[label]())
    return out


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _size(n: int) -> str:
    return f"{n // MB} MiB" if n >= MB else f"{n >> 10} KiB"


def _data_dir() -> Path:
    path = HERE / "_data"
    path.mkdir(exist_ok=True)
    return path


if __name__ == "__main__":
    print(main())
