"""The icechunk backend: the zarr backend on an icechunk repository, with versions.

`icechunk <https://icechunk.io>`_ stores a zarr hierarchy as a repository of immutable
snapshots on a local folder or on S3. ``StoreGate('icechunk', {'output_dir': ...})`` keeps
storegate's data layout (:mod:`storegate.backends.zarr_backend`) and adds:

- **one commit per call**: every storegate call that writes (``add_data``, ``update_data``,
  ``delete_data``, ``compile``, the transforms, a writer from open to ``close``...) runs in
  its own icechunk session and ends in one icechunk commit whose message names the call
  (``'storegate add_data: data_id ...'``). A call that fails discards its session: nothing
  of it is ever committed. A call that changes nothing commits nothing.
- **versions**: :attr:`IcechunkBackend.version` (``StoreGate.version``) is the snapshot id
  the handle reads; ``version=<snapshot id or tag>`` opens that snapshot read-only, so a
  training run can pin (and later reopen) exactly the data it read. ``reopen_args()``
  pins worker processes to the snapshot of their parent.
- **conflicts**: two writers (handles or processes) that commit on the same branch are
  checked by icechunk at commit. When another writer committed since this call began,
  the call's changes are rebased onto it if the other commits changed other data_ids
  (and no chunk or array metadata this call wrote); if they changed a data_id this call
  wrote, the call raises :class:`~storegate.errors.ConflictError` and commits nothing.
  So writers of different data_ids run side by side, and a data_id is never changed by
  two writers that planned from the same state (no lost update).

storegate's own records: icechunk accepts only zarr keys, so the commit records and lock
files that the zarr backend keeps under ``.storegate/`` (:mod:`storegate.backends.zarr_locking`)
live only in the handle's memory, and are dropped when a call fails or the handle moves to a
snapshot with other writers' commits (then no record means: every stored row is committed,
which in a snapshot is true). The icechunk commit is the commit point instead, and readers
see whole snapshots. Write locks are this
process's (threads take turns); across processes the commit check above decides. On a
local folder icechunk's own check is not atomic (its storage has no conditional writes),
so storegate serialises commits with an OS file lock ``<repo>/.storegate/commit.lock``;
on S3 icechunk's conditional writes do it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import icechunk
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype

from storegate.backends.zarr_backend import DEFAULT_CHUNK_BYTES, ZarrBackend
from storegate.backends.zarr_locking import OWN_PREFIX
from storegate.codecs import DEFAULT_PIPELINE
from storegate.errors import (
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
    StoreGateError,
)
from storegate.locations import DEFAULT_REMOTE_CONCURRENCY, Location, inspect_root, resolve_location
from storegate.locks import DEFAULT_LOCK_TIMEOUT, FolderLock, holding, shared

__all__ = ["COMMIT_TRIES", "IcechunkBackend", "SessionStore"]

#: Times a commit is rebased onto other writers' commits (of other data_ids) before it gives up.
COMMIT_TRIES = 10

#: Modules whose public functions are the storegate calls named in commit messages.
_CALLERS = ("storegate.gate", "storegate.writer")


def _quiet_local_storage_warning() -> None:
    """Silence icechunk's warning that a folder is unsafe for concurrent commits.

    storegate serialises commits on a folder with a file lock, so the warning does not
    apply; only when the user has not set ``ICECHUNK_LOG`` (then their filter stands).
    """
    if "ICECHUNK_LOG" not in os.environ:
        icechunk.set_logs_filter("warn,icechunk::storage::object_store=error")


_quiet_local_storage_warning()

#: ``used``: this process has run icechunk; ``forked``: it is a child forked after that.
_runtime = {"used": False, "forked": False}


def _forked_after_use() -> None:
    if _runtime["used"]:
        _runtime["forked"] = True


os.register_at_fork(after_in_child=_forked_after_use)


def _check_not_forked() -> None:
    """Refuse to run icechunk in a child forked after its parent ran it: it would hang.

    icechunk's Rust (tokio) runtime keeps threads that fork() does not copy; its first
    request in such a child waits forever.

    Raises
    ------
    StoreGateError
        In such a child.
    """
    if _runtime["forked"]:
        raise StoreGateError(
            "the icechunk backend cannot run in a process forked (multiprocessing's 'fork', the default on Linux) "
            "from one that already used icechunk: icechunk's runtime does not survive fork() and would hang. Start "
            "the processes with 'spawn' or 'forkserver', e.g. DataLoader(..., multiprocessing_context='spawn')."
        )
    _runtime["used"] = True


class SessionStore(Store):
    """A zarr Store that reads and writes through one icechunk session, replaceable.

    The zarr groups and arrays a backend opened stay valid when :meth:`use` swaps the
    session underneath (the next call's session, or a newer snapshot). Keys under
    ``.storegate/`` (storegate's own records, which icechunk refuses) live in memory
    (see :meth:`use`).
    """

    supports_writes = True
    supports_deletes = True
    supports_listing = True
    supports_consolidated_metadata = False

    def __init__(self, session: icechunk.Session, where: str) -> None:
        super().__init__(read_only=False)
        self._is_open = True
        self._where = where
        self._own: dict[str, Buffer] = {}
        self.session = session
        self._inner = session.store

    def use(self, session: icechunk.Session, keep_own: bool = False) -> None:
        """Read and write through ``session`` from now on.

        storegate's own keys are dropped unless ``keep_own``: right only when ``session``
        holds exactly what they describe (this handle's last commit, and nothing since).
        """
        self.session, self._inner = session, session.store
        if not keep_own:
            self._own.clear()

    def __eq__(self, value: object) -> bool:
        return value is self

    def __hash__(self) -> int:
        return id(self)

    def __str__(self) -> str:
        return self._where

    def __repr__(self) -> str:
        return f"SessionStore({self._where!r})"

    def with_read_only(self, read_only: bool = False) -> Store:
        return self

    @staticmethod
    def _is_own(key: str) -> bool:
        return key == OWN_PREFIX or key.startswith(OWN_PREFIX + "/")

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        _check_not_forked()
        if self._is_own(key):
            return self._own.get(key)
        return await self._inner.get(key, prototype, byte_range)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return await self._inner.get_partial_values(prototype, key_ranges)

    async def exists(self, key: str) -> bool:
        if self._is_own(key):
            return key in self._own
        return await self._inner.exists(key)

    async def set(self, key: str, value: Buffer) -> None:
        _check_not_forked()
        if self._is_own(key):
            self._own[key] = value
        else:
            await self._inner.set(key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        if self._is_own(key):
            self._own.setdefault(key, value)
        else:
            await self._inner.set_if_not_exists(key, value)

    async def delete(self, key: str) -> None:
        if self._is_own(key):
            self._own.pop(key, None)
        else:
            await self._inner.delete(key)

    async def delete_dir(self, prefix: str) -> None:
        if self._is_own(prefix):
            for key in [k for k in self._own if k.startswith(prefix.rstrip("/") + "/")]:
                del self._own[key]
        else:
            await self._inner.delete_dir(prefix)

    async def clear(self) -> None:
        self._own.clear()
        await self._inner.clear()

    async def is_empty(self, prefix: str) -> bool:
        return await self._inner.is_empty(prefix)

    # icechunk starts a listing with a blocking call, which waits for the session while another
    # thread's write holds it: run on zarr's event loop, it would stop the loop that write
    # needs (a deadlock). It starts in a worker thread instead.

    async def list(self) -> AsyncIterator[str]:
        async for key in await asyncio.to_thread(self._inner.list):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        # icechunk refuses to list a prefix that is no group or array: nothing is there.
        with _nothing_under(prefix):
            async for key in await asyncio.to_thread(self._inner.list_prefix, prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        with _nothing_under(prefix):
            async for key in await asyncio.to_thread(self._inner.list_dir, prefix):
                yield key

    async def getsize(self, key: str) -> int:
        return await self._inner.getsize(key)

    async def getsize_prefix(self, prefix: str) -> int:
        try:
            return await self._inner.getsize_prefix(prefix)
        except icechunk.IcechunkError as exc:
            if "bad key prefix" not in str(exc):
                raise
            return 0


@contextlib.contextmanager
def _nothing_under(prefix: str) -> Iterator[None]:
    """Swallow icechunk's refusal to look under a prefix that is no group or array (nothing is there)."""
    try:
        yield
    except icechunk.IcechunkError as exc:
        if "bad key prefix" not in str(exc):
            raise


class IcechunkBackend(ZarrBackend):
    """The zarr backend on an icechunk repository: one commit per call, versions, conflict checks.

    Needs the ``icechunk`` extra (``pip install 'storegate[icechunk]'``). See
    :mod:`storegate.backends.icechunk_backend` for what a commit and a conflict are.

    Parameters
    ----------
    output_dir
        Where the repository lives: a local or NAS folder, or ``'s3://bucket/prefix'``.
        ``None`` makes a temporary folder, removed when the backend is collected. A new
        location becomes a new repository; a folder that holds other files is refused.
    mode
        ``'a'`` (read and write; the default), ``'w'`` (one commit that removes every
        data_id; older snapshots keep them) or ``'r'`` (read only). Default: ``'r'`` when
        ``version`` is given, else ``'a'``.
    branch
        The branch to read and commit to (``'main'``). Reads follow its newest commit.
    version
        A snapshot id (e.g. an earlier :attr:`version`) or a tag name: open that snapshot
        read-only (``mode`` must then be ``'r'``).
    storage_options
        For S3: s3fs-style options ``key``, ``secret``, ``anon`` and
        ``client_kwargs={'endpoint_url': ..., 'region_name': ...}`` (or ``endpoint_url``),
        turned into icechunk's own S3 client settings. An ``http://`` endpoint (MinIO, a
        local test server) is allowed and addressed path-style.
    endpoint, access_key, secret_key, secure
        matorage's names for S3, as for the zarr backend.
    chunk, chunk_bytes, compressor, shard_bytes, codec_pipeline, concurrency, lock_timeout
        As for :class:`~storegate.backends.zarr_backend.ZarrBackend`. ``lock_timeout`` also
        bounds the wait for another call of this handle (they take turns) and for the
        commit lock of a folder.
    """

    name = "icechunk"
    #: A snapshot changes the data under one commit record: reads read the branch each call.
    reads_by_commit_record = False

    def __init__(
        self,
        output_dir: str | os.PathLike[str] | None = None,
        mode: str | None = None,
        branch: str = "main",
        version: str | None = None,
        storage_options: dict[str, Any] | None = None,
        endpoint: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        secure: bool | None = None,
        chunk: int | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        compressor: object = "default",
        shard_bytes: int | None = None,
        codec_pipeline: str = DEFAULT_PIPELINE,
        concurrency: int | None = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        _check_not_forked()
        mode = _check_mode(mode, version)
        if not isinstance(branch, str) or not branch:
            raise InvalidArgumentError(f"branch must be a non-empty str. Got {branch!r} instead.")
        self._branch, self._version = branch, version
        if output_dir is None:
            output_dir = tempfile.mkdtemp(prefix="storegate-icechunk-")
            weakref.finalize(self, shutil.rmtree, output_dir, ignore_errors=True)
        if isinstance(output_dir, Store):
            raise InvalidArgumentError(
                "output_dir must be a folder or an 's3://bucket/prefix' URL for the icechunk backend (icechunk "
                f"manages its own storage). Got a zarr Store object ({output_dir!r}) instead."
            )
        self._where = resolve_location(
            output_dir, storage_options, endpoint=endpoint, access_key=access_key, secret_key=secret_key, secure=secure
        )
        self._repo = _open_repository(self._where, mode)
        self._turn = threading.RLock()  # calls of this handle take turns: one session at a time
        self._depth = 0
        self._call_data_id: str | None = None
        self._store = SessionStore(self._first_session(mode), self._describe())
        if concurrency is None and self._where.remote:
            concurrency = DEFAULT_REMOTE_CONCURRENCY
        layout = {"chunk": chunk, "chunk_bytes": chunk_bytes, "compressor": compressor, "shard_bytes": shard_bytes}
        defaults = {"chunk": None, "chunk_bytes": DEFAULT_CHUNK_BYTES, "compressor": "default", "shard_bytes": None}
        self._layout: dict[str, Any] = {k: v for k, v in layout.items() if v is not defaults[k]}
        self._pipeline_name, self._concurrency_arg = codec_pipeline, concurrency
        try:
            super().__init__(
                self._store,
                mode=mode,
                codec_pipeline=codec_pipeline,
                concurrency=concurrency,
                lock_timeout=lock_timeout,
                chunk=chunk,
                chunk_bytes=chunk_bytes,
                compressor=compressor,
                shard_bytes=shard_bytes,
            )
        except BaseException:
            self._drop_changes(forget=False)
            raise
        if self._store.session.has_uncommitted_changes:  # a new repository's root group, or mode 'w'
            what = "replace every data_id (mode 'w')" if mode == "w" else "create the store"
            try:
                self._commit_call(f"storegate: {what}")
            except ConflictError:
                if mode == "w":
                    raise
                self._begin()  # another process created the store at the same moment: use theirs
                if not inspect_root(self._store).formats:
                    raise

    # --- what it is ---------------------------------------------------------------------

    @property
    def version(self) -> str | None:
        """The snapshot id this handle reads: after a write, the commit it made.

        Pass it back as ``version=`` (with the same ``output_dir``) to read exactly this
        data again; :meth:`reopen_args` does so for worker processes.
        """
        return str(self._store.session.snapshot_id)

    @property
    def branch(self) -> str | None:
        """The branch this handle follows and commits to; ``None`` when pinned to a version."""
        return None if self._version is not None else self._branch

    @property
    def repository(self) -> icechunk.Repository:
        """The icechunk Repository, e.g. for ``ancestry()``, ``create_tag()`` or ``diff()``."""
        return self._repo

    @property
    def output_dir(self) -> str:
        """The folder or URL of the repository."""
        return str(self._where.path)

    def history(self) -> list[tuple[str, str]]:
        """``(snapshot id, message)`` of every commit this handle's version descends from, newest first."""
        with _icechunk_errors(self._describe()):
            return [(str(i.id), str(i.message)) for i in self._repo.ancestry(snapshot_id=self.version)]

    def reopen_args(self, mode: str = "r") -> dict[str, Any] | None:
        """``backend_args`` that open this repository again, e.g. in a worker process.

        With mode ``'r'`` they pin :attr:`version`, the snapshot this handle reads now, so
        a worker reads exactly what its parent read; with mode ``'a'`` they follow the same
        branch with the same chunk and codec options.
        """
        if mode not in ("r", "a"):
            raise InvalidArgumentError(f"mode must be 'r' or 'a' to reopen a store. Got {mode!r} instead.")
        args = self._where.backend_args()
        if mode == "r":
            args["version"] = self.version
        else:
            args.update(self._layout, branch=self._branch)
        if self._concurrency_arg is not None:
            args["concurrency"] = self._concurrency_arg
        if self._pipeline_name != DEFAULT_PIPELINE:
            args["codec_pipeline"] = self._pipeline_name
        return {**args, "mode": mode}

    def _describe(self) -> str:
        at = f"version {self._version!r}" if self._version is not None else f"branch {self._branch!r}"
        return f"icechunk repository {self._where.describe()} ({at})"

    # --- one session per call -------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self, data_id: str) -> Iterator[None]:
        # docstring inherited: the zarr backend's call, in its own icechunk session and commit.
        if not self.writable:
            yield
            return
        with self._call(data_id), super().writing(data_id):
            yield

    def create_data_id(self, data_id: str) -> None:
        # docstring inherited; an existing data_id costs no commit.
        if self._group(data_id) is not None:
            return
        try:
            with self._call(data_id):
                super().create_data_id(data_id)
        except ConflictError:
            if self._depth:
                raise
            self.refresh_if_changed(data_id)  # another writer created it at the same moment: it exists
            if self._group(data_id) is None:
                raise

    def delete_data_id(self, data_id: str) -> None:
        # docstring inherited
        with self._call(data_id):
            super().delete_data_id(data_id)

    @contextlib.contextmanager
    def _call(self, data_id: str) -> Iterator[None]:
        """Run one storegate call in a fresh session, then commit it (or drop it when it fails)."""
        self.check_writable()
        if not self._turn.acquire(timeout=self._lock_timeout):
            raise ConflictError(
                f"another thread of this process has been writing through this StoreGate ({self.location}) for "
                f"more than {self._lock_timeout:g} s; nothing was written. Wait for it, or give a longer lock_timeout."
            )
        try:
            if self._depth:
                self._refuse_other_data_id(data_id)
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._begin()
            self._depth, self._call_data_id = 1, data_id
            try:
                yield
            except BaseException:
                self._drop_changes()
                raise
            finally:
                self._depth, self._call_data_id = 0, None
            self._commit_call(f"storegate {_call_name()}: data_id {data_id!r}")
        finally:
            self._turn.release()

    def _refuse_other_data_id(self, data_id: str) -> None:
        """Inside a running call (an open writer) only the same data_id may be written: one commit each."""
        if data_id != self._call_data_id:
            raise ConflictError(
                f"data_id {data_id!r} cannot be written through this StoreGate while its call on data_id "
                f"{self._call_data_id!r} is running (an open writer?): icechunk commits each call whole, and this "
                "write would share its fate. Close the writer first, or write through another StoreGate. "
                "Nothing was written."
            )

    def _begin(self) -> None:
        """A writable session at the branch's newest commit; forget what is cached when it moved."""
        _check_not_forked()
        with _icechunk_errors(self._describe()):
            session = self._repo.writable_session(self._branch)
        self._swap(session)

    def _swap(self, session: icechunk.Session) -> None:
        moved = session.snapshot_id != self._store.session.snapshot_id
        self._store.use(session, keep_own=not moved)
        if moved:
            self._forget_all()

    def _forget_all(self) -> None:
        """Forget every cached group, array, state and commit of every data_id (a new snapshot)."""
        # list() and set() copy each dict at once (reader threads may add to them meanwhile).
        keys = [*list(self._groups), *list(self._arrays)]
        for data_id in {k[0] for k in keys} | set(self._states) | set(self._committed):
            self.refresh(data_id)

    def _drop_changes(self, forget: bool = True) -> None:
        """Discard what the session holds uncommitted (a failed call); nothing cached of it stays."""
        session = self._store.session
        if not session.read_only:
            with contextlib.suppress(Exception):  # the error of the call itself is what matters
                session.discard_changes()
        self._store.use(session)
        if forget:
            self._forget_all()

    def _commit_call(self, message: str) -> None:
        """Commit the session; rebase onto other writers' commits of other data_ids first."""
        session = self._store.session
        if not session.has_uncommitted_changes:
            return
        try:
            with self._commit_lock(), _icechunk_errors(self._describe()):
                rebased = self._commit_session(session, message)
        except BaseException:
            self._drop_changes()
            raise
        self._store.use(session, keep_own=not rebased)  # read-only now, at the new commit
        if rebased:
            self._forget_all()  # other writers' data_ids changed too

    def _commit_session(self, session: icechunk.Session, message: str) -> bool:
        """Commit ``session``; True when it was rebased onto other commits first."""
        for attempt in range(COMMIT_TRIES):
            try:
                session.commit(message)
                return attempt > 0
            except icechunk.ConflictError:
                pass
            mine = _data_ids(session.status())
            theirs = _data_ids(self._repo.diff(from_snapshot_id=session.snapshot_id, to_branch=self._branch))
            if "" in mine | theirs:  # the root itself: a new store, or mode 'w'
                raise self._conflict("the whole store")
            if mine & theirs:
                raise self._conflict(", ".join(f"data_id {d!r}" for d in sorted(mine & theirs)))
            try:
                session.rebase(icechunk.ConflictDetector())
            except icechunk.RebaseFailedError as exc:
                raise self._conflict(", ".join(f"data_id {d!r}" for d in sorted(mine))) from exc
        raise ConflictError(
            f"other writers kept committing to {self.location} while this call tried to commit "
            f"({COMMIT_TRIES} tries); nothing of it was committed. Retry the call."
        )

    def _conflict(self, what: str) -> ConflictError:
        return ConflictError(
            f"another writer committed changes to {what} in {self.location} while this "
            "call was writing it; nothing of this call was committed (icechunk keeps the other writer's commit). "
            "Retry the call: it plans from the newest commit."
        )

    @contextlib.contextmanager
    def _commit_lock(self) -> Iterator[None]:
        """On a folder, one commit at a time across processes (icechunk's local check is not atomic)."""
        if self._where.kind != "local":
            yield
            return
        path = str(Path(str(self._where.path)) / OWN_PREFIX / "commit.lock")
        lock = shared(path, lambda: FolderLock(f"the commits of {self.location}", path))
        with holding(lock, self._lock_timeout):
            yield

    def check_writable(self) -> None:
        # docstring inherited: a pinned version says why it refuses writes.
        if self._version is not None:
            raise ReadOnlyError(
                f"the icechunk repository {self._where.describe()} must be opened without version to be written. "
                f"Got version {self._version!r}: a snapshot never changes. Open it with branch (default 'main') "
                "instead."
            )
        super().check_writable()

    def refresh_if_changed(self, data_id: str) -> None:
        # docstring inherited: one read of the branch's reference; a newer commit is read afresh.
        _check_not_forked()
        if self._version is None and self._turn.acquire(blocking=False):
            try:
                if self._depth == 0:
                    with _icechunk_errors(self._describe()):
                        newest = self._repo.lookup_branch(self._branch)
                        if newest != self._store.session.snapshot_id:
                            self._swap(self._repo.readonly_session(snapshot_id=newest))
            finally:
                self._turn.release()
        super().refresh_if_changed(data_id)

    def _first_session(self, mode: str) -> icechunk.Session:
        with _icechunk_errors(self._describe()):
            if self._version is not None:
                return self._pinned_session(self._version)
            if self._branch not in self._repo.list_branches():
                raise NotFoundError(
                    f"branch must name a branch of {self._describe()}. Got {self._branch!r}; it has "
                    f"{sorted(self._repo.list_branches())}. Create it with backend.repository.create_branch()."
                )
            if mode == "r":
                return self._repo.readonly_session(branch=self._branch)
            return self._repo.writable_session(self._branch)

    def _pinned_session(self, version: str) -> icechunk.Session:
        if version in self._repo.list_tags():
            return self._repo.readonly_session(tag=version)
        try:
            return self._repo.readonly_session(snapshot_id=version)
        except icechunk.IcechunkError as exc:
            raise NotFoundError(
                f"version must be a snapshot id or a tag of {self._where.describe()}. Got {version!r}, which is "
                f"neither ({str(exc).strip().splitlines()[0]}). Tags: {sorted(self._repo.list_tags())}."
            ) from exc


# --- helpers ---------------------------------------------------------------------------------


def _taking_turns(name: str) -> Any:
    """The zarr backend's read method ``name``, run while this handle runs no call in another thread.

    icechunk's session takes a read lock for a listing and a write lock for a write: a
    listing in one thread and a write in another, both on zarr's event loop, deadlock (the
    listing's next step waits behind the waiting write). Reads therefore take turns with
    calls, as calls do with each other; the engine reads again when a call committed between
    two reads of one get_data.
    """
    base = getattr(ZarrBackend, name)

    @functools.wraps(base)
    def method(self: IcechunkBackend, *args: Any, **kwargs: Any) -> Any:
        with self._turn:
            return base(self, *args, **kwargs)

    return method


for _name in ("data_ids", "var_names", "has", "shape", "dtype", "info", "read", "load_state", "unchanged"):
    setattr(IcechunkBackend, _name, _taking_turns(_name))


def _check_mode(mode: str | None, version: str | None) -> str:
    if version is not None and (not isinstance(version, str) or not version):
        raise InvalidArgumentError(f"version must be a snapshot id or a tag name (a str). Got {version!r} instead.")
    if mode is None:
        return "r" if version is not None else "a"
    if mode not in ("w", "a", "r"):
        raise InvalidArgumentError(f"mode must be one of ('w', 'a', 'r'). Got {mode!r} instead.")
    if version is not None and mode != "r":
        raise InvalidArgumentError(
            f"mode must be 'r' (or left out) when version is given: a snapshot never changes. Got mode {mode!r} "
            f"with version {version!r}. Drop version to write to the newest commit of the branch."
        )
    return mode


#: The s3fs-style ``storage_options`` the icechunk backend turns into icechunk's S3 settings.
_S3_OPTIONS = frozenset({"key", "secret", "token", "anon", "endpoint_url", "client_kwargs"})
_S3_CLIENT_OPTIONS = frozenset({"endpoint_url", "region_name"})


def _storage(where: Location) -> icechunk.Storage:
    """icechunk's storage for a local folder or an S3 URL."""
    if where.kind == "local":
        return icechunk.local_filesystem_storage(str(where.path))
    if not where.is_s3:
        raise InvalidArgumentError(
            "output_dir must be a folder or an 's3://bucket/prefix' URL for the icechunk backend. "
            f"Got {where.path!r} instead."
        )
    opts = where.storage_options
    unknown = sorted(set(opts) - _S3_OPTIONS) + sorted(
        f"client_kwargs[{k!r}]" for k in set(opts.get("client_kwargs") or {}) - _S3_CLIENT_OPTIONS
    )
    if unknown:
        raise InvalidArgumentError(
            f"storage_options of the icechunk backend must be among {sorted(_S3_OPTIONS)} (client_kwargs: "
            f"{sorted(_S3_CLIENT_OPTIONS)}): icechunk has its own S3 client, not s3fs. Got {', '.join(unknown)}."
        )
    client = dict(opts.get("client_kwargs") or {})
    endpoint = opts.get("endpoint_url") or client.get("endpoint_url")
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = client.get("region_name") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    prefix = str(where.path).partition("://")[2].partition("/")[2].strip("/")
    return icechunk.s3_storage(
        bucket=str(where.bucket),
        prefix=prefix or None,
        region=region or ("us-east-1" if endpoint else None),
        endpoint_url=endpoint,
        allow_http=bool(endpoint and str(endpoint).startswith("http://")),
        force_path_style=bool(endpoint),
        access_key_id=opts.get("key"),
        secret_access_key=opts.get("secret"),
        session_token=opts.get("token"),
        anonymous=bool(opts.get("anon")) or None,
        from_env=None if opts.get("key") or opts.get("anon") else True,
    )


def _open_repository(where: Location, mode: str) -> icechunk.Repository:
    """Open the repository at ``where``; create it (modes 'a' and 'w') when there is none."""
    storage = _storage(where)
    with _icechunk_errors(f"icechunk repository {where.describe()}"):
        if icechunk.Repository.exists(storage):
            return icechunk.Repository.open(storage)
        if mode == "r":
            raise NotFoundError(
                f"output_dir must hold an icechunk repository when mode is 'r'. Got {where.describe()}, where "
                "there is none."
            )
        folder = Path(str(where.path))
        if where.kind == "local" and folder.is_dir() and any(folder.iterdir()):
            if icechunk.Repository.exists(storage):  # another process created it just now
                return icechunk.Repository.open(storage)
            raise InvalidArgumentError(
                f"output_dir must be a new or empty folder, or an icechunk repository. Got {where.describe()}, "
                "which holds other files (a plain zarr store opens with backend 'zarr'). Choose another folder."
            )
        try:
            return icechunk.Repository.create(storage)
        except icechunk.IcechunkError:
            if not icechunk.Repository.exists(storage):
                raise
            return icechunk.Repository.open(storage)  # another process created it at the same moment


@contextlib.contextmanager
def _icechunk_errors(where: str) -> Iterator[None]:
    """icechunk's own errors (storage unreachable, a broken repository) as StorageError."""
    try:
        yield
    except icechunk.IcechunkError as exc:
        first = str(exc).strip().splitlines()[0].strip(" x")
        raise StorageError(f"the {where} failed: {first}") from exc


def _data_ids(diff: icechunk.Diff) -> set[str]:
    """The data_ids (top-level groups) a diff changes; ``''`` when it changes the root itself."""
    paths: set[str] = set()
    for found in (
        diff.new_groups,
        diff.new_arrays,
        diff.deleted_groups,
        diff.deleted_arrays,
        diff.updated_groups,
        diff.updated_arrays,
        set(diff.updated_chunks),
    ):
        paths |= found
    return {path.strip("/").split("/")[0] for path in paths}


def _call_name() -> str:
    """The storegate method the user called: the outermost public function of the facade or the writer."""
    call = "write"
    frame = inspect.currentframe()
    while frame is not None:
        module, name = frame.f_globals.get("__name__"), frame.f_code.co_name
        if module in _CALLERS and (not name.startswith("_") or name.startswith("__")):
            call = f"writer.{name}" if module == "storegate.writer" else name
            call = "StoreGate(...)" if call == "__init__" else call  # opening a StoreGate on a new data_id
        frame = frame.f_back
    return call
