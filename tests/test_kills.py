"""SIGKILL a writer mid-call, 24 times over every kind of write: the store shows only whole calls.

Runs benchmarks/stress_kills.py's rounds (a real writer process, a real local folder, a real
SIGKILL at a random moment), 4 of each kind: add_data, the streaming writer, new variables,
updates of rows in place, shuffles (every chunk rewritten) and deletes followed by a re-add.
`python benchmarks/stress_kills.py` runs 200.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.benchmark_modules import load


def _load() -> ModuleType:
    return load("stress_kills")


@pytest.mark.slow
def test_killed_writers_leave_only_whole_committed_calls(tmp_path: Path) -> None:
    stress = _load()
    tally = stress.run(24, root=str(tmp_path / "store"), seed=1)
    assert tally.kills == 24
    assert tally.clean(), tally.report() + "\n" + "\n".join(tally.problems[:10])


def test_the_check_sees_torn_calls(tmp_path: Path) -> None:
    # The checker itself must fail a store with a call cut short (else the test above proves nothing).
    import numpy as np
    import zarr

    from storegate import StoreGate

    stress = _load()
    root = str(tmp_path / "store")
    sg = StoreGate("zarr", {"output_dir": root}, data_id="d")
    values = stress.ROWS * 1 + np.arange(stress.ROWS, dtype=np.int64)
    sg.add_data(["x", "y"], [values, -values], phase="train")
    zarr.open_array(f"{root}/d/train/x", mode="a").append(np.zeros(7, np.int64))  # rows of a torn call
    tally = stress.Tally()
    stress.check(root, {1, 2}, tally)
    assert tally.committed_rows_lost == stress.ROWS  # block 2 was reported done but is missing
    assert tally.uncommitted_rows_visible == 0  # the 7 rows past the commit stay unseen


def test_the_check_sees_a_half_applied_rewrite(tmp_path: Path) -> None:
    import numpy as np
    import zarr

    from storegate import StoreGate

    stress = _load()
    root = str(tmp_path / "store")
    start = np.arange(stress.REWRITTEN, dtype=np.int64)
    for data_id, phase, names in (("upd", "train", ["u", "w"]), ("shf", "train", ["u", "w"]), ("del", "test", ["t"])):
        StoreGate("zarr", {"output_dir": root}, data_id=data_id).add_data(names, [start, -start][: len(names)], phase)
    history = stress.History()
    clean = stress.Tally()
    stress.check_rewrites(root, history, clean)
    assert clean.clean(), clean.problems
    zarr.open_array(f"{root}/upd/train/u", mode="a")[:5] = 999  # u rewritten, w not: a torn update
    zarr.open_array(f"{root}/del/test/t", mode="a")[:3] = 5  # t no whole call's rows
    torn = stress.Tally()
    stress.check_rewrites(root, history, torn)
    assert torn.half_applied_calls == 2, torn.problems
