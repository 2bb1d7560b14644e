"""Streaming writes (matorage's DataSaver): buffer small batches, write each chunk once.

A preprocessing job usually produces data batch by batch. Appending each batch to a
chunked store rewrites the last, partial chunk every time; :class:`Writer` instead keeps
each variable's rows in memory until they fill whole stored objects (chunks, or shards
when the store is sharded) and writes those once, so K appends of B rows cost about what
one append of K*B rows costs. Memory per variable stays below one object plus one batch.

Variables are flushed independently (a label variable fills its chunks far later than an
image variable), so between flushes they may differ in length; the writer restores equal
lengths when it closes. The writer is one write transaction: if anything fails (the block
raises, a write fails, the process is interrupted), every variable is put back exactly as
it was before the writer opened.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 (its exit hook must be registered before ours)
import contextlib
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from storegate import steps
from storegate.backends import note_change
from storegate.engine import GroupEngine
from storegate.errors import InvalidArgumentError, StoreGateError, StoreGateWarning
from storegate.names import parse_var_names
from storegate.phases import resolve_phase
from storegate.ragged_store import check_names
from storegate.rules import as_array, cast, check_row_shape, common_length, with_rows
from storegate.transaction import Step, Transaction, deferred_interrupts

__all__ = ["Writer"]

#: Pending bytes per variable that trigger an append when the store has no object size
#: (memory): a numpy append copies the whole variable, so fewer, larger appends are cheaper.
MEMORY_FLUSH_BYTES = 64 << 20


@dataclass
class _Buffered:
    """One variable being written: its layout and the rows not yet stored."""

    name: str
    dtype: np.dtype
    row_shape: tuple[int, ...]
    created: bool  # made by this writer
    stored: int  # rows in the store
    unit: int | None = None  # rows per stored object
    pending: list[np.ndarray] = field(default_factory=list)
    pending_rows: int = 0

    def take(self, n: int) -> np.ndarray:
        """Remove and return the first ``n`` pending rows as one array."""
        block = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending)
        head, tail = block[:n], block[n:]
        self.pending = [tail] if len(tail) else []
        self.pending_rows -= n
        return head


class Writer:
    """Buffered appends to one phase of one data_id; made by :meth:`StoreGate.writer`.

    Use it as a context manager: on normal exit every buffered row is written and the
    compile state is marked stale (as ``add_data`` does). If the block raises, the writer
    is one failed call: every variable is put back as it was before the writer opened
    (variables it created are removed), and the error propagates. Without ``with``, call
    :meth:`close` at the end (or :meth:`abort` to undo everything).

    Parameters
    ----------
    engine
        The engine of the data_id to write to.
    phase
        Where the rows go (one phase: 'train', 'valid' or 'test').
    progress
        Show a tqdm progress bar of the rows added.
    total
        Expected number of rows, for the progress bar.
    options
        Backend options of the variables the writer creates (``{'compressor': ...}``).
    """

    def __init__(
        self,
        engine: GroupEngine,
        phase: str,
        *,
        progress: bool = False,
        total: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        engine.backend.check_writable()
        self._engine = engine
        self._db, self._data_id = engine.backend, engine.data_id
        self._phase = resolve_phase(phase, allow_all=False)
        self._options = dict(options or {})
        self._tx = Transaction()
        # The data_id's write lock, from the first batch to close: the block is one call.
        self._lock = contextlib.ExitStack()
        self._thread: int | None = None  # the thread holding that lock
        self._buffers: dict[str, _Buffered] = {}
        self._added = 0
        self._open = True
        self._bar = _progress_bar(progress, total, self._phase)
        _OPEN.add(self)

    # --- public --------------------------------------------------------------------------

    @property
    def phase(self) -> str:
        """The phase written to."""
        return self._phase

    @property
    def rows_added(self) -> int:
        """Rows passed to :meth:`add` so far (written or still buffered)."""
        return self._added

    def add(self, batch: Mapping[str, Any]) -> None:
        """Append one batch: ``{var_name: rows}``, numpy arrays or torch tensors ``(B, ...)``.

        Every batch must hold the same var_names with the same number of rows each; rows
        are cast to the stored dtype under numpy's ``same_kind`` rule, as in ``add_data``.
        The data are copied, so the caller may reuse its arrays.

        Raises
        ------
        InvalidArgumentError
            If the batch breaks one of the rules above; nothing of it is kept then.
        """
        self._check_open()
        arrays = self._validated(batch)
        for buffer in self._buffers.values():
            rows = np.array(arrays[buffer.name], dtype=buffer.dtype, copy=True, order="C")
            if len(rows):
                buffer.pending.append(rows)
                buffer.pending_rows += len(rows)
        n = len(next(iter(arrays.values())))
        self._added += n
        if self._bar is not None:
            self._bar.update(n)
        self._guarded(self._flush_full)

    __call__ = add  # matorage's ``data_saver({...})``

    def close(self) -> None:
        """Write every buffered row and mark the compile state stale (idempotent)."""
        if not self._open:
            return
        self._check_thread("close")
        self._guarded(self._write_rest)
        with deferred_interrupts():  # once every row is written, the block completes
            self._finish()
            self._tx.commit()

    def abort(self) -> None:
        """Drop buffered rows and put every variable back as it was before the writer opened."""
        if not self._open:
            return
        self._abort()

    def _abort(self, cause: BaseException | None = None) -> None:
        self._check_thread("abort")
        try:
            self._tx.rollback()
        finally:
            self._finish(cause)

    def __del__(self) -> None:
        # Dropped while open (no ``with``, no close()): finished as a file object is, with a
        # warning, rather than losing the rows it buffered or leaving half of them. At exit
        # the atexit hook below already did so: zarr's event loop is gone by now, and a
        # write would wait on it forever.
        if not getattr(self, "_open", False) or sys.is_finalizing():
            return
        if not self._buffers:  # nothing added (a first batch that was refused): nothing to lose
            self._finish()
            return
        try:
            self.close()
            done = "it was closed now and its rows are written"
        except Exception as exc:
            done = f"closing it now failed ({exc!r}) and its rows were taken back"
        # Shown by default (a ResourceWarning is not): the rows landed later than the caller thinks.
        warnings.warn(
            f"a storegate writer for phase {self._phase!r} was never closed; {done}. "
            "Use `with sg.writer() as w:` or call w.close().",
            StoreGateWarning,
            stacklevel=2,
        )

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            try:
                self.close()
            except BaseException:  # Ctrl-C before close() could start its own undo
                self.abort()
                raise
            return
        try:
            if self._open:
                self._abort(exc)
        except Exception as abort_exc:  # keep the caller's error; say the cleanup failed too
            exc.add_note(f"storegate: undoing the writer's appends also failed: {abort_exc!r}")

    # --- validation ----------------------------------------------------------------------

    def _validated(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(batch, Mapping) or not batch:
            raise InvalidArgumentError(
                f"batch must be a non-empty dict {{var_name: rows}}. Got {type(batch).__name__} instead."
            )
        names = parse_var_names(list(batch)).names
        arrays = {name: with_rows(as_array(batch[name], f"batch[{name!r}]"), f"batch[{name!r}]") for name in names}
        lengths = {name: a.shape[0] for name, a in arrays.items()}
        common_length(lengths, "every array of a batch", InvalidArgumentError)
        if self._buffers:
            self._check_batch(self._buffers, arrays)
            return arrays
        self._lock.enter_context(self._engine.writer_block())
        self._thread = threading.get_ident()
        try:
            buffers = self._plan_buffers(arrays)
            self._check_batch(buffers, arrays)
        except BaseException:
            self._lock.close()
            raise
        self._create_buffers(buffers)
        return arrays

    def _check_batch(self, buffers: dict[str, _Buffered], arrays: dict[str, np.ndarray]) -> None:
        names = list(arrays)
        if set(names) != set(buffers):
            raise InvalidArgumentError(
                f"batch must hold the var_names of the first batch, {sorted(buffers)}. Got {sorted(names)} instead."
            )
        for name, array in arrays.items():
            buffer = buffers[name]
            check_row_shape(name, self._phase, buffer.row_shape, array.shape[1:])
            cast(array, buffer.dtype, name)  # raises when same_kind forbids the cast

    def _plan_buffers(self, arrays: dict[str, np.ndarray]) -> dict[str, _Buffered]:
        """The variables of the first batch: stored layout if they exist, else the batch's."""
        buffers = {}
        check_names(arrays)
        for name, array in arrays.items():
            if self._engine.is_ragged("all", name):  # in any phase: a variable has one kind in all
                raise InvalidArgumentError(
                    f"batch must not hold the ragged var_name {name!r}: the writer appends rows of one shape. "
                    f"Got it for phase {self._phase!r}. Append ragged rows with add_data."
                )
            if self._db.has(self._data_id, self._phase, name):
                shape = self._db.shape(self._data_id, self._phase, name)
                dtype = self._db.dtype(self._data_id, self._phase, name)
                buffers[name] = _Buffered(name, np.dtype(dtype), shape[1:], created=False, stored=shape[0])
            else:
                buffers[name] = _Buffered(name, array.dtype, array.shape[1:], created=True, stored=0)
        starts = {name: c.stored for name, c in buffers.items()}
        common_length(
            starts, "the var_names of a writer", InvalidArgumentError, f" in phase {self._phase!r} before writing"
        )
        return buffers

    def _create_buffers(self, buffers: dict[str, _Buffered]) -> None:
        """Create the missing variables (empty) once the first batch passed every check.

        Each variable gets a step of the writer's transaction: creating it, or guarding its
        current rows, so that a failure later takes every append back.
        """
        self._buffers = buffers
        for buffer in buffers.values():
            self._guarded(lambda buffer=buffer: self._tx.do(self._first_step(buffer)))  # type: ignore[misc]
            buffer.unit = self._db.write_rows(self._data_id, self._phase, buffer.name)

    def _first_step(self, buffer: _Buffered) -> Step:
        if buffer.created:
            empty = np.empty((0, *buffer.row_shape), dtype=buffer.dtype)
            return steps.create_step(self._db, self._data_id, self._phase, buffer.name, empty, self._options)
        return steps.guard_step(self._db, self._data_id, self._phase, buffer.name, buffer.stored)

    # --- writing -------------------------------------------------------------------------

    def _flush_full(self) -> None:
        for buffer in self._buffers.values():
            n = _full_rows(buffer)
            if n:
                self._append(buffer, buffer.take(n))

    def _flush_all(self) -> None:
        for buffer in self._buffers.values():
            if buffer.pending_rows:
                self._append(buffer, buffer.take(buffer.pending_rows))

    def _append(self, buffer: _Buffered, rows: np.ndarray) -> None:
        self._check_unchanged(buffer)
        note_change(self._db)
        self._db.append(self._data_id, self._phase, buffer.name, rows)
        buffer.stored += len(rows)

    def _check_unchanged(self, buffer: _Buffered) -> None:
        """Refuse to append to a variable another call deleted or converted while the writer was open."""
        db, data_id, phase, name = self._db, self._data_id, self._phase, buffer.name
        same = db.has(data_id, phase, name) and (
            db.shape(data_id, phase, name)[1:],
            db.dtype(data_id, phase, name),
        ) == (
            buffer.row_shape,
            buffer.dtype,
        )
        if not same:
            raise StoreGateError(
                f"var_name {name!r} of phase {phase!r} was deleted or converted by another call while this writer "
                "was open; the writer stops and takes back its rows. Write it again with a new writer."
            )

    def _write_rest(self) -> None:
        self._flush_all()
        self._drop_empty()
        if self._buffers:
            self._mark_stale()
            self._tx.do(steps.commit_step(self._db, self._data_id))  # the block's rows become visible

    def _drop_empty(self) -> None:
        """multiml's rule, as add_data keeps it: no row, no variable (a writer that got 0 rows)."""
        for buffer in self._buffers.values():
            if buffer.created and not buffer.stored:
                self._tx.do(steps.delete_step(self._db, self._data_id, self._phase, buffer.name))

    def _mark_stale(self) -> None:
        for step in self._engine.stale_steps():
            self._tx.do(step)

    def _guarded(self, write: Callable[[], None]) -> None:
        """Run a write; on failure undo everything the writer did, close, and re-raise."""
        try:
            write()
        except BaseException as exc:
            try:
                self._tx.rollback(exc)
            finally:
                self._finish(exc)
            raise

    def _finish(self, failure: BaseException | None = None) -> None:
        """Close the writer; ``failure`` (the error that ended it) goes to the write lock's block,
        which then commits nothing and makes the next call check the store (the undo may
        have failed too)."""
        self._open = False
        if failure is None:
            self._lock.close()
        else:
            self._lock.__exit__(type(failure), failure, failure.__traceback__)
        note_change(self._db)  # the rows are in, or were taken back
        for buffer in self._buffers.values():
            buffer.pending, buffer.pending_rows = [], 0
        if self._bar is not None:
            self._bar.close()

    def _check_thread(self, what: str) -> None:
        if self._thread is not None and self._thread != threading.get_ident():
            raise StoreGateError(
                f"a writer must {what} in the thread that added its first batch, which holds the data_id's write "
                "lock. Call it there; nothing was written or undone."
            )

    def _check_open(self) -> None:
        if not self._open:
            raise StoreGateError(
                f"this writer for phase {self._phase!r} is closed; open a new one with StoreGate.writer()."
            )


