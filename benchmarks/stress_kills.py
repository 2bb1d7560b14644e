"""Kill writers with SIGKILL mid-call and check what the store shows afterwards.

Each round starts a writer process on one local store, lets it run for a random moment and
SIGKILLs it. The writer reports each call once the call has returned. After every kill the
store is opened afresh and checked:

- **fails to open**: opening the store or reading it raises;
- **committed rows lost**: rows of a call the writer reported done are missing;
- **uncommitted rows visible**: rows that are no whole block of a call (zeros of a call
  cut short, or part of one);
- **half-applied calls**: x and y disagree (lengths or values), or compile() fails.

Kinds of writes, one per round in turn: add_data of x and y, a writer (matorage's
DataSaver) with several batches, add_data of new variables (data_id ``d``); updates of rows
of u and w in place (data_id ``upd``), shuffles of u and w (data_id ``shf``, every chunk
rewritten), and the delete and re-add of a variable t (data_id ``del``). For the rewrites
the store must equal a numpy-backend replay of the calls reported done, or of those and the
call the kill cut short (it may have committed before it could report).

Run: ``python benchmarks/stress_kills.py [kills]`` (default 200; about 1.5 s per kill).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

ROWS = 50  # rows per call and variable
KINDS = ("add_data", "writer", "new_variable", "update", "shuffle", "delete")
REWRITTEN = 64  # rows of u and w (data_ids 'upd' and 'shf') and of t ('del')

# The writer process: writes until it is killed; prints "done <kind> <block>" after each call.
WRITER = """
import sys, numpy as np
from storegate import StoreGate
root, kind, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
sg = StoreGate("zarr", {"output_dir": root, "mode": "a", "chunk": 16}, data_id="d")
start = np.arange(REWRITTEN, dtype=np.int64)
for data_id, phase, names in (("upd", "train", ["u", "w"]), ("shf", "train", ["u", "w"]), ("del", "test", ["t"])):
    if data_id not in sg.get_data_ids():  # once: a deleted t stays deleted
        sg.set_data_id(data_id)
        sg.add_data(names, [start, -start][: len(names)], phase=phase)
sg.set_data_id("d")
print("ready", flush=True)
block = first
while True:
    values = block * ROWS + np.arange(ROWS, dtype=np.int64)
    if kind == "update":
        sg.set_data_id("upd")
        s = (block * 7) % (REWRITTEN - 20)
        new = block * 1000 + np.arange(s, s + 20, dtype=np.int64)
        sg.update_data(["u", "w"], [new, -new], phase="train", index=(s, s + 20))
    elif kind == "shuffle":
        sg.set_data_id("shf")
        sg.shuffle(phase="train", seed=block)
    elif kind == "delete":
        sg.set_data_id("del")
        sg.delete_data("t", "test")
        print(f"deleted {kind} {block}", flush=True)
        sg.add_data("t", block * 1000 + start, phase="test")
    elif kind == "add_data":
        sg.add_data(["x", "y"], [values, -values], phase="train")
    elif kind == "writer":
        with sg.writer("train") as w:
            for part in np.array_split(np.arange(ROWS), 5):
                w.add({"x": values[part], "y": -values[part]})
    else:
        sg.add_data(f"n{block}", values, phase="valid")
    print(f"done {kind} {block}", flush=True)
    block += 1
