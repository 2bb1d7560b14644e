"""S3 requests per StoreGate call: how many GET / PUT / HEAD / LIST / DELETE / POST each call sends.

A moto S3 server runs in its own process on 127.0.0.1 (the one of ``bench_s3``). Every HTTP
request storegate's S3 client sends goes through aiobotocore's ``AIOHTTPSession.send``
(storegate's ``BoundedHTTPSession`` calls it for each attempt); this benchmark wraps that
method to count requests by method, and sorts a GET whose query asks for a listing
(``list-type``, ``prefix``, ``delimiter``, ``uploads``) as LIST. Each attempt of a retried
request counts once: the count is what the server sees.

The calls counted, in order, on one data set of ``ROWS`` rows of 784 float32 (image-like)
plus an int64 label, StoreGate's default chunking (about 1 MiB per chunk):

- opening a new store (mode 'w') and an existing one (mode 'r');
- ``add_data`` of a new variable (x, then y) and of an existing one (appending rows to x);
- ``compile`` and ``get_metadata``;
- ``get_data`` of a whole variable and of one row, cold (first call of a freshly opened
  handle) and warm (the same call again).

Issue 12, item 4 (fewer S3 requests) compares these counts with the 'before' ones that the
report quotes. :func:`time_small_calls` times the calls whose cost is their fixed requests
(a small append, a small new variable, get_metadata, opening a store): the median of
``REPEATS`` calls each.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

HERE = Path(__file__).resolve().parent
ROWS = 20_000
APPEND_ROWS = 1_000
REPEATS = 30
N_FEATURES = 784
BUCKET = "bench-requests"
DATA_ID = "d"
KINDS = ("GET", "PUT", "HEAD", "LIST", "DELETE", "POST")
LIST_QUERY = frozenset({"list-type", "prefix", "delimiter", "uploads", "continuation-token"})


def request_kind(method: str, url: str) -> str:
    """GET / PUT / HEAD / LIST / DELETE / POST of one S3 request (a listing is a GET with a listing query)."""
    method = method.upper()
    if method == "GET" and LIST_QUERY & set(parse_qs(urlsplit(url).query, keep_blank_values=True)):
        return "LIST"
    return method


class RequestCounter:
    """Counts the HTTP requests aiobotocore sends, by :func:`request_kind`, while :meth:`counting`."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Wrap ``AIOHTTPSession.send`` (every attempt of every request passes there)."""
        from aiobotocore.httpsession import AIOHTTPSession

        send = AIOHTTPSession.send
        counts = self.counts

        async def counted(session: Any, request: Any) -> Any:
            counts[request_kind(request.method, str(request.url))] += 1
            return await send(session, request)

        AIOHTTPSession.send = counted  # type: ignore[method-assign]
        try:
            yield
        finally:
            AIOHTTPSession.send = send  # type: ignore[method-assign]

    def measure(self, call: Callable[[], Any]) -> tuple[Any, Counter[str]]:
        """Run ``call``; return its result and the requests it sent."""
        before = Counter(self.counts)
        result = call()
        return result, self.counts - before


