"""Streaming writes (matorage's DataSaver): buffer small batches, write each chunk once.

A preprocessing job usually produces data batch by batch. Appending each batch to a
chunked store rewrites the last, partial chunk every time; :class:`Writer` instead keeps
each variable's rows in memory until they fill whole stored objects (chunks, or shards
when the store is sharded) and writes those once, so K appends of B rows cost about what
one append of K*B rows costs. Memory per variable stays below one object plus one batch.

Variables are flushed independently (a label column fills its chunks far later than an
image column), so between flushes they may differ in length; the writer restores equal
lengths when it closes, and if anything fails it cuts every variable back to the rows
that all of them hold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from storegate.backends import Backend
from storegate.errors import InvalidArgumentError, StoreGateError
from storegate.gate import _cast, _check_rows_fit, _codec_options
from storegate.names import as_array, parse_var_names
from storegate.phases import resolve_phase

__all__ = ["Writer"]

#: Pending bytes per variable that trigger an append when the store has no object size
#: (memory): a numpy append copies the whole variable, so fewer, larger appends are cheaper.
MEMORY_FLUSH_BYTES = 64 << 20


@dataclass
class _Column:
    """One variable being written: its layout and the rows not yet stored."""

    name: str
    dtype: np.dtype
    row_shape: tuple[int, ...]
    created: bool  # made by this writer (removed again if nothing of it survives)
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
    compile state is marked stale (as ``add_data`` does). If the block raises, rows not
    yet written are dropped, every variable is cut to the rows that all of them hold,
    and the error propagates. Without ``with``, call :meth:`close` at the end.

    Parameters
    ----------
    backend
        The store to write to.
    data_id, phase
        Where the rows go (one phase: 'train', 'valid' or 'test').
    progress
        Show a tqdm progress bar of the rows added.
    total
        Expected number of rows, for the progress bar.
    compressor
        Codec of the variables the writer creates, as in :meth:`StoreGate.add_data`.
    on_close
        Called once after the writer wrote anything (the StoreGate marks its state stale).
    """

    def __init__(
        self,
        backend: Backend,
        data_id: str,
        phase: str,
        *,
        progress: bool = False,
        total: int | None = None,
        compressor: Any = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        backend.check_writable()
        self._db, self._data_id = backend, data_id
        self._phase = resolve_phase(phase, allow_all=False)
        self._options = _codec_options(compressor)
        self._on_close = on_close
        self._columns: dict[str, _Column] = {}
        self._added = 0
        self._open = True
        self._bar = _progress_bar(progress, total, self._phase)

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
        for column in self._columns.values():
            rows = np.array(arrays[column.name], dtype=column.dtype, copy=True, order="C")
            if len(rows):
                column.pending.append(rows)
                column.pending_rows += len(rows)
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
        try:
            self._guarded(self._flush_all)
        finally:
            self._finish()

    def abort(self) -> None:
        """Drop buffered rows and cut every variable to the rows all of them hold."""
        if not self._open:
            return
        try:
            self._rollback()
        finally:
            self._finish()

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.abort()
        except Exception as abort_exc:  # keep the caller's error; say the cleanup failed too
            if hasattr(exc, "add_note"):
                exc.add_note(f"storegate: restoring equal variable lengths also failed: {abort_exc!r}")

    # --- validation ----------------------------------------------------------------------

    def _validated(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(batch, Mapping) or not batch:
            raise InvalidArgumentError(
                f"batch must be a non-empty dict {{var_name: rows}}. Got {type(batch).__name__} instead."
            )
        names = parse_var_names(list(batch)).names
        arrays = {name: _rows(as_array(batch[name], f"batch[{name!r}]"), name) for name in names}
        lengths = {name: a.shape[0] for name, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise InvalidArgumentError(f"every array of a batch must have the same number of rows. Got {lengths}.")
        columns = self._columns or self._plan_columns(arrays)
        if set(names) != set(columns):
            raise InvalidArgumentError(
                f"batch must hold the var_names of the first batch, {sorted(columns)}. Got {sorted(names)} instead."
            )
        for name, array in arrays.items():
            column = columns[name]
            _check_rows_fit(name, self._phase, column.row_shape, array.shape[1:])
            _cast(array, column.dtype, name)  # raises when same_kind forbids the cast
        if not self._columns:
            self._create_columns(columns)
        return arrays

    def _plan_columns(self, arrays: dict[str, np.ndarray]) -> dict[str, _Column]:
        """The variables of the first batch: stored layout if they exist, else the batch's."""
        columns = {}
        for name, array in arrays.items():
            if self._db.has(self._data_id, self._phase, name):
                shape = self._db.shape(self._data_id, self._phase, name)
                dtype = self._db.dtype(self._data_id, self._phase, name)
                columns[name] = _Column(name, np.dtype(dtype), shape[1:], created=False, stored=shape[0])
            else:
                columns[name] = _Column(name, array.dtype, array.shape[1:], created=True, stored=0)
        starts = {name: c.stored for name, c in columns.items()}
        if len(set(starts.values())) > 1:
            raise InvalidArgumentError(
                f"the var_names of a writer must hold the same number of rows in phase {self._phase!r} "
                f"before writing. Got {starts} instead."
            )
        return columns

    def _create_columns(self, columns: dict[str, _Column]) -> None:
        """Create the missing variables (empty) once the first batch passed every check."""
        self._columns = columns
        for column in columns.values():
            if column.created:
                empty = np.empty((0, *column.row_shape), dtype=column.dtype)
                self._db.create(self._data_id, self._phase, column.name, empty, **self._options)
            column.unit = self._db.write_rows(self._data_id, self._phase, column.name)

    # --- writing -------------------------------------------------------------------------

    def _flush_full(self) -> None:
        for column in self._columns.values():
            n = _full_rows(column)
            if n:
                self._append(column, column.take(n))

    def _flush_all(self) -> None:
        for column in self._columns.values():
            if column.pending_rows:
                self._append(column, column.take(column.pending_rows))

    def _append(self, column: _Column, rows: np.ndarray) -> None:
        self._db.append(self._data_id, self._phase, column.name, rows)
        column.stored += len(rows)

    def _guarded(self, step: Callable[[], None]) -> None:
        """Run a write step; on failure restore equal lengths, close, and re-raise."""
        try:
            step()
        except BaseException:
            try:
                self._rollback()
            finally:
                self._finish()
            raise

    def _rollback(self) -> None:
        for column in self._columns.values():
            column.pending, column.pending_rows = [], 0
        if not self._columns:
            return
        # Bookkeeping counts only appends that returned; a failed one may have grown its array.
        keep = min(column.stored for column in self._columns.values())
        for column in self._columns.values():
            if column.created and keep == 0:
                self._db.delete(self._data_id, self._phase, column.name)
            elif self._stored_rows(column.name) > keep:
                self._db.resize(self._data_id, self._phase, column.name, keep)

    def _finish(self) -> None:
        self._open = False
        if self._bar is not None:
            self._bar.close()
        if self._columns and self._on_close is not None:
            self._on_close()

    def _stored_rows(self, name: str) -> int:
        if not self._db.has(self._data_id, self._phase, name):
            return 0
        return self._db.shape(self._data_id, self._phase, name)[0]

    def _check_open(self) -> None:
        if not self._open:
            raise StoreGateError(
                f"this writer for phase {self._phase!r} is closed; open a new one with StoreGate.writer()."
            )


def _full_rows(column: _Column) -> int:
    """Pending rows to write now: up to the last object boundary they reach."""
    if column.unit is None:
        row_bytes = column.dtype.itemsize * int(np.prod(column.row_shape, dtype=np.int64))
        return column.pending_rows if column.pending_rows * row_bytes >= MEMORY_FLUSH_BYTES else 0
    end = (column.stored + column.pending_rows) // column.unit * column.unit
    return max(0, end - column.stored)


def _rows(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 0:
        raise InvalidArgumentError(f"batch[{name!r}] must have a leading row axis (B, ...). Got a scalar instead.")
    return array


def _progress_bar(progress: bool, total: int | None, phase: str) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="rows", desc=f"writing {phase}")