""".replace("REWRITTEN", str(REWRITTEN)).replace("ROWS", str(ROWS))


@dataclass
class Tally:
    """What the kills left."""

    kills: int = 0
    failed_to_open: int = 0
    committed_rows_lost: int = 0
    uncommitted_rows_visible: int = 0
    half_applied_calls: int = 0
    writer_errors: int = 0
    problems: list[str] = field(default_factory=list)

    def clean(self) -> bool:
        """True when nothing but the kills happened."""
        return not (
            self.failed_to_open
            or self.committed_rows_lost
            or self.uncommitted_rows_visible
            or self.half_applied_calls
            or self.writer_errors
        )

    def report(self) -> str:
        """One line per figure."""
        return "\n".join(
            [
                f"kills: {self.kills}",
                f"stores that fail to open: {self.failed_to_open}",
                f"committed rows lost: {self.committed_rows_lost}",
                f"uncommitted rows visible: {self.uncommitted_rows_visible}",
                f"half-applied calls: {self.half_applied_calls}",
                f"writers that failed before the kill: {self.writer_errors}",
            ]
        )


def _blocks(values: np.ndarray) -> tuple[set[int], int]:
    """The whole call blocks in ``values`` and the number of rows that belong to none."""
    whole: set[int] = set()
    stray = 0
    for start in range(0, len(values) - len(values) % ROWS, ROWS):
        chunk = values[start : start + ROWS]
        block = int(chunk[0]) // ROWS
        if chunk[0] % ROWS == 0 and np.array_equal(chunk, block * ROWS + np.arange(ROWS)):
            whole.add(block)
        else:
            stray += ROWS
    return whole, stray + len(values) % ROWS


def check(root: str, done: set[int], tally: Tally) -> None:
    """Open the store afresh and count what the last kill left (see the module docstring)."""
    from storegate import StoreGate

    try:
        sg = StoreGate("zarr", {"output_dir": root, "mode": "r"}, data_id="d")
        train = sg.get_var_names("train")
        x = sg.get_data("x", "train") if "x" in train else np.zeros(0, np.int64)
        y = sg.get_data("y", "train") if "y" in train else np.zeros(0, np.int64)
        news = {v: sg.get_data(v, "valid") for v in sg.get_var_names("valid")}
    except Exception as exc:
        tally.failed_to_open += 1
        tally.problems.append(f"open/read: {exc!r}")
        return
    if len(x) != len(y) or not np.array_equal(y, -x):
        tally.half_applied_calls += 1
        tally.problems.append(f"x ({len(x)} rows) and y ({len(y)} rows) disagree")
    found, stray = _blocks(x)
    for name, values in news.items():
        if len(values) != ROWS or not np.array_equal(values, int(name[1:]) * ROWS + np.arange(ROWS)):
            stray += len(values)
        else:
            found.add(int(name[1:]))
    tally.uncommitted_rows_visible += stray
    lost = done - found
    tally.committed_rows_lost += ROWS * len(lost)  # per variable
    if lost:
        tally.problems.append(f"blocks reported done but missing: {sorted(lost)[:5]}")
    try:
        StoreGate("zarr", {"output_dir": root, "mode": "a"}, data_id="d").compile()
    except Exception as exc:
        tally.half_applied_calls += 1
        tally.problems.append(f"compile: {exc!r}")


@dataclass
class History:
    """The rewrites each kind reported done, in order, and the call a kill may have cut short."""

    done: dict[str, list[int]] = field(default_factory=lambda: {"update": [], "shuffle": [], "delete": []})
    deleted: int | None = None  # the block whose delete reported done while its add did not
    cut_short: tuple[str, int] | None = None


def replay(kind: str, blocks: list[int]) -> dict[str, np.ndarray]:
    """The variables of a rewrite kind's data_id after ``blocks``, on the numpy backend."""
    from storegate import StoreGate

    start = np.arange(REWRITTEN, dtype=np.int64)
    sg = StoreGate("numpy", data_id=kind)
    sg.add_data(["u", "w"], [start, -start], phase="train")
    for block in blocks:
        if kind == "update":
            s = (block * 7) % (REWRITTEN - 20)
            new = block * 1000 + np.arange(s, s + 20, dtype=np.int64)
            sg.update_data(["u", "w"], [new, -new], phase="train", index=(s, s + 20))
        else:
            sg.shuffle(phase="train", seed=block)
    return {"u": sg.get_data("u", "train"), "w": sg.get_data("w", "train")}


