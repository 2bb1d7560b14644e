"""The zarr backend: chunked, compressed arrays in a zarr v3 hierarchy.

Layout: ``<root>/<data_id>/<phase>/<var_name>``; storegate's own state lives in the
attributes of the ``<data_id>`` group under the key ``"storegate"``.

A zarr v2 store (multiml wrote them with zarr-python 2) opens, reads and grows in its own
format: new groups and arrays are v2, with the numcodecs compressor equivalent to the chosen
codec; what v2 cannot hold (shards) is refused. :func:`storegate.convert_to_v3` converts one.

Writers take the data_id's write lock and commit through a commit record
(:mod:`storegate.backends.zarr_locking`); a call that rewrites committed objects in place
journals them first (:mod:`storegate.backends.zarr_journal`), so readers and the next
writer always find the last commit whole.

Every chunk of the variables it writes is stored, fill-valued ones too, and their attributes
say so: a missing chunk was lost, and reads raise StorageError instead of returning zeros
(:mod:`storegate.backends.zarr_chunks`).

What other tools leave in a store (0-d arrays, groups inside a phase, arrays with names
storegate refuses, objects zarr cannot read) is never a variable: every call skips it,
nothing overwrites or deletes it, and :meth:`ZarrBackend.other_objects` lists it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.sync import sync
from zarr.errors import UnstableSpecificationWarning, ZarrUserWarning
from zarr.storage import LocalStore, MemoryStore, StorePath

from storegate.backends.base import Backend, Checkpoint, Finding, OtherObject, VarInfo
from storegate.backends.commit_counter import WATCH_NS, stat_is_fresh, watch
from storegate.backends.zarr_cache import DecodedChunks
from storegate.backends.zarr_chunks import (
    LostChunkError,
    every_chunk_attributes,
    keeps_every_chunk,
    missing_chunks,
    prepared,
)
from storegate.backends.zarr_direct import DirectReader, damaged_chunk, direct_reader
from storegate.backends.zarr_journal import CommittedView, Entry, Journal, committed_objects
from storegate.backends.zarr_locking import (
    OWN_PREFIX,
    Commits,
    Rows,
    counter_path,
    poison_counter,
    read_object_text,
    write_lock,
)
from storegate.codecs import (
    DEFAULT_PIPELINE,
    Compressors,
    check_pipeline,
    pipeline_scope,
    resolve_compressor,
    v2_compressor,
)
from storegate.errors import (
    ConflictError,
    InvalidArgumentError,
    NoReplyError,
    StorageError,
    StoreGateError,
    StoreGateWarning,
)
from storegate.indexing import Inner, Selection, clip_rows, inner_shape
from storegate.loader import DEFAULT_CHUNK_CACHE_BYTES
from storegate.locations import (
    DEFAULT_REMOTE_CONCURRENCY,
    METADATA_KEYS,
    cache_folder,
    concurrency_scope,
    keys_under,
    new_group,
    no_reply_endpoint,
    put_documents,
    resolve_location,
    unsent_to,
)
from storegate.locks import DEFAULT_LOCK_TIMEOUT, WriteLock, holding
from storegate.names import OFFSETS, check_data_id, dimension_names, parse_var_names
from storegate.phases import PHASES
from storegate.rules import check_int, check_positive, check_timeout, is_int
from storegate.settle import settle_requests
from storegate.transaction import to_completion

__all__ = ["DEFAULT_CHUNK_BYTES", "DEFAULT_REMOTE_CHUNK_BYTES", "ZarrBackend"]

#: Target uncompressed bytes per chunk when ``chunk`` (rows) is not given. bench_codecs
#: scores chunk sizes by random single-row reads and full reads on local disk and on S3:
#: 1 MiB scores best together (256 KiB reads single rows 1.7x faster locally but full
#: reads from S3 at 0.3x; 4 MiB reads single rows at 0.35x locally and 0.5x on S3).
DEFAULT_CHUNK_BYTES = 1 << 20
#: ``chunk_bytes`` on an object store (s3://, gs://...): a request costs there what decoding
#: does not, and 4 MiB chunks read a phase 2.2x faster from S3 than 1 MiB ones with random
#: single-row reads as fast (benchmarks/RESULTS.md, bench_codecs (d)); a loader epoch makes a
#: quarter of the requests.
DEFAULT_REMOTE_CHUNK_BYTES = 4 << 20
STATE_KEY = "storegate"
FORMAT_VERSION = 1
_MODES: tuple[Literal["w", "a", "r"], ...] = ("w", "a", "r")
#: Times a reader reads a flagged commit record and its journal before it takes what it read.
_JOURNAL_READS = 5


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _storage_call(method: _Method) -> _Method:
    """Run a backend method inside :meth:`ZarrBackend._io` (request concurrency, error mapping)."""

    @functools.wraps(method)
    def wrapper(self: ZarrBackend, *args: Any, **kwargs: Any) -> Any:
        with self._io():
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class ZarrBackend(Backend):
    """Zarr v3 backend (multiml's ``zarr``).

    Parameters
    ----------
    output_dir
        Where the store lives: a local or NAS directory, a ``file://`` URL, an fsspec URL
        such as ``'s3://bucket/prefix'`` (MinIO, Ceph, AWS; also ``gs://``, ``memory://``...)
        or a zarr ``Store`` object (e.g. ``MemoryStore``). ``None`` makes a temporary
        directory, removed when the backend is collected. See :mod:`storegate.locations`.
    chunk
        Rows per chunk. Default: as many rows as fit in ``chunk_bytes``.
    chunk_bytes
        Target uncompressed bytes per chunk when ``chunk`` is not given. Default: 1 MiB on
        a local disk, a NAS folder or in memory, 4 MiB on an object store (a remote fsspec
        URL such as ``s3://``), where fewer, larger requests read faster.
    compressor
        Default codec for new variables, see :func:`storegate.codecs.resolve_compressor`.
    shard_bytes
        When given, chunks are stored as inner chunks of zarr v3 shards of about this many
        uncompressed bytes (whole chunks per shard): few, large objects on an object store,
        while a random row read still fetches only its inner chunk.
    row_chunks
        Chunks inside the rows of some variables, ``{var_name: length per axis of a row}``
        (``None``: the whole axis): ``{'audio': (None, 16000)}`` stores a variable of shape
        ``(N, 2, T)`` in chunks of 16000 positions of both channels, so that a read inside
        rows (``sg['train']['audio'][3, :, 1000:2000]``) fetches only the chunks that hold
        it; ``chunk`` / ``chunk_bytes`` then set the rows of such a chunk. Other variables
        are chunked by whole rows.
    codec_pipeline
        ``'default'`` (zarr's configured pipeline) or ``'zarrs'`` (the Rust pipeline of the
        ``zarrs`` extra, for this store's arrays only), see :mod:`storegate.codecs`.
    mode
        ``'w'`` (replace everything under ``output_dir``, matorage's ``refresh``; refused
        when ``output_dir`` holds files but no zarr store), ``'a'`` (read and write, create
        a zarr v3 store if missing) or ``'r'`` (read only: every write raises
        ReadOnlyError). An existing store opens in its own format, zarr v2 or v3.
    storage_options
        fsspec options for a URL ``output_dir``, passed unchanged (for S3: s3fs's ``key``,
        ``secret``, ``anon``, ``client_kwargs={'endpoint_url': ...}``, ``config_kwargs``...).
        S3 gets :data:`storegate.locations.DEFAULT_S3_CONFIG` (connect / read timeouts,
        retries) unless ``config_kwargs`` gives those keys, and its bucket is checked when
        the store opens: a missing bucket, refused credentials or a silent endpoint raise
        StorageError naming the endpoint and the bucket. A server that stops answering later
        fails a call with NoReplyError within about
        :func:`storegate.locations.no_reply_bound` seconds (48 s with the defaults).
    endpoint, access_key, secret_key, secure
        matorage's names, for ``s3://`` URLs: ``endpoint='host:port'`` becomes
        ``client_kwargs['endpoint_url']`` (``https://`` when ``secure`` is true, else
        ``http://``), ``access_key`` becomes ``key`` and ``secret_key`` becomes ``secret``.
    cache_dir
        A local directory caching the objects read from a remote store, so later epochs
        read from local disk (lardon's / KappaData's local copies). Needs mode 'r'. The
        commit record is read from the store on every call, and copies made under another
        record are never served (a commit by any process, also before this one started,
        starts an empty folder): see :mod:`storegate.cache_folders`. Processes may share one.
    concurrency
        Chunk requests in flight while a read or a write runs (zarr's ``async.concurrency``,
        set only for the duration of the call). Default: ``DEFAULT_REMOTE_CONCURRENCY``
        (32) for a remote URL, zarr's own setting (10) otherwise.
    chunk_cache_bytes
        Bytes of decoded chunks this handle keeps for small reads (one row, a few rows, a
        short slice: those whose chunks hold at most a quarter of it), so that reading
        rows of a chunk read before skips zarr's codecs; larger reads go to the store and
        leave the cache alone. ``0`` keeps none. The knob and the class
        (:class:`storegate.loader.ChunkCache`) of StoreGateDataset's cache; see
        :mod:`storegate.backends.zarr_cache`. A cached chunk is only served while the
        data_id's commit record (read once per call) is the one it was read under.
    """

    name = "zarr"
    persistent = True
    concurrent_reads = True  # zarr's sync API and this handle's caches serve several threads
    #: The commit record alone tells whether the data changed, so reads may go by the record
    #: the previous call checked and decoded chunks may be kept (not so for icechunk, whose
    #: snapshots change under one record).
    reads_by_commit_record: ClassVar[bool] = True

    def __init__(
        self,
        output_dir: str | os.PathLike[str] | Store | None = None,
        chunk: int | None = None,
        chunk_bytes: int | None = None,
        compressor: object = "default",
        mode: str = "a",
        storage_options: dict[str, Any] | None = None,
        endpoint: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        secure: bool | None = None,
        cache_dir: str | None = None,
        concurrency: int | None = None,
        shard_bytes: int | None = None,
        codec_pipeline: str = DEFAULT_PIPELINE,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        row_chunks: dict[str, tuple[int | None, ...]] | None = None,
        chunk_cache_bytes: int = DEFAULT_CHUNK_CACHE_BYTES,
    ) -> None:
        _check_size("chunk", chunk, allow_none=True)
        check_int("chunk_cache_bytes", chunk_cache_bytes, minimum=0)
        _check_size("chunk_bytes", chunk_bytes, allow_none=True)
        if mode not in _MODES:
            raise InvalidArgumentError(f"mode must be one of {_MODES}. Got {mode!r} instead.")
        _check_size("shard_bytes", shard_bytes, allow_none=True)
        self._output_dir = self._default_dir() if output_dir is None else output_dir
        self._location = resolve_location(
            self._output_dir,
            storage_options,
            endpoint=endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            cache_dir=cache_dir,
        )
        if chunk_bytes is None:
            chunk_bytes = DEFAULT_REMOTE_CHUNK_BYTES if self._location.remote else DEFAULT_CHUNK_BYTES
        _check_chunks_per_shard(chunk, chunk_bytes, shard_bytes)
        self._compressors = resolve_compressor(compressor)
        self._chunk, self._chunk_bytes, self._shard_bytes = chunk, chunk_bytes, shard_bytes
        self._row_chunks = _check_row_chunks(row_chunks)
        self._layout_args = _layout_args(chunk, chunk_bytes, compressor, shard_bytes, self._location.remote)
        if self._row_chunks:
            self._layout_args["row_chunks"] = self._row_chunks
        self._pipeline = check_pipeline(codec_pipeline)
        self._mode: Literal["w", "a", "r"] = mode
        _check_positive("concurrency", concurrency, allow_none=True)
        self._concurrency = concurrency
        if concurrency is None and self._location.remote:
            self._concurrency = DEFAULT_REMOTE_CONCURRENCY
        self._lock_timeout = check_timeout("lock_timeout", lock_timeout)
        self._commits = Commits()  # before the root: mode 'w' commits an empty record per data_id
        self._root = self._open_root()
        self._cache_folder = cache_folder(self._root.store)  # None without a cache_dir
        self._check_format()
        self._groups: dict[tuple[str, ...], zarr.Group] = {}
        self._arrays: dict[tuple[str, str, str], zarr.Array[Any]] = {}
        # Per opened array: its reader of rows inside one chunk, None when zarr reads them (zarr_direct).
        self._direct: dict[tuple[str, str, str], tuple[zarr.Array[Any], DirectReader | None]] = {}
        self._states: dict[str, dict[str, Any]] = {}
        self._local_states: set[str] = set()  # saved by this process into a read-only store
        # Committed rows per data_id as last read (None: no record, every variable visible).
        self._committed: dict[str, Rows | None] = {}
        # Variables this backend changed in the call it is running, per data_id it holds.
        self._touched: dict[str, set[tuple[str, str]]] = {}
        # What commit() replaced, until the call ends: the record's text, the rows, the touched set.
        self._replaced: dict[str, tuple[str | None, Rows | None, set[tuple[str, str]]]] = {}
        self._undone: dict[str, bool] = {}  # data_ids whose running call was undone after its commit
        self._writer: dict[str, int] = {}  # the thread running this handle's call, per data_id
        self._locks: dict[str, WriteLock] = {}  # the lock that call holds (a lease is checked per write)
        self._nested: dict[str, int] = {}  # calls running inside another call of this backend
        self._raw: dict[str, str | None] = {}  # the text of the record _loaded came from (one read)
        self._loaded: dict[str, str | None] = {}  # the token of the commit _committed holds
        self._cut: dict[str, list[Finding]] = {}  # leftovers cut when the lock was taken, for repair()
        self._journal = Journal(self._root.store)
        self._flagged: dict[str, tuple[int, str]] = {}  # entries journalled when flagged, the flagged record
        self._epochs: dict[str, int] = {}  # the epoch of the record last read or written, per data_id
        self._frees: set[str] = set()  # data_ids whose running call frees committed chunks once it commits
        self._rewrites = threading.Condition()  # other threads of this handle wait while one rewrites in place
        self._reading = threading.local()  # per thread: the committed rows its current read went by
        # Readers, while another call rewrites in place: each variable as the last commit holds it.
        self._overlays: dict[str, dict[tuple[str, str], Entry]] = {}
        self._decoded = DecodedChunks(int(chunk_cache_bytes) if self.reads_by_commit_record else 0)
        # A record on local disk is a file read: no event loop, no request concurrency to set.
        self._local_records = isinstance(self._root.store, LocalStore)
        # ... and on a disk of this machine, its counter tells whether it changed (see commit_counter).
        self._watched = self._local_records and stat_is_fresh(str(getattr(self._root.store, "root", "")))
        self._watches: dict[str, tuple[memoryview | None, int]] = {}  # per data_id: its counter, mapped until
        # Per data_id: the record last read, the counter and its value before that read, mapped until.
        self._record_seen: dict[str, tuple[str | None, memoryview, int, int]] = {}
        self._row_plans: dict[tuple[str, str, str], tuple[Rows, zarr.Array[Any], int, int]] = {}  # see _held_row
        self._layouts: dict[tuple[str, str, str], tuple[zarr.Array[Any], int, int]] = {}  # per opened array

    # --- opening ---------------------------------------------------------------------

    def _default_dir(self) -> str:
        path = tempfile.mkdtemp(prefix="storegate-")
        weakref.finalize(self, shutil.rmtree, path, ignore_errors=True)
        return path

    def _open_root(self) -> zarr.Group:
        # Raises NotFoundError (mode 'r', no store) or StorageError (unreachable).
        if self._mode != "w":
            return self._location.open_group(self._mode)
        # Writers of an existing store finish first; the locks they wait on stay.
        return self._location.open_group("w", keep=f"{OWN_PREFIX}/locks", hold=self._every_write_lock)

    @contextlib.contextmanager
    def _every_write_lock(self, root: zarr.Group) -> Iterator[None]:
        """Hold the write lock of every data_id of an existing store (mode 'w' replaces them all)."""
        with contextlib.ExitStack() as held:
            for name in _data_ids(root):
                held.enter_context(holding(write_lock(root.store, name), self._lock_timeout, owner=self))
                self._delete_group(root, name)
            yield

    def _delete_group(self, root: zarr.Group, data_id: str) -> None:
        """Delete the group of ``data_id`` (its write lock held): first commit a record that lists no
        variable, as readers go by the record and the group's chunks go one by one (a record still
        listing them read the deleted chunks as zeros); then leave its counter odd."""
        self._commits.write(root.store, data_id, {}, epoch=_new_epoch())  # a read spanning it must not stand
        self._commits.committed(data_id)
        del root[data_id]
        poison_counter(root.store, data_id)  # readers of this machine read the record again

    def _check_format(self) -> None:
        """Refuse, before anything is written, the options a zarr v2 store cannot hold."""
        if self.zarr_format != 2:
            return
        if self._shard_bytes is not None:
            raise InvalidArgumentError(
                f"shard_bytes must be None for the zarr v2 store at {self.location}: zarr v2 has no shards. "
                f"Got shard_bytes={self._shard_bytes}. Drop it, or convert the store to zarr v3 with "
                "storegate.convert_to_v3 first."
            )
        v2_compressor(self._compressors)

    @property
    def zarr_format(self) -> int:
        """The zarr format of the store: 3, or 2 for an older store kept in its own format."""
        return int(self._root.metadata.zarr_format)

    @property
    def output_dir(self) -> str | os.PathLike[str] | Store:
        """Where the store lives, as given (the temporary directory when none was)."""
        return self._output_dir

    @property
    def remote(self) -> bool:
        # docstring inherited
        return self._location.remote

    @property
    def location(self) -> str:
        # docstring inherited; never shows credentials
        where = self._location.describe()
        return f"{where} (zarr v2)" if self.zarr_format == 2 else where

    def reopen_args(self, mode: str = "r") -> dict[str, Any] | None:
        """``backend_args`` that open this same store again, e.g. in a worker process.

        ``ZarrBackend(**backend.reopen_args())`` (or ``StoreGate('zarr', backend_args=...)``)
        opens the same location: ``output_dir`` (the absolute path, also of a temporary
        directory, or the URL), ``storage_options`` (matorage's names already mapped, with
        credentials), ``cache_dir`` and ``concurrency`` when set, ``codec_pipeline`` when it
        is not the default, and ``mode``; with mode 'a' also the chunk and codec options,
        so that a writer in another process lays variables out the same way. Every value
        pickles, but for your own aiobotocore ``session`` in ``storage_options`` (kept as
        given, for a forked worker; a dataset refuses to be pickled with it). ``None`` for a
        store in this process's memory (a zarr ``Store`` object such as ``MemoryStore``, or a
        ``memory://`` URL), which another process cannot open. A temporary directory lives
        only as long as this backend.

        Parameters
        ----------
        mode
            ``'r'`` (the default, for readers) or ``'a'``.

        Raises
        ------
        InvalidArgumentError
            If ``mode`` is not 'r' or 'a' (mode 'w' would erase the store).
        """
        if mode not in ("r", "a"):
            raise InvalidArgumentError(f"mode must be 'r' or 'a' to reopen a store. Got {mode!r} instead.")
        if not self._location.reopenable:
            return None
        args = self._location.backend_args()
        if mode != "r":
            args.pop("cache_dir", None)
            args.update(self._layout_args)
        if self._concurrency is not None:
            args["concurrency"] = self._concurrency
        if self._pipeline != DEFAULT_PIPELINE:
            args["codec_pipeline"] = self._pipeline
        if self._decoded.max_bytes != DEFAULT_CHUNK_CACHE_BYTES and self.reads_by_commit_record:
            args["chunk_cache_bytes"] = self._decoded.max_bytes
        return {**args, "mode": mode}

    @property
    def writable(self) -> bool:
        # docstring inherited
        return self._mode != "r"

    # --- data ids ---------------------------------------------------------------------
    # docstrings inherited from Backend

    @_storage_call
    def data_ids(self) -> list[str]:
        return _data_ids(self._root)

    @_storage_call
    def has_data_id(self, data_id: str) -> bool:
        # docstring inherited: one read of the data_id's group metadata (data_ids() lists the
        # root and reads every member's), which later calls use.
        if (data_id,) in self._groups:
            return True
        node, _ = _try_node(self._root, data_id)
        if not isinstance(node, zarr.Group) or _data_id_problem(data_id, node) is not None:
            return False
        self._groups[(data_id,)] = node
        return True

    @_storage_call
    def create_data_id(self, data_id: str) -> None:
        self._group(data_id, create=True)

    @_storage_call
    def delete_data_id(self, data_id: str) -> None:
        with self.writing(data_id):  # a writer of the data_id finishes first
            if self._group(data_id) is not None:  # never an array of that name that another tool wrote
                self._delete_group(self._root, data_id)
            poison_counter(self._root.store, data_id)  # readers of this machine read the record again
            sync(self._root.store.delete(self._key(self._commits.key(data_id))))
            for call in self._journal.calls(data_id):
                self._journal.clear(data_id, call)
        self._commits.forget(data_id)
        self._committed.pop(data_id, None)
        self._decoded.drop()
        self._forget(data_id)
        self._states.pop(data_id, None)

    # --- variables -------------------------------------------------------------------

    @_storage_call
    def var_names(self, data_id: str, phase: str) -> list[str]:
        listed = self._committed_names(data_id, phase)
        if listed is not None:  # one metadata read per variable, no listing (nor phase groups)
            self._open_arrays(data_id, phase, sorted(listed))
            return sorted(v for v in listed if self._stored_array(data_id, phase, v, strict=False) is not None)
        group = self._group(data_id, phase)
        if group is None:
            return []
        readable, _ = _children(group)
        names = {
            name
            for name, node in readable.items()
            if isinstance(node, zarr.Array)
            and _variable_problem(name, node) is None
            and self._visible_rows(data_id, phase, name, node) is not None
        }
        # A variable another call is deleting right now: its metadata is in the journal.
        rewritten = {v for p, v in self._overlays.get(data_id, {}) if p == phase}
        return sorted(names | {v for v in rewritten - names if self._find_array(data_id, phase, v) is not None})

    def _open_arrays(self, data_id: str, phase: str, names: list[str]) -> None:
        """Read the metadata of the variables not opened yet all at once (get_metadata and
        compile refresh, then open every variable: one read each, at the same time)."""
        overlay = self._overlays.get(data_id, {})
        wanted = [v for v in names if (data_id, phase, v) not in self._arrays and (phase, v) not in overlay]
        if len(wanted) < 2:
            return  # _stored_array opens it
        with self._io(), pipeline_scope(self._pipeline):  # zarr picks the pipeline when opening
            found = sync(_get_nodes(self._root, [f"{data_id}/{phase}/{v}" for v in wanted]))
        for var, node in zip(wanted, found, strict=True):
            if isinstance(node, zarr.Array) and _variable_problem(var, node) is None:
                self._arrays[(data_id, phase, var)] = prepared(node)

    def _committed_names(self, data_id: str, phase: str) -> set[str] | None:
        """The variables of a phase that readers may see, from the commit record (``None``: no
        record, list the phase group): the committed ones, and those the running call writes."""
        if data_id not in self._committed and not self._writing_here(data_id):
            self._load_commit(data_id)
        rows = self._committed.get(data_id)
        if rows is None:
            return None
        names = set(rows.get(phase, {}))
        if self._writing_here(data_id):  # the call writing them sees its own variables
            names |= {v for p, v in self._touched.get(data_id, ()) if p == phase}
        return names

    @_storage_call
    def other_objects(self, data_id: str | None = None) -> list[OtherObject]:
        # docstring inherited
        if data_id is None:
            return sorted(_others(self._root, "", _data_id_problem), key=lambda o: o.path)
        group = self._group(data_id)
        if group is None:
            return []
        found = _others(group, "", _phase_problem)
        for phase in PHASES:
            phase_group = self._group(data_id, phase)
            if phase_group is not None:
                found += _others(phase_group, f"{phase}/", _variable_problem)
        return sorted(found, key=lambda o: o.path)

    def has(self, data_id: str, phase: str, var: str) -> bool:
        # The base lists the phase group (a directory listing, ~1 ms on local disk, more on S3)
        # on every call; appends call this once per variable. A variable the commit record does
        # not list is no variable readers see: answered without a request (reads ask whether a
        # ragged variable's arrays exist on every call: on S3 each miss cost a HEAD and a LIST).
        if not self._maybe_committed(data_id, phase, var):
            return False
        return self._find_array(data_id, phase, var) is not None

    def _maybe_committed(self, data_id: str, phase: str, var: str) -> bool:
        """False when the commit record shows that readers cannot see ``var`` (no store request)."""
        if (phase, var) in self._touched.get(data_id, ()) or (phase, var) in self._overlays.get(data_id, {}):
            return True  # this call writes it, or another call rewrites it: ask the store
        if data_id not in self._committed and not self._writing_here(data_id):
            self._load_commit(data_id)
        rows = self._committed.get(data_id)
        return rows is None or var in rows.get(phase, {})

    def shape(self, data_id: str, phase: str, var: str) -> tuple[int, ...]:
        array = self._array(data_id, phase, var)
        shape = tuple(array.shape)
        if not shape:
            return shape
        rows = self._visible_rows(data_id, phase, var, array)
        return shape if rows is None or rows == shape[0] else (rows, *shape[1:])

    def dtype(self, data_id: str, phase: str, var: str) -> np.dtype:
        dtype = np.dtype(self._array(data_id, phase, var).dtype)
        return dtype if dtype.isnative else dtype.newbyteorder("=")

    @_storage_call
    def chunk_rows(self, data_id: str, phase: str, var: str) -> int | None:
        # docstring inherited: from the array's metadata alone (info also lists its chunks,
        # which races another process's rewrite and costs a listing on S3).
        array = self._array(data_id, phase, var)
        return int(array.chunks[0]) if array.ndim else None

    @_storage_call
    def info(self, data_id: str, phase: str, var: str) -> VarInfo:
        array = self._array(data_id, phase, var)
        codecs = ", ".join(type(c).__name__.removesuffix("Codec") for c in array.compressors)
        return VarInfo(
            np.dtype(array.dtype),
            self.shape(data_id, phase, var),
            chunk_rows=array.chunks[0] if array.ndim else None,
            stored_bytes=_stored_bytes(array),
            codec=codecs or "none",
        )

    @_storage_call
    def missing_chunks(self, data_id: str, phase: str, var: str) -> list[tuple[str, int, int]] | None:
        # docstring inherited: one listing of the variable's objects, for a variable that keeps
        # every chunk (storegate.backends.zarr_chunks); the committed rows only.
        array = self._array(data_id, phase, var)
        if not keeps_every_chunk(array):
            return None
        return sync(missing_chunks(array, self.shape(data_id, phase, var)[0]))

    @_storage_call
    def create(self, data_id: str, phase: str, var: str, data: np.ndarray, **options: Any) -> None:
        self._touch(data_id, phase, var)
        array = self._new_array(data_id, phase, var, data.shape, data.dtype, **options)
        if data.size:
            array[...] = data

    @_storage_call
    def create_empty(
        self, data_id: str, phase: str, var: str, shape: tuple[int, ...], dtype: np.dtype, **options: Any
    ) -> None:
        # docstring inherited; the zero chunks are written too: the variable keeps every chunk.
        self._touch(data_id, phase, var)
        array = self._new_array(data_id, phase, var, shape, dtype, **options)
        if array.size:
            array[...] = np.zeros((), dtype=array.dtype)

    @_storage_call
    def append(self, data_id: str, phase: str, var: str, data: np.ndarray) -> None:
        self._touch(data_id, phase, var)
        self._array(data_id, phase, var).append(data, axis=0)

    def read(self, data_id: str, phase: str, var: str, selection: Selection) -> np.ndarray:
        return self.read_inner(data_id, phase, var, selection, ())

    def read_inner(self, data_id: str, phase: str, var: str, selection: Selection, inner: Inner) -> np.ndarray:
        # docstring inherited: one zarr selection, so only the chunks that hold it are read.
        if self._flagged and data_id in self._flagged:
            self._wait_for_rewrite(data_id)
        array = self._array(data_id, phase, var)
        if isinstance(selection, slice) and array.ndim:
            rows = self._visible_rows(data_id, phase, var, array)
            if rows is not None and rows < array.shape[0]:  # rows past the last commit stay unseen
                selection = slice(*selection.indices(rows))
        direct = None if inner else self._direct_reader(data_id, phase, var, array)
        with self._io(writes_metadata=False):  # the hot path: one row per DataLoader sample
            try:  # inside _io, which would report gzip's errors (OSError) as a failing store
                # Rows inside one chunk of a local array: decoded in this thread (zarr_direct), else by zarr.
                out = None if direct is None else direct.rows(selection)
                if out is None:
                    out = (
                        _read_rows(array, selection, inner)
                        if isinstance(selection, np.ndarray)
                        else _select(array, (selection, *inner))
                        if inner
                        else np.asarray(array[selection])
                    )
            except Exception as exc:  # a lost chunk; numcodecs' "Zstd decompression error", gzip's errors...
                if not isinstance(exc, LostChunkError) and not damaged_chunk(exc):
                    raise
                raise self._chunk_error(data_id, phase, var, exc) from exc
        # Arrays other tools wrote big-endian read as every other variable does: native.
        return out if out.dtype.isnative else out.astype(out.dtype.newbyteorder("="))

    def _chunk_error(self, data_id: str, phase: str, var: str, exc: BaseException) -> StoreGateError:
        """The error naming the variable for a lost chunk (StorageError) or one that cannot be decoded."""
        where = f"var_name {var!r} of phase {phase!r} in data_id {data_id!r} at {self.location}"
        if isinstance(exc, LostChunkError):  # a variable that keeps every chunk: never read fill for a lost one
            return StorageError(
                f"{where} must have every chunk this read needs. Got none at {exc.key!r} (lost: the variable keeps "
                "every chunk, so it was not empty). sg.verify() lists every lost chunk; rewrite the variable from "
                "its source (sg.update_data with all its rows, or delete_data and add_data)."
            )
        return StoreGateError(
            f"{where} must be readable. Got a chunk that cannot be decoded ({type(exc).__name__}: {exc}). "
            "sg.verify() lists every such variable; rewrite it from its source."
        )

    def read_cached(self, data_id: str, phase: str, var: str, selection: Selection, inner: Inner) -> np.ndarray:
        # docstring inherited: small reads of whole-row chunks come from the decoded chunks
        # this handle keeps (see storegate.backends.zarr_cache); the others from read_inner.
        generation = self._decoded.generation  # first: a write of this handle meanwhile moves it on
        record = self._raw.get(data_id)
        if (
            record is None  # no commit record: nothing to check a cached chunk against
            or not self._decoded.max_bytes
            or getattr(self._reading, "rows", None) is None  # not a read that unchanged() checks
            or data_id in self._writer  # a call of this handle writes it: it reads what it wrote
            or data_id in self._overlays  # another call rewrites it in place: read through the journal
            or (self._flagged and data_id in self._flagged)
        ):
            return self._read_store(data_id, phase, var, selection, inner)
        key, tag = (data_id, phase, var), (record, generation)
        array = self._arrays.get(key)  # the engine opened it for this read
        if array is None:
            array = self._array(data_id, phase, var)
        chunk_rows, chunk_bytes = self._chunk_layout(key, array)
        if not chunk_bytes:  # chunks inside rows (row_chunks): reads fetch only the chunks they need
            return self._read_store(data_id, phase, var, selection, inner)
        if isinstance(selection, int) and not inner:  # the hot path: one row of a cached chunk
            row = self._decoded.row(key, tag, selection, chunk_rows)
            if row is not None:
                return row
        n_chunks = _chunks_touched(selection, chunk_rows)
        if not n_chunks or not self._decoded.fits(n_chunks, chunk_bytes):
            return self._read_store(data_id, phase, var, selection, inner)

        def read_rows(start: int, stop: int) -> np.ndarray:  # rows past the last commit stay unread
            return self.read(data_id, phase, var, slice(start, stop, 1))

        return self._decoded.read(key, tag, selection, inner, chunk_rows, read_rows)

    def cached_row(self, data_id: str, phase: str, var: str, index: int) -> np.ndarray | None:
        # docstring inherited: what read_cached serves for one row, without the engine's
        # layout lookups: the commit record this read goes by lists the variable (not ragged),
        # the handle has its array open and the row's chunk is cached under that record.
        used = getattr(self._reading, "rows", None)
        generation = self._decoded.generation  # first, as in read_cached
        record, committed = self._raw.get(data_id), self._committed.get(data_id)
        if used is None or record is None or committed is None or (used and used[0] is not committed):
            return None
        if not used:
            used.append(committed)  # see unchanged(): another thread of this handle may commit meanwhile
        return self._held_row(data_id, phase, var, index, committed, (record, generation))

    def warm_row(self, data_id: str, phase: str, var: str, index: int) -> np.ndarray | None:
        # docstring inherited: cached_row checked by the record's counter (see commit_counter):
        # it still has the value it had before the handle last read the record, and the
        # handle goes by that record. A writer in any process of this machine changes it.
        seen = self._record_seen.get(data_id)
        if seen is None or seen[1][0] != seen[2] or seen[3] < time.monotonic_ns():
            return None
        generation = self._decoded.generation  # first, as in read_cached
        committed = self._committed.get(data_id)
        record = self._raw.get(data_id)
        if record is None or record != seen[0] or committed is None or committed is not self._committed.get(data_id):
            return None  # the handle goes by another record, or another thread of it refreshed meanwhile
        return self._held_row(data_id, phase, var, index, committed, (record, generation))

    def _row_plan(self, key: tuple[str, str, str], committed: Rows) -> tuple[Rows, zarr.Array[Any], int, int] | None:
        """What _held_row needs of a variable under the commit ``committed``: the commit, the
        array the handle holds open, the committed rows and the rows of a chunk; None when its
        rows cannot come from the decoded chunks (not listed, ragged, chunks inside rows)."""
        variables = committed.get(key[1], {})
        n, array, layout = variables.get(key[2]), self._arrays.get(key), self._layouts.get(key)
        if n is None or array is None or layout is None or layout[0] is not array or not layout[2]:
            return None
        if key[2] + OFFSETS in variables:
            return None
        plan = (committed, array, min(n, int(array.shape[0])), layout[1])
        self._row_plans[key] = plan
        return plan

    def _held_row(
        self, data_id: str, phase: str, var: str, index: int, committed: Rows, tag: tuple[str, int]
    ) -> np.ndarray | None:
        """Row ``index`` of ``var`` from the decoded chunks, when the commit ``committed`` lists
        it, the handle holds its array open and its chunk is cached under ``tag``; else None."""
        if data_id in self._writer or data_id in self._overlays or (self._flagged and data_id in self._flagged):
            return None
        key = (data_id, phase, var)
        plan = self._row_plans.get(key)
        if plan is None or plan[0] is not committed or plan[1] is not self._arrays.get(key):
            plan = self._row_plan(key, committed)
            if plan is None:
                return None
        n = plan[2]
        if not -n <= index < n:
            return None  # out of range: the engine's read raises the error that names it
        return self._decoded.row(key, tag, index + n if index < 0 else index, plan[3])

    def _direct_reader(self, data_id: str, phase: str, var: str, array: zarr.Array[Any]) -> DirectReader | None:
        """The reader of rows inside one chunk of ``array`` (None: zarr reads them), made once per opened array."""
        key = (data_id, phase, var)
        known = self._direct.get(key)
        if known is not None and known[0] is array:
            return known[1]
        # A store opened with zarrs (codec_pipeline='zarrs') keeps to the pipeline it chose.
        reader = None if self._pipeline == "zarrs" else direct_reader(array)
        self._direct[key] = (array, reader)
        return reader

    def _chunk_layout(self, key: tuple[str, str, str], array: zarr.Array[Any]) -> tuple[int, int]:
        """Rows and bytes of a chunk of ``array``; 0 bytes when its chunks do not hold whole rows."""
        known = self._layouts.get(key)
        if known is not None and known[0] is array:
            return known[1], known[2]
        chunks = tuple(array.chunks)
        whole_rows = chunks[1:] == tuple(array.shape[1:])
        chunk_bytes = _nbytes(chunks, np.dtype(array.dtype)) if whole_rows else 0
        self._layouts[key] = (array, int(chunks[0]), chunk_bytes)
        return int(chunks[0]), chunk_bytes

    def _read_store(self, data_id: str, phase: str, var: str, selection: Selection, inner: Inner) -> np.ndarray:
        return (
            self.read_inner(data_id, phase, var, selection, inner)
            if inner
            else self.read(data_id, phase, var, selection)
        )

    @_storage_call
    def write(self, data_id: str, phase: str, var: str, selection: Selection, data: np.ndarray) -> None:
        self._touch(data_id, phase, var)
        array = self._array(data_id, phase, var)
        if isinstance(selection, np.ndarray):
            _write_rows(array, selection, data)
        else:
            array[selection] = data

    @_storage_call
    def resize(self, data_id: str, phase: str, var: str, n_rows: int) -> None:
        self._touch(data_id, phase, var)
        array = self._array(data_id, phase, var)
        old = array.shape[0]
        array.resize((n_rows, *array.shape[1:]))
        if n_rows > old:
            # A chunk cut by an earlier shrink still holds old values past the end.
            array[old:n_rows] = 0

    @_storage_call
    def replace(self, data_id: str, phase: str, var: str, data: np.ndarray, **options: Any) -> None:
        # docstring inherited
        self._touch(data_id, phase, var)
        array = self._arrays.get((data_id, phase, var)) or self._find_array(data_id, phase, var)
        same = array is not None and array.dtype == data.dtype and array.shape[1:] == data.shape[1:]
        # A variable written before chunks were all kept becomes one that keeps them when rewritten whole.
        same = same and array is not None and keeps_every_chunk(array)
        if not same or options:
            # A new dtype or row shape (astype, onehot) keeps the variable's codec, and its
            # rows per chunk when the rows keep their shape.
            if array is not None:
                options = {**_layout_of(array, data), **options}
            self.create(data_id, phase, var, data, **options)
            return
        assert array is not None
        array.resize(data.shape)
        if data.size:
            array[...] = data

    @_storage_call
    def delete(self, data_id: str, phase: str, var: str) -> None:
        # Only a variable goes: never an object of that name that another tool wrote.
        self._touch(data_id, phase, var)
        if self._find_array(data_id, phase, var, committed_only=False) is not None:
            group = self._group(data_id, phase)
            assert group is not None
            del group[var]
        self._arrays.pop((data_id, phase, var), None)

    # --- state -----------------------------------------------------------------------

    @_storage_call
    def load_state(self, data_id: str) -> dict[str, Any]:
        if data_id not in self._states:
            group = self._group(data_id)
            raw = None if group is None else group.attrs.get(STATE_KEY)
            stored = dict(raw) if isinstance(raw, dict) else {}
            stored.pop("format_version", None)
            self._states[data_id] = stored
        return dict(self._states[data_id])

    @_storage_call
    def save_state(self, data_id: str, state: dict[str, Any]) -> None:
        # A read-only store keeps the state for this process only.
        if self.writable:
            group = self._group(data_id, create=True)
            assert group is not None
            group.attrs[STATE_KEY] = {"format_version": FORMAT_VERSION, **state}
        else:
            self._local_states.add(data_id)
        self._states[data_id] = dict(state)

    @contextlib.contextmanager
    def writing(self, data_id: str) -> Iterator[None]:
        # docstring inherited: the lock and the commit record of storegate.backends.zarr_locking.
        if not self.writable:
            yield
            return
        lock = write_lock(self._root.store, data_id)
        # Other threads wait here (the lock is this process's too), also those of this handle.
        with holding(lock, self._lock_timeout, owner=self):
            if self._writer.get(data_id) == threading.get_ident():  # inside a call of this handle: it commits
                self._nested[data_id] = self._nested.get(data_id, 0) + 1
                try:
                    yield
                finally:
                    self._nested[data_id] -= 1
                return
            with self._io():
                # Only the outermost holder of this process cuts leftovers off: a writer
                # of another handle around us may hold rows it has not committed yet.
                self._catch_up(data_id, repair=lock.depth == 1)
            self._touched[data_id] = set()
            self._writer[data_id], self._locks[data_id] = threading.get_ident(), lock
            try:
                try:
                    yield
                except BaseException as exc:
                    self._settle_journal(data_id, exc)
                    self._replaced.pop(data_id, None)
                    self._cut.pop(data_id, None)
                    self._undone.pop(data_id, None)
                    if self._touched.pop(data_id, None):
                        self._commits.forget(data_id)  # undone, but check the store at the next call
                    raise
                self._replaced.pop(data_id, None)
                self._cut.pop(data_id, None)
                touched = self._touched.pop(data_id)
                if self._undone.pop(data_id, False):
                    self._commits.forget(data_id)  # a transaction was undone: check the store at the next call
                elif touched:  # written outside a transaction (e.g. repair): commit now
                    self._commit_or_explain(data_id, touched)
                self._settle_journal(data_id)
                lock.check()
                self._commits.committed(data_id)
            finally:
                self._writer.pop(data_id, None)
                self._locks.pop(data_id, None)

    def commit(self, data_id: str) -> None:
        # docstring inherited: writes the commit record.
        touched = self._touched.get(data_id)
        if not touched:
            return
        lock = self._locks.get(data_id)
        if lock is not None:
            lock.check()  # never commit on a lease another writer took over
        previous = self._raw[data_id]  # read (or written) by _catch_up under this same lock
        self._replaced[data_id] = (previous, self._committed.get(data_id), set(touched))
        self._commit(data_id, touched)
        self._decoded.drop()
        touched.clear()

    def uncommit(self, data_id: str) -> None:
        # docstring inherited: the previous record back, byte for byte.
        replaced = self._replaced.pop(data_id, None)
        if replaced is None:
            return
        raw, rows, _ = replaced
        self._undone[data_id] = True
        self._decoded.drop()  # the record put back may equal one a read tagged while the commit stood
        with self._io():
            self._commits.restore(self._root.store, data_id, raw)
        self._committed[data_id], self._raw[data_id] = rows, raw
        self._loaded[data_id] = self._commits.parse(raw, data_id).token

    def _catch_up(self, data_id: str, repair: bool) -> None:
        """Under the lock, before planning: the store as the last commit left it."""
        raw = self._commits.read_raw(self._root.store, data_id)
        record = self._commits.parse(raw, data_id)
        landed, previous = self._commits.failed_commit(record, data_id)
        if landed:  # a failed call of this handle committed after all (a lost reply), and its undo failed
            self._commits.restore(self._root.store, data_id, previous)
            raw, record = previous, self._commits.parse(previous, data_id)
        self._epochs[data_id] = record.epoch
        put_back: list[Finding] = []
        if record.journal is not None and repair:  # a call rewriting in place did not finish
            self.refresh(data_id)
            self._committed[data_id] = record.rows or {}
            put_back = self._put_back(data_id, record.journal, record.entries)
            raw = self._raw[data_id]
            record = self._commits.parse(raw, data_id)
        if self._commits.is_mine(record, data_id) and not put_back:
            self._committed[data_id], self._loaded[data_id], self._raw[data_id] = record.rows, record.token, raw
            return
        self.refresh(data_id)  # another process wrote (or a call failed): cached shapes are stale
        if record.rows is None:
            # No commit yet (a new data_id, or one written before commit records): what is stored
            # is committed now, before this call writes, so that what it writes stays unseen
            # until its own commit.
            rows = self._stored_rows(data_id)
            # A new epoch: a read that began under a deleted data_id of this name must not stand
            # under this one's record (see unchanged()), nor a read of it under a later one.
            self._epochs[data_id] = _new_epoch()
            raw = self._commits.write(self._root.store, data_id, rows, epoch=self._epochs[data_id])
            self._commits.committed(data_id)  # the last commit now, whatever becomes of this call
        else:
            rows = record.rows
        self._raw[data_id] = raw
        self._committed[data_id] = rows
        self._loaded[data_id] = record.token if record.rows is not None else self._commits.token_of(data_id)
        if repair:
            self._cut[data_id] = put_back + self._cut_to(data_id, rows)

    def _put_back(self, data_id: str, call: str, expected: int) -> list[Finding]:
        """Put the objects a call journalled back as last committed, then drop the flag; what was put back.

        The record written then lists the same rows with the flag's epoch, not the record
        from before the flag: a reader that read during the rewrite must see that it changed.
        """
        entries, buffer = self._journal_of(data_id, call, expected), default_buffer_prototype().buffer
        for entry in reversed(entries):  # newest first: the oldest entry of an object, the committed one, wins
            prefix = self._key(data_id, entry.phase, entry.var)
            if entry.whole:
                sync(self._root.store.delete_dir(prefix))
            objects = {k: None if v is None else buffer.from_bytes(v) for k, v in entry.objects.items()}
            self._put_objects(data_id, entry.phase, entry.var, objects)
            self._arrays.pop((data_id, entry.phase, entry.var), None)
        rows, epoch = self._committed.get(data_id) or {}, self._epochs.get(data_id, 0)
        self._raw[data_id] = self._commits.write(self._root.store, data_id, rows, self._raw.get(data_id), epoch=epoch)
        # That record is the last commit again, not a failed call's commit: the next call must
        # not take it for one that landed and put the flagged record (and its journal) back.
        self._commits.committed(data_id)
        self._loaded[data_id] = self._commits.token_of(data_id)
        self._journal.clear(data_id, call)
        return [
            Finding(
                f"{data_id}/{phase}/{var}",
                "rewritten in place by a call that did not finish: put back as last committed, from its undo journal",
                repairable=True,
            )
            for phase, var in sorted({(e.phase, e.var) for e in entries})
        ]

    def _journal_of(self, data_id: str, call: str, expected: int, entries: list[Entry] | None = None) -> list[Entry]:
        """The entries of a flagged call's journal (``entries`` when already read), all ``expected`` of them.

        Raises
        ------
        StoreGateError
            If some are missing or damaged: the objects the last commit holds cannot all
            be put back (nor shown to readers), and putting back only some would tear them.
        """
        entries = self._journal.entries(data_id, call) if entries is None else entries
        if len(entries) < expected:
            raise StoreGateError(
                f"the undo journal {self._journal.prefix(data_id)}/{call} of data_id {data_id!r} at {self.location} "
                f"must hold the {expected} entries its commit record names. Got {len(entries)}: it was damaged "
                "(entries deleted by hand?), so the variables that call was rewriting cannot be put back to their "
                "last commit. Restore them from a copy, then delete the journal folder and the record's "
                '"journal" key.'
            )
        return entries

    def _wait_for_rewrite(self, data_id: str) -> None:
        """In another thread than the one rewriting ``data_id`` in place: wait until it commits.

        Threads share this handle's cached arrays, which show the rewrite as it goes; the
        journal that would show them the last commit is for other handles and processes.
        """
        with self._rewrites:
            while data_id in self._flagged and not self._writing_here(data_id):
                self._rewrites.wait()

    def _settle_journal(self, data_id: str, failure: BaseException | None = None) -> None:
        """At the end of a call: drop its undo journal once committed; put the last commit back if not."""
        try:
            self._settle(data_id, failure)
        finally:
            self._frees.discard(data_id)
            with self._rewrites:
                self._flagged.pop(data_id, None)
                self._rewrites.notify_all()

    def _settle(self, data_id: str, failure: BaseException | None) -> None:
        flagged = self._flagged.get(data_id)
        call, added = self._journal.call(data_id), self._journal.added(data_id)
        self._journal.end(data_id)
        if call is None:
            return
        try:
            with self._io():
                if flagged is not None and self._raw.get(data_id) == flagged[1]:
                    # Not committed (it failed, or its commit was undone). The undo has put the
                    # objects back unless it failed too: the journal makes sure before the flag goes.
                    self._put_back(data_id, call, added)
                else:
                    self._journal.clear(data_id, call)
        except Exception as exc:  # the flag stays: readers see the last commit, the next writer puts it back
            message = (
                f"storegate: clearing the undo journal of data_id {data_id!r} failed ({exc!r}). Readers still see "
                "the last commit; the next write or sg.repair() finishes the job."
            )
            if failure is not None:
                failure.add_note(message)
            else:
                warnings.warn(message, StoreGateWarning, stacklevel=4)

    def _stored_rows(self, data_id: str) -> Rows:
        """Every variable's rows as stored (a data_id that has no commit record yet)."""
        self._committed[data_id] = None  # everything visible while listing
        return {p: {v: self.shape(data_id, p, v)[0] for v in self.var_names(data_id, p)} for p in PHASES}

    def _cut_to(self, data_id: str, rows: Rows) -> list[Finding]:
        """Cut off rows a crashed or failed writer appended past the last commit; what was cut."""
        cut = []
        for phase, variables in rows.items():
            for var, n in variables.items():
                array = self._find_array(data_id, phase, var, committed_only=False)
                if array is not None and array.ndim and array.shape[0] > n:
                    cut.append(
                        Finding(
                            f"{data_id}/{phase}/{var}",
                            f"{array.shape[0] - n} rows past the last commit "
                            f"({n} committed): a write that did not finish, cut off",
                            repairable=True,
                        )
                    )
                    array.resize((n, *array.shape[1:]))
        return cut

    def _commit(self, data_id: str, touched: set[tuple[str, str]], only_if_changed: bool = False) -> None:
        """Write the commit record: the call's writes become visible, all at once.

        A transaction always writes it (its new token tells other processes to drop what
        they cached, e.g. a dtype astype changed); ``only_if_changed`` skips a record that
        would list the same rows (writes that were undone, a repair).
        """
        if not touched:
            return
        rows = {p: dict(vs) for p, vs in (self._committed.get(data_id) or {}).items()}
        for phase, var in touched:
            array = self._find_array(data_id, phase, var, committed_only=False)
            if array is None:
                rows.get(phase, {}).pop(var, None)
            else:
                rows.setdefault(phase, {})[var] = int(array.shape[0]) if array.ndim else 0
        rows = {p: vs for p, vs in rows.items() if vs}
        if only_if_changed and rows == self._committed.get(data_id) and data_id not in self._flagged:
            return
        # A delete's commit starts a new epoch too: a read begun under its flag may still be
        # reading the deleted variable through the journal, and its chunks go once it commits.
        epoch = self._epochs.get(data_id, 0) + (1 if data_id in self._frees else 0)
        self._epochs[data_id] = epoch
        with self._io():
            self._raw[data_id] = self._commits.write(
                self._root.store, data_id, rows, self._raw.get(data_id), epoch=epoch
            )
        self._committed[data_id], self._loaded[data_id] = rows, self._commits.token_of(data_id)

    def _commit_or_explain(self, data_id: str, touched: set[tuple[str, str]]) -> None:
        try:
            self._commit(data_id, touched, only_if_changed=True)
        except StorageError as exc:
            self.refresh(data_id)  # this handle cached what it wrote: the store shows the last commit
            raise StorageError(
                f"{exc} This happened while committing the call: none of its appended rows or new variables "
                f"of data_id {data_id!r} became visible, and the next writer cuts them off; retry the call."
            ) from exc

    @_storage_call
    def leftovers(self, data_id: str) -> list[Finding]:
        # docstring inherited: rows past the commit, variables it does not list, and variables
        # it lists that are gone.
        try:
            record = self._commits.read(self._root.store, data_id)
        except StoreGateError as exc:  # a damaged record: say so (repair cannot guess the rows)
            return [Finding(self._commits.key(data_id), str(exc))]
        found = self._journal_leftovers(data_id, record.journal, record.entries)
        rows = record.rows
        if rows is None:
            return found
        for phase in PHASES:
            group = self._group(data_id, phase)
            stored = {} if group is None else _children(group)[0]
            for var, node in sorted(stored.items()):
                if not isinstance(node, zarr.Array) or _variable_problem(var, node) is not None:
                    continue  # another tool's object: other_objects() lists it
                where, committed = f"{data_id}/{phase}/{var}", rows.get(phase, {}).get(var)
                if committed is None:
                    found.append(
                        Finding(
                            where,
                            f"a variable no commit lists ({node.shape[0]} rows): a write that "
                            "did not finish, or another tool's array",
                            repairable=True,
                        )
                    )
                elif node.shape[0] < committed:
                    found.append(
                        Finding(
                            where,
                            f"{committed - node.shape[0]} committed rows are missing "
                            f"({committed} committed, {node.shape[0]} stored): cut by another "
                            "tool, or by a writer that lost its lease",
                        )
                    )
                elif node.shape[0] > committed:
                    found.append(
                        Finding(
                            where,
                            f"{node.shape[0] - committed} rows past the last commit "
                            f"({committed} committed): a write that did not finish",
                            repairable=True,
                        )
                    )
            for var in sorted(set(rows.get(phase, {})) - set(stored)):
                found.append(Finding(f"{data_id}/{phase}/{var}", "committed, but its array is gone"))
        return found

    def _journal_leftovers(self, data_id: str, flagged: str | None, expected: int) -> list[Finding]:
        """The undo journals stored for a data_id: one a call left unfinished, or stale ones."""
        found = []
        if flagged is not None:
            try:
                self._journal_of(data_id, flagged, expected)
            except StoreGateError as exc:  # repair() cannot put that call back: say so, leave it
                return [Finding(f"{self._journal.prefix(data_id)}/{flagged}", str(exc))]
        for call in self._journal.calls(data_id):
            what = (
                "the undo journal of a call that rewrote variables in place and did not finish: readers see the "
                "last commit through it; repair() puts the variables back"
                if call == flagged
                else "an undo journal that no commit record flags: a call that ended, or that was killed before "
                "it wrote in place (nothing visible depends on it then); repair() deletes it"
            )
            found.append(Finding(f"{self._journal.prefix(data_id)}/{call}", what, repairable=True))
        return found

    def repair(self, data_id: str) -> list[Finding]:
        # docstring inherited
        if self._nested.get(data_id):
            raise ConflictError(
                f"repair() must not run while a call of this StoreGate writes data_id {data_id!r} (an open "
                "writer?): its rows are not committed yet and would be cut. Close the writer first."
            )
        found = [f for f in self.leftovers(data_id) if f.repairable]
        rows = self._commits.read(self._root.store, data_id).rows or {}
        with self._io():
            done = self._cut.pop(data_id, []) + self._cut_to(data_id, rows)  # cut when the lock was taken, or now
            for finding in found:
                if finding.path.startswith(self._journal.prefix(data_id) + "/"):  # a stale journal
                    self._journal.clear(data_id, finding.path.rsplit("/", 1)[1])
                    done.append(finding)
                    continue
                _, phase, var = finding.path.rsplit("/", 2)
                if var not in rows.get(phase, {}):
                    group = self._group(data_id, phase)
                    assert group is not None
                    del group[var]
                    self._arrays.pop((data_id, phase, var), None)
                    done.append(finding)
        return sorted(done, key=lambda f: f.path)

    def _check_lease(self, data_id: str) -> None:
        """Raise ConflictError before any write once the call's lease may be another writer's."""
        lock = self._locks.get(data_id)
        if lock is not None:
            lock.check()

    def _touch(self, data_id: str, phase: str, var: str, rewrites: bool = True) -> None:
        """Note a variable the running call changes (its rows are committed with the call).

        ``rewrites``: the change may overwrite committed objects, so the commit record is
        flagged first when the call journalled them (an undo putting them back needs no flag).
        """
        self._check_lease(data_id)
        self._decoded.drop()  # what this handle cached may be what the call changes
        touched = self._touched.get(data_id)
        if touched is not None:
            touched.add((phase, var))
            if rewrites:
                self._flag_rewrite(data_id)

    def _flag_rewrite(self, data_id: str) -> None:
        """Before a write in place: flag the record with the call's journal, once per new entries."""
        added = self._journal.added(data_id)
        flagged = self._flagged.get(data_id)
        if added == (0 if flagged is None else flagged[0]):
            return  # nothing journalled since the flag: cheap on every append
        rows, epoch = self._committed.get(data_id) or {}, self._epochs.get(data_id, 0) + 1
        call = self._journal.call(data_id)
        with self._io():
            text = self._commits.write(self._root.store, data_id, rows, self._raw.get(data_id), call, epoch, added)
        self._raw[data_id], self._loaded[data_id], self._epochs[data_id] = text, self._commits.token_of(data_id), epoch
        self._flagged[data_id] = (added, text)

    def _keep_committed(self, data_id: str, checkpoint: Checkpoint) -> None:
        """Journal the committed objects a checkpoint saved, before the call rewrites them."""
        saved: _Objects = checkpoint.saved
        rows = self._committed.get(data_id) or {}
        if checkpoint.shape is None or checkpoint.var not in rows.get(checkpoint.phase, {}):
            return  # not committed (created by this call): the commit record hides it already
        objects = {**saved.objects, **_encoded(saved.metadata)} if not saved.whole else saved.objects
        as_bytes = {k: None if v is None else v.to_bytes() for k, v in objects.items()}
        entry = Entry(checkpoint.phase, checkpoint.var, checkpoint.shape, saved.whole, as_bytes)
        with self._io():
            self._journal.add(data_id, entry)

    def _visible_rows(self, data_id: str, phase: str, var: str, array: zarr.Array[Any]) -> int | None:
        """Rows of ``array`` that readers see: the committed ones (``None``: not committed)."""
        stored = int(array.shape[0]) if array.ndim else 0
        if (phase, var) in self._touched.get(data_id, ()) and self._writing_here(data_id):
            return stored  # the call writing it sees its own rows; other threads see the commit
        if data_id not in self._committed:
            self._load_commit(data_id)
        rows = self._committed[data_id]
        used = getattr(self._reading, "rows", None)
        if used is not None and not (used and used[0] is rows) and not any(r is rows for r in used):
            used.append(rows)  # see unchanged(): another thread of this handle may commit meanwhile
        if rows is None:
            return stored
        n = rows.get(phase, {}).get(var)
        return None if n is None else min(n, stored)

    def _load_commit(self, data_id: str) -> None:
        """Read the commit record for reading; while a call rewrites in place, its journal too.

        The journal is read between two reads of the record: when the record changed
        meanwhile (the call committed and cleared its journal), both are read again.
        """
        with self._io(writes_metadata=False):  # a server gone: a StorageError naming it
            self._read_commit(data_id)

    def _read_commit(self, data_id: str) -> None:
        for _ in range(_JOURNAL_READS):
            raw = self._commits.read_raw(self._root.store, data_id)
            self._check_cache(data_id, raw)
            record = self._commits.parse(raw, data_id)
            self._committed[data_id], self._loaded[data_id], self._raw[data_id] = record.rows, record.token, raw
            self._epochs[data_id] = record.epoch
            if record.journal is None or self._writing_here(data_id):
                self._overlays.pop(data_id, None)
                return
            entries = self._journal.entries(data_id, record.journal)
            overlay = committed_objects(entries)
            if self._commits.read_raw(self._root.store, data_id) == raw:
                self._journal_of(data_id, record.journal, record.entries, entries)  # the record stands: all there
                break
        self._overlays[data_id] = overlay
        self._forget(data_id)  # arrays opened before hold the objects being rewritten

    def _writing_here(self, data_id: str) -> bool:
        """True in the thread running this handle's call on ``data_id``."""
        return self._writer.get(data_id) == threading.get_ident()

    def refresh_if_changed(self, data_id: str) -> None:
        # docstring inherited: one small read of the commit record.
        if self._flagged and data_id in self._flagged:
            self._wait_for_rewrite(data_id)
        if data_id in self._writer or data_id not in self._committed:
            # A call of this handle is writing it (in this thread or another): it holds the lock,
            # so what this handle holds is the newest; dropping the arrays it writes through
            # would make it commit the shapes of arrays opened before its appends landed.
            return
        self._take_record(data_id, self._read_record(data_id))

    def _read_record(self, data_id: str) -> str | None:
        """The commit record's text, read now: once per read call, so the local case skips ``_io``."""
        if self._local_records:
            try:
                if self._watched:
                    return self._read_watched(data_id)
                return read_object_text(self._root.store, self._commits.key(data_id))
            except OSError:
                pass  # read again below, to raise the StorageError that names the location
        with self._io(writes_metadata=False):
            return self._commits.read_raw(self._root.store, data_id)

    def _read_watched(self, data_id: str) -> str | None:
        """The record, read after its counter: warm_row trusts it while the counter keeps that value."""
        counter, until = self._watches.get(data_id, (None, 0))
        now = time.monotonic_ns()
        if until < now:  # mapped afresh every WATCH_NS: a counter deleted by hand is not watched for long
            path = counter_path(self._root.store, data_id)
            counter, until = (None if path is None else watch(path)), now + WATCH_NS
            self._watches[data_id] = (counter, until)
        count = None if counter is None else counter[0]
        raw = read_object_text(self._root.store, self._commits.key(data_id))
        if counter is not None and count is not None and count % 2 == 0:  # odd: a writer is changing it
            self._record_seen[data_id] = (raw, counter, count, until)
        else:
            self._record_seen.pop(data_id, None)
        return raw

    def _take_record(self, data_id: str, raw: str | None) -> None:
        """Go by the commit record ``raw`` just read: forget what was cached when another commit wrote it."""
        if raw is not None and raw == self._raw.get(data_id):
            return  # the same record: one small read, no parsing
        self._check_cache(data_id, raw)
        token = self._commits.parse(raw, data_id).token
        if token != self._loaded.get(data_id):
            self.refresh(data_id)
        else:
            self._raw[data_id] = raw

    def _check_cache(self, data_id: str, raw: str | None) -> None:
        """A cache_dir's copies filled under another record than ``raw`` are never served again."""
        if self._cache_folder is not None:
            self._cache_folder.check(data_id, raw)

    def data_version(self, data_id: str) -> str | None:
        # docstring inherited: the commit record itself (a new token each commit), one small read.
        with self._io(writes_metadata=False):
            return self._commits.read_raw(self._root.store, data_id)

    def start_read(self, data_id: str) -> None:
        # docstring inherited: one read of the commit record per call. The read goes by the
        # record the previous call checked ("optimistic"), and unchanged() reads the record
        # once, after the read: the read stands only if it is still that very record (a new
        # commit, or a rewrite in place that began, writes a record of another text).
        # After a read that did not stand, the next one reads the record first (as before)
        # and only a rewrite in place begun meanwhile refuses it: a writer that commits
        # appends without pause cannot starve readers.
        careful = getattr(self._reading, "careful", None) == data_id
        self._reading.careful = None
        if (
            not careful
            and self.reads_by_commit_record
            and data_id in self._raw
            and data_id in self._committed
            and data_id not in self._writer
            and data_id not in self._overlays
            and not (self._flagged and data_id in self._flagged)
        ):
            self._reading.optimistic = data_id
        else:
            self._reading.optimistic = None
            self.refresh_if_changed(data_id)
        self._reading.rows = []  # the committed rows each read of this thread goes by, until unchanged()

    def unchanged(self, data_id: str) -> bool:
        # docstring inherited: the commit record is still the one read (a rewrite flags it
        # before its first write in place, and commits by writing it again).
        optimistic = getattr(self._reading, "optimistic", None) == data_id
        self._reading.optimistic = None
        if self._writing_here(data_id):
            return True
        used, self._reading.rows = getattr(self._reading, "rows", None) or [], None
        if len(used) > 1 or (used and used[0] is not self._committed.get(data_id)):
            return False  # another thread of this handle committed, or refreshed, during the read
        if data_id not in self._raw:
            return True
        raw = self._read_record(data_id)
        if raw == self._raw[data_id]:
            return True
        if optimistic:  # another commit since the previous call: read again, by the newest record
            self._take_record(data_id, raw)
            self._reading.careful = data_id
            return False
        if raw is not None and self._commits.parse(raw, data_id).epoch == self._epochs.get(data_id, 0):
            return True
        # A rewrite, a deleted variable or a deleted data_id (no record: its chunks went too)
        # since: the next attempt goes by the newest record (else it would compare the same again).
        self._take_record(data_id, raw)
        return False

    def refresh(self, data_id: str) -> None:
        # docstring inherited; a state only this process holds (read-only store) is kept.
        if data_id in self._writer and not self._writing_here(data_id):
            return  # another thread's call writes it: see refresh_if_changed
        self._decoded.drop()
        self._forget(data_id)
        if data_id not in self._touched:  # while this backend writes it, its commit is the one it holds
            self._committed.pop(data_id, None)
            self._loaded.pop(data_id, None)
            self._overlays.pop(data_id, None)
        if data_id not in self._local_states:
            self._states.pop(data_id, None)

    # --- undo: raw stored objects, byte for byte ----------------------------------------

    @_storage_call
    def checkpoint(self, data_id: str, phase: str, var: str, rows: slice | None = None) -> Checkpoint:
        # docstring inherited: keeps the array's metadata (in memory, as zarr holds it) and
        # the stored, still compressed objects that hold ``rows``. An append (no rows) saves
        # no object: cutting the array back to its old shape undoes it. The rows it wrote
        # into the last, partial chunk then lie past the end, where no read reaches them;
        # the next append overwrites them and a grow zero-fills them (see resize).
        array = self._find_array(data_id, phase, var)
        if array is None:
            return Checkpoint(data_id, phase, var, None, slice(0, 0, 1))
        shape = tuple(array.shape)
        whole = rows is None or not array.ndim
        span = clip_rows(None if whole else rows, shape[0] if array.ndim else 0)
        keys: list[str] = []
        if whole:
            keys = sync(_list_keys(array))
        elif span.stop > span.start:
            keys = _object_keys(array, span)
        objects = sync(_get_many(array, keys)) if keys else {}
        checkpoint = Checkpoint(data_id, phase, var, shape, span, _Objects(array.metadata, objects, whole))
        if keys and self._writing_here(data_id):
            self._keep_committed(data_id, checkpoint)  # a crash mid-rewrite leaves them in the journal
        return checkpoint

    def rollback(self, checkpoint: Checkpoint) -> None:
        # docstring inherited
        data_id, phase, var = checkpoint.data_id, checkpoint.phase, checkpoint.var
        self._touch(data_id, phase, var, rewrites=False)
        if not checkpoint.existed:
            self.delete(data_id, phase, var)
            return
        saved: _Objects = checkpoint.saved
        self._arrays.pop((data_id, phase, var), None)  # the handle may hold the failed write's shape
        with self._io():
            current = self._find_array(data_id, phase, var, committed_only=False)
            if saved.whole:
                # Whatever the failed write left goes, directories of a local store included
                # (a directory 'c/1' left by a 2-D array would block the file 'c/1' of a 1-D one).
                sync(self._root.store.delete_dir(self._key(data_id, phase, var)))
            elif current is not None and checkpoint.shape is not None and current.shape != checkpoint.shape:
                current.resize(checkpoint.shape)  # drops the objects a failed append added
            self._put_objects(data_id, phase, var, {**saved.objects, **_encoded(saved.metadata)})
        self._arrays.pop((data_id, phase, var), None)

    def detach(self, data_id: str, phase: str, var: str) -> Checkpoint:
        # docstring inherited: only the metadata goes, so the variable vanishes at once and
        # its chunks stay until discard().
        array = self._find_array(data_id, phase, var)
        if array is None:
            return Checkpoint(data_id, phase, var, None, slice(0, 0, 1))
        self.check_writable()
        shape = tuple(array.shape)
        if self._writing_here(data_id):  # readers, and a crash, still find the metadata in the journal
            metadata_only = _Objects(array.metadata, {}, False)
            self._keep_committed(data_id, Checkpoint(data_id, phase, var, shape, slice(0, 0, 1), metadata_only))
            self._frees.add(data_id)
        self._touch(data_id, phase, var)
        checkpoint = Checkpoint(data_id, phase, var, shape, clip_rows(None, shape[0] if shape else 0), array.metadata)
        try:
            with self._io():
                sync(_delete_keys(array, list(_encoded(array.metadata))))
        except BaseException as exc:
            # The delete may have landed before it failed (a lost reply): put the metadata back,
            # so a detach either happens or leaves the variable as it was.
            try:
                with self._io():
                    to_completion(lambda: self._put_objects(data_id, phase, var, _encoded(array.metadata)))
            except StorageError as again:  # the journal keeps the metadata: readers, and the next writer, find it
                exc.add_note(f"storegate: putting the metadata of {phase}/{var} back also failed: {again}")
            raise
        finally:
            self._arrays.pop((data_id, phase, var), None)
        return checkpoint

    def reattach(self, checkpoint: Checkpoint) -> None:
        # docstring inherited
        if checkpoint.existed:
            self._touch(checkpoint.data_id, checkpoint.phase, checkpoint.var, rewrites=False)
            with self._io():
                self._put_objects(checkpoint.data_id, checkpoint.phase, checkpoint.var, _encoded(checkpoint.saved))
            self._arrays.pop((checkpoint.data_id, checkpoint.phase, checkpoint.var), None)

    def discard(self, checkpoint: Checkpoint) -> None:
        # docstring inherited; a variable created again under the same name since is kept.
        if not checkpoint.existed or self.has(checkpoint.data_id, checkpoint.phase, checkpoint.var):
            return
        with self._io():
            sync(self._root.store.delete_dir(self._key(checkpoint.data_id, checkpoint.phase, checkpoint.var)))

    def _put_objects(self, data_id: str, phase: str, var: str, objects: dict[str, Buffer | None]) -> None:
        """Write raw objects under a variable's prefix (``None`` deletes the object)."""
        prefix = self._key(data_id, phase, var)
        sync(_set_many(self._root.store, {f"{prefix}/{key}": value for key, value in objects.items()}))

    def _key(self, *path: str) -> str:
        """The store key of a node below the root group."""
        return "/".join(p for p in (self._root.store_path.path, *path) if p)

    # --- internals -------------------------------------------------------------------

    def _new_array(
        self, data_id: str, phase: str, var: str, shape: tuple[int, ...], dtype: np.dtype, **options: Any
    ) -> zarr.Array[Any]:
        self.check_writable()
        compressors = self._compressors
        if options.get("compressor") is not None:  # None: the store's compressor
            compressors = resolve_compressor(options["compressor"])
        chunks = self._chunks(shape, np.dtype(dtype), options.get("chunk_rows"), var)
        self._check_layout(var, chunks, np.dtype(dtype), from_chunk=not options.get("chunk_rows"))
        encoding = self._encoding(chunks, np.dtype(dtype), compressors)  # refuses before anything is written
        group = self._group(data_id, phase, create=True)
        assert group is not None  # create=True always returns a group
        empty = self._check_free(group, data_id, phase, var)
        # zarr v3 names the axes, so xarray.open_zarr can open a phase (v2 has no such field).
        dims = None if self.zarr_format == 2 else dimension_names(var, len(shape))
        fill = np.zeros((), dtype=dtype)[()]
        args: dict[str, Any] = {"shape": shape, "dtype": dtype, "chunks": chunks, "fill_value": fill}
        args["dimension_names"] = dims
        # Every chunk is stored, fill-valued ones too, and the attributes say so: a missing one
        # was lost, and reads refuse it (storegate.backends.zarr_chunks).
        args["attributes"] = every_chunk_attributes()
        with pipeline_scope(self._pipeline):
            if empty:
                array = self._put_new_array(data_id, phase, var, {**args, **encoding})
            else:  # a variable (or a failed write's chunks) to replace: zarr deletes it first
                array = group.create_array(var, overwrite=True, **args, **encoding)
        self._arrays[(data_id, phase, var)] = prepared(array)
        return array

    def _put_new_array(self, data_id: str, phase: str, var: str, args: dict[str, Any]) -> zarr.Array[Any]:
        """A new array where nothing is stored: its metadata written once, nothing read.

        zarr's ``create_array`` deletes what is under the name, reads each parent group and
        checks it again after writing (about 15 requests on S3); :meth:`_check_free` has
        listed the name (nothing there) and the phase group is open. The metadata is the one
        zarr makes for these arguments (built on an in-memory store).
        """
        template = zarr.create_array(store=MemoryStore(), zarr_format=self.zarr_format, **args)  # type: ignore[arg-type]
        metadata = template.metadata
        key = self._key(data_id, phase, var)
        sync(put_documents(self._root.store, key, metadata.to_buffer_dict(default_buffer_prototype())))
        return zarr.Array(zarr.AsyncArray(metadata=metadata, store_path=StorePath(self._root.store, key)))

    def _encoding(self, chunks: tuple[int, ...], dtype: np.dtype, compressors: Compressors) -> dict[str, Any]:
        """``create_array``'s codec arguments in the store's format (v2: one numcodecs compressor, no shards)."""
        if self.zarr_format == 2:
            return {"compressors": v2_compressor(compressors)}
        return {"compressors": compressors, "shards": self._shards(chunks, dtype)}

    def _check_free(self, group: zarr.Group, data_id: str, phase: str, var: str) -> bool:
        """Refuse to create a variable over anything that is not a variable (``overwrite`` would delete it).

        True when nothing at all is stored under the name (one listing): the variable is
        then written without zarr's overwrite, which deletes and probes first.
        """
        if (data_id, phase, var) in self._arrays:
            return False  # a variable this backend opened: replacing it is what create means
        keys = sync(keys_under(group.store, self._key(data_id, phase, var)))
        if not keys:
            return True
        node = _node(group, var)
        if isinstance(node, zarr.Array) and _variable_problem(var, node) is None:
            return False  # a variable: replacing it is what create means
        where = f"var_name {var!r} in data_id {data_id!r}, phase {phase!r}"
        if node is not None:
            raise InvalidArgumentError(
                f"{where} must not name an object storegate does not manage. Got a {_variable_problem(var, node)} "
                f"there (another tool wrote it) at {self.location}. Choose another var_name, or remove it with zarr."
            )
        foreign = [k for k in keys if not _CHUNK_KEY.fullmatch(k) and not _PARTIAL_KEY.fullmatch(k)]
        if foreign:
            raise InvalidArgumentError(
                f"{where} must not name a folder of other files. Got {var}/ holding {sorted(foreign)[:5]} at "
                f"{self.location} (not a zarr array). Choose another var_name, or move those files away."
            )
        return False  # chunks (or zarr's temporary files) a failed write left: zarr's overwrite deletes them

    def _check_layout(self, var: str, chunks: tuple[int, ...], dtype: np.dtype, from_chunk: bool) -> None:
        """Refuse, before the variable is created, a chunk of ``chunk`` rows past MAX_CHUNK_BYTES
        (``from_chunk``: the rows come from the ``chunk`` option) or a shard of more than
        MAX_CHUNKS_PER_SHARD inner chunks."""
        row_bytes = _nbytes(chunks[1:], dtype)
        nbytes = int(chunks[0]) * row_bytes
        about = f"var_name {var!r} (rows of shape {chunks[1:]}, {dtype}: {row_bytes} bytes a row)"
        if from_chunk and self._chunk is not None and nbytes > MAX_CHUNK_BYTES:
            raise InvalidArgumentError(
                f"chunk must keep one chunk within {MAX_CHUNK_BYTES} bytes ({_size_text(MAX_CHUNK_BYTES)}), "
                f"the largest chunk storegate writes. Got chunk={self._chunk} rows for {about}: a chunk of "
                f"{nbytes} bytes ({_size_text(nbytes)}) instead. Give chunk <= {max(1, MAX_CHUNK_BYTES // row_bytes)} "
                "for this variable, or leave chunk unset so that chunk_bytes sets the rows of each variable."
            )
        if self._shard_bytes is not None and self.zarr_format != 2:
            shard_bytes = int(self._shard_bytes)
            per_shard = shard_bytes // nbytes
            if per_shard > MAX_CHUNKS_PER_SHARD:
                raise InvalidArgumentError(
                    f"shard_bytes must group at most {MAX_CHUNKS_PER_SHARD} chunks into one shard (zarr indexes "
                    f"every inner chunk of a shard). Got shard_bytes={shard_bytes} ({_size_text(shard_bytes)}) "
                    f"over chunks of {chunks[0]} rows for {about}: {nbytes} bytes a chunk, {per_shard} chunks a "
                    f"shard, instead. Give shard_bytes <= {MAX_CHUNKS_PER_SHARD * nbytes}, or larger chunks "
                    "(chunk or chunk_bytes)."
                )

    def _chunks(
        self, shape: tuple[int, ...], dtype: np.dtype, rows: int | None = None, var: str | None = None
    ) -> tuple[int, ...]:
        """Rows per chunk: ``rows``, else ``chunk`` rows, else as many as fit in ``chunk_bytes``.

        Each chunk holds whole rows, or the part of them ``row_chunks`` gives for ``var``.
        """
        row_shape = tuple(max(1, d) for d in shape[1:])
        inside = self._row_chunks.get(var or "")
        if inside is not None:
            if len(inside) != len(row_shape):
                raise InvalidArgumentError(
                    f"row_chunks must give one length (or None) per axis of a row of var_name {var!r}: "
                    f"{len(row_shape)} for rows of shape {tuple(shape[1:])}. Got {inside} instead."
                )
            row_shape = tuple(d if n is None else min(n, d) for n, d in zip(inside, row_shape, strict=True))
        rows = rows or self._chunk
        if rows is None:
            rows = max(1, self._chunk_bytes // _nbytes(row_shape, dtype))
        return (rows, *row_shape)

    def _shards(self, chunks: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...] | None:
        """Whole chunks per shard, about ``shard_bytes`` (at least one chunk)."""
        if self._shard_bytes is None:
            return None
        per_shard = max(1, self._shard_bytes // _nbytes(chunks, dtype))
        return (chunks[0] * per_shard, *chunks[1:])

    def write_rows(self, data_id: str, phase: str, var: str) -> int | None:
        # docstring inherited: a shard is rewritten whole, so it is the unit when sharded.
        array = self._array(data_id, phase, var)
        if array.ndim == 0:
            return None
        return int((array.shards or array.chunks)[0])

    def _group(self, *path: str, create: bool = False) -> zarr.Group | None:
        """The group of a data_id or ``(data_id, phase)``; ``None`` when there is none.

        With ``create``, a missing group is created; an array where the group should be
        (another tool wrote it) raises InvalidArgumentError.
        """
        if path in self._groups:
            return self._groups[path]
        parent = self._root if len(path) == 1 else self._group(*path[:-1], create=create)
        if parent is None:
            return None
        found = _node(parent, path[-1])
        if isinstance(found, zarr.Array) and create:
            what = f"phase {path[1]!r} of data_id {path[0]!r}" if len(path) == 2 else f"data_id {path[0]!r}"
            raise InvalidArgumentError(
                f"{what} must be a zarr group to hold storegate's data. Got a zarr array there (another tool "
                f"wrote it) at {self.location}. Remove or rename it with zarr, or use another data_id."
            )
        if not isinstance(found, zarr.Group):
            if not create:
                return None
            # Nothing there (just read) and the parent is a group: one write, no reads.
            found = new_group(self._root.store, self._key(*path), self.zarr_format)  # type: ignore[arg-type]
        self._groups[path] = found
        return found

    def _array(self, data_id: str, phase: str, var: str) -> zarr.Array[Any]:
        array = self._find_array(data_id, phase, var)
        if array is None:
            raise self.missing_error(data_id, phase, var)
        return array

    def _find_array(self, data_id: str, phase: str, var: str, committed_only: bool = True) -> zarr.Array[Any] | None:
        """The cached handle, else one metadata read (never a listing of the group).

        ``committed_only``: ``None`` for an array the commit record does not list (a write
        that did not finish) unless the running call created it.
        """
        array = self._stored_array(data_id, phase, var)
        if array is None or not committed_only or self._visible_rows(data_id, phase, var, array) is not None:
            return array
        return None

    def _stored_array(self, data_id: str, phase: str, var: str, strict: bool = True) -> zarr.Array[Any] | None:
        """The array as stored (``None``: absent, or not a variable).

        One read of its metadata by its path (not of the data_id and phase groups first).
        ``strict``: metadata zarr cannot read raises StoreGateError; else it is no variable
        (as a listing of the phase skips it).
        """
        key = (data_id, phase, var)
        array = self._arrays.get(key)
        if array is None:
            if data_id not in self._committed and not self._writing_here(data_id):
                self._load_commit(data_id)  # first: it says whether to read the journal
            entry = self._overlays.get(data_id, {}).get((phase, var))
            found: Node | None
            with self._io(), pipeline_scope(self._pipeline):  # zarr picks the pipeline when opening
                if entry is not None:  # another call rewrites it in place: read it as committed
                    found = self._committed_array(self._key(data_id, phase, var), entry)
                elif strict:
                    found = _node(self._root, f"{data_id}/{phase}/{var}")
                else:
                    found, _ = _try_node(self._root, f"{data_id}/{phase}/{var}")
            if not isinstance(found, zarr.Array) or _variable_problem(var, found) is not None:
                return None  # absent, or an object another tool wrote: never a variable
            array = self._arrays[key] = prepared(found)
        return array

    def _committed_array(self, key: str, entry: Entry) -> zarr.Array[Any] | None:
        """A variable as its last commit holds it, from its journal entry and the store."""
        view = CommittedView(self._root.store, key, entry)
        try:
            return zarr.open_array(store=view, path=key, mode="r", zarr_format=self.zarr_format)  # type: ignore[arg-type]
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _io(self, writes_metadata: bool = True) -> Iterator[None]:
        """Storage I/O: chunk requests `concurrency` at a time, and a failure of the storage
        itself (a server gone, a disk full) as a StorageError naming the location.

        zarr warns that its v3 string types are unstable when it writes their metadata;
        ``writes_metadata=False`` (reads) skips silencing that warning, which costs a
        little on every call.

        When a call fails, zarr's other requests of that call may still be running on its
        event loop (``asyncio.gather`` does not cancel them): they are waited for before the
        error propagates, so that nothing of the failed call lands after it was undone.
        """
        try:
            quiet = warnings.catch_warnings() if writes_metadata else contextlib.nullcontext()
            with concurrency_scope(self._concurrency), quiet:
                if writes_metadata:
                    # str and bytes variables use zarr's fixed-length string data types, whose v3
                    # specification is not final (documented in the README's Dtypes section).
                    warnings.simplefilter("ignore", UnstableSpecificationWarning)
                yield
        except BaseException as exc:
            with unsent_to(no_reply_endpoint(exc)):  # a silent server: the requests not sent yet fail at once
                interrupted = settle_requests()
            if interrupted is not None and interrupted is not exc:
                raise interrupted from exc  # Ctrl-C while settling: raised once the call's requests ended
            if isinstance(exc, MemoryError):
                raise StorageError(
                    f"the zarr store at {self.location}: this process has not enough memory for the rows of this "
                    "call. Read fewer rows at a time (an index or a slice; StoreGateDataset streams them), or write "
                    "fewer per call (smaller add_data calls, or sg.writer())."
                ) from exc
            where = f"the zarr store at {self.location}: "
            if isinstance(exc, NoReplyError) and not str(exc).startswith(where):  # say where the store lives
                raise NoReplyError(f"{where}{exc}", exc.endpoint) from exc
            if isinstance(exc, StoreGateError) or not isinstance(exc, _IO_ERRORS):
                raise
            raise StorageError(
                f"the zarr store at {self.location} failed during a read or write: {type(exc).__name__}: {exc}"
            ) from exc

    def _forget(self, data_id: str) -> None:
        self._groups = {k: v for k, v in self._groups.items() if k[0] != data_id}
        self._arrays = {k: v for k, v in self._arrays.items() if k[0] != data_id}
        self._layouts = {k: v for k, v in self._layouts.items() if k[0] != data_id}
        self._row_plans = {k: v for k, v in self._row_plans.items() if k[0] != data_id}
        self._direct = {k: v for k, v in self._direct.items() if k[0] != data_id}


def _new_epoch() -> int:
    """The epoch of a data_id's first record, and of the empty one its deletion commits: random,
    so that no read spanning a deletion takes the records before and after it for one lineage."""
    return secrets.randbits(48)


# --- what is a variable, and what another tool left ----------------------------------------

Node = zarr.Array[Any] | zarr.Group
#: Keys of the stored chunks of an array: zarr v3's ``c/0/1`` or ``c.0.1`` (``c`` for 0-d), zarr
#: v2's ``0.1`` or ``0/1``. A variable detached by a write in progress leaves only these under its name.
_CHUNK_KEY = re.compile(r"c([./]\d+)*|\d+([./]\d+)*")
#: What zarr's LocalStore writes an object to before renaming it into place (``zarr.json`` ->
#: ``zarr.<uuid hex>.partial``, chunk ``c/0/1`` -> ``c/0/1.<uuid hex>.partial``): left by a
#: writer killed mid-write, as chunks are.
_PARTIAL_KEY = re.compile(r"(?:.*/)?[^/]*\.[0-9a-f]{32}\.partial")


def _variable_problem(name: str, node: Node) -> str | None:
    """Why a member of a phase group is not a storegate variable, or ``None`` when it is one."""
    if isinstance(node, zarr.Group):
        return "group"
    if node.ndim == 0:
        return "0-d array"
    try:
        parse_var_names(name)
    except InvalidArgumentError:
        return f"array named {name!r} (a name storegate refuses)"
    return None


def _data_id_problem(name: str, node: Node) -> str | None:
    """Why a member of the root is not a data_id, or ``None`` when it is one."""
    if isinstance(node, zarr.Array):
        return f"{node.ndim}-d array"
    try:
        check_data_id(name)
    except InvalidArgumentError:
        return f"group named {name!r} (a name storegate refuses)"
    return None


def _data_ids(root: zarr.Group) -> list[str]:
    """The data_ids of a store's root group, sorted (never another tool's objects)."""
    readable, _ = _children(root)
    return sorted(name for name, node in readable.items() if _data_id_problem(name, node) is None)


def _phase_problem(name: str, node: Node) -> str | None:
    """Why a member of a data_id group is not one of its phases, or ``None`` when it is one."""
    if name not in PHASES:
        return "group" if isinstance(node, zarr.Group) else f"{node.ndim}-d array"
    return f"{node.ndim}-d array where phase {name!r} should be a group" if isinstance(node, zarr.Array) else None


def _others(group: zarr.Group, prefix: str, problem: Callable[[str, Node], str | None]) -> list[OtherObject]:
    """The members of ``group`` that ``problem`` rejects, and those zarr cannot read."""
    readable, unreadable = _children(group)
    found = [OtherObject(prefix + name, what) for name, node in readable.items() if (what := problem(name, node))]
    return found + [OtherObject(prefix + name, why) for name, why in unreadable.items()]


def _children(group: zarr.Group) -> tuple[dict[str, Node], dict[str, str]]:
    """The members of a group zarr can read, and (name: why) those it cannot.

    A folder without zarr metadata is no member (zarr warns about it while listing: the
    chunks of a variable detached by a write in progress are one).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZarrUserWarning)
        try:
            return dict(group.members()), {}
        except _IO_ERRORS:
            raise
        except Exception:  # one member zarr cannot read fails the whole listing: find it
            return _children_one_by_one(group)


def _children_one_by_one(group: zarr.Group) -> tuple[dict[str, Node], dict[str, str]]:
    readable: dict[str, Node] = {}
    unreadable: dict[str, str] = {}
    for name in sync(_child_names(group)):
        node, why = _try_node(group, name)
        if why is not None:
            unreadable[name] = why
        elif node is not None:
            readable[name] = node
    return readable, unreadable


def _node(group: zarr.Group, name: str) -> Node | None:
    """The member ``name`` of ``group``, ``None`` when there is none.

    Raises
    ------
    StoreGateError
        If zarr cannot read its metadata (broken JSON, an unknown codec or data type...).
    """
    node, why = _try_node(group, name)
    if why is not None:
        path = "/".join(p for p in (group.path, name) if p)
        raise StoreGateError(
            f"the object {path!r} in the store must have metadata zarr can read. Got {why}. "
            "Fix or remove it with the tool that wrote it; storegate leaves it alone."
        )
    return node


def _try_node(group: zarr.Group, name: str) -> tuple[Node | None, str | None]:
    """``(member or None, None)``, or ``(None, why)`` when zarr cannot read the member's metadata."""
    try:
        return group.get(name), None
    except _IO_ERRORS:
        raise
    except Exception as exc:  # zarr raises many kinds for a document it cannot read
        return None, f"metadata zarr cannot read ({type(exc).__name__}: {exc})"


async def _child_names(group: zarr.Group) -> list[str]:
    store_path = group.store_path
    prefix = store_path.path.rstrip("/")
    return sorted({name.split("/")[0] async for name in store_path.store.list_dir(prefix)} - METADATA_KEYS - {""})


async def _get_nodes(root: zarr.Group, paths: list[str]) -> list[Node | None]:
    """The nodes at ``paths`` below ``root``, read a bounded number at a time; ``None`` for a
    path where there is none or whose metadata zarr cannot read (:func:`_node` says why later)."""
    group = zarr.AsyncGroup(metadata=root.metadata, store_path=root.store_path)
    limit = asyncio.Semaphore(int(zarr.config.get("async.concurrency")))

    async def get(path: str) -> Node | None:
        async with limit:
            try:
                node = await group.getitem(path)
            except _IO_ERRORS:
                raise
            except Exception:  # absent (KeyError), or metadata zarr cannot read
                return None
        return zarr.Array(node) if isinstance(node, zarr.AsyncArray) else zarr.Group(node)

    return list(await asyncio.gather(*(get(p) for p in paths)))


def _remote_errors() -> tuple[type[BaseException], ...]:
    """botocore's own exceptions (s3fs lets some through untranslated), when it is installed."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return ()
    return (BotoCoreError, ClientError)


#: Failures of the storage itself; s3fs turns most into OSError but lets some of botocore's through.
_IO_ERRORS: tuple[type[BaseException], ...] = (OSError, *_remote_errors())


@dataclass(frozen=True)
class _Objects:
    """Raw stored objects of one array, relative to its prefix: the checkpoint of zarr.

    ``metadata`` is zarr's (immutable) metadata object of the array; ``objects`` maps keys
    to their bytes, ``None`` for an object that did not exist; ``whole`` says that every
    object of the array was saved.
    """

    metadata: Any
    objects: dict[str, Buffer | None]
    whole: bool


def _encoded(metadata: Any) -> dict[str, Buffer | None]:
    """Metadata documents (``zarr.json``; ``.zarray`` / ``.zattrs`` for v2) as zarr writes them."""
    return dict(metadata.to_buffer_dict(default_buffer_prototype()))


def _object_keys(array: zarr.Array[Any], rows: slice) -> list[str]:
    """Keys (relative to the array) of the stored objects that hold ``rows`` or the row after them.

    The object holding row ``rows.stop`` is included when ``rows.stop`` falls inside it, since
    an append starting there rewrites it.
    """
    objects = array.shards or array.chunks
    first = rows.start // objects[0]
    stop = math.ceil(rows.stop / objects[0])
    inner = [range(math.ceil(n / o)) for n, o in zip(array.shape[1:], objects[1:], strict=True)]
    coords = itertools.product(range(first, stop), *inner)
    return [array.metadata.encode_chunk_key(c) for c in coords]


async def _list_keys(array: zarr.Array[Any]) -> list[str]:
    """Every key stored under the array's prefix, relative to it (metadata included)."""
    prefix = array.store_path.path.rstrip("/") + "/"
    return [key.removeprefix(prefix) async for key in array.store_path.store.list_prefix(prefix)]


async def _get_many(array: zarr.Array[Any], keys: list[str]) -> dict[str, Buffer | None]:
    prefix = array.store_path.path.rstrip("/")
    store, prototype = array.store_path.store, default_buffer_prototype()
    limit = asyncio.Semaphore(int(zarr.config.get("async.concurrency")))

    async def get(key: str) -> Buffer | None:
        async with limit:
            return await store.get(f"{prefix}/{key}", prototype)

    return dict(zip(keys, await asyncio.gather(*(get(k) for k in keys)), strict=True))


async def _delete_keys(array: zarr.Array[Any], keys: list[str]) -> None:
    prefix = array.store_path.path.rstrip("/")
    await _set_many(array.store_path.store, {f"{prefix}/{key}": None for key in keys})


async def _set_many(store: Store, objects: dict[str, Buffer | None]) -> None:
    """Write or (for ``None``) delete whole objects, a bounded number at a time."""
    limit = asyncio.Semaphore(int(zarr.config.get("async.concurrency")))

    async def put(key: str, value: Buffer | None) -> None:
        async with limit:
            if value is None:
                await store.delete(key)
            else:
                await store.set(key, value)

    await asyncio.gather(*(put(k, v) for k, v in objects.items()))


def _check_row_chunks(row_chunks: object) -> dict[str, tuple[int | None, ...]]:
    """``row_chunks`` as ``{var_name: tuple of positive ints or None}``."""
    if row_chunks is None:
        return {}
    valid = isinstance(row_chunks, dict) and all(
        isinstance(var, str)
        and isinstance(lengths, (tuple, list))
        and all(n is None or (is_int(n) and n >= 1) for n in lengths)
        for var, lengths in row_chunks.items()
    )
    if not valid:
        raise InvalidArgumentError(
            "row_chunks must be a dict {var_name: chunk length per axis of a row, each an int >= 1 or None}. Got "
            f"{row_chunks!r:.80} instead: e.g. row_chunks={{'audio': (None, 16000)}}."
        )
    assert isinstance(row_chunks, dict)
    return {var: tuple(None if n is None else int(n) for n in lengths) for var, lengths in row_chunks.items()}


def _layout_args(
    chunk: int | None, chunk_bytes: int, compressor: object, shard_bytes: int | None, remote: bool
) -> dict[str, Any]:
    """The chunk and codec options that differ from the defaults, for reopen_args(mode='a')."""
    given = {"chunk": chunk, "chunk_bytes": chunk_bytes, "compressor": compressor, "shard_bytes": shard_bytes}
    default_bytes = DEFAULT_REMOTE_CHUNK_BYTES if remote else DEFAULT_CHUNK_BYTES
    defaults = {"chunk": None, "chunk_bytes": default_bytes, "compressor": "default", "shard_bytes": None}
    return {k: v for k, v in given.items() if v is not defaults[k] and v != defaults[k]}


def _layout_of(array: zarr.Array[Any], data: np.ndarray) -> dict[str, Any]:
    """Options that recreate ``array`` for ``data`` with its codec and, for equal rows, chunk rows."""
    codecs = tuple(array.compressors)
    options: dict[str, Any] = {"compressor": codecs[0] if len(codecs) == 1 else (codecs or "none")}
    if array.ndim and array.shape[1:] == data.shape[1:]:
        options["chunk_rows"] = int(array.chunks[0])
    return options


def _stored_bytes(array: zarr.Array[Any]) -> int:
    """Bytes stored under the array's own prefix.

    ``Array.nbytes_stored()`` sums every key starting with the array's path, so on stores
    that list by plain prefix (MemoryStore, object stores) array 'a' also counted 'ab'.
    """
    store_path = array.store_path
    for _ in range(4):
        try:
            return int(sync(store_path.store.getsize_prefix(store_path.path.rstrip("/") + "/")))
        except FileNotFoundError:  # a temporary file of another process's write vanished while listed
            continue
    return int(sync(store_path.store.getsize_prefix(store_path.path.rstrip("/") + "/")))


def _read_rows(array: zarr.Array[Any], rows: np.ndarray, inner: Inner = ()) -> np.ndarray:
    if rows.size == 0:
        row = inner_shape(inner, array.shape[1:]) if inner else array.shape[1:]
        return np.zeros((0, *row), dtype=array.dtype)
    unique, inverse = np.unique(rows, return_inverse=True)
    if unique[-1] - unique[0] + 1 == unique.size:  # contiguous: one slice read
        block = _select(array, (slice(int(unique[0]), int(unique[-1]) + 1), *inner))
    else:
        block = np.asarray(array.get_orthogonal_selection((unique, *inner)))
    return block[inverse.reshape(-1)]


def _chunks_touched(selection: Selection, chunk_rows: int) -> int:
    """Chunks of ``chunk_rows`` rows that hold a normalised selection (0 for no row)."""
    if isinstance(selection, int):
        return 1
    if isinstance(selection, slice):
        start, stop = int(selection.start), int(selection.stop)
        return 0 if stop <= start else -(-stop // chunk_rows) - start // chunk_rows
    return int(np.unique(selection // chunk_rows).shape[0]) if selection.size else 0


def _select(array: zarr.Array[Any], selection: tuple[Any, ...]) -> np.ndarray:
    """A basic selection, or an orthogonal one when an axis is chosen by an array of positions."""
    if any(isinstance(i, np.ndarray) for i in selection):
        return np.asarray(array.get_orthogonal_selection(selection))
    return np.asarray(array[selection])


def _write_rows(array: zarr.Array[Any], rows: np.ndarray, data: np.ndarray) -> None:
    if rows.size == 0:
        return
    # numpy semantics for repeated rows: the last write wins.
    reversed_rows = rows[::-1]
    unique, first = np.unique(reversed_rows, return_index=True)
    source = rows.size - 1 - first
    values = np.broadcast_to(data, (rows.size, *array.shape[1:]))[source]
    if array.shards is not None and array.ndim > 1:
        _write_rows_by_shard(array, unique, values)
    else:
        array.set_orthogonal_selection((unique,), values)


def _write_rows_by_shard(array: zarr.Array[Any], rows: np.ndarray, values: np.ndarray) -> None:
    """Rewrite each touched shard's rows as one slice.

    zarr 3.1 mis-shapes orthogonal writes of several rows into one shard of a 2+-D array
    (zarr-python issue 2834); a partial shard write rewrites the whole shard anyway, so
    this costs about the same.
    """
    size = int(array.shards[0]) if array.shards else 1
    shard_of = rows // size
    for shard in np.unique(shard_of):
        start = int(shard) * size
        stop = min(start + size, array.shape[0])
        block = np.asarray(array[start:stop])
        mine = shard_of == shard
        block[rows[mine] - start] = values[mine]
        array[start:stop] = block


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return max(1, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)


def _check_positive(arg: str, value: object, allow_none: bool) -> None:
    if not (value is None and allow_none):
        check_positive(arg, value)


# --- limits of the layout options ----------------------------------------------------------------
# A layout option past these is a typo or a unit mix-up (bytes for rows, bytes for KiB): it is
# refused when the backend opens, before anything is written, rather than failing at the first
# add_data with a MemoryError (a chunk is one buffer in memory, a shard index one entry per inner
# chunk) or getting the process killed.

#: Largest uncompressed chunk storegate writes: 1 GiB. A codec holds a chunk in one buffer with a C
#: int length: numcodecs' Blosc (also 'lz4') takes at most 2 GiB - 17 bytes
#: (numcodecs.blosc.MAX_BUFFERSIZE = 2**31 - 1 - 16), bare LZ4 2 GiB - 32 MiB; and every read of
#: one row decodes its whole chunk. 1 GiB is clear of all of them, 1024x the default.
MAX_CHUNK_BYTES = 1 << 30
#: Most rows per chunk: a chunk of 1-byte rows within MAX_CHUNK_BYTES. Wider rows are checked
#: against MAX_CHUNK_BYTES per variable, when it is created.
MAX_CHUNK_ROWS = MAX_CHUNK_BYTES
#: Largest shard: 4 GiB. A shard is encoded whole in memory, a partial update reads and rewrites
#: it whole, and the streaming Writer buffers one shard per variable: peak memory is a few times
#: this. It also stays under S3's 5 GiB limit for one PUT.
MAX_SHARD_BYTES = 4 << 30
#: Most inner chunks per shard: zarr keeps 16 index bytes per inner chunk, written or not, and
#: reads the index for every row read; 2**22 chunks a shard (16 MiB shards of 4-byte chunks) took
#: 7 s and 850 MiB to write 1000 rows. 65536 chunks keep the index at 1 MiB.
MAX_CHUNKS_PER_SHARD = 1 << 16


def _size_text(nbytes: int) -> str:
    """``nbytes`` in the largest binary unit it reaches: '100 B', '1 GiB', '931.3 GiB'."""
    size, unit = float(nbytes), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f}".removesuffix(".0") + f" {unit}"


#: Per option: (largest value, unit, why, how to fix).
_SIZE_LIMITS: dict[str, tuple[int, str, str, str]] = {
    "chunk": (
        MAX_CHUNK_ROWS,
        "rows",
        f"a chunk of even 1-byte rows must stay within {_size_text(MAX_CHUNK_BYTES)}",
        "Give fewer rows per chunk, or leave chunk unset so that chunk_bytes (default 1 MiB) sets the rows.",
    ),
    "chunk_bytes": (
        MAX_CHUNK_BYTES,
        "bytes",
        "a codec holds a chunk in one buffer (Blosc at most 2 GiB) and every read decodes whole chunks",
        f"Give a smaller chunk_bytes, or leave it unset: the default, {DEFAULT_CHUNK_BYTES} (1 MiB; "
        f"{DEFAULT_REMOTE_CHUNK_BYTES} (4 MiB) on an object store), suits most data.",
    ),
    "shard_bytes": (
        MAX_SHARD_BYTES,
        "bytes",
        "a shard is encoded, rewritten and buffered by the writer whole, in memory",
        "Give a smaller shard_bytes (a few MiB to a few hundred MiB suit an object store), or None for no shards.",
    ),
}


def _check_size(arg: str, value: object, allow_none: bool) -> None:
    """A positive int up to the option's limit in ``_SIZE_LIMITS`` (bools refused)."""
    if value is None and allow_none:
        return
    number = check_positive(arg, value)
    limit, unit, why, fix = _SIZE_LIMITS[arg]
    if number <= limit:
        return
    none = "None or " if allow_none else ""
    allowed, given = (f" (up to {_size_text(limit)})", f" ({_size_text(number)})") if unit == "bytes" else ("", "")
    raise InvalidArgumentError(
        f"{arg} must be {none}an int in [1, {limit}] {unit}{allowed}: {why}. Got {value!r}{given} instead. {fix}"
    )


def _check_chunks_per_shard(chunk: int | None, chunk_bytes: int, shard_bytes: int | None) -> None:
    """Refuse at open shards of more than MAX_CHUNKS_PER_SHARD chunks of ``chunk_bytes``.

    Only when ``chunk_bytes`` sets the rows: a chunk of ``chunk`` rows has its size only once
    a variable's row is known, and is checked then.
    """
    if chunk is not None or shard_bytes is None or shard_bytes // chunk_bytes <= MAX_CHUNKS_PER_SHARD:
        return
    most = MAX_CHUNKS_PER_SHARD * chunk_bytes
    raise InvalidArgumentError(
        f"shard_bytes must be at most {MAX_CHUNKS_PER_SHARD} chunks of chunk_bytes, here {most} bytes "
        f"({_size_text(most)}), since zarr indexes every inner chunk of a shard. Got shard_bytes={shard_bytes} "
        f"({_size_text(shard_bytes)}) with chunk_bytes={chunk_bytes} instead. Give a smaller shard_bytes or a "
        "larger chunk_bytes."
    )
