"""verify() and repair(): what is wrong in a data_id, and bringing it back to its last commit.

:func:`verify` reads the store as it is and lists every :class:`Finding`: what writes that did
not finish left past the last commit (the backend's ``leftovers``), objects that are no
storegate variables, phases whose variables disagree in length, chunks lost from variables
that keep every chunk (the backend's ``missing_chunks``), and, with ``read_data``,
variables whose chunks cannot be read or decoded. :func:`repair` removes what the backend
can take back to the last commit (rows and variables past it), under the write lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tqdm.auto import tqdm

from storegate.backends import Finding, note_change
from storegate.engine import GroupEngine, validate
from storegate.errors import ValidationError
from storegate.phases import PHASES
from storegate.ragged_store import is_ragged, lengths, values_name

__all__ = ["BLOCK_BYTES", "Report", "repair", "verify"]

#: Uncompressed bytes read at a time when ``read_data`` checks every chunk.
BLOCK_BYTES = 64 << 20


@dataclass(frozen=True)
class Report:
    """What :func:`verify` found in one data_id; ``ok`` when nothing.

    Attributes
    ----------
    data_id
        The data_id checked.
    findings
        One :class:`~storegate.backends.Finding` per problem (path, what, repairable).
    """

    data_id: str
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.findings

    def __str__(self) -> str:
        if self.ok:
            return f"data_id {self.data_id!r}: no problem found"
        lines = [f"data_id {self.data_id!r}: {len(self.findings)} problem(s)"]
        for f in self.findings:
            lines.append(f"  {f.path}: {f.what}" + ("  [repair() fixes it]" if f.repairable else ""))
        return "\n".join(lines)


def verify(engine: GroupEngine, read_data: bool = True, progress: bool = False) -> Report:
    """Check a data_id as it is stored now (see the module docstring)."""
    backend, data_id = engine.backend, engine.data_id
    engine.refresh()
    findings = list(backend.leftovers(data_id))
    if any(f.path.startswith(".storegate/") for f in findings):
        return Report(data_id, tuple(findings))  # a damaged commit record: nothing else can be read
    findings += [
        Finding(f"{data_id}/{o.path}", f"{o.what}, not a storegate variable (skipped and left alone)")
        for o in backend.other_objects(data_id)
    ]
    try:
        validate(engine.fingerprint())
    except ValidationError as exc:
        findings.append(Finding(data_id, str(exc)))
    lost = _lost_chunks(engine)
    findings += [f for chunks in lost.values() for f in chunks]
    if read_data:
        findings += _unreadable(engine, progress, skip=set(lost))
        findings += _bad_offsets(engine)
    return Report(data_id, tuple(findings))


def _lost_chunks(engine: GroupEngine) -> dict[str, list[Finding]]:
    """Per variable path, one finding per chunk it is missing when it keeps every chunk (one
    listing per variable). A finding's path is ``'<data_id>/<phase>/<var_name>/<chunk key>'``.
    """
    backend, data_id = engine.backend, engine.data_id
    found: dict[str, list[Finding]] = {}
    for phase in PHASES:
        for var in backend.var_names(data_id, phase):  # both arrays of a ragged variable
            for key, start, stop in backend.missing_chunks(data_id, phase, var) or ():
                found.setdefault(f"{data_id}/{phase}/{var}", []).append(
                    Finding(
                        f"{data_id}/{phase}/{var}/{key}",
                        f"chunk lost (rows {start}-{stop - 1} of var_name {var!r}, phase {phase!r}): the variable "
                        "keeps every chunk, so a missing one was not empty. Reads that need it raise StorageError; "
                        "repair() cannot bring it back: rewrite the variable from its source (sg.update_data with "
                        "all its rows, or delete_data then add_data)",
                    )
                )
    return found


def _bad_offsets(engine: GroupEngine) -> list[Finding]:
    """Ragged variables whose end offsets do not bound their values (rising, ending at the values' length)."""
    found = []
    for phase in PHASES:
        for var in engine.var_names(phase):
            if not is_ragged(engine.backend, engine.data_id, phase, var):
                continue
            try:
                sizes = lengths(engine.backend, engine.data_id, phase, var)
            except Exception:  # unreadable: _unreadable already names it
                continue
            total = engine.backend.shape(engine.data_id, phase, values_name(var))[0]
            if (sizes < 0).any() or int(sizes.sum()) != total:
                found.append(
                    Finding(
                        f"{engine.data_id}/{phase}/{var}",
                        f"ragged offsets must rise and end at the {total} values. Got row lengths from "
                        f"{int(sizes.min())} summing to {int(sizes.sum())} instead; rewrite the variable.",
                    )
                )
    return found


def _unreadable(engine: GroupEngine, progress: bool, skip: set[str]) -> list[Finding]:
    """Read every committed row, a block at a time; a variable that fails is one finding
    (those whose paths are in ``skip`` are not read: their lost chunks are named already)."""
    backend, data_id = engine.backend, engine.data_id
    targets = [(p, v) for p in PHASES for v in backend.var_names(data_id, p) if f"{data_id}/{p}/{v}" not in skip]
    found = []
    for phase, var in tqdm(targets, desc="verify", unit="variable", disable=None if progress else True):
        shape, dtype = backend.shape(data_id, phase, var), backend.dtype(data_id, phase, var)
        row_bytes = max(1, int(dtype.itemsize * math.prod(shape[1:])))
        block = max(1, BLOCK_BYTES // row_bytes)
        try:
            for start in range(0, shape[0], block):  # a variable always has a row axis
                backend.read(data_id, phase, var, slice(start, start + block))
        except Exception as exc:  # a chunk zarr cannot read or decode, whatever the cause
            found.append(Finding(f"{data_id}/{phase}/{var}", f"unreadable: {type(exc).__name__}: {exc}"))
    return found


def repair(engine: GroupEngine) -> list[Finding]:
    """Remove what the backend finds past the last commit; returns what was removed."""
    engine.backend.check_writable()
    with engine.writing():
        removed = engine.backend.repair(engine.data_id)
    engine.refresh()
    note_change(engine.backend)
    return removed
