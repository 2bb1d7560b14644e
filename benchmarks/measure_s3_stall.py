"""How long a call takes to fail when the S3 server stops answering mid-call (default settings).

A moto server runs in this process behind the fault-injecting proxy of the tests
(``tests/fault_proxy.py``). A store opened with storegate's default S3 settings
(:data:`storegate.locations.DEFAULT_S3_CONFIG`) appends to a variable; part-way through the
append the proxy stops forwarding anything (connections stay open, nothing is answered).
The script prints how long ``add_data`` took to raise, and what it raised. It may take
minutes: that is what it measures.

    python benchmarks/measure_s3_stall.py [--after-bytes N] [--config JSON]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storegate import StoreGate
from tests.fault_proxy import FaultProxy
from tests.moto_process import free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after-bytes", type=int, default=3000, help="request bytes of the append before the stall")
    parser.add_argument("--config", default="{}", help="config_kwargs (JSON) on top of storegate's defaults")
    parser.add_argument("--storage", default="{}", help="extra storage_options (JSON)")
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    proxy = FaultProxy(("127.0.0.1", port))
    try:
        import boto3

        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1").create_bucket(
            Bucket="stall"
        )
        options: dict[str, Any] = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": proxy.url},
            **json.loads(args.storage),
        }
        config = json.loads(args.config)
        if config:
            options["config_kwargs"] = config
        sg = StoreGate("zarr", {"output_dir": "s3://stall/store", "storage_options": options, "chunk": 100})
        sg.set_data_id("d")
        sg.add_data("x", np.arange(1000.0), phase="train")
        proxy.reset_counts()
        proxy.fault("stall", after_bytes=args.after_bytes)
        began = time.monotonic()
        try:
            sg.add_data("x", np.arange(1000.0), phase="train")
            outcome = "no error"
        except Exception as exc:  # what it raised is the point
            outcome = f"{type(exc).__name__}: {str(exc)[:300]}"
        took = time.monotonic() - began
        print(
            json.dumps(
                {
                    "seconds": round(took, 1),
                    "outcome": outcome,
                    "config": config,
                    "storage": args.storage,
                    "after_bytes": args.after_bytes,
                    "connections": proxy.connections,
                }
            ),
            flush=True,
        )
    finally:
        proxy.close()
        server.stop()


if __name__ == "__main__":
    main()
