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

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from storegate import codecs
from storegate.backends import Backend, change_count, create_backend
from storegate.engine import GroupEngine
from storegate.errors import InvalidArgumentError, StoreGateError
from storegate.gate import StoreGate
from storegate.indexing import InnerSelection, normalize_index, normalize_inner, parse_index
from storegate.loader import (
    ChunkCache,
    ChunkedVariable,
    MemoryVariable,
    Segment,
    chunk_shuffled_order,
    shard,
)
from storegate.names import VarNames, parse_var_names
from storegate.phases import phases_of, resolve_phase
from storegate.rowmaps import RowMap
from storegate.rules import check_int, common_length, is_int
from storegate.views import View
from storegate.windows import RandomWindow

__all__ = ["DEFAULT_CHUNK_CACHE_BYTES", "DEFAULT_WINDOW", "ChunkShuffleSampler", "StoreGateDataset"]

#: Bytes of decoded chunks each process keeps (per dataset) by default.
DEFAULT_CHUNK_CACHE_BYTES = 64 << 20
#: Chunks whose rows the sampler shuffles together by default.
DEFAULT_WINDOW = 4

Variable = Union[MemoryVariable, ChunkedVariable]
Callback = Callable[[Any, Any], tuple[Any, Any]]


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
    After a write through a StoreGate of this process it drops its cached chunks, so it
    reads the new values, and raises StoreGateError if the layout changed (rows added or
    deleted: make a new dataset). Data held in memory (the numpy backend, ``preload``) are
    a copy taken when it is made. Another process's writes are not tracked: chunks this
    process has cached stay as they were. ``dataset[i]`` gives one sample; ``dataset[index]`` with
    a slice, list, array or tensor gives the batch as tensors with a leading batch axis,
    so a ``DataLoader(dataset, sampler=BatchSampler(...), batch_size=None)`` skips
    collation. ``__getitems__`` serves a DataLoader batch with one read per chunk run.
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
        inner: Mapping[str, Any] | None = None,
    ) -> None:
        _check_args(storegate, input_var_names, chunk_cache_bytes)
        view = _check_view(storegate, phase) if isinstance(phase, View) else None
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
        self._handle = None if args is None else _BackendHandle(backend.name, args)
        self._location = backend.location
        self._changes = change_count(self._location)
        self._variables: dict[str, Variable] = {
            var: _memory_variable(storegate, var, self._phase)
            if self._handle is None
            else _chunked_variable(GroupEngine(backend, data_id), self._phase, var)
            for var in names
        }
        _check_tensor_dtypes(self._variables)
        lengths = {var: int(variable.bounds[-1]) for var, variable in self._variables.items()}
        self._stored_size = common_length(lengths, f"every variable read by the dataset in phase {self._phase!r}")
        self._inner = _check_inner(inner, self._variables, self._read_names)
        self._rngs: dict[str, np.random.Generator] = {}
        self._rng_key: tuple[int, int] | None = None
        self._cache = ChunkCache(chunk_cache_bytes)
        self._size = self._stored_size if self._rows is None else int(self._view_rows().shape[0])

    # --- torch Dataset -----------------------------------------------------------------

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: Any) -> Any:
        """One sample for an int index; a batch (leading batch axis) for any other index form."""
        selection = normalize_index(index, self._size)
        if isinstance(selection, int):
            return self._samples(np.array([selection], dtype=np.int64))[0]
        if self._callbacks:
            raise InvalidArgumentError(
                "index must be an int when callbacks are set (they act on one sample). "
                f"Got {type(index).__name__} instead."
            )
        rows = np.arange(selection.start, selection.stop) if isinstance(selection, slice) else selection
        data, target = self._batch(rows)
        return data if self._targets is None else (data, target)

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """The samples of a DataLoader batch, read together: each needed chunk once.

        The samples are views into one tensor per variable, which the default collate
        function stacks again.
        """
        rows = normalize_index(np.asarray(indices, dtype=np.int64).reshape(-1), self._size)
        assert isinstance(rows, np.ndarray)
        return self._samples(rows)

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
        rows = self._view_rows()[self.chunk_order]
        chunks = np.searchsorted(stored, rows, side="right")
        starts = np.flatnonzero(np.diff(chunks) != 0) + 1
        return np.concatenate([np.zeros(1, dtype=np.int64), starts, np.array([rows.shape[0]], dtype=np.int64)])

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

    # --- reading -------------------------------------------------------------------------

    def _samples(self, rows: np.ndarray) -> list[Any]:
        data, target = self._batch(rows)
        samples = _unbatch(data, self._inputs, rows.shape[0])
        if self._targets is not None:
            samples = list(zip(samples, _unbatch(target, self._targets, rows.shape[0]), strict=True))
        for callback in self._callbacks:
            samples = [callback(*s) if self._targets is not None else callback(s, None)[0] for s in samples]
        return samples

    def _batch(self, rows: np.ndarray) -> tuple[Any, Any]:
        stored = rows if self._rows is None else self._view_rows()[rows]
        arrays = {var: self._select(var, self._read(var, stored)) for var in self._read_names}
        data = _join(arrays, self._inputs)
        target = None if self._targets is None else _join(arrays, self._targets)
        return data, target

    def _read(self, var: str, rows: np.ndarray) -> np.ndarray:
        variable = self._variables[var]
        if isinstance(variable, MemoryVariable):
            return variable.read(rows, None, self._cache)
        return variable.read(rows, self._fetch(), self._cache)

    def _select(self, var: str, rows: np.ndarray) -> np.ndarray:
        """What ``inner`` selects inside each row read of ``var`` (every row: ``rows`` as they are)."""
        selection = self._inner.get(var)
        if selection is None:
            return rows
        return np.ascontiguousarray(selection.take(rows, lambda window, n: window.window(n, self._rng(var))))

    def _rng(self, var: str) -> np.random.Generator:
        """The windows' generator of ``var`` in this process, from torch's seed of the process (a worker's own)."""
        key = (os.getpid(), torch.initial_seed())
        if key != self._rng_key:
            self._rngs, self._rng_key = {}, key
        rng = self._rngs.get(var)
        if rng is None:
            seeds = [w.seed or 0 for w in self._inner[var].items if isinstance(w, RandomWindow)]
            rng = self._rngs[var] = np.random.default_rng([key[1], *seeds])
        return rng

    def _view_rows(self) -> np.ndarray:
        """The stored rows of the view's items (worked out once per process, labels read here)."""
        assert self._rows is not None
        return self._rows.rows(lambda var: self._read(var, np.arange(self._stored_size, dtype=np.int64)))

    def _fetch(self) -> Callable[[str, str, slice], np.ndarray]:
        assert self._handle is not None
        if self._handle.stale():
            self._cache.clear()  # another process's chunks: each worker keeps its own
        backend = self._handle.backend()
        if change_count(self._location) != self._changes:
            self._look_again(backend)
        data_id = self._data_id
        return lambda phase, var, rows: _read_or_explain(backend, data_id, phase, var, rows)

    def _look_again(self, backend: Backend) -> None:
        """This process changed the store since the dataset was made: drop the cached chunks,
        and go on only if every variable still has the layout the dataset was made for."""
        self._cache.clear()
        backend.refresh(self._data_id)
        engine = GroupEngine(backend, self._data_id)
        for var, variable in self._variables.items():
            now = _chunked_variable(engine, self._phase, var) if engine.has(self._phase, var) else None
            if now != variable:
                raise StoreGateError(
                    f"var_name {var!r} of phase {self._phase!r} changed its rows, chunks or dtype since this "
                    "StoreGateDataset was made (a dataset is made for one layout). Make a new StoreGateDataset."
                )
        self._changes = change_count(self._location)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = ChunkCache(self._cache.max_bytes)  # decoded chunks stay home
        state["_rngs"], state["_rng_key"] = {}, None  # a worker seeds its own windows
        return state

    def __repr__(self) -> str:
        source = "memory" if self._handle is None else self._handle.location
        view = "" if self._rows is None else f", view={self._rows!r}"
        return (
            f"StoreGateDataset(phase={self._phase!r}, inputs={_names_repr(self._inputs)}, "
            f"targets={_names_repr(self._targets)}, rows={self._size}, source={source!r}{view})"
        )


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

    Notes
    -----
    Rank ``r`` gets a contiguous share of the epoch's order (not every ``num_replicas``-th
    row as DistributedSampler does), so ranks read mostly different chunks.
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
    ) -> None:
        check_int("seed", seed, minimum=0)
        check_int("window", window, minimum=1)
        self._bounds = _sampler_bounds(dataset, chunk_rows)
        order = None if chunk_rows is not None else getattr(dataset, "chunk_order", None)
        self._items = None if order is None else np.asarray(order, dtype=np.int64)
        self.num_replicas, self.rank = _replicas(num_replicas, rank)
        self.seed, self.window, self.drop_last = int(seed), window, bool(drop_last)
        self.epoch = 0
        n = int(self._bounds[-1])
        self.num_samples = n // self.num_replicas if self.drop_last else -(-n // self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order :meth:`__iter__` gives (call it before each epoch)."""
        check_int("epoch", epoch, minimum=0)
        self.epoch = epoch

    def epoch_order(self) -> np.ndarray:
        """The whole epoch's order, before it is split over replicas."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = chunk_shuffled_order(self._bounds, self.window, rng)
        return order if self._items is None else self._items[order]

    def __iter__(self) -> Iterator[int]:
        mine = shard(self.epoch_order(), self.num_replicas, self.rank, self.drop_last)
        return iter(mine.tolist())

    def __len__(self) -> int:
        return self.num_samples


# --- opening the store in each process ---------------------------------------------------


def _read_or_explain(backend: Backend, data_id: str, phase: str, var: str, rows: slice) -> np.ndarray:
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
        f"longer holds the layout this StoreGateDataset was made for ({why}). Another process changed it; "
        "make a new StoreGateDataset."
    ) from cause


class _BackendHandle:
    """Picklable reopen arguments of a backend, opened read-only once per process."""

    def __init__(self, backend_name: str, backend_args: dict[str, Any]) -> None:
        self._name = backend_name
        self._args = {**backend_args, "mode": "r"}
        self._origin_pid = os.getpid()
        self._backend: Backend | None = None
        self._opened_pid: int | None = None

    @property
    def location(self) -> str:
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
        return {**self.__dict__, "_backend": None, "_opened_pid": None}


def _prepare_worker() -> None:
    """Set up a worker process before it opens a store."""
    force = getattr(codecs, "force_default_pipeline", None)
    if force is not None:  # zarrs may deadlock in a forked worker: use zarr's own pipeline
        force()


# --- building variables ------------------------------------------------------------------


def _memory_variable(sg: StoreGate, var: str, phase: str) -> MemoryVariable:
    return MemoryVariable(np.ascontiguousarray(sg.get_data(var, phase)))


def _chunked_variable(engine: GroupEngine, phase: str, var: str) -> ChunkedVariable:
    layout = engine.layout(var, phases_of(phase))
    segments, start = [], 0
    for phase_, shape in layout.parts:
        chunk_rows = engine.backend.info(engine.data_id, phase_, var).chunk_rows
        segments.append(Segment(phase_, start, shape[0], chunk_rows or max(1, shape[0])))
        start += shape[0]
    return ChunkedVariable(var, tuple(segments), layout.dtype, layout.row_shape)


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
    """A batch in the form of ``names``: a tensor, a stacked tensor or a tuple of tensors."""
    if names.form == "str":
        return torch.from_numpy(arrays[names.names[0]])
    if names.form == "tuple":
        return torch.from_numpy(np.stack([arrays[v] for v in names.names], axis=1))
    return tuple(torch.from_numpy(arrays[v]) for v in names.names)


def _unbatch(batch: Any, names: VarNames, n: int) -> list[Any]:
    """Per-sample views of a batch (no copy)."""
    if names.form != "list":
        return list(batch.unbind(0))
    return list(zip(*(t.unbind(0) for t in batch), strict=True)) if n else []


def _names_repr(names: VarNames | None) -> str:
    if names is None:
        return "None"
    if names.form == "str":
        return repr(names.names[0])
    return repr(names.names if names.form == "tuple" else list(names.names))


# --- argument checks ---------------------------------------------------------------------


def _check_args(storegate: object, input_var_names: object, chunk_cache_bytes: object) -> None:
    if not isinstance(storegate, StoreGate):
        raise InvalidArgumentError(f"storegate must be a StoreGate. Got {type(storegate).__name__} instead.")
    if storegate.data_id is None:
        raise InvalidArgumentError(
            "storegate must have its data_id set (StoreGate(data_id=...) or set_data_id()). Got None instead."
        )
    if input_var_names is None:
        raise InvalidArgumentError(
            "input_var_names must be a str, a tuple of str or a list of str naming the inputs. Got None instead."
        )
    check_int("chunk_cache_bytes", chunk_cache_bytes, minimum=0)


def _check_inner(
    inner: Mapping[str, Any] | None, variables: dict[str, Variable], read: list[str]
) -> dict[str, InnerSelection]:
    """``inner``'s index of each variable, checked against its row shape."""
    if inner is None:
        return {}
    if not isinstance(inner, Mapping) or not all(isinstance(var, str) and var in read for var in inner):
        raise InvalidArgumentError(
            f"inner must be a dict {{var_name: index inside a row}} over the var_names read ({read}). Got "
            f"{inner!r:.80} instead: e.g. inner={{'audio': (slice(None), randslice(16000))}}."
        )
    checked = {}
    for var, index in inner.items():
        variable = variables[var]
        row_shape = variable.array.shape[1:] if isinstance(variable, MemoryVariable) else variable.row_shape
        items = index if isinstance(index, tuple) else (index,)
        parsed = parse_index((slice(None), *items), 1 + len(row_shape))
        if parsed.inner is not None:
            checked[var] = normalize_inner(parsed.inner, tuple(row_shape), parsed.rows)
    return checked


def _check_view(storegate: StoreGate, view: View) -> View:
    """A view of this StoreGate's backend and data_id."""
    if view.engine.backend is not storegate.backend_object or view.engine.data_id != storegate.data_id:
        raise InvalidArgumentError(
            f"phase must be a phase name or a view of the StoreGate given (its backend and data_id "
            f"{storegate.data_id!r}). Got {view!r} instead: make the view from the same StoreGate after set_data_id."
        )
    return view


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