def make_rows(n_rows: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image-like rows (80% zeros, 8-bit levels) and their labels (the row index from ``start``)."""
    rng = np.random.default_rng(start)
    levels = rng.integers(0, 256, size=(n_rows, N_FEATURES), dtype=np.uint8)
    levels[rng.random((n_rows, N_FEATURES), dtype=np.float32) < 0.8] = 0
    return levels.astype(np.float32) / np.float32(255), np.arange(start, start + n_rows, dtype=np.int64)


def count_calls(
    endpoint: str, rows: int = ROWS, append_rows: int = APPEND_ROWS, chunk_bytes: int | None = None
) -> tuple[list[tuple[str, Counter[str]]], int | None]:
    """The requests each call sends, in the order of the module docstring, and x's rows per chunk.

    ``chunk_bytes``: the store's (None: storegate's default, 4 MiB on an object store).
    """
    import s3fs

    from storegate import StoreGate

    options: dict[str, Any] = {"key": "bench", "secret": "bench", "client_kwargs": {"endpoint_url": endpoint}}
    fs = s3fs.S3FileSystem(**options)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    args: dict[str, Any] = {"output_dir": f"s3://{BUCKET}/store-{time.time_ns()}", "storage_options": options}
    if chunk_bytes is not None:
        args["chunk_bytes"] = chunk_bytes
    x, y = make_rows(rows)
    more_x, more_y = make_rows(append_rows, start=rows)
    counter = RequestCounter()
    out: list[tuple[str, Counter[str]]] = []

    def step(name: str, call: Callable[[], Any]) -> Any:
        result, counts = counter.measure(call)
        out.append((name, counts))
        print(f"  {name}: {sum(counts.values())} requests", flush=True)
        return result

    with counter.counting():
        sg = step("open a new store (mode 'w')", lambda: StoreGate("zarr", {**args, "mode": "w"}, data_id=DATA_ID))
        step(f"add_data, new variable x ({rows:,} x {N_FEATURES} float32)", lambda: sg.add_data("x", x, "train"))
        step(f"add_data, new variable y ({rows:,} int64)", lambda: sg.add_data("y", y, "train"))
        step(f"add_data, existing variable x (+{append_rows:,} rows)", lambda: sg.add_data("x", more_x, "train"))
        step(f"add_data, existing variable y (+{append_rows:,} rows)", lambda: sg.add_data("y", more_y, "train"))
        step("compile", sg.compile)
        step("get_metadata", sg.get_metadata)
        reader = step("open an existing store (mode 'r')", lambda: StoreGate("zarr", {**args, "mode": "r"}, DATA_ID))
        step("get_data x, whole phase, cold", lambda: reader.get_data("x", "train"))
        step("get_data x, whole phase, warm", lambda: reader.get_data("x", "train"))
        one = StoreGate("zarr", {**args, "mode": "r"}, DATA_ID)
        step("get_data x, one row, cold (new handle)", lambda: one.get_data("x", "train", 5))
        # A chunk is kept from its second single-row read on (the decoded-chunk cache's doorkeeper).
        step("get_data x, one row, second read (kept)", lambda: one.get_data("x", "train", 6))
        step("get_data x, one row, warm", lambda: one.get_data("x", "train", 5))
        step("get_metadata (reader)", reader.get_metadata)
    return out, sg.backend_object.info(DATA_ID, "train", "x").chunk_rows


def time_small_calls(endpoint: str, repeats: int = REPEATS) -> dict[str, float]:
    """Median wall seconds of calls whose cost is their fixed requests (a chunk or two of data).

    On a store of one int64 variable of 100 rows: an add_data of 10 rows to it, an add_data
    of a new 100-row variable beside it, get_metadata, and opening the store (mode 'r').
    """
    import s3fs

    from storegate import StoreGate

    options: dict[str, Any] = {"key": "bench", "secret": "bench", "client_kwargs": {"endpoint_url": endpoint}}
    fs = s3fs.S3FileSystem(**options)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    args = {"output_dir": f"s3://{BUCKET}/timing-{time.time_ns()}", "storage_options": options}
    sg = StoreGate("zarr", {**args, "mode": "w"}, data_id=DATA_ID)
    sg.add_data("y", np.arange(100), "train")
    calls: dict[str, Callable[[int], Any]] = {
        "add_data, existing variable (+10 int64 rows)": lambda i: sg.add_data("y", np.arange(10), "train"),
        "add_data, new variable (100 int64 rows)": lambda i: sg.add_data(f"z{i}", np.arange(100), "train"),
        "get_metadata": lambda i: sg.get_metadata(),
        "open an existing store (mode 'r')": lambda i: StoreGate("zarr", {**args, "mode": "r"}, DATA_ID),
    }
    medians = {}
    for name, call in calls.items():
        seconds = []
        for i in range(repeats):
            start = time.perf_counter()
            call(i)
            seconds.append(time.perf_counter() - start)
        medians[name] = statistics.median(seconds)
    return medians


def format_table(results: list[tuple[str, Counter[str]]]) -> str:
    """A Markdown table: one row per call, one column per request kind, and the total."""
    header = "| call | " + " | ".join(KINDS) + " | total |\n|---|" + "---:|" * (len(KINDS) + 1) + "\n"
    lines = [f"| {name} | " + " | ".join(str(c[k]) for k in KINDS) + f" | {sum(c.values())} |" for name, c in results]
    return header + "\n".join(lines)


#: Total requests per call in earlier runs of this benchmark (20,000 rows, 1 MiB chunks: x is 60
#: chunks), before issue 12's cuts and after each round, kept here so that a full `make bench`
#: (which rewrites RESULTS.md) still shows them beside this run's counts with the same chunks.
HISTORY = {
    "open a new store (mode 'w')": (42, 28, 12, 28),
    "add_data, new variable x": (109, 93, 73, 93),
    "add_data, new variable y": (28, 21, 7, 21),
    "add_data, existing variable x": (12, 10, 10, 10),
    "add_data, existing variable y": (9, 7, 7, 7),
    "compile": (22, 13, 7, 13),
    "get_metadata": (19, 10, 4, 10),
    "open an existing store (mode 'r')": (16, 9, 6, 9),
    "get_data x, whole phase, cold": (136, 68, 66, 68),
    "get_data x, whole phase, warm": (130, 65, 65, 64),
    "get_data x, one row, cold (new handle)": (12, 6, 4, 6),
    "get_data x, one row, warm": (6, 3, 3, 1),
    "get_metadata (reader)": (19, 10, 4, 10),
}


def history_table(now: list[tuple[str, Counter[str]]]) -> str:
    """Totals before issue 12 and after each round (:data:`HISTORY`), and ``now`` (this run, 1 MiB chunks)."""
    totals = {name: sum(c.values()) for name, c in now}
    lines = [
        "| call | before | round 1 | round 2, writes and opens | round 2, reads | this run, merged (1 MiB chunks) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for prefix, past in HISTORY.items():
        found = next((t for name, t in totals.items() if name.startswith(prefix)), None)
        cells = " | ".join(str(n) for n in past)
        lines.append(f"| {prefix} | {cells} | {'n/a' if found is None else found} |")
    return "\n".join(lines)


def report(
    results: list[tuple[str, Counter[str]]],
    rows: int,
    chunk_rows: int | None,
    times: dict[str, float] | None = None,
    one_mib: list[tuple[str, Counter[str]]] | None = None,
) -> str:
    """The Markdown section for RESULTS.md (``times``: :func:`time_small_calls`; ``one_mib``: the
    counts of a store with 1 MiB chunks, compared with :data:`HISTORY`)."""
    chunks = f" ({chunk_rows} rows per chunk: x is {-(-rows // chunk_rows)} chunks)" if chunk_rows else ""
    return (
        "## S3 requests per call (moto server in its own process)\n\n"
        f"Requests the StoreGate zarr backend sends to S3 for each call, counted at aiobotocore's HTTP "
        f"session (every attempt counts; a GET with a listing query counts as LIST). {rows:,} rows of "
        f"{N_FEATURES} float32 plus an int64 label, default chunking{chunks}, default S3 settings. "
        "Before issue 12, item 4 (s3fs's HEAD before every object read, and lookups of absent arrays) these "
        "counts were: open new 42, add new x 109, add new y 28, add existing x 12 / y 9, compile 22, "
        "get_metadata 19, open existing 16, whole phase cold 136 / warm 130, one row cold 12 / warm 6. After its "
        "first round (no HEAD before reads): open new 28, add new x 93, add new y 21, add existing x 10 / y 7, "
        "compile 13, get_metadata 10, open existing 9, whole phase cold 68 / warm 65, one row cold 6 / warm 3.\n\n"
        + format_table(results)
        + (
            "\n\nTotals per call over issue 12's rounds, with 1 MiB chunks as they were measured (round 2 "
            "was cut by two people at once: the write / open / metadata side and the read side, each "
            "measured alone; 'this run' is the merged code):\n\n" + history_table(one_mib)
            if one_mib
            else ""
        )
        + format_times(times or {})
    )


def format_times(times: dict[str, float]) -> str:
    """The medians of :func:`time_small_calls` as a Markdown table ('' when none)."""
    if not times:
        return ""
    lines = "\n".join(f"| {name} | {seconds * 1000:.1f} |" for name, seconds in times.items())
    return (
        f"\n\nWall time of calls that write or read a chunk or two (median of {REPEATS}; a store of one "
        "100-row int64 variable):\n\n| call | ms |\n|---|---:|\n" + lines
    )


def main(rows: int = ROWS) -> str:
    """Start moto, count the calls, return the Markdown section."""
    sys.path.insert(0, str(HERE))
    from bench_s3 import moto_process

    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    with moto_process() as endpoint:
        results, chunk_rows = count_calls(endpoint, rows)
        one_mib, _ = count_calls(endpoint, rows, chunk_bytes=1 << 20)
        times = time_small_calls(endpoint)
    return report(results, rows, chunk_rows, times, one_mib)


if __name__ == "__main__":
    print(main())
