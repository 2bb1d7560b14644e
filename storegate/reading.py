"""Reading the rows of a phase, or of a view of rows, in batches: the framework-free half of
:mod:`storegate.torch` and :mod:`storegate.tensorflow`.

- :class:`StoreHandle`: a store's picklable reopen arguments, opened read-only once per
  process (again after a fork), so a worker never uses its parent's fsspec client.
- :func:`chunked_variable` / :func:`memory_variable`: the :mod:`storegate.loader`
  variable a training loop reads, from the store's layout or from memory.
- :class:`BatchReader`: the rows of a phase or a view of rows read in batches (each stored
  chunk once per batch, an LRU cache of decoded chunks), with the chunk layout that
  :func:`storegate.loader.epoch_order` orders an epoch by, and a check of this process's
  writes since it was made.

Data that another process cannot reopen from configuration (the backend's
:meth:`~storegate.backends.Backend.reopen_args` is ``None``: the numpy backend, the hybrid
backend in mode 'numpy', a zarr ``MemoryStore``) are read into memory when the reader is
made (multiml's ``preload``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar, Union

import numpy as np

from storegate import codecs
from storegate.backends import Backend, change_count, create_backend
from storegate.engine import GroupEngine
from storegate.errors import InvalidArgumentError, StoreGateError
from storegate.gate import StoreGate
from storegate.loader import (
    ChunkCache,
    ChunkedVariable,
    Fetch,
    MemoryVariable,
    Segment,
    view_chunk_bounds,
)
from storegate.phases import phases_of, resolve_phase
from storegate.rowmaps import RowMap
from storegate.rules import check_int, common_length
from storegate.views import ConcatView, View

__all__ = [
    "BatchReader",
    "StoreHandle",
    "Variable",
    "check_source",
    "chunked_variable",
    "fetch_from",
    "memory_variable",
    "read_or_explain",
    "read_unless_changed",
]

Variable = Union[MemoryVariable, ChunkedVariable]


class StoreHandle:
    """Picklable reopen arguments of a backend, opened read-only once per process."""

    def __init__(self, backend_name: str, backend_args: dict[str, Any]) -> None:
        self._name = backend_name
        self._args = {**backend_args, "mode": "r"}
        self._origin_pid = os.getpid()
        self._backend: Backend | None = None
        self._opened_pid: int | None = None

    @property
    def location(self) -> str:
        """Where the store lives (its ``output_dir``), for messages."""
        return str(self._args.get("output_dir"))

    def stale(self) -> bool:
        """True when this process has not opened the store yet."""
        return self._backend is None or self._opened_pid != os.getpid()

    def backend(self) -> Backend:
        """The backend, opened in this process (after a fork, opened anew)."""
        if self.stale():
            if os.getpid() != self._origin_pid:
                _prepare_worker()
            self._backend = create_backend(self._name, self._args)
            self._opened_pid = os.getpid()
        assert self._backend is not None
        return self._backend

    def __getstate__(self) -> dict[str, Any]:
        if "session" in (self._args.get("storage_options") or {}):
            # An aiobotocore session holds live objects (its loop's handlers): pickle would fail
            # deep inside with an AttributeError naming none of this.
            raise InvalidArgumentError(
                "storage_options['session'] must stay in the process that made it: a store opened with your own "
                "aiobotocore session cannot be sent to another process (a 'spawn' or 'forkserver' DataLoader "
                "worker, or pickle). Got a session. Use multiprocessing_context='fork', or give the credentials "
                "as storage_options key / secret (or profile) instead of a session."
            )
        return {**self.__dict__, "_backend": None, "_opened_pid": None}


def _prepare_worker() -> None:
    """Set up a worker process before it opens a store."""
    force = getattr(codecs, "force_default_pipeline", None)
    if force is not None:  # zarrs may deadlock in a forked worker: use zarr's own pipeline
        force()


#: Reads of one batch that another process's commits may interrupt before the batch fails.
READ_ATTEMPTS = 8

_T = TypeVar("_T")


class BackendFetch:
    """The ``fetch`` of :class:`~storegate.loader.ChunkedVariable` over one backend and data_id.

    :attr:`used` tells whether it read from the store (then the batch must be checked
    against the commit record again: see :func:`settled`).
    """

    def __init__(self, backend: Backend, data_id: str) -> None:
        self.backend, self.data_id = backend, data_id
        self.concurrent = backend.concurrent_reads  # the loader may then read a batch's chunks in threads
        self.remote = backend.remote  # ... and more of them at once, as they wait on the network
        self.used = False

    def __call__(self, phase: str, var: str, rows: slice) -> np.ndarray:
        self.used = True
        return read_or_explain(self.backend, self.data_id, phase, var, rows)


def fetch_from(backend: Backend, data_id: str) -> BackendFetch:
    """The ``fetch`` of :class:`~storegate.loader.ChunkedVariable` over ``backend`` (see :func:`read_or_explain`)."""
    return BackendFetch(backend, data_id)


def settled(fetch: BackendFetch | None, version: str | None) -> bool:
    """Whether a batch read through ``fetch`` holds one commit's data: it read nothing from the
    store, or the commit record is still ``version`` (the one read before it).

    Without this check a batch could pair rows of x read before another process's commit
    with rows of y read after it, or rows an in-place rewrite wrote before it failed: the
    record changes when a rewrite begins (it is flagged) and when a commit lands.
    """
    return fetch is None or not fetch.used or fetch.backend.data_version(fetch.data_id) == version


def read_unless_changed(read: Callable[[], _T], fetch: BackendFetch | None, version: str | None) -> _T | None:
    """``read()``; ``None`` when it raised a StoreGateError because the data changed under it.

    A rewrite by another process (a transaction undone, a variable replaced) takes chunks
    away before its commit or undo lands: a read then finds a chunk gone (a lost chunk's
    StorageError, or fewer rows). When the commit record is no longer ``version`` the batch
    is read again, as the engine's reads are; when it is, the error is the data's, and raised.
    """
    try:
        return read()
    except StoreGateError:
        if settled(fetch, version):
            raise
        return None


def changing_error(data_id: str, location: str) -> StoreGateError:
    """A batch that other processes' commits interrupted :data:`READ_ATTEMPTS` times in a row."""
    return StoreGateError(
        f"data_id {data_id!r} at {location} must hold still while a batch is read. Got a new commit during each "
        f"of {READ_ATTEMPTS} reads of the same batch. Pause the writers (or write between epochs) and iterate again."
    )


