"""PyTorch training loops over a StoreGate: a Dataset and a chunk-aware sampler.

:class:`StoreGateDataset` reads the zarr store itself, in each DataLoader worker, with
batched reads (``__getitems__``) that fetch every needed chunk once; :class:`ChunkShuffleSampler`
orders an epoch so that those reads stay nearly sequential while the epoch stays a random
permutation, and splits it over DistributedDataParallel ranks.

Worker processes. Only picklable configuration crosses into a worker (the reopen arguments
of the store, never an open zarr array or filesystem), so the dataset works with every
start method ('fork', 'spawn', 'forkserver', the default from Python 3.14). A process opens
the store read-only on its first read, and reopens it when ``os.getpid()`` changes, so a
forked worker never uses the parent's fsspec/s3fs client (fsspec's async filesystems are
not fork-safe). A worker also calls :func:`storegate.codecs.force_default_pipeline` before
it opens anything, because the zarrs codec pipeline can deadlock in a forked worker once
the parent decoded data with it.

Data that another process cannot reopen from configuration (their backend's
:meth:`~storegate.backends.Backend.reopen_args` is ``None``) are carried instead: the numpy
backend, the hybrid backend in mode 'numpy', a zarr store given as a zarr ``Store`` object
(``zarr.storage.MemoryStore``...) and an fsspec ``memory://`` store are read into memory
when the dataset is made, and that copy travels to the workers (shared copy-on-write with
'fork', pickled otherwise). Use a directory or an S3 URL to stream data larger than memory.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import os
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Union

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset as TorchConcatDataset
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info

from storegate.backends import Backend, change_count
from storegate.engine import GroupEngine
from storegate.errors import InvalidArgumentError, StoreGateError, StoreGateWarning
from storegate.gate import StoreGate
from storegate.indexing import InnerSelection, normalize_index, normalize_inner, parse_index, split_selection
from storegate.loader import (
    DEFAULT_CHUNK_CACHE_BYTES,
    DEFAULT_WINDOW,
    ChunkCache,
    ChunkedVariable,
    Fetch,
    MemoryVariable,
    Segment,
    epoch_order,
    shard,
    view_chunk_bounds,
)
from storegate.names import VarNames, parse_var_names
from storegate.passes import Passes
from storegate.phases import phases_of, resolve_phase
from storegate.ragged import batch, check_batch_mode, is_rows
from storegate.ragged_store import offsets_name, values_name
from storegate.readahead import ReadAhead, Wanted
from storegate.reading import (
    READ_ATTEMPTS,
    BackendFetch,
    StoreHandle,
    changing_error,
    check_source,
    chunked_variable,
    fetch_from,
    memory_variable,
    read_unless_changed,
    settled,
)
from storegate.rowmaps import RowMap
from storegate.rules import check_bool, check_int, common_length, is_int
from storegate.shared_cache import SharedChunkCache
from storegate.views import View
from storegate.windows import RandomWindow

__all__ = [
    "DEFAULT_CHUNK_CACHE_BYTES",
    "DEFAULT_WINDOW",
    "ChunkShuffleSampler",
    "ConcatDataset",
    "LoaderBatch",
    "RaggedCollate",
    "RaggedVariable",
    "StoreGateDataLoader",
    "StoreGateDataset",
]

Callback = Callable[[Any, Any], tuple[Any, Any]]
_CONCAT_FIX = "make one StoreGateDataset per part and join them with storegate.torch.ConcatDataset([...])."


@dataclass(frozen=True)
class RaggedVariable:
    """A ragged variable read by the dataset: each row its own array ``(L_i, *inner)``.

    Stored data are read through the engine (offsets of the rows first, then one span of
    values per run of consecutive rows, see :func:`storegate.ragged_store.read_rows`);
    data carried in memory are the rows themselves.

    Attributes
    ----------
    var, phase
        The variable and the phase read (``'all'``: the phases in order).
    dtype, inner
        The values' dtype and the rows' inner shape.
    chunk_starts
        The dataset rows where a chunk of the offsets starts, then the number of rows.
    rows
        The rows, when they are carried in memory (an object array); ``None`` for stored data.
    """

    var: str
    phase: str
    dtype: np.dtype
    inner: tuple[int, ...]
    chunk_starts: tuple[int, ...]
    rows: np.ndarray | None = None

    @property
    def bounds(self) -> np.ndarray:
        """Chunk starts over the dataset's rows (of the offsets), then the number of rows."""
        return np.asarray(self.chunk_starts, dtype=np.int64)

    def read(self, rows: np.ndarray, engine: GroupEngine | None) -> np.ndarray:
        """Rows ``rows`` in that order, as ragged rows (an object array)."""
        if self.rows is not None:
            return np.asarray(self.rows[rows])
        assert engine is not None
        return engine.read(self.phase, self.var, rows)

    def __eq__(self, other: object) -> bool:  # the rows are an object array: compare the layout only
        return isinstance(other, RaggedVariable) and (
            self.var,
            self.phase,
            self.dtype,
            self.inner,
            self.chunk_starts,
        ) == (other.var, other.phase, other.dtype, other.inner, other.chunk_starts)

    def __hash__(self) -> int:
        return hash((self.var, self.phase, self.inner, self.chunk_starts))


Variable = Union[MemoryVariable, ChunkedVariable, RaggedVariable]


