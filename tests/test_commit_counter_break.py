"""Cases that broke the warm-row path and the commit records it checks (breaker, issue 12 item 3).

Each test states one failure found by a hostile or concurrent use (both failed at
ce588cf); the breaker session's report lists the cases that held. A third case found then,
a counter file truncated in place under a reader (``cp`` over a live store), kills the
reader with SIGBUS, as it does a numpy memmap's: documented (README, "Random rows"), not
tested here.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from storegate import NotFoundError, StoreGate, locations
from storegate.backends import zarr_backend

ROWS, COLS, CHUNK = 24, 3, 4


def _reader_during(writer_call: Any, pause: threading.Event, release: threading.Event, read: Any) -> Any:
    """What ``read()`` gives (or raises) while ``writer_call`` runs, paused where it set ``pause``."""
    thread = threading.Thread(target=writer_call)
    thread.start()
    try:
        assert pause.wait(60)
        try:
            return read()
        except NotFoundError as exc:
            return exc
    finally:
        release.set()
        thread.join(60)


def _store(path: Path) -> tuple[StoreGate, StoreGate]:
    """A writer holding x (ones) and a read-only handle that has read it."""
    writer = StoreGate("zarr", {"output_dir": str(path), "chunk": CHUNK}, data_id="d")
    writer.add_data("x", np.ones((ROWS, COLS), dtype=np.int64), "train")
    reader = StoreGate("zarr", {"output_dir": str(path), "mode": "r"}, data_id="d")
    assert reader.get_data("x", "train", 5).tolist() == [1, 1, 1]
    return writer, reader


def test_a_data_id_being_deleted_reads_as_committed_or_gone_never_as_zeros(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """delete_data_id deleted the group while the commit record still listed its variables: a
    reader then read the committed rows from chunks already deleted, zeros (zarr's fill value).
    Found by a reader looping under delete_data_id + add_data; the cold path, not the warm one."""
    writer, reader = _store(tmp_path / "s.zarr")
    pause, release = threading.Event(), threading.Event()
    real = zarr_backend.poison_counter

    def poison(store: Any, data_id: str) -> None:  # delete_data_id has deleted the group by now
        pause.set()
        assert release.wait(60)
        real(store, data_id)

    monkeypatch.setattr(zarr_backend, "poison_counter", poison)
    got = _reader_during(
        lambda: writer.backend_object.delete_data_id("d"), pause, release, lambda: reader.get_data("x", "train", 5)
    )
    assert isinstance(got, NotFoundError) or got.tolist() == [1, 1, 1], got


def test_a_store_being_replaced_by_mode_w_reads_as_committed_or_gone_never_as_zeros(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mode 'w' deleted the store's files in directory order while the commit records still
    listed the variables: a reader between the chunks and the record read zeros."""
    path = tmp_path / "s.zarr"
    _, reader = _store(path)
    pause, release = threading.Event(), threading.Event()
    real = locations._clear_directory

    def clear(root: Path, keep: str | None = None) -> None:
        shutil.rmtree(root / "d" / "train" / "x" / "c", ignore_errors=True)  # the chunks went first
        pause.set()
        assert release.wait(60)
        real(root, keep)

    monkeypatch.setattr(locations, "_clear_directory", clear)
    got = _reader_during(
        lambda: StoreGate("zarr", {"output_dir": str(path), "mode": "w"}),
        pause,
        release,
        lambda: reader.get_data("x", "train", 5),
    )
    assert isinstance(got, NotFoundError) or got.tolist() == [1, 1, 1], got
