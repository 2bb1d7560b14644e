"""Progress bars (tqdm) on long work: shown when asked on a terminal, silent otherwise.

Each call that takes ``progress`` runs three times: asked on a terminal (a bar), asked off a
terminal (a log file, a CI job: nothing), not asked on a terminal (nothing).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from storegate import StoreGate
from storegate.transfer import copy_store


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _hybrid(tmp_path: Path) -> StoreGate:
    sg = StoreGate("hybrid", {"output_dir": str(tmp_path / "h.zarr")}, data_id="d")
    sg.set_mode("zarr")
    sg.add_data(["x", "y"], [np.ones((20, 3)), np.arange(20)], phase=(0.5, 0.3, 0.2))
    return sg


def _add(tmp_path: Path, progress: bool) -> None:
    StoreGate("numpy", data_id="d").add_data(["x", "y"], [np.ones((9, 2)), np.arange(9)], progress=progress)


def _to_memory(tmp_path: Path, progress: bool) -> None:
    _hybrid(tmp_path).to_memory(["x", "y"], "all", progress=progress)


def _to_storage(tmp_path: Path, progress: bool) -> None:
    sg = _hybrid(tmp_path)
    sg.to_memory("x", "all")
    sg.set_mode("numpy")
    sg.to_storage("x", "all", output_var_names="x2", progress=progress)


def _writer(tmp_path: Path, progress: bool) -> None:
    with StoreGate("numpy", data_id="d").writer(progress=progress, total=4) as w:
        w.add({"x": np.ones((4, 2))})


def _verify(tmp_path: Path, progress: bool) -> None:
    assert _hybrid(tmp_path).verify(progress=progress).ok


def _import(tmp_path: Path, progress: bool) -> None:
    np.save(tmp_path / "x.npy", np.arange(6))
    StoreGate("numpy", data_id="d").import_file(tmp_path / "x.npy", progress=progress)


def _export(tmp_path: Path, progress: bool) -> None:
    sg = StoreGate("numpy", data_id="d")
    sg.add_data("x", np.arange(6))
    sg.export_file(tmp_path / "x.npz", progress=progress)


def _copy(tmp_path: Path, progress: bool) -> None:
    _hybrid(tmp_path)
    copy_store(tmp_path / "h.zarr", tmp_path / "copy.zarr", progress=progress)


CALLS: dict[str, tuple[Callable[[Path, bool], None], str]] = {
    "add_data": (_add, "add_data"),
    "to_memory": (_to_memory, "reading from zarr"),
    "to_storage": (_to_storage, "writing to zarr"),
    "writer": (_writer, "writing train"),
    "verify": (_verify, "verify"),
    "import_file": (_import, "reading"),
    "export_file": (_export, "exporting to"),
    "copy_store": (_copy, "storegate cp"),
}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize(
    ("progress", "terminal", "shown"), [(True, True, True), (True, False, False), (False, True, False)]
)
def test_a_bar_only_when_asked_on_a_terminal(
    call: str, progress: bool, terminal: bool, shown: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, words = CALLS[call]
    err = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    run(tmp_path, progress)
    assert (words in err.getvalue()) is shown, err.getvalue()
    if shown:
        assert "100%" in err.getvalue() or "it/s" in err.getvalue() or "/s]" in err.getvalue()
