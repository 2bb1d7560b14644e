"""The small zarr store the torch loader tests read, and what they do to it from outside."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from storegate import StoreGate
from storegate.backends.zarr_backend import ZarrBackend

N = 160
X = np.arange(N, dtype=np.float32)[:, None] * np.ones(3, dtype=np.float32)


def zarr_store(tmp_path: Path, chunk_rows: int = 16) -> StoreGate:
    """Data_id 'd' at ``tmp_path / 's.zarr'``: train ``x`` (row i is i, 3 features) and ``id`` (i)."""
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "chunk": chunk_rows}, data_id="d")
    sg.add_data("x", X, "train")
    sg.add_data("id", np.arange(N), "train")
    return sg


def update_in_another_process(tmp_path: Path, factor: int) -> None:
    """Commit ``x = factor * X`` from another process (a write of this process is counted without a read)."""
    code = (
        "import numpy as np; from storegate import StoreGate; "
        f"sg = StoreGate('zarr', {{'output_dir': {str(tmp_path / 's.zarr')!r}}}, data_id='d'); "
        f"sg.update_data('x', np.arange({N}, dtype=np.float32)[:, None] * np.full(3, {factor}, np.float32), 'train')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def count_record_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The data_ids whose commit record the zarr backend reads (``data_version``) from now on."""
    reads: list[str] = []
    real = ZarrBackend.data_version

    def counted(self: ZarrBackend, data_id: str) -> str | None:
        reads.append(data_id)
        return real(self, data_id)

    monkeypatch.setattr(ZarrBackend, "data_version", counted)
    return reads


#: Commits x = k and id = k (all rows) for k = 1, 2, ... until argv[2] seconds have passed.
_WRITER = """
import json, sys, time
import numpy as np
from storegate import StoreGate
sg = StoreGate("zarr", json.loads(sys.argv[1]), data_id="d")
n, k, end = len(sg["train"]), 0, time.monotonic() + float(sys.argv[2])
pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
while time.monotonic() < end:
    k += 1
    sg.update_data(["x", "id"], [np.full((n, 3), k, np.float32), np.full(n, k, np.int64)], "train")
    time.sleep(pause)
"""


def epochs_while_committing(
    loader: Any, backend_args: dict[str, Any], seconds: float, sampler: Any = None, pause: float = 0.0
) -> None:
    """Run epochs of ``loader`` while another process commits x and id together, again and again
    (x and id of every row start at 0, ``pause`` seconds between commits): every row of every
    batch must hold one commit's x and id."""
    args = [json.dumps(backend_args), str(seconds), str(pause)]
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, *args])
    try:
        seen: set[int] = set()
        epoch = 0
        while writer.poll() is None:
            if sampler is not None:
                sampler.set_epoch(epoch)
            epoch += 1
            for x, ids in loader:
                assert torch.equal(x, ids[:, None].float().expand(-1, 3)), "rows of two commits in one batch"
                seen.update(ids.tolist())
        assert len(seen) > 2  # the epochs did run across commits
    finally:
        writer.kill()
        writer.wait()