def check_rewrites(root: str, history: History, tally: Tally) -> None:
    """The rewrite data_ids equal a replay of the calls done (or of those and the one cut short)."""
    from storegate import StoreGate

    try:
        found = {}
        for data_id in ("upd", "shf"):
            sg = StoreGate("zarr", {"output_dir": root, "mode": "r"}, data_id=data_id)
            found[data_id] = {"u": sg.get_data("u", "train"), "w": sg.get_data("w", "train")}
        sg = StoreGate("zarr", {"output_dir": root, "mode": "r"}, data_id="del")
        t = sg.get_data("t", "test") if "t" in sg.get_var_names("test") else None
    except Exception as exc:
        tally.failed_to_open += 1
        tally.problems.append(f"open/read the rewrites: {exc!r}")
        return
    for kind, data_id in (("update", "upd"), ("shuffle", "shf")):
        done = history.done[kind]
        options = [done] + (
            [[*done, history.cut_short[1]]] if history.cut_short and history.cut_short[0] == kind else []
        )
        matched = [blocks for blocks in options if _same(found[data_id], replay(kind, blocks))]
        if not matched:
            tally.half_applied_calls += 1
            tally.problems.append(f"{kind}: the store equals no replay of {done[-3:]} (+ the call cut short)")
        elif matched[0] is not done:  # the call cut short had committed before it could report
            done.append(matched[0][-1])
    allowed = {history.done["delete"][-1] if history.done["delete"] else 0}
    if history.deleted is not None:
        allowed.add(history.deleted)
    if t is not None and not any(np.array_equal(t, b * 1000 + np.arange(REWRITTEN)) for b in allowed):
        tally.half_applied_calls += 1
        tally.problems.append(f"delete: t holds no whole call's rows (blocks {sorted(allowed)})")


def _same(found: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> bool:
    return all(np.array_equal(found[k], v) for k, v in expected.items())


def note(history: History, kind: str, out: str, first: int) -> list[int]:
    """Record what a round's writer reported; the blocks it reported done."""
    blocks = [int(line.split()[2]) for line in out.splitlines() if line.startswith("done")]
    if kind in history.done:
        history.done[kind] += blocks
        history.cut_short = (kind, max(blocks) + 1 if blocks else first)
        if kind == "delete":
            deleted = [int(line.split()[2]) for line in out.splitlines() if line.startswith("deleted")]
            if deleted and (not blocks or deleted[-1] > blocks[-1]):
                history.deleted = deleted[-1]
            elif blocks:
                history.deleted = None
    return blocks


def run(kills: int, root: str | None = None, seed: int = 0, max_delay: float = 0.4) -> Tally:
    """``kills`` rounds of start, wait, SIGKILL, check; returns the tally."""
    root = root or tempfile.mkdtemp(prefix="storegate-kills-")
    rng = random.Random(seed)
    tally, done, first, history = Tally(), set(), 1, History()
    for round_ in range(kills):
        kind = KINDS[round_ % len(KINDS)]
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, root, kind, str(first)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the writer process did not start")
        time.sleep(rng.uniform(0.0, max_delay))
        os.kill(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        tally.kills += 1
        if child.returncode != -signal.SIGKILL:  # it stopped on its own before the kill: an error
            tally.writer_errors += 1
            tally.problems.append(f"the {kind} writer failed: {err.strip().splitlines()[-1:]}")
        blocks = note(history, kind, out, first)
        if kind not in history.done:
            done.update(blocks)
        first = max([first - 1, *blocks]) + 2  # past any block the killed call may have written
        check_rewrites(root, history, tally)  # read only, first: readers see the last commit
        check(root, done, tally)
    return tally


def main(argv: list[str]) -> int:
    kills = int(argv[1]) if len(argv) > 1 else 200
    began = time.monotonic()
    tally = run(kills)
    print(tally.report())
    print(f"took {time.monotonic() - began:.0f} s")
    for problem in tally.problems[:20]:
        print("  ", problem)
    return 0 if tally.clean() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