class StoreGateDataset(Dataset[Any]):
    """A map-style torch Dataset over one phase of a StoreGate (multiml-compatible).

    Parameters
    ----------
    storegate
        The StoreGate to read, with its data_id set. Any backend: a zarr store (local, NAS
        or S3) is read directly by each worker; in-memory data are carried (see the module
        docstring).
    phase
        ``'train'``, ``'valid'``, ``'test'`` or ``'all'``, or a view of rows of this StoreGate
        (``sg['train'].filter('y', keep=[0, 1]).shuffled(0)``, see :mod:`storegate.views`):
        the dataset's item ``i`` is then the view's row ``i``, read from the stored rows (no
        copy), and the view's rows are worked out again in each worker from its few parameters
        (from the data as they are then: make the view and the dataset after writing).
    input_var_names
        The inputs, in the forms of :meth:`StoreGate.get_data`: a str gives a tensor
        ``(...)`` per sample, a tuple one tensor ``(M, ...)`` stacked from M variables, a
        list a tuple of tensors.
    true_var_names
        The targets, in the same forms. Items are ``(data, target)``, or ``data`` alone
        when this is None.
    preload
        Read the variables into memory now (multiml's ``preload``).
    callbacks
        Functions ``f(data, target) -> (data, target)`` applied to each sample, in order.
    chunk_cache_bytes
        Bound of each process's LRU cache of decoded chunks; 0 disables it.
    shared_cache_bytes
        Bound of a cache of decoded chunks in shared memory that the DataLoader's workers
        share (KappaData's ``SharedDictDataset``, :mod:`storegate.shared_cache`): with it,
        each chunk is decoded once for all workers while the cache holds it, instead of
        once per worker that needs it. 0 (the default) makes none: it takes this much of
        ``/dev/shm`` (Linux), reserved now. Each process's own cache (``chunk_cache_bytes``)
        is still asked first; set that to 0 to keep one decoded copy in memory. Released by
        :meth:`close`, or when the dataset is garbage-collected. Data in memory are not
        decoded: no shared cache is made for them (:attr:`shared_cache` is None).
    inner
        What to read inside the rows of some variables, ``{var_name: index}``: the index
        selects along the axes of one row as item syntax does after its row item, with
        ints, slices, an Ellipsis, :func:`~storegate.randslice` windows or a tuple of them
        (``{'audio': (slice(None), randslice(16000))}``; a single item takes the first axis
        of a row). A randslice draws a new window at every read of a sample (one per
        sample, as lardon draws one per item), from a generator of this process seeded
        with ``torch.initial_seed()`` and the randslice's seed: each DataLoader worker
        draws its own windows, reproducible under ``torch.manual_seed``, and variables
        whose windows have the same seeds get the same windows where their axes have the
        same length. Whole rows are read (through the chunk cache), then cut in memory.

    Notes
    -----
    The dataset is made for the layout (rows, chunks, dtype) the store has when it is made.
    Before each batch every process (DataLoader workers included, persistent ones too)
    reads the store's commit record (one small read): after a commit of any process, or a
    write through a StoreGate of this process, it drops its cached chunks (the shared ones
    too), so it reads the new values, and raises StoreGateError if the layout changed (rows
    added or deleted: make a new dataset). A batch that read chunks from the store is checked
    against the record once more and read again if a commit landed meanwhile, so that it
    holds one commit's rows (never x of one commit beside y of the next, never the rows of an
    in-place rewrite that had not committed).

    Passes. Under a :class:`StoreGateDataLoader`, or an ordinary ``DataLoader`` whose sampler
    (or whose ``BatchSampler``'s sampler) is a :class:`ChunkShuffleSampler` made over this
    dataset, a process reads the record at its first batch of each pass (epoch) and after
    each batch that reads chunks from the store, not before a batch its cache serves whole:
    such a batch has the values committed when its chunks were read, earlier in the same
    pass. Under an ordinary DataLoader a call belongs to the pass only when its items are
    exactly the sampler's next batch for that process (:mod:`storegate.passes`; each process
    that checks holds the epoch's order, 8 bytes a row); any other call (``dataset[i]`` of
    your own, another sampler, a persistent worker after the main process set another
    epoch) reads the record first. In such a pass a process also reads the chunks of its
    batch :data:`READ_AHEAD_CALLS` ahead in a thread while the cache serves the batches before
    it (:mod:`storegate.readahead`): from local disk, and from a remote store (S3) in
    DataLoader workers. Data held in memory (the numpy backend, ``preload``) are a copy
    taken when it is made.
    ``dataset[i]`` gives one sample; ``dataset[index]`` with
    a slice, list, array or tensor gives the batch as tensors with a leading batch axis,
    so a ``DataLoader(dataset, sampler=BatchSampler(...), batch_size=None)`` skips
    collation. ``__getitems__`` serves a DataLoader batch with one read per chunk run.

    A ragged variable (rows of different lengths) gives each sample's row as its own
    tensor ``(L_i, *inner)``, and a batch a list of them; collate them with
    :meth:`collate_fn` (padded with lengths, cropped, or kept as a list). It cannot be
    among var_names given as a tuple (stacked).

    Raises
    ------
    InvalidArgumentError
        An argument is invalid, or ``shared_cache_bytes`` does not fit in ``/dev/shm``.
    """

    def __init__(
        self,
        storegate: StoreGate,
        phase: str | View,
        input_var_names: Any = None,
        true_var_names: Any = None,
        *,
        preload: bool = False,
        callbacks: Sequence[Callback] | None = None,
        chunk_cache_bytes: int = DEFAULT_CHUNK_CACHE_BYTES,
        shared_cache_bytes: int = 0,
        inner: Mapping[str, Any] | None = None,
    ) -> None:
        view = check_source(storegate, phase, _CONCAT_FIX)
        _check_args(input_var_names, chunk_cache_bytes, shared_cache_bytes)
        self._phase = resolve_phase(phase) if view is None else view.base_phase
        self._rows: RowMap | None = None if view is None else view.rows
        self._inputs = parse_var_names(input_var_names)
        self._targets = None if true_var_names is None else parse_var_names(true_var_names)
        self._callbacks = tuple(callbacks or ())
        self._read_names = sorted({*self._inputs.names, *(self._targets.names if self._targets else ())})
        names = sorted({*self._read_names, *(self._rows.label_vars() if self._rows else ())})
        data_id = storegate.data_id
        assert data_id is not None  # checked by _check_args
        self._data_id = data_id
        backend = storegate.backend_object
        args = None if preload else backend.reopen_args(mode="r")
        self._handle = None if args is None else StoreHandle(backend.name, args)
        self._location = backend.location
        self._changes = change_count(self._location)
        self._version = backend.data_version(data_id)
        engine = GroupEngine(backend, data_id)
        self._variables: dict[str, Variable] = {
            var: _ragged_variable(engine, self._phase, var, self._handle is None)
            if engine.is_ragged(self._phase, var)
            else memory_variable(storegate, var, self._phase)
            if self._handle is None
            else chunked_variable(engine, self._phase, var)
            for var in names
        }
        _check_ragged_forms(self._variables, self._inputs, self._targets)
        _check_tensor_dtypes(self._variables)
        lengths = {var: int(variable.bounds[-1]) for var, variable in self._variables.items()}
        self._stored_size = common_length(lengths, f"every variable read by the dataset in phase {self._phase!r}")
        self._inner = _check_inner(inner, self._variables, self._read_names)
        self._rngs: dict[str, np.random.Generator] = {}
        self._rng_key: tuple[int, int] | None = None
        self._checked: Hashable | None = None  # the pass (loader iteration, sampler pass) whose record was read
        self._passes = Passes()  # the ChunkShuffleSamplers made over this dataset
        self._ahead = ReadAhead()  # the chunks of a sampler pass's next batches, read from a remote store
        self._cache = ChunkCache(chunk_cache_bytes)
        chunked = [v for v in self._variables.values() if isinstance(v, ChunkedVariable)]
        self._shared = SharedChunkCache(chunked, int(shared_cache_bytes)) if shared_cache_bytes and chunked else None
        if self._shared is not None:
            self._shared.expect(_commit_key(self._version))
            self._shared.invalidate()  # the arena holds chunks of this commit
        self._size = self._stored_size if self._rows is None else int(self._view_rows().shape[0])

    # --- torch Dataset -----------------------------------------------------------------

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: Any) -> Any:
        """One sample for an int index; a batch (leading batch axis) for any other index form."""
        selection = normalize_index(index, self._size)
        if isinstance(selection, int):
            rows = np.array([selection], dtype=np.int64)
            return self._samples(rows, _pass(self._passes, rows))[0]
        if self._callbacks:
            raise InvalidArgumentError(
                "index must be an int when callbacks are set (they act on one sample). "
                f"Got {type(index).__name__} instead."
            )
        rows = np.arange(selection.start, selection.stop) if isinstance(selection, slice) else selection
        token = index.iteration if isinstance(index, LoaderBatch) else _pass(self._passes, rows)
        data, target = self._batch(rows, token)
        return data if self._targets is None else (data, target)

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """The samples of a DataLoader batch, read together: each needed chunk once.

        The samples are views into one tensor per variable, which the default collate
        function stacks again.
        """
        rows = _batch_items(indices, self._size)
        return self._samples(rows, _pass(self._passes, rows))

    # --- layout --------------------------------------------------------------------------

    @property
    def phase(self) -> str:
        """The phase read."""
        return self._phase

    @property
    def chunk_bounds(self) -> np.ndarray:
        """Row offsets where a stored chunk of any variable read starts, then ``len(self)``.

        :class:`ChunkShuffleSampler` keeps the rows between two bounds together. Data in
        memory have a bound at every row (random access costs nothing there). Over a view,
        the offsets are positions in :attr:`chunk_order`, which lists the view's items by
        stored row, so that the items of one chunk lie between two bounds.
        """
        bounds = [self._variables[var].bounds for var in self._read_names]
        stored = np.unique(np.concatenate([np.zeros(1, dtype=np.int64), *bounds]))
        if self._rows is None:
            return stored
        return view_chunk_bounds(stored, self._view_rows())

    @property
    def chunk_order(self) -> np.ndarray | None:
        """The dataset's items sorted by the stored row they read (over a view); None otherwise."""
        if self._rows is None:
            return None
        return np.argsort(self._view_rows(), kind="stable")

    @property
    def cache(self) -> ChunkCache:
        """This process's cache of decoded chunks."""
        return self._cache

    @property
    def shared_cache(self) -> SharedChunkCache | None:
        """The cache of decoded chunks shared by every process (``shared_cache_bytes``), or None."""
        return self._shared

    def close(self) -> None:
        """Release the shared cache (its memory goes once no worker maps it); reads go on without it."""
        if self._shared is not None:
            self._shared.close()

    def __enter__(self) -> StoreGateDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def collate_fn(self, batch_mode: str = "pad", **batch_args: Any) -> RaggedCollate:
        """A DataLoader ``collate_fn`` for this dataset's samples (see :class:`RaggedCollate`).

        ``batch_mode`` and ``batch_args`` are those of :meth:`StoreGate.get_data` (lardon's
        ``batch_mode``): ``'pad'`` gives ``(padded, lengths)`` for each ragged variable,
        ``'crop'`` one tensor, ``'list'`` a list of tensors; fixed variables are stacked.
        """
        ragged = {var for var, v in self._variables.items() if isinstance(v, RaggedVariable)}
        inputs = _ragged_layout(self._inputs, ragged)
        layout = inputs if self._targets is None else (inputs, _ragged_layout(self._targets, ragged))
        return RaggedCollate(layout, batch_mode, **batch_args)

    # --- reading -------------------------------------------------------------------------

    def _samples(self, rows: np.ndarray, token: Hashable | None = None) -> list[Any]:
        data, target = self._batch(rows, token)
        samples = _unbatch(data, self._inputs, rows.shape[0])
        if self._targets is not None:
            samples = list(zip(samples, _unbatch(target, self._targets, rows.shape[0]), strict=True))
        for callback in self._callbacks:
            samples = [callback(*s) if self._targets is not None else callback(s, None)[0] for s in samples]
        return samples

    def _batch(self, rows: np.ndarray, token: Hashable | None = None) -> tuple[Any, Any]:
        """``token``: the pass the batch belongs to (a StoreGateDataLoader iteration or a sampler's
        pass, see :meth:`_open`), or None."""
        stored = rows if self._rows is None else self._view_rows()[rows]
        if self._ahead.busy():
            changes = change_count(self._location)
            self._ahead.adopt(self._cache, self._version, changes, lambda: not self._cached(stored))
        for _ in range(READ_ATTEMPTS):
            # Opened (and the commit record checked) once per batch at most, not once per variable.
            backend = None if self._handle is None else self._open(token)
            fetch = None if backend is None else fetch_from(backend, self._data_id)
            arrays = read_unless_changed(partial(self._read_batch, stored, backend, fetch), fetch, self._version)
            if arrays is not None and settled(fetch, self._version):  # one commit's rows, or read again
                break
            token = None  # the record is read again before the next attempt
        else:
            raise changing_error(self._data_id, self._location)
        assert arrays is not None
        if backend is not None and token is not None and self._shared is None:
            self._read_ahead(token, backend)
        data = _join(arrays, self._inputs)
        target = None if self._targets is None else _join(arrays, self._targets)
        return data, target

    def _read_batch(
        self, rows: np.ndarray, backend: Backend | None, fetch: BackendFetch | None
    ) -> dict[str, np.ndarray]:
        """Every variable's rows ``rows``, selected inside as asked."""
        return {var: self._select(var, self._read(var, rows, backend, fetch)) for var in self._read_names}

    def _read(
        self, var: str, rows: np.ndarray, backend: Backend | None = None, fetch: BackendFetch | None = None
    ) -> np.ndarray:
        """Rows of one variable; ``backend`` and ``fetch``: the store as :meth:`_open` gave it for this batch."""
        variable = self._variables[var]
        if isinstance(variable, MemoryVariable):
            return variable.read(rows, None, self._cache)
        if isinstance(variable, RaggedVariable) and variable.rows is not None:
            return variable.read(rows, None)
        backend = backend or self._open()
        fetch = fetch or fetch_from(backend, self._data_id)
        if isinstance(variable, RaggedVariable):
            fetch.used = True  # read from the store, outside the chunk cache
            return variable.read(rows, GroupEngine(backend, self._data_id))
        source = None if self._shared is None else _SharedSource(self._shared)
        return variable.read(rows, fetch, self._cache, source)

    def _select(self, var: str, rows: np.ndarray) -> np.ndarray:
        """What ``inner`` selects inside each row read of ``var`` (every row: ``rows`` as they are)."""
        selection = self._inner.get(var)
        if selection is None:
            return rows

        def draw(window: RandomWindow, n: int) -> slice:
            return window.window(n, self._rng(var))

        if isinstance(selection, tuple):  # a ragged variable: each row selected with its own shape
            out = np.empty(len(rows), dtype=object)
            for i, row in enumerate(rows):
                inner = normalize_inner(selection, tuple(row.shape), slice(None))
                out[i] = np.ascontiguousarray(inner.reverse(row[inner.resolve(tuple(row.shape), draw)], False))
            return out
        return np.ascontiguousarray(selection.take(rows, draw))

    def _rng(self, var: str) -> np.random.Generator:
        """The windows' generator of ``var`` in this process, from torch's seed of the process (a worker's own)."""
        key = (os.getpid(), torch.initial_seed())
        if key != self._rng_key:
            self._rngs, self._rng_key = {}, key
        rng = self._rngs.get(var)
        if rng is None:
            selection = self._inner[var]
            items = selection if isinstance(selection, tuple) else selection.items
            seeds = [w.seed or 0 for w in items if isinstance(w, RandomWindow)]
            rng = self._rngs[var] = np.random.default_rng([key[1], *seeds])
        return rng

    def _view_rows(self) -> np.ndarray:
        """The stored rows of the view's items (worked out once per process, labels read here)."""
        assert self._rows is not None
        return self._rows.rows(lambda var: self._read(var, np.arange(self._stored_size, dtype=np.int64)))

    def _open(self, token: Hashable | None = None) -> Backend:
        """The store, opened in this process, with the cache checked against every process's commits.

        The commit record is read before each batch, except for a batch of a pass (a
        :class:`StoreGateDataLoader` iteration or a sampler's pass, ``token``) whose record this
        process already read: the cache then holds chunks of the commit read in this pass, and
        a batch that reads chunks is checked after it (:func:`storegate.reading.settled`), which
        reads it again if another commit landed.
        """
        assert self._handle is not None
        if self._handle.stale():
            self._cache.clear()  # another process's chunks: each worker keeps its own
        backend = self._handle.backend()
        changed_here = change_count(self._location) != self._changes
        if token is not None and token == self._checked and not changed_here:
            return backend
        version = backend.data_version(self._data_id)  # other processes' commits too (persistent workers)
        if changed_here or version != self._version:
            if self._shared is not None:
                self._shared.expect(_commit_key(version))  # before _look_again invalidates the arena
            self._look_again(backend)
            self._version = version
        self._checked = token
        return backend

    def _cached(self, stored: np.ndarray) -> bool:
        """Whether this process's cache holds every chunk the stored rows ``stored`` need."""
        return all(
            not isinstance(v, ChunkedVariable) or v.cached(stored, self._cache)
            for v in (self._variables[var] for var in self._read_names)
        )

    def _read_ahead(self, token: Hashable, backend: Backend) -> None:
        """Start reading the chunks that this process's batch :data:`READ_AHEAD_CALLS` ahead in
        sampler pass ``token`` needs and the cache does not hold (see :mod:`storegate.readahead`).

        Where it was measured to help (benchmarks/bench_peers.py, 2 cores): from local disk
        (files are read and decoded without the GIL while the batches before are served: 1.18x
        the rows/s of the per-sample path without workers), and from a remote store in DataLoader
        workers, where torch deals consecutive batches, which share chunks, to every worker and
        all of them would wait for the same chunks at once (S3, 2 workers: 1.12x). Not from a
        remote store without workers: there the thread's network reads hold the GIL against
        the batches (0.89x). Not when the chunks of this process's batches from the current one
        through that one would take more than half the cache: the chunks read ahead would
        push out chunks that the batches in between still need, or be pushed out before their
        batch (with a cache of 2 to 4 windows and only that one batch's chunks counted, the
        store was read 1.3x to 2.8x as often)."""
        if self._ahead.busy() or (backend.remote and get_worker_info() is None):
            return
        items = self._passes.ahead(token, READ_AHEAD_CALLS)
        if items is None:
            return
        stored = items if self._rows is None else self._view_rows()[items]
        chunked = [(var, v) for var in self._read_names if isinstance(v := self._variables[var], ChunkedVariable)]
        wanted: list[Wanted] = [
            (var, segment, ids) for var, variable in chunked for segment, ids in variable.missing(stored, self._cache)
        ]
        if not wanted:  # the usual case, inside a window: the span is not worked out for every batch
            return
        span = self._passes.span(token, READ_AHEAD_CALLS)
        assert span is not None
        span = span if self._rows is None else self._view_rows()[span]
        nbytes = sum(
            len(ids) * segment.chunk_rows * variable.row_bytes
            for _, variable in chunked
            for segment, ids in variable.chunks(span)
        )
        if 2 * nbytes <= self._cache.max_bytes:
            self._ahead.start(wanted, backend, self._data_id, self._version, change_count(self._location))

    def _look_again(self, backend: Backend) -> None:
        """This process changed the store since the dataset was made: drop the cached chunks,
        and go on only if every variable still has the layout the dataset was made for."""
        self._cache.clear()
        if self._shared is not None:  # every process's chunks were read before the write
            self._shared.invalidate()
        backend.refresh(self._data_id)
        engine = GroupEngine(backend, self._data_id)
        for var, variable in self._variables.items():
            now = _variable_now(engine, self._phase, var, variable)
            if now != variable:
                raise StoreGateError(
                    f"var_name {var!r} of phase {self._phase!r} changed its rows, chunks or dtype since this "
                    "StoreGateDataset was made (a dataset is made for one layout). Make a new StoreGateDataset."
                )
        self._changes = change_count(self._location)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = ChunkCache(self._cache.max_bytes)  # decoded chunks stay home
        state["_pickled_by"] = os.getpid()
        state["_rngs"], state["_rng_key"] = {}, None  # a worker seeds its own windows
        state["_checked"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        pickled_by = state.pop("_pickled_by", None)
        self.__dict__.update(state)
        if pickled_by != os.getpid():
            # Another process (a spawned worker): its own writes count from now, as those of
            # the process that made the dataset counted from then. Without this, a worker
            # would take the writes made before the dataset for new ones, and drop every
            # process's shared chunks on its first read.
            self._changes = change_count(self._location)

    def __repr__(self) -> str:
        source = "memory" if self._handle is None else self._handle.location
        view = "" if self._rows is None else f", view={self._rows!r}"
        return (
            f"StoreGateDataset(phase={self._phase!r}, inputs={self._inputs.given()!r}, "
            f"targets={self._targets and self._targets.given()!r}, "
            f"rows={self._size}, source={source!r}{view})"
        )


class ConcatDataset(TorchConcatDataset[Any]):
    """StoreGateDatasets of several stores, data_ids or phases, one after the other.

    torch's ``ConcatDataset`` (KappaData's and DataStack's concatenation of datasets) that
    keeps what makes a :class:`StoreGateDataset` fast: ``chunk_bounds`` and ``chunk_order``
    (so :class:`ChunkShuffleSampler` keeps each part's reads near-sequential), batched
    ``__getitems__`` (each part reads its chunks once per batch) and batch indexing
    (``dataset[list]`` gives tensors with a leading batch axis). Item ``i`` is item
    ``i - cumulative_sizes[k - 1]`` of part ``k``.

    Parameters
    ----------
    datasets
        StoreGateDatasets (or ConcatDatasets of them) with the same input and target
        var_names, and each variable of one dtype and row shape in every part.

    Raises
    ------
    InvalidArgumentError
        If ``datasets`` is empty, holds something else, or the parts disagree on var_names,
        dtypes or row shapes (their batches would not stack).
    """

    def __init__(self, datasets: Sequence[StoreGateDataset | ConcatDataset]) -> None:
        parts = _flat_parts(datasets)
        _check_same_layout(parts)
        super().__init__(parts)
        self._parts = parts  # torch types ``datasets`` as plain Datasets
        self._passes = Passes()  # the ChunkShuffleSamplers made over the concatenation

    @property
    def chunk_bounds(self) -> np.ndarray:
        """Each part's ``chunk_bounds``, shifted to where the part lies, then ``len(self)``."""
        starts = [d.chunk_bounds[:-1] + offset for d, offset in zip(self._parts, self._offsets(), strict=True)]
        return np.concatenate([*starts, np.array([len(self)], dtype=np.int64)]).astype(np.int64)

    @property
    def chunk_order(self) -> np.ndarray | None:
        """Each part's ``chunk_order`` (its items by stored row), shifted; None when no part has one."""
        orders = [d.chunk_order for d in self._parts]
        if all(order is None for order in orders):
            return None
        shifted = [
            (np.arange(len(d), dtype=np.int64) if order is None else order) + offset
            for d, order, offset in zip(self._parts, orders, self._offsets(), strict=True)
        ]
        return np.concatenate(shifted)

    def __getitem__(self, index: Any) -> Any:
        """One sample for an int index; a batch (leading batch axis) for any other index form."""
        selection = normalize_index(index, len(self))
        if isinstance(selection, int):
            piece = next(split_selection(selection, self._sizes()))
            token = _pass(self._passes, np.array([selection], dtype=np.int64))
            return self._parts[piece.part]._samples(np.array([piece.local], dtype=np.int64), token)[0]
        rows = np.arange(selection.start, selection.stop) if isinstance(selection, slice) else selection
        token = index.iteration if isinstance(index, LoaderBatch) else _pass(self._passes, rows)
        pieces = [
            (_as_positions(piece.positions), self._parts[piece.part][_local_batch(piece.local, token)])
            for piece in split_selection(selection, self._sizes())
        ]
        n = rows.shape[0]
        if not pieces:  # no row: an empty batch of the first part's layout
            return self._parts[0][np.zeros(0, dtype=np.int64)]
        return _gather(pieces, n)

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """The samples of a DataLoader batch: each part reads its rows of the batch together."""
        rows = _batch_items(indices, len(self))
        out: list[Any] = [None] * rows.shape[0]
        token = _pass(self._passes, rows)
        for piece in split_selection(rows, self._sizes()):
            samples = self._parts[piece.part]._samples(_as_local(piece.local), token)
            for position, sample in zip(_as_positions(piece.positions).tolist(), samples, strict=True):
                out[position] = sample
        return out

    def collate_fn(self, batch_mode: str = "pad", **batch_args: Any) -> RaggedCollate:
        """A DataLoader ``collate_fn`` for ragged variables, as :meth:`StoreGateDataset.collate_fn` (the
        parts have one layout)."""
        return self._parts[0].collate_fn(batch_mode, **batch_args)

    def _sizes(self) -> list[int]:
        return [len(d) for d in self._parts]

    def _offsets(self) -> list[int]:
        return [0, *self.cumulative_sizes[:-1]]

    def __repr__(self) -> str:
        return f"ConcatDataset({len(self._parts)} parts, rows={len(self)}: {self._parts!r})"


def _flat_parts(datasets: object) -> list[StoreGateDataset]:
    if not isinstance(datasets, (list, tuple)) or not datasets:
        raise InvalidArgumentError(
            f"datasets must be a non-empty list of StoreGateDatasets. Got {datasets!r:.120} instead."
        )
    parts: list[StoreGateDataset] = []
    for dataset in datasets:
        if isinstance(dataset, ConcatDataset):
            parts.extend(dataset._parts)
        elif isinstance(dataset, StoreGateDataset):
            parts.append(dataset)
        else:
            raise InvalidArgumentError(
                "datasets must hold StoreGateDatasets (or storegate ConcatDatasets) only: their chunk layout "
                f"keeps the sampler's reads near-sequential. Got {type(dataset).__name__} instead: wrap other "
                "datasets with torch.utils.data.ConcatDataset."
            )
    return parts


def _check_same_layout(parts: list[StoreGateDataset]) -> None:
    """Parts whose samples stack: the same var_names forms, each variable of one dtype and row shape."""
    first = parts[0]
    for part in parts[1:]:
        if (part._inputs, part._targets) != (first._inputs, first._targets):
            raise InvalidArgumentError(
                "datasets must have the same input_var_names and true_var_names to be concatenated. Got "
                f"{first!r} and {part!r}: make each with the same var_names."
            )
        for var in first._read_names:
            if _variable_layout(part, var) != _variable_layout(first, var):
                raise InvalidArgumentError(
                    f"var_name {var!r} must have one dtype and row shape in every dataset concatenated. Got "
                    f"{_variable_layout(first, var)} and {_variable_layout(part, var)} (dtype, row shape) instead: "
                    "convert one store with astype() first."
                )


def _variable_layout(dataset: StoreGateDataset, var: str) -> tuple[np.dtype, tuple[int | None, ...]]:
    """Dtype and row shape (``None`` first for a ragged variable's rows of any length)."""
    variable = dataset._variables[var]
    if isinstance(variable, MemoryVariable):
        return variable.array.dtype, variable.array.shape[1:]
    if isinstance(variable, RaggedVariable):
        return variable.dtype, (None, *variable.inner)
    return variable.dtype, variable.row_shape


def _as_positions(positions: slice | np.ndarray) -> np.ndarray:
    if isinstance(positions, slice):
        return np.arange(positions.start, positions.stop, dtype=np.int64)
    return positions


def _local_batch(local: object, token: Hashable | None) -> Any:
    rows = _as_local(local)
    return rows if token is None else LoaderBatch(rows.tolist(), token)


def _as_local(local: object) -> np.ndarray:
    if isinstance(local, slice):
        return np.arange(local.start, local.stop, dtype=np.int64)
    return np.asarray(local, dtype=np.int64)


def _gather(pieces: list[tuple[np.ndarray, Any]], n: int) -> Any:
    """One batch of ``n`` rows from parts' batches of the same structure, each row at its position."""
    first = pieces[0][1]
    if isinstance(first, tuple):
        return tuple(_gather([(p, part[i]) for p, part in pieces], n) for i in range(len(first)))
    if isinstance(first, list):  # a ragged variable's rows: one tensor each
        rows: list[Any] = [None] * n
        for positions, part in pieces:
            for position, row in zip(positions.tolist(), part, strict=True):
                rows[position] = row
        return rows
    out = first.new_empty((n, *first.shape[1:]))
    for positions, part in pieces:
        out[torch.from_numpy(positions)] = part
    return out


class ChunkShuffleSampler(Sampler[int]):
    """A chunk-aware random order of a dataset's rows, reproducible and DDP-aware.

    Each epoch the chunks are put in a random order and the rows of each run of ``window``
    consecutive chunks of that order are shuffled together: every row comes exactly once,
    and a DataLoader batch touches about ``window`` chunks, which the dataset's chunk cache
    keeps while they are used, so each chunk is decoded about once per epoch.

    Parameters
    ----------
    dataset
        A :class:`StoreGateDataset` (its ``chunk_bounds`` give the chunks, and over a view its
        ``chunk_order`` the items in stored order), or any sized dataset when ``chunk_rows``
        is given.
    seed
        Seed of the order; the epoch set by :meth:`set_epoch` is mixed in.
    num_replicas, rank
        The distributed world size and this process's rank; default from
        ``torch.distributed`` when it is initialised, else one replica.
    drop_last
        With several replicas: drop the last ``len(dataset) % num_replicas`` rows of the
        epoch's order so that the shards are disjoint and equal; otherwise (the default)
        pad the epoch by repeating its first rows, as DistributedSampler does, so that
        every row is seen and the padding is the only overlap.
    window
        Chunks whose rows are shuffled together: more is more random, and needs a chunk
        cache of about ``window`` chunks per variable.
    chunk_rows
        Rows per chunk, overriding the dataset's ``chunk_bounds``.
    shuffle
        False gives the items in order (``0 .. len - 1``, split over replicas the same
        way): for evaluation.

    Notes
    -----
    Rank ``r`` gets a contiguous share of the epoch's order (not every ``num_replicas``-th
    row as DistributedSampler does), so ranks read mostly different chunks.

    A sampler made over a :class:`StoreGateDataset` or :class:`ConcatDataset` is followed by
    it (weakly): the dataset recognises the calls that are the sampler's next batch and
    reads the commit record once per pass and after chunk reads instead of before every
    batch (see "Passes" in :class:`StoreGateDataset`). Call :meth:`set_epoch` before the
    DataLoader's iteration begins, as with DistributedSampler: workers take the epoch then.
    """

    def __init__(
        self,
        dataset: Any,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        *,
        window: int = DEFAULT_WINDOW,
        chunk_rows: int | None = None,
        shuffle: bool = True,
    ) -> None:
        check_int("seed", seed, minimum=0)
        check_int("window", window, minimum=1)
        check_bool("shuffle", shuffle)
        self._bounds = _sampler_bounds(dataset, chunk_rows)
        order = None if chunk_rows is not None else getattr(dataset, "chunk_order", None)
        self._items = None if order is None else np.asarray(order, dtype=np.int64)
        self.num_replicas, self.rank = _replicas(num_replicas, rank)
        self.seed, self.window, self.drop_last, self.shuffle = int(seed), window, bool(drop_last), shuffle
        self.epoch = 0
        n = int(self._bounds[-1])
        self.num_samples = n // self.num_replicas if self.drop_last else -(-n // self.num_replicas)
        self._order: tuple[Hashable, np.ndarray] | None = None
        self._iterations = 0  # times this process iterated the sampler: each is a new pass
        self._live: dict[int, _Progress] = {}  # iterations of this process under way
        if isinstance(dataset, (StoreGateDataset, ConcatDataset)):
            dataset._passes.follow(self)
            for part in _parts_of(dataset):
                _warn_if_the_cache_is_small(part, window)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order :meth:`__iter__` gives (call it before each epoch)."""
        check_int("epoch", epoch, minimum=0)
        self.epoch = epoch

    def epoch_order(self) -> np.ndarray:
        """The whole epoch's order, before it is split over replicas."""
        if not self.shuffle:
            return np.arange(int(self._bounds[-1]), dtype=np.int64)
        return epoch_order(self._bounds, self._items, self.seed, self.epoch, self.window)

    def indices(self) -> np.ndarray:
        """This rank's items of the epoch, in order (what iterating the sampler gives), int64."""
        return shard(self.epoch_order(), self.num_replicas, self.rank, self.drop_last)

    def pass_order(self) -> tuple[Hashable, np.ndarray]:
        """:meth:`indices` with a key of the pass, worked out once per epoch's order (read-only).

        The dataset the sampler was made over checks its calls against it (see
        :mod:`storegate.passes`); iterating the sampler gives it too, so that the main process
        holds one copy of the epoch's order. The key changes when the order does and each
        time this process iterates the sampler: a DataLoader iteration without workers is a
        new pass even when it resumes where the previous one stopped (batches skipped), so
        its first batch reads the commit record.
        """
        key = (self.epoch, self.seed, self.window, self.shuffle, self.num_replicas, self.rank, self.drop_last)
        if self._order is None or self._order[0] != key:
            self._order = None  # the old order goes before the new one is made
            order = self.indices()
            order.flags.writeable = False
            self._order = (key, order)
        return (self._order[0], self._iterations), self._order[1]

    def __iter__(self) -> Iterator[int]:
        self._iterations += 1
        return self._iterate(self.pass_order()[1])

    def _iterate(self, order: np.ndarray) -> Iterator[int]:
        progress = _Progress()
        self._live[id(progress)] = progress
        try:
            yield from progress.items(order)
        finally:
            del self._live[id(progress)]

    def per_row(self) -> bool:
        """Whether the sampler holds an order of the dataset's items (over a view), a row each."""
        return self._items is not None

    def reached(self) -> tuple[int, ...]:
        """How many items each iteration of the sampler under way in this process has given (empty
        when none is): outside DataLoader workers only a call with the items an iteration has
        just given is taken for its batch (a DataLoader without workers asks the sampler for a
        batch's items, then reads them; with workers, this process iterates ahead for them)."""
        return tuple(progress.given() for progress in self._live.values())

    def __len__(self) -> int:
        return self.num_samples

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_order"] = None  # worked out again where it is needed
        state["_live"] = {}
        return state


class LoaderBatch(list[int]):
    """The items of one :class:`StoreGateDataLoader` batch, tagged with the loader's iteration.

    The tag travels with the items to the worker that reads them, so that each process
    reads the commit record once per iteration (and whenever it reads chunks), not before
    every batch.
    """

    def __init__(self, items: Sequence[int], iteration: Hashable) -> None:
        super().__init__(items)
        self.iteration = iteration


#: Numbers of the loaders' iterations, unique in the process that iterates (several loaders
#: may read one dataset: a number seen before must never stand for a new pass).
_ITERATIONS = itertools.count()


class _LoaderBatches(Sampler[LoaderBatch]):
    """The batches of ``BatchSampler(sampler, batch_size, drop_last)``, each tagged with its
    iteration's own number, and dealt so that each DataLoader worker reads its own chunks.

    A DataLoader hands batch ``j`` to worker ``j % workers``: consecutive batches share the
    chunks of a window, so every worker would read (and decode) nearly every chunk. The
    epoch's batches are cut into ``workers`` runs of consecutive batches instead, and the
    runs are interleaved, so that worker ``w`` gets run ``w``: each chunk is read by one worker.
    That changes the order the loop sees, so a shuffled order only is dealt so (``workers``
    is 1 for ``shuffle=False``).
    """

    def __init__(self, sampler: ChunkShuffleSampler, batch_size: int, drop_last: bool, workers: int) -> None:
        self._sampler, self._batch_size, self._drop_last = sampler, batch_size, drop_last
        self._workers = max(1, workers)

    def __iter__(self) -> Iterator[LoaderBatch]:
        # A generator: torch calls iter() once more than it iterates (before starting its
        # workers), and the epoch's order is worked out only when the first batch is asked for.
        iteration = next(_ITERATIONS)
        items = self._sampler.indices()
        runs = np.array_split(np.arange(len(self)), self._workers)
        for k in range(len(runs[0])):
            for run in runs:
                if k < len(run):
                    start = int(run[k]) * self._batch_size
                    yield LoaderBatch(items[start : start + self._batch_size].tolist(), iteration)

    def __len__(self) -> int:
        n = len(self._sampler)
        return n // self._batch_size if self._drop_last else -(-n // self._batch_size)


class StoreGateDataLoader(DataLoader[Any]):
    """The fast way to iterate a :class:`StoreGateDataset`: a torch ``DataLoader`` of whole batches.

    litdata's ``StreamingDataLoader`` in role: one call that builds what a fast epoch needs.
    Each batch is read with one ``dataset[rows]`` (each needed chunk read once, the chunks
    of a batch in parallel threads) and comes as tensors with a leading batch axis, with no
    per-sample split and re-stack (``torch.utils.data.default_collate``). The order is
    :class:`ChunkShuffleSampler`'s (shuffled, chunk-aware, split over DDP ranks), and each
    ``for batch in loader`` is a new epoch (epoch 0, 1, ...; :meth:`set_epoch` chooses the
    next one, as DistributedSampler's idiom does).

    Parameters
    ----------
    dataset
        A :class:`StoreGateDataset` or :class:`ConcatDataset`.
    batch_size
        Rows per batch.
    shuffle
        A new chunk-aware random order each epoch (``seed``, epoch); False: the items in order.
    seed, window, num_replicas, rank, drop_last
        As in :class:`ChunkShuffleSampler` (``drop_last`` also drops a last short batch).
    **kwargs
        Other ``torch.utils.data.DataLoader`` arguments (``num_workers``, ``pin_memory``,
        ``persistent_workers``, ``multiprocessing_context``, ``prefetch_factor``, ...).
        With a ``collate_fn``, ``callbacks`` on the dataset or a ragged variable among its
        var_names, batches are collated from samples as torch does (``collate_fn``, else
        the dataset's :meth:`~StoreGateDataset.collate_fn` padding ragged rows).

    Raises
    ------
    InvalidArgumentError
        ``dataset`` is not a StoreGateDataset or ConcatDataset, an argument is invalid,
        or a ``sampler`` / ``batch_sampler`` other than None is given (this loader makes
        them: use ``torch.utils.data.DataLoader`` for your own).

    Notes
    -----
    Commits of other processes: every process (each worker) reads the commit record at its
    first batch of each iteration and after every batch that reads chunks from the store
    (about once per ``window`` chunks with shuffle), rather than before every batch: a
    batch that its process's chunk cache serves whole has the values committed when those
    chunks were read, earlier in the same epoch; a commit made while an epoch runs shows in
    the batches that read chunks after it (such a batch is read again), and in the whole
    next epoch. On S3 this halves the requests of an epoch.

    Examples
    --------
    >>> loader = StoreGateDataLoader(dataset, batch_size=256, shuffle=True, num_workers=2)  # doctest: +SKIP
    >>> for x, y in loader:  # x: (256, ...) tensor  # doctest: +SKIP
    ...     ...
    """

    def __init__(
        self,
        dataset: StoreGateDataset | ConcatDataset,
        batch_size: int = 1,
        shuffle: bool = False,
        *,
        seed: int = 0,
        window: int = DEFAULT_WINDOW,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        **kwargs: Any,
    ) -> None:
        _check_loader_args(dataset, batch_size, kwargs)
        check_bool("drop_last", drop_last)
        sampler = ChunkShuffleSampler(dataset, seed, num_replicas, rank, drop_last, window=window, shuffle=shuffle)
        self.chunk_sampler = sampler
        self._next_epoch = 0
        if kwargs.get("collate_fn") is None and _whole_batches(dataset):
            kwargs.pop("collate_fn", None)
            # In order (shuffle=False): batches come in order, each worker reading every other one;
            # dealing runs of batches to workers would hand them to the loop out of order.
            workers = int(kwargs.get("num_workers") or 0) if shuffle else 0
            batches = _LoaderBatches(sampler, batch_size, drop_last, workers)
            super().__init__(dataset, sampler=batches, batch_size=None, **kwargs)
        else:
            if kwargs.get("collate_fn") is None and _has_ragged(dataset):
                kwargs["collate_fn"] = dataset.collate_fn()
            super().__init__(dataset, sampler=sampler, batch_size=batch_size, drop_last=drop_last, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (later ones follow on from it)."""
        check_int("epoch", epoch, minimum=0)
        self._next_epoch = epoch

    def __iter__(self) -> Any:
        self.chunk_sampler.set_epoch(self._next_epoch)
        self._next_epoch += 1
        return super().__iter__()


#: How many of its own batches ahead a process reads a sampler pass's chunks from a remote store.
READ_AHEAD_CALLS = 8


def _batch_items(indices: Sequence[int], size: int) -> np.ndarray:
    """The items of one DataLoader batch (``__getitems__``), checked: a flat sequence of ints in range.

    A nested sequence is what a DataLoader with a BatchSampler as ``sampler`` and a
    ``batch_size`` hands over (batches of batches): flattened, it would be read as one
    batch of the wrong shape without a word.
    """
    try:
        items = np.asarray(indices)
    except ValueError:  # a nested sequence of unequal lengths
        items = np.asarray(indices, dtype=object)
    if items.ndim == 1 and items.dtype.kind == "f" and all(is_int(v) for v in indices):
        # numpy ints of signed and unsigned dtypes together, which numpy makes floats
        items = np.asarray([int(v) for v in indices])
    if items.ndim != 1 or (items.size and items.dtype.kind not in "iu"):
        raise InvalidArgumentError(
            "indices must be a flat sequence of ints (the items of one DataLoader batch). Got "
            f"{type(indices).__name__} {indices!r:.80} instead. With a BatchSampler as the DataLoader's sampler, "
            "give it batch_size=None (the BatchSampler already makes the batches), or use StoreGateDataLoader."
        )
    # Checked as given: cast to int64 first, a uint64 item past int64's range would wrap to a
    # negative one and read a row from the end without a word.
    rows = normalize_index(items if items.size else np.zeros(0, dtype=np.int64), size)
    assert isinstance(rows, np.ndarray)
    return rows.astype(np.int64, copy=False)


class _SharedSource:
    """The shared chunk cache as the source of the chunks this process's cache lacks, whose chunks
    count as read from the store: another worker may have decoded them after a commit this
    process has not read yet, so the batch is checked against the commit record after it."""

    def __init__(self, cache: SharedChunkCache) -> None:
        self._cache = cache

    def chunks(self, var: str, segment: Segment, ids: Sequence[int], fetch: Fetch) -> dict[int, np.ndarray]:
        assert isinstance(fetch, BackendFetch)
        fetch.used = True
        return self._cache.chunks(var, segment, ids, fetch)


def _commit_key(version: str | None) -> int:
    """A commit record as the int a shared chunk cache tags its chunks with."""
    return int.from_bytes(hashlib.blake2b(str(version).encode(), digest_size=7).digest(), "big")


def _pass(passes: Passes, rows: np.ndarray) -> Hashable | None:
    """The sampler pass that a call with the dataset items ``rows`` belongs to, in this process."""
    info = get_worker_info()
    if info is None:  # the sampler is iterated here: a call is its batch only while it is
        return passes.token(rows, live_only=True)
    return passes.token(rows, info.id, info.num_workers)


class _Progress:
    """How far an iteration of a sampler has got: the items it gave, read off the list iterator
    of the block it is giving (no Python step per item)."""

    def __init__(self) -> None:
        self._end = 0  # the items given once the current block is
        self._block: Iterator[int] = iter(())

    def items(self, rows: np.ndarray, step: int = 1 << 16) -> Iterator[int]:
        """The rows as Python ints, converted ``step`` at a time.

        A whole epoch's list would hold about 40 bytes per row (a pointer and an int object)
        for as long as the epoch runs, on top of the array's 8: 62 MiB for 1.6M rows.
        """
        for start in range(0, rows.shape[0], step):
            block = rows[start : start + step].tolist()
            self._end, self._block = start + len(block), iter(block)
            yield from self._block

    def given(self) -> int:
        """The items given so far."""
        return self._end - operator.length_hint(self._block)


# --- checking variables ------------------------------------------------------------------


def _ragged_variable(engine: GroupEngine, phase: str, var: str, in_memory: bool) -> RaggedVariable:
    offsets = chunked_variable(engine, phase, offsets_name(var))
    values = engine.layout(values_name(var), phases_of(phase))
    rows = engine.read(phase, var, None) if in_memory else None
    starts = tuple(int(b) for b in offsets.bounds)
    return RaggedVariable(var, phase, values.dtype, values.row_shape, starts, rows)


def _variable_now(engine: GroupEngine, phase: str, var: str, before: Variable) -> Variable | None:
    """The layout the variable has now, to compare with the one the dataset was made for."""
    if not engine.has(phase, var):
        return None
    if isinstance(before, RaggedVariable):
        return _ragged_variable(engine, phase, var, False) if engine.is_ragged(phase, var) else None
    return None if engine.is_ragged(phase, var) else chunked_variable(engine, phase, var)


def _check_ragged_forms(variables: dict[str, Variable], inputs: VarNames, targets: VarNames | None) -> None:
    """A ragged variable cannot be stacked with others (var_names given as a tuple)."""
    for names in (inputs, targets):
        if names is None or names.form != "tuple":
            continue
        ragged = [v for v in names.names if isinstance(variables[v], RaggedVariable)]
        if ragged:
            raise InvalidArgumentError(
                f"var_names given as a tuple are stacked, which the ragged variable(s) {ragged} cannot be. Got "
                f"{names.names!r} instead. Give them as a list."
            )


def _check_tensor_dtypes(variables: dict[str, Variable]) -> None:
    """torch tensors hold numbers and bools only: a str, bytes or date variable is refused up front."""
    for var, variable in variables.items():
        dtype = variable.array.dtype if isinstance(variable, MemoryVariable) else variable.dtype
        if dtype.kind not in "biufc":
            raise InvalidArgumentError(
                f"var_name {var!r} has dtype {dtype}, which a torch tensor cannot hold. Leave it out of "
                "input_var_names / true_var_names, or store it encoded as numbers (e.g. class indices)."
            )


# --- batches and samples -----------------------------------------------------------------


def _join(arrays: dict[str, np.ndarray], names: VarNames) -> Any:
    """A batch in the form of ``names``: a tensor, a stacked tensor or a tuple of tensors.

    A ragged variable's batch is a list of tensors, one per row.
    """
    if names.form == "str":
        return _tensors(arrays[names.names[0]])
    if names.form == "tuple":
        return torch.from_numpy(np.stack([arrays[v] for v in names.names], axis=1))
    return tuple(_tensors(arrays[v]) for v in names.names)


def _tensors(array: np.ndarray) -> Any:
    if is_rows(array):
        return [torch.from_numpy(np.ascontiguousarray(row)) for row in array]
    return torch.from_numpy(array)


def _unbatch(batch: Any, names: VarNames, n: int) -> list[Any]:
    """Per-sample views of a batch (no copy)."""
    if names.form != "list":
        return list(batch) if isinstance(batch, list) else list(batch.unbind(0))
    parts = (t if isinstance(t, list) else t.unbind(0) for t in batch)
    return list(zip(*parts, strict=True)) if n else []


# --- collating ragged samples ------------------------------------------------------------

#: Which parts of a sample are ragged: a bool for a tensor, a tuple for a tuple of parts.
Layout = Union[bool, tuple[Any, ...]]


def _ragged_layout(names: VarNames, ragged: set[str]) -> Layout:
    if names.form == "list":
        return tuple(v in ragged for v in names.names)
    return names.form == "str" and names.names[0] in ragged


class RaggedCollate:
    """A DataLoader ``collate_fn`` for samples that hold ragged rows beside fixed ones.

    Made by :meth:`StoreGateDataset.collate_fn`, which knows which parts of a sample are
    ragged, so a batch whose rows happen to share one length has the same form as any
    other. Picklable (DataLoader workers with any start method).

    Parameters
    ----------
    layout
        Which parts of a sample are ragged (a bool per tensor, nested as the sample).
    batch_mode, batch_args
        As in :meth:`StoreGate.get_data`: ``'pad'`` turns each ragged part into
        ``(padded (B, length, *inner), lengths int64 (B,))`` (``np.pad`` arguments such as
        ``constant_values``, and ``length``), ``'crop'`` into ``(B, length, *inner)``,
        ``'list'`` into a list of tensors. Fixed parts go through torch's ``default_collate``.

    Raises
    ------
    InvalidArgumentError
        For a bad ``batch_mode`` / ``batch_args``, or a row a given ``length`` does not fit.
    """

    def __init__(self, layout: Layout, batch_mode: str = "pad", **batch_args: Any) -> None:
        self.layout = layout
        self.batch_mode, self.batch_args = check_batch_mode(batch_mode, batch_args)

    def __call__(self, samples: Sequence[Any]) -> Any:
        return self._collate(list(samples), self.layout)

    def _collate(self, parts: list[Any], layout: Layout) -> Any:
        if isinstance(layout, tuple):
            return tuple(self._collate([p[i] for p in parts], sub) for i, sub in enumerate(layout))
        if not layout:
            return default_collate(parts)
        out = batch([np.asarray(t) for t in parts], self.batch_mode, self.batch_args)
        if self.batch_mode == "list":
            return list(parts)
        if self.batch_mode == "pad":
            return torch.from_numpy(out[0]), torch.from_numpy(out[1])
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return f"RaggedCollate(layout={self.layout!r}, batch_mode={self.batch_mode!r}, batch_args={self.batch_args!r})"


# --- argument checks ---------------------------------------------------------------------


def _check_args(input_var_names: object, chunk_cache_bytes: object, shared_cache_bytes: object) -> None:
    if input_var_names is None:
        raise InvalidArgumentError(
            "input_var_names must be a str, a tuple of str or a list of str naming the inputs. Got None instead."
        )
    check_int("chunk_cache_bytes", chunk_cache_bytes, minimum=0)
    check_int("shared_cache_bytes", shared_cache_bytes, minimum=0)


def _check_inner(
    inner: Mapping[str, Any] | None, variables: dict[str, Variable], read: list[str]
) -> dict[str, InnerSelection | tuple[object, ...]]:
    """``inner``'s index of each variable, checked against its row shape (a ragged variable's items
    against its inner shape, its rows' lengths when read)."""
    if inner is None:
        return {}
    if not isinstance(inner, Mapping) or not all(isinstance(var, str) and var in read for var in inner):
        raise InvalidArgumentError(
            f"inner must be a dict {{var_name: index inside a row}} over the var_names read ({read}). Got "
            f"{inner!r:.80} instead: e.g. inner={{'audio': (slice(None), randslice(16000))}}."
        )
    checked: dict[str, InnerSelection | tuple[object, ...]] = {}
    for var, index in inner.items():
        variable = variables[var]
        items = index if isinstance(index, tuple) else (index,)
        if isinstance(variable, RaggedVariable):  # each row has its own length: checked per row when read
            parsed = parse_index((slice(None), *items), 2 + len(variable.inner))
            if parsed.inner is not None:
                normalize_inner(parsed.inner, (1 << 62, *variable.inner), parsed.rows)  # bad items fail now
                checked[var] = parsed.inner
            continue
        row_shape = variable.array.shape[1:] if isinstance(variable, MemoryVariable) else variable.row_shape
        parsed = parse_index((slice(None), *items), 1 + len(row_shape))
        if parsed.inner is not None:
            checked[var] = normalize_inner(parsed.inner, tuple(row_shape), parsed.rows)
    return checked


def _check_loader_args(dataset: object, batch_size: object, kwargs: dict[str, Any]) -> None:
    if not isinstance(dataset, (StoreGateDataset, ConcatDataset)):
        raise InvalidArgumentError(
            "dataset must be a StoreGateDataset or a storegate.torch.ConcatDataset. "
            f"Got {type(dataset).__name__} instead. Use torch.utils.data.DataLoader for other datasets."
        )
    check_int("batch_size", batch_size, minimum=1)
    for name in ("sampler", "batch_sampler", "generator"):
        if kwargs.get(name) is None:
            kwargs.pop(name, None)  # torch's own default: generic code passes it
        else:
            raise InvalidArgumentError(
                f"{name} must be None (torch's default) for StoreGateDataLoader, which makes a chunk-aware sampler "
                f"(use shuffle, seed, window, num_replicas, rank). Got {name}={kwargs[name]!r}. For your own sampler, "
                "use torch.utils.data.DataLoader(dataset, sampler=...)."
            )


def _warn_if_the_cache_is_small(dataset: StoreGateDataset, window: int) -> None:
    """A StoreGateWarning when the dataset's chunk caches cannot hold ``window`` chunks of each variable.

    The sampler's batches mix the rows of ``window`` chunks: with less room each chunk is read
    and decoded about once per batch instead of once per epoch (an S3 epoch of 12 chunks
    measured 188 chunk reads and 10x the time). A cache turned off (0) was asked for.
    """
    room = max(dataset._cache.max_bytes, 0 if dataset._shared is None else dataset._shared.max_bytes)
    sizes = {var: v.chunk_bytes for var, v in dataset._variables.items() if isinstance(v, ChunkedVariable)}
    need = window * sum(sizes.values())
    if 0 < room < need:
        warnings.warn(
            f"chunk_cache_bytes={room} holds fewer than window={window} chunks of each variable read "
            f"({window} chunks of {sorted(sizes)} take {need} bytes): each chunk would be read and decoded about "
            f"once per batch instead of once per epoch. Make the dataset with chunk_cache_bytes >= {need}, or "
            "give the sampler a smaller window.",
            StoreGateWarning,
            stacklevel=3,
        )


def _parts_of(dataset: StoreGateDataset | ConcatDataset) -> list[StoreGateDataset]:
    return dataset._parts if isinstance(dataset, ConcatDataset) else [dataset]


def _has_ragged(dataset: StoreGateDataset | ConcatDataset) -> bool:
    return any(isinstance(v, RaggedVariable) for d in _parts_of(dataset) for v in d._variables.values())


def _whole_batches(dataset: StoreGateDataset | ConcatDataset) -> bool:
    """Whether ``dataset[rows]`` gives the loader's batches: no per-sample callbacks, no ragged rows."""
    return not _has_ragged(dataset) and not any(d._callbacks for d in _parts_of(dataset))


def _sampler_bounds(dataset: Any, chunk_rows: int | None) -> np.ndarray:
    if chunk_rows is not None:
        check_int("chunk_rows", chunk_rows, minimum=1)
        n = len(dataset)
        return np.append(np.arange(0, n, chunk_rows, dtype=np.int64), n)
    bounds = getattr(dataset, "chunk_bounds", None)
    if bounds is None:
        raise InvalidArgumentError(
            "dataset must have chunk_bounds (a StoreGateDataset) unless chunk_rows is given. "
            f"Got {type(dataset).__name__} and chunk_rows=None instead."
        )
    return np.asarray(bounds, dtype=np.int64)


def _replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    distributed = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if distributed else 1
    if rank is None:
        rank = dist.get_rank() if distributed else 0
    check_int("num_replicas", num_replicas, minimum=1)
    if not is_int(rank) or not 0 <= rank < num_replicas:
        raise InvalidArgumentError(f"rank must be an int in [0, {num_replicas}). Got {rank!r} instead.")
    return num_replicas, int(rank)
