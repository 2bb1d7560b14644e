"""How long one call takes to fail when the S3 server is stopped (connections open, nothing answers).

A moto server runs in its own process (``tests/moto_process.py``). A store is written with
storegate's S3 settings (:data:`storegate.locations.DEFAULT_S3_CONFIG`, or ``--config`` on
top of them), a reader opens it, and the server gets SIGSTOP (the kernel still completes
connections; nothing is read or answered). The script times one read (``get_data`` of a
variable of several chunks) and one ``add_data`` (an append), optionally one batch of a
DataLoader with 2 workers (``--loader``), then sends SIGCONT and checks that the store holds
exactly what it held before. It prints one JSON line; with the defaults it takes minutes.

    python benchmarks/measure_s3_silent.py [--config JSON] [--rows N] [--loader]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storegate import StoreGate
from storegate.locations import no_reply_bound
from tests.moto_process import start_moto

CHUNK = 100  # rows per chunk; --rows 10000 makes 100 chunks, more than the 32 requests sent at once


def timed(call: Callable[[], object]) -> dict[str, Any]:
    """Seconds ``call`` took and what it raised (the first 300 characters)."""
    began = time.monotonic()
    try:
        call()
        outcome = "no error"
    except Exception as exc:  # what it raised is the point
        outcome = f"{type(exc).__name__}: {str(exc)[:300]}"
    return {"seconds": round(time.monotonic() - began, 1), "outcome": outcome}


def first_batch(sg: StoreGate, rows: int) -> Callable[[], object]:
    """A DataLoader (2 workers, fork) over x, started before the stop; the call reads its next batch."""
    from torch.utils.data import DataLoader

    from storegate.torch import StoreGateDataset

    loader = iter(DataLoader(StoreGateDataset(sg, "train", "x"), batch_size=50, num_workers=2))
    next(loader)  # workers up, store open in each
    return lambda: [next(loader) for _ in range(rows // 50)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="{}", help="config_kwargs (JSON) on top of storegate's defaults")
    parser.add_argument("--rows", type=int, default=1000, help=f"rows of the variable read ({CHUNK} per chunk)")
    parser.add_argument("--loader", action="store_true", help="also time a DataLoader batch with 2 workers")
    args = parser.parse_args()
    config = json.loads(args.config)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_EC2_METADATA_DISABLED="true")
    server = start_moto()
    try:
        server.client("s3").create_bucket(Bucket="silent")
        options: dict[str, Any] = {"key": "testing", "secret": "testing"}
        options["client_kwargs"] = {"endpoint_url": server.endpoint_url}
        if config:
            options["config_kwargs"] = config
        where = {"output_dir": "s3://silent/store", "storage_options": options, "chunk": CHUNK}
        writer = StoreGate("zarr", where, data_id="d")
        writer.add_data("x", np.arange(args.rows, dtype="f8"), phase="train")
        reader = StoreGate("zarr", {**where, "mode": "r"}, data_id="d")
        reader.get_data("x", "train")  # its metadata is read: the stop hits the chunk reads
        batches = first_batch(reader, args.rows) if args.loader else None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            found = {"loader": timed(batches)} if batches is not None else {}  # first: its workers read ahead
            found["read"] = timed(lambda: reader.get_data("x", "train"))
            found["add_data"] = timed(lambda: writer.add_data("x", np.arange(args.rows, dtype="f8"), phase="train"))
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        again = StoreGate("zarr", {**where, "mode": "r"}, data_id="d").get_data("x", "train")
        unchanged = bool(np.array_equal(again, np.arange(args.rows, dtype="f8")))
        bound = no_reply_bound(config)
        print(json.dumps({**found, "unchanged": unchanged, "bound": bound, "config": config, "rows": args.rows}))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