def read_or_explain(backend: Backend, data_id: str, phase: str, var: str, rows: slice) -> np.ndarray:
    """A chunk run; a run the store no longer holds (another process shrank or deleted the
    variable) is a StoreGateError naming the fix, not a bare IndexError."""
    why = ""
    try:
        out = backend.read(data_id, phase, var, rows)
    except (IndexError, ValueError, KeyError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        cause: BaseException | None = exc
    else:
        if out.shape[0] == rows.stop - rows.start:
            return out
        why, cause = f"{out.shape[0]} of the {rows.stop - rows.start} rows are left", None
    raise StoreGateError(
        f"reading rows {rows.start}:{rows.stop} of var_name {var!r} (phase {phase!r}) failed: the store no "
        f"longer holds the layout this dataset was made for ({why}). Another process changed it; "
        "make a new dataset."
    ) from cause


def memory_variable(sg: StoreGate, var: str, phase: str) -> MemoryVariable:
    """A variable of ``phase`` read into memory now."""
    return MemoryVariable(np.ascontiguousarray(sg.get_data(var, phase)))


def chunked_variable(engine: GroupEngine, phase: str, var: str) -> ChunkedVariable:
    """A stored variable of ``phase`` (``'all'``: one segment per phase), read by chunks."""
    layout = engine.layout(var, phases_of(phase))
    segments, start = [], 0
    for phase_, shape in layout.parts:
        chunk_rows = engine.backend.chunk_rows(engine.data_id, phase_, var)
        segments.append(Segment(phase_, start, shape[0], chunk_rows or max(1, shape[0])))
        start += shape[0]
    return ChunkedVariable(var, tuple(segments), layout.dtype, layout.row_shape)


def check_source(storegate: object, phase: object, concat_fix: str) -> View | None:
    """Check a dataset's StoreGate and phase; the view of rows when ``phase`` is one.

    ``concat_fix`` tells how to read a :class:`ConcatView` (several stores) instead.

    Raises
    ------
    InvalidArgumentError
        If ``storegate`` is not a StoreGate with a data_id, or ``phase`` is a view of
        another StoreGate or data_id, or a concatenation of views.
    """
    if not isinstance(storegate, StoreGate):
        raise InvalidArgumentError(f"storegate must be a StoreGate. Got {type(storegate).__name__} instead.")
    if storegate.data_id is None:
        raise InvalidArgumentError(
            "storegate must have its data_id set (StoreGate(data_id=...) or set_data_id()). Got None instead."
        )
    if isinstance(phase, ConcatView):
        raise InvalidArgumentError(
            "phase must be a phase name or a view of the StoreGate given. Got a concatenation of views of "
            f"several stores or data_ids: {concat_fix}"
        )
    if not isinstance(phase, View):
        return None
    if phase.engine.backend is not storegate.backend_object or phase.engine.data_id != storegate.data_id:
        raise InvalidArgumentError(
            f"phase must be a phase name or a view of the StoreGate given (its backend and data_id "
            f"{storegate.data_id!r}). Got {phase!r} instead: make the view from the same StoreGate after set_data_id."
        )
    return phase


def _refuse_ragged(engine: GroupEngine, phase: str, names: Sequence[str]) -> None:
    """Batches of one array per variable hold no ragged rows: refused up front, naming the way out."""
    ragged = [var for var in names if engine.has(phase, var) and engine.is_ragged(phase, var)]
    if ragged:
        raise InvalidArgumentError(
            f"var_names must name variables with one row shape to be read in batches of arrays. Got the ragged "
            f"variable(s) {ragged} (rows of different lengths): read them with storegate.torch.StoreGateDataset "
            "and its collate_fn (padded or cropped), or store them padded to one length."
        )


class BatchReader:
    """The rows of one phase, or of a view of rows, of a StoreGate, read in batches.

    Parameters
    ----------
    storegate
        The StoreGate, with its data_id set (checked by :func:`check_source`).
    phase
        A phase name (``'all'`` too) or a :class:`~storegate.views.View` of ``storegate``:
        item ``i`` is then the view's row ``i``, read from the stored rows.
    names
        The variables read.
    preload
        Read the variables into memory now instead of by chunks.
    chunk_cache_bytes
        Bound of the LRU cache of decoded chunks (per process); 0 disables it.

    Notes
    -----
    Made for the layout (rows, chunks, dtype) the store has when it is made; after a write
    through a StoreGate of this process it drops its cached chunks and raises StoreGateError
    if the layout changed. It pickles to its configuration (never an open store or cached
    chunks), and each process opens the store read-only on its first read.
    """

    def __init__(
        self,
        storegate: StoreGate,
        phase: str | View,
        names: Sequence[str],
        *,
        preload: bool = False,
        chunk_cache_bytes: int,
    ) -> None:
        check_int("chunk_cache_bytes", chunk_cache_bytes, minimum=0)
        view = phase if isinstance(phase, View) else None
        self._phase = resolve_phase(phase) if view is None else view.base_phase
        self._rows: RowMap | None = None if view is None else view.rows
        self._names = tuple(sorted(set(names)))
        data_id = storegate.data_id
        assert data_id is not None  # checked by check_source
        self._data_id = data_id
        backend = storegate.backend_object
        args = None if preload else backend.reopen_args(mode="r")
        self._handle = None if args is None else StoreHandle(backend.name, args)
        self._location = backend.location
        self._changes = change_count(self._location)
        self._version = backend.data_version(data_id)
        engine = GroupEngine(backend, data_id)
        every = sorted({*self._names, *(self._rows.label_vars() if self._rows else ())})
        _refuse_ragged(engine, self._phase, every)
        self.variables: dict[str, Variable] = {
            var: memory_variable(storegate, var, self._phase)
            if self._handle is None
            else chunked_variable(engine, self._phase, var)
            for var in every
        }
        lengths = {var: int(variable.bounds[-1]) for var, variable in self.variables.items()}
        self._stored_size = common_length(lengths, f"every variable read by the dataset in phase {self._phase!r}")
        self._cache = ChunkCache(chunk_cache_bytes)
        self._size = self._stored_size if self._rows is None else int(self._view_rows().shape[0])

    def __len__(self) -> int:
        return self._size

    @property
    def phase(self) -> str:
        """The phase read."""
        return self._phase

    @property
    def view(self) -> RowMap | None:
        """The rows of the view read, or None for a whole phase."""
        return self._rows

    @property
    def source(self) -> str:
        """Where the rows are read from: the store's location, or ``'memory'``."""
        return "memory" if self._handle is None else self._handle.location

    @property
    def cache(self) -> ChunkCache:
        """This process's cache of decoded chunks."""
        return self._cache

    def layout(self, var: str) -> tuple[np.dtype, tuple[int, ...]]:
        """The dtype and row shape of a variable read."""
        variable = self.variables[var]
        if isinstance(variable, MemoryVariable):
            return variable.array.dtype, variable.array.shape[1:]
        return variable.dtype, variable.row_shape

    @property
    def chunk_bounds(self) -> np.ndarray:
        """Item offsets where a stored chunk of any variable read starts, then ``len(self)``.

        Over a view, the offsets are positions in :attr:`chunk_order` (see
        :func:`storegate.loader.view_chunk_bounds`).
        """
        bounds = [self.variables[var].bounds for var in self._names]
        stored = np.unique(np.concatenate([np.zeros(1, dtype=np.int64), *bounds]))
        if self._rows is None:
            return stored
        return view_chunk_bounds(stored, self._view_rows())

    @property
    def chunk_order(self) -> np.ndarray | None:
        """The items sorted by the stored row they read (over a view); None otherwise."""
        if self._rows is None:
            return None
        return np.argsort(self._view_rows(), kind="stable")

    def read(self, items: np.ndarray) -> dict[str, np.ndarray]:
        """The rows of ``items`` (int64 positions in ``[0, len(self))``, any order) of every name,
        all of one commit (read again when another process committed meanwhile)."""
        stored = items if self._rows is None else self._view_rows()[items]
        for _ in range(READ_ATTEMPTS):
            fetch = None if self._handle is None else self._fetch()  # the commit record checked once per batch
            out = read_unless_changed(partial(self._read_names, stored, fetch), fetch, self._version)
            if out is not None and settled(fetch, self._version):
                return out
        raise changing_error(self._data_id, self.source)

    def _read_names(self, rows: np.ndarray, fetch: BackendFetch | None) -> dict[str, np.ndarray]:
        return {var: self._read(var, rows, fetch) for var in self._names}

    def _read(self, var: str, rows: np.ndarray, fetch: Fetch | None = None) -> np.ndarray:
        variable = self.variables[var]
        if isinstance(variable, MemoryVariable):
            return variable.read(rows, None, self._cache)
        return variable.read(rows, fetch or self._fetch(), self._cache)

    def _view_rows(self) -> np.ndarray:
        """The stored rows of the view's items (worked out once per process, labels read here)."""
        assert self._rows is not None
        return self._rows.rows(lambda var: self._read(var, np.arange(self._stored_size, dtype=np.int64)))

    def _fetch(self) -> BackendFetch:
        assert self._handle is not None
        if self._handle.stale():
            self._cache.clear()  # another process's chunks: each process keeps its own
        backend = self._handle.backend()
        version = backend.data_version(self._data_id)  # other processes' commits too (persistent workers)
        if change_count(self._location) != self._changes or version != self._version:
            self._look_again(backend)
            self._version = version
        return fetch_from(backend, self._data_id)

    def _look_again(self, backend: Backend) -> None:
        """This process changed the store since the reader was made: drop the cached chunks,
        and go on only if every variable still has the layout the reader was made for."""
        self._cache.clear()
        backend.refresh(self._data_id)
        engine = GroupEngine(backend, self._data_id)
        for var, variable in self.variables.items():
            now = chunked_variable(engine, self._phase, var) if engine.has(self._phase, var) else None
            if now != variable:
                raise StoreGateError(
                    f"var_name {var!r} of phase {self._phase!r} changed its rows, chunks or dtype since this "
                    "dataset was made (a dataset is made for one layout). Make a new dataset."
                )
        self._changes = change_count(self._location)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = ChunkCache(self._cache.max_bytes)  # decoded chunks stay home
        return state
