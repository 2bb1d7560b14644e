"""The backend contract: one abstract class that every storage backend implements.

A backend stores plain numpy arrays addressed by ``(data_id, phase, var)`` (``var`` is a
var_name) and a small JSON-able state dict per data_id. It knows nothing of var_names
forms, phase splits, compile rules or transactions: the engine (:mod:`storegate.engine`)
owns those and validates every argument before it calls a backend, so a backend only sees
well-formed calls.

The contract is a short list of abstract methods; everything else is built once here on
top of them, with a note for implementers where a store can do better. Besides the data
calls it has three groups:

- **undo**: :meth:`Backend.checkpoint` / :meth:`Backend.rollback` and :meth:`Backend.detach`
  / :meth:`Backend.reattach` / :meth:`Backend.discard`, which the engine's write
  transactions use to put a variable back exactly as it was when a write fails;
- **reopening**: :meth:`Backend.reopen_args`, the picklable ``backend_args`` that open the
  same data in another process (``None`` for data that live in this process's memory);
- **other objects**: :meth:`Backend.other_objects` lists what other tools left in a store
  (:class:`OtherObject`), which every call skips and never changes;
- **tiers**: a backend that holds several stores and routes calls to one of them (hybrid)
  also implements the small :class:`TieredBackend` protocol.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from storegate.errors import ConflictError, NotFoundError, ReadOnlyError
from storegate.indexing import Inner, Selection, clip_rows
from storegate.locks import DEFAULT_LOCK_TIMEOUT, ProcessLock, holding
from storegate.transaction import to_completion

__all__ = ["Backend", "Checkpoint", "Finding", "OtherObject", "TieredBackend", "VarInfo", "change_count", "note_change"]

#: Writes seen in this process per location (``Backend.location``): a reader that keeps what
#: it read (StoreGateDataset's chunk cache) compares the count to know when to look again.
_CHANGES: dict[str, int] = {}


def note_change(backend: Backend) -> None:
    """Count a write (or an undone one) to ``backend``'s data, and to each tier's of a hybrid."""
    locations = [backend.location]
    if isinstance(backend, TieredBackend):
        locations += [tier.location for tier in backend.tiers().values()]
    for location in locations:
        _CHANGES[location] = _CHANGES.get(location, 0) + 1


def change_count(location: str) -> int:
    """Writes this process made to the data at ``location`` so far (see :func:`note_change`)."""
    return _CHANGES.get(location, 0)


@dataclass(frozen=True)
class VarInfo:
    """What a backend knows of one stored variable."""

    dtype: np.dtype
    shape: tuple[int, ...]
    chunk_rows: int | None = None
    stored_bytes: int | None = None
    codec: str | None = None


@dataclass(frozen=True)
class OtherObject:
    """Something in a store that is not a storegate variable, e.g. left there by another tool.

    Attributes
    ----------
    path
        Where it lies: relative to its data_id (``'train/mean'``, ``'extra'``), or to the
        root of the store for what lies beside the data_ids.
    what
        What it is, for people: ``'0-d array'``, ``'group'``, ``"array named '.x'"``...
    """

    path: str
    what: str


@dataclass(frozen=True)
class Finding:
    """Something ``verify()`` found wrong in a store.

    Attributes
    ----------
    path
        Where: ``'<data_id>/<phase>/<var_name>'``, or the object's path.
    what
        What is wrong, for people.
    repairable
        True when ``repair()`` brings it back to the last commit.
    """

    path: str
    what: str
    repairable: bool = False


@dataclass(frozen=True)
class Checkpoint:
    """What a backend saved to put one variable back as it was.

    Attributes
    ----------
    data_id, phase, var
        The variable.
    shape
        Its shape when the checkpoint was taken; ``None`` when it did not exist.
    rows
        The rows whose contents were saved (a step-1 slice). A write covered by this
        checkpoint may change those rows and add rows past the end, nothing else.
    saved
        The backend's own record (decoded rows by default; raw stored objects for zarr).
    """

    data_id: str
    phase: str
    var: str
    shape: tuple[int, ...] | None
    rows: slice
    saved: Any = None

    @property
    def existed(self) -> bool:
        """True when the variable existed."""
        return self.shape is not None

    @property
    def whole(self) -> bool:
        """True when every row was saved (the write may change dtype, row shape, anything)."""
        return self.shape is not None and self.rows == slice(0, self.shape[0], 1)


class Backend(ABC):
    """Abstract storage backend.

    Implementations must make ``read`` return a new array (never a view into storage)
    and ``create`` / ``append`` / ``write`` copy their input.
    """

    name: ClassVar[str]
    #: Data survive the process (a zarr store); ``False`` for memory.
    persistent: ClassVar[bool] = False
    #: :meth:`read` may run in several threads of one process at once (the loader then
    #: reads the chunk runs of a batch concurrently); ``False`` unless a backend says so.
    concurrent_reads: ClassVar[bool] = False

    @property
    def writable(self) -> bool:
        """False when the store was opened read-only."""
        return True

    @property
    def location(self) -> str:
        """Where the data live, for messages and show_info."""
        return "memory"

    @property
    def remote(self) -> bool:
        """True when reads wait on the network (an object store), so overlapping more of them pays."""
        return False

    @property
    def version(self) -> str | None:
        """The version of the data this backend reads (an icechunk snapshot id).

        ``None`` for a store that keeps no versions (the default).
        """
        return None

    # --- data ids --------------------------------------------------------------------

    @abstractmethod
    def data_ids(self) -> list[str]:
        """Sorted data_ids held by the backend."""

    def has_data_id(self, data_id: str) -> bool:
        """True when the backend holds ``data_id`` (a store may answer without listing them all)."""
        return data_id in self.data_ids()

    @abstractmethod
    def create_data_id(self, data_id: str) -> None:
        """Create an empty data_id if it does not exist yet."""

    @abstractmethod
    def delete_data_id(self, data_id: str) -> None:
        """Remove a data_id and everything in it (no-op when absent)."""

    # --- variables -------------------------------------------------------------------

    @abstractmethod
    def var_names(self, data_id: str, phase: str) -> list[str]:
        """Sorted variable names stored under ``data_id`` / ``phase`` (never an :meth:`other_objects` entry)."""

    @abstractmethod
    def shape(self, data_id: str, phase: str, var: str) -> tuple[int, ...]:
        """Full shape ``(N, ...)``; raises NotFoundError when absent. Must be cheap."""

    @abstractmethod
    def dtype(self, data_id: str, phase: str, var: str) -> np.dtype:
        """Stored dtype; raises NotFoundError when absent. Must be cheap."""

    @abstractmethod
    def create(self, data_id: str, phase: str, var: str, data: np.ndarray, **options: Any) -> None:
        """Store ``data`` as a new variable, replacing any variable of that name."""

    @abstractmethod
    def append(self, data_id: str, phase: str, var: str, data: np.ndarray) -> None:
        """Append rows; ``data`` already has the stored dtype and row shape."""

    @abstractmethod
    def read(self, data_id: str, phase: str, var: str, selection: Selection) -> np.ndarray:
        """Rows of a normalised selection, as a new array."""

    def read_inner(self, data_id: str, phase: str, var: str, selection: Selection, inner: Inner) -> np.ndarray:
        """Rows of a normalised selection and, inside each row, what ``inner`` selects, as a new array.

        ``inner`` holds one item per axis of a row: an in-range int (the axis is dropped), a
        slice with ``0 <= start <= stop`` and ``step >= 1``, or, on one axis at most and then
        with no int item and a slice or array ``selection``, a 1-D int64 array of in-range
        positions (any order, repeats allowed). The result is the orthogonal selection:
        ``rows[:, *inner]`` (``row[*inner]`` for an int selection) as numpy gives it, the
        rows read first when both ``selection`` and an item are arrays.

        Note for implementers: the default reads whole rows, then selects inside them in
        memory (right for any backend); a chunked store should read only the chunks that
        hold the selection.
        """
        rows = self.read(data_id, phase, var, selection)
        lead = () if isinstance(selection, int) else (slice(None),)
        return np.array(rows[(*lead, *inner)], copy=True)

    def read_cached(self, data_id: str, phase: str, var: str, selection: Selection, inner: Inner) -> np.ndarray:
        """What :meth:`read_inner` gives (``inner=()``: :meth:`read`), as a new array; the engine's reads.

        Note for implementers: the default reads the store. A backend may serve small reads
        from decoded chunks it keeps, provided it never serves what the last commit no
        longer holds (the zarr backend: :mod:`storegate.backends.zarr_cache`). Readers that
        keep chunks themselves (DataLoader workers) call :meth:`read` instead.
        """
        if not inner:
            return self.read(data_id, phase, var, selection)
        return self.read_inner(data_id, phase, var, selection, inner)

    def cached_row(self, data_id: str, phase: str, var: str, index: int) -> np.ndarray | None:
        """Row ``index`` (an int, negatives from the end) of ``var`` when the backend holds it
        decoded and it can be served at once; else ``None`` (the caller reads it as usual).

        The engine asks between :meth:`start_read` and :meth:`unchanged`, for ``sg[phase][var][i]``
        and ``get_data(var, phase, i)``: a backend keeping decoded chunks answers without
        opening anything. Note for implementers: the default holds nothing.
        """
        return None

    def warm_row(self, data_id: str, phase: str, var: str, index: int) -> np.ndarray | None:
        """Row ``index`` of ``var`` as :meth:`cached_row` gives it, checked on its own: a whole
        read call, without :meth:`start_read` / :meth:`unchanged`, when the backend can tell
        at once that nothing changed since its last read; else ``None`` (the caller reads as
        usual). The hot path of ``sg[phase][var][i]`` on a warm cache. Note for implementers:
        the default tells nothing.
        """
        return None

    @abstractmethod
    def write(self, data_id: str, phase: str, var: str, selection: Selection, data: np.ndarray) -> None:
        """Overwrite the rows of a selection; ``data`` already has the stored dtype."""

    @abstractmethod
    def resize(self, data_id: str, phase: str, var: str, n_rows: int) -> None:
        """Grow (filled with zeros) or shrink a variable to ``n_rows`` rows."""

    @abstractmethod
    def delete(self, data_id: str, phase: str, var: str) -> None:
        """Remove a variable (no-op when absent)."""

    # --- storegate's own state -------------------------------------------------------

    @abstractmethod
    def load_state(self, data_id: str) -> dict[str, Any]:
        """The state dict saved for ``data_id`` (empty when none)."""

    @abstractmethod
    def save_state(self, data_id: str, state: dict[str, Any]) -> None:
        """Persist the state dict for ``data_id`` (JSON-able values only)."""

    def refresh(self, data_id: str) -> None:  # noqa: B027 (an optional hook: doing nothing is right)
        """Forget what is cached of ``data_id``: the next calls see the store as it is now.

        Another process may have changed a persistent store since it was opened. Note for
        implementers: the default does nothing (nothing cached); a backend that caches
        array metadata or the state must drop them, keeping only a state saved by this
        process that the store could not hold (read-only).
        """

    def commit(self, data_id: str) -> None:  # noqa: B027 (an optional hook: doing nothing is right)
        """Make the running call's writes of ``data_id`` visible to readers, all at once.

        The last step of every transaction (see :func:`storegate.steps.commit_step`), inside
        :meth:`writing`. Note for implementers: the default does nothing (writes are visible
        as they happen); a backend with a commit point writes it here, and :meth:`uncommit`
        puts the previous one back.
        """

    def uncommit(self, data_id: str) -> None:  # noqa: B027 (an optional hook: doing nothing is right)
        """Undo :meth:`commit` (safe whether it ran completely, partly or not at all)."""

    def leftovers(self, data_id: str) -> list[Finding]:
        """What writes that did not finish left beyond the last commit of ``data_id``.

        Note for implementers: the default finds nothing (a backend whose writes are undone
        in memory, or that has no commit point). See :meth:`repair`.
        """
        return []

    def missing_chunks(self, data_id: str, phase: str, var: str) -> list[tuple[str, int, int]] | None:
        """The chunks of the variable's committed rows that are not stored: ``(key, start, stop)``
        each, the store key relative to the variable and the rows ``[start, stop)`` it held.

        ``None`` when the variable does not keep every chunk, so that a missing chunk may be
        an empty one (zarr's default; arrays written before storegate kept them, or by other
        tools): nothing can be told then. ``verify()`` lists each key as a finding.

        Note for implementers: the default (``None``) suits a backend without chunks (memory).
        """
        return None

    def repair(self, data_id: str) -> list[Finding]:
        """Bring ``data_id`` back to its last commit: remove what :meth:`leftovers` finds.

        Call it holding :meth:`writing`. Returns what was removed.
        """
        return []

    def refresh_if_changed(self, data_id: str) -> None:  # noqa: B027 (an optional hook)
        """:meth:`refresh` when another process committed ``data_id`` since this backend read it.

        Every read of the engine calls it first, so each read sees the newest commit. Note
        for implementers: the default does nothing (nothing cached, or nothing to compare).
        """

    def data_version(self, data_id: str) -> str | None:
        """A text that changes whenever a commit of ``data_id`` changes its data, read now.

        Readers that keep what they read (a DataLoader's chunk caches, in every worker)
        compare it between batches, so they see other processes' commits too. Note for
        implementers: the default is ``None`` (unknown: a reader then only sees the writes
        of its own process); a backend with a commit point returns something of it.
        """
        return None

    def start_read(self, data_id: str) -> None:
        """Start a read that :meth:`unchanged` checks afterwards: the read sees the newest commit.

        The engine calls it before every read of ``get_data`` and the item syntax. Note for
        implementers: the default is :meth:`refresh_if_changed`; a backend may instead go by
        the commit the previous read checked, when :meth:`unchanged` then refuses a read
        unless that commit is still the newest (one check per read instead of two).
        """
        self.refresh_if_changed(data_id)

    def unchanged(self, data_id: str) -> bool:
        """True when no other process started changing ``data_id`` in place since :meth:`start_read`.

        The engine checks it after reading, and reads again when it is false: rows read
        while another process rewrote them in place could mix old and new. The default
        is true (nothing else writes this backend's data).
        """
        return True

    def other_objects(self, data_id: str | None = None) -> list[OtherObject]:
        """What the store holds besides storegate's data, sorted by path.

        Every storegate call skips these objects and never changes or deletes them:
        :meth:`data_ids` and :meth:`var_names` leave them out, :meth:`has` is false for
        them, and creating a variable, phase or data_id where one lies raises a
        StoreGateError naming it. ``show_info`` lists them.

        Parameters
        ----------
        data_id
            List what lies inside this data_id besides the variables of its phases (0-d
            arrays or groups inside a phase, arrays whose names storegate refuses, members
            other than the phases, objects zarr cannot read...). ``None``: what lies at the
            top of the store besides the data_ids.

        Note for implementers: the default returns nothing, which is right for a store that
        only storegate writes (memory). A store that other tools can also write must list
        what they left, and refuse to create anything where it lies.
        """
        return []

    # --- built on the above ----------------------------------------------------------

    def has(self, data_id: str, phase: str, var: str) -> bool:
        """True when the variable exists."""
        return var in self.var_names(data_id, phase)

    def info(self, data_id: str, phase: str, var: str) -> VarInfo:
        """Dtype and shape; backends with chunks add chunk rows, codec and stored bytes."""
        return VarInfo(self.dtype(data_id, phase, var), self.shape(data_id, phase, var))

    def chunk_rows(self, data_id: str, phase: str, var: str) -> int | None:
        """Rows per (inner) chunk, as :meth:`info` gives them; override when ``info`` does more
        work (the loader asks this before batches, while other processes may write)."""
        return self.info(data_id, phase, var).chunk_rows

    def replace(self, data_id: str, phase: str, var: str, data: np.ndarray, **options: Any) -> None:
        """Replace a variable's contents with ``data`` (any length, dtype or row shape).

        Note for implementers: the default recreates the variable; override when the
        store can resize in place (same dtype and row shape) more cheaply.
        """
        self.create(data_id, phase, var, data, **options)

    def create_empty(
        self, data_id: str, phase: str, var: str, shape: tuple[int, ...], dtype: np.dtype, **options: Any
    ) -> None:
        """Create a variable of zeros; ``options`` as in :meth:`create`.

        Note for implementers: the default materialises the zeros; a chunked store can
        rely on its fill value instead, unless it must tell a lost chunk from an empty one
        (the zarr backend writes them: see :mod:`storegate.backends.zarr_chunks`).
        """
        self.create(data_id, phase, var, np.zeros(shape, dtype=dtype), **options)

    def write_rows(self, data_id: str, phase: str, var: str) -> int | None:
        """Rows per stored object (a chunk or shard) of an existing variable.

        Appends that end on a multiple of it write each object once (the streaming writer
        relies on that). ``None`` when appends of any size cost the same (memory).
        """
        return None

    @contextlib.contextmanager
    def writing(self, data_id: str) -> Iterator[None]:
        """Hold ``data_id``'s write lock while a call plans and applies its writes.

        Every mutating call of storegate runs inside it, so writers of one data_id take
        turns and each plans from the data as the previous one left them. Re-entrant. A
        read-only store takes no lock (the write then raises ReadOnlyError as usual). Note
        for implementers: the default is a lock of this process (its threads take turns);
        a backend whose data other processes can change must lock them out too and, once
        the lock is taken, forget what it cached of ``data_id`` if another process wrote.
        """
        if not self.writable:
            yield
            return
        locks: dict[str, ProcessLock] = self.__dict__.setdefault("_process_write_locks", {})
        lock = locks.setdefault(data_id, ProcessLock(f"data_id {data_id!r}"))
        with holding(lock, DEFAULT_LOCK_TIMEOUT):
            yield

    @contextlib.contextmanager
    def writer_block(self, data_id: str) -> Iterator[None]:
        """Mark ``data_id`` as held by an open ``sg.writer()`` block of this thread, while it runs.

        Taken inside :meth:`writing` by the streaming writer (matorage's DataSaver): the block
        commits or aborts everything it wrote at once, so another call of this thread on
        the data_id (which would land or vanish with the block) is refused, see
        :meth:`check_no_writer_block`.
        """
        blocks: dict[str, int] = self.__dict__.setdefault("_writer_blocks", {})
        blocks[data_id] = threading.get_ident()
        try:
            yield
        finally:
            blocks.pop(data_id, None)

    def check_no_writer_block(self, data_id: str) -> None:
        """Raise ConflictError when this thread has a ``sg.writer()`` block open on ``data_id``.

        Other threads are not refused: they wait for the write lock that the block holds.
        """
        if self.__dict__.get("_writer_blocks", {}).get(data_id) == threading.get_ident():
            raise ConflictError(
                f"data_id {data_id!r} must not be written by another call while a sg.writer() block of this "
                "thread is open on it (the block commits or aborts all it wrote at once, so this call would land "
                "or vanish with it). Got a write through the same StoreGate. Add the rows through the writer "
                "(w.add), or close the writer first."
            )

    def check_writable(self) -> None:
        """Raise ReadOnlyError when the store was opened read-only."""
        if not self.writable:
            raise ReadOnlyError(
                f"the store at {self.location} was opened with mode 'r' and refuses writes. "
                "Open it with mode 'a' to change it."
            )

    def reopen_args(self, mode: str = "r") -> dict[str, Any] | None:
        """Picklable ``backend_args`` that open the same data again in another process.

        ``create_backend(backend.name, backend.reopen_args())`` opens what this backend
        reads now. ``None`` when the data live in this process's memory and another
        process cannot open them (the default: in-memory backends).
        """
        return None

    # --- undo (used by the engine's write transactions) ------------------------------

    def checkpoint(self, data_id: str, phase: str, var: str, rows: slice | None = None) -> Checkpoint:
        """Save what :meth:`rollback` needs to put a variable back as it is now.

        Parameters
        ----------
        rows
            The rows a write may change (a step-1 slice, clipped to the variable; rows
            past the end may also be added). ``None``: every row, and the write may also
            change the dtype and row shape. An absent variable needs nothing saved.

        Note for implementers: the default saves the decoded rows (memory proportional to
        ``rows``); a chunked store can save its raw stored objects instead.
        """
        if not self.has(data_id, phase, var):
            return Checkpoint(data_id, phase, var, None, slice(0, 0, 1))
        shape = self.shape(data_id, phase, var)
        span = clip_rows(rows, shape[0])
        return Checkpoint(data_id, phase, var, shape, span, self.read(data_id, phase, var, span))

    def rollback(self, checkpoint: Checkpoint) -> None:
        """Put the variable back exactly as it was when ``checkpoint`` was taken.

        Safe to call whether the write it guards ran completely, partly or not at all.
        """
        data_id, phase, var = checkpoint.data_id, checkpoint.phase, checkpoint.var
        if checkpoint.shape is None:
            self.delete(data_id, phase, var)
        elif checkpoint.whole or not self.has(data_id, phase, var):
            self.create(data_id, phase, var, checkpoint.saved)
        else:
            self.resize(data_id, phase, var, checkpoint.shape[0])
            if checkpoint.rows.stop > checkpoint.rows.start:
                self.write(data_id, phase, var, checkpoint.rows, checkpoint.saved)

    def detach(self, data_id: str, phase: str, var: str) -> Checkpoint:
        """Make a variable invisible, keeping what :meth:`reattach` needs to bring it back.

        Note for implementers: the default saves every row and deletes the variable; a
        store that can hide a variable cheaply (drop a reference, delete only its metadata)
        should, and free the rest in :meth:`discard`.
        """
        checkpoint = self.checkpoint(data_id, phase, var)
        try:
            self.delete(data_id, phase, var)
        except BaseException:  # a detach happens or leaves the variable as it was
            to_completion(lambda: self.rollback(checkpoint))
            raise
        return checkpoint

    def reattach(self, checkpoint: Checkpoint) -> None:
        """Undo :meth:`detach`: the variable is visible again, as it was."""
        if checkpoint.existed:
            self.rollback(checkpoint)

    def discard(self, checkpoint: Checkpoint) -> None:  # noqa: B027 (nothing is left by default)
        """Free what :meth:`detach` kept, once the deletion is final."""

    # --- helpers for implementers ----------------------------------------------------

    def missing_error(self, data_id: str, phase: str, var: str) -> NotFoundError:
        """The NotFoundError to raise for an absent variable (``shape``, ``dtype``, ``read``...).

        It names the variable, data_id and phase and lists the stored var_names, as every
        backend's errors must (the conformance suite checks the message).
        """
        return NotFoundError(
            f"var_name {var!r} does not exist in data_id {data_id!r}, phase {phase!r}. "
            f"Stored var_names there: {self.var_names(data_id, phase)}."
        )


@runtime_checkable
class TieredBackend(Protocol):
    """A backend that holds several stores (tiers) and routes every call to one of them.

    The hybrid backend has a memory tier ``'numpy'`` and a storage tier ``'zarr'``
    (multiml's ``set_mode``); the StoreGate facade moves data between tiers.
    """

    @property
    def tier(self) -> str:
        """The tier that calls go to now."""

    def set_tier(self, tier: str) -> None:
        """Route calls to ``tier``; raises InvalidArgumentError for an unknown tier."""

    def tiers(self) -> dict[str, Backend]:
        """The backend of every tier, by tier name."""