#: Writers not closed yet, closed at interpreter exit while zarr can still write: before
#: the thread pools zarr's I/O runs on shut down. Those register their exit hook with
#: ``threading._register_atexit`` when concurrent.futures.thread is imported (done above, so
#: ours, registered later, runs first: the hooks run last-in first-out); atexit hooks would
#: run too late.
_OPEN: weakref.WeakSet[Writer] = weakref.WeakSet()


def _close_open_writers() -> None:
    for writer in list(_OPEN):
        writer.__del__()


getattr(threading, "_register_atexit", atexit.register)(_close_open_writers)


def _full_rows(buffer: _Buffered) -> int:
    """Pending rows to write now: up to the last object boundary they reach."""
    if buffer.unit is None:
        row_bytes = buffer.dtype.itemsize * int(np.prod(buffer.row_shape, dtype=np.int64))
        return buffer.pending_rows if buffer.pending_rows * row_bytes >= MEMORY_FLUSH_BYTES else 0
    end = (buffer.stored + buffer.pending_rows) // buffer.unit * buffer.unit
    return max(0, end - buffer.stored)


def _progress_bar(progress: bool, total: int | None, phase: str) -> Any:
    if not progress:
        return None
    return tqdm(total=total, unit="rows", desc=f"writing {phase}", disable=None)  # silent off a terminal
