"""Writers of a zarr store: one per data_id at a time, and a commit point for each call.

Every mutating call holds its data_id's write lock (:mod:`storegate.locks`) while it plans
and applies its writes, then commits: it writes the data_id's *commit record*
(``<root>/.storegate/commits/<data_id>.json``: each variable's committed rows and a token
naming the writer) last, in one object write. Readers see only the variables and rows the
record lists, so what a crash or a failed call leaves beyond it stays invisible; the next
writer cuts it off. Under the lock a writer compares the record's token with the one it
wrote last: when another process wrote since, it forgets what it cached of the data_id
(shapes, the state) before planning, so it appends after the other process's rows instead
of over them. Names starting with '.' are never data_ids, so ``.storegate`` cannot clash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from dataclasses import dataclass

from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, MemoryStore

from storegate.backends.commit_counter import counter_key, counting, poison
from storegate.errors import StoreGateError
from storegate.locations import uncached
from storegate.locks import FolderLock, Lease, ProcessLock, WriteLock, shared

__all__ = [
    "OWN_PREFIX",
    "Commit",
    "Commits",
    "Rows",
    "counted",
    "counter_path",
    "file_name",
    "poison_counter",
    "read_object",
    "read_object_text",
    "write_lock",
    "write_object",
]

#: Where storegate keeps its own objects in a store (locks, commit records): zarr sees no member there.
OWN_PREFIX = ".storegate"


def write_lock(store: Store, data_id: str) -> WriteLock:
    """The write lock of ``data_id`` in ``store``, shared by every handle of this process.

    A local or NAS folder gets an OS file lock, S3 a lease; a store in this process's memory,
    or another fsspec filesystem (which has neither locks nor conditional writes), a lock of
    this process only.
    """
    key = f"{OWN_PREFIX}/locks/{file_name(data_id)}.lock"
    if isinstance(store, LocalStore):
        path = str(store.root / key)
        return shared(path, lambda: FolderLock(f"data_id {data_id!r}", path))
    if isinstance(store, FsspecStore) and _is_s3(store):
        path = f"{store.path.rstrip('/')}/{key}"
        return shared(f"s3://{path}", lambda: Lease(f"data_id {data_id!r}", store.fs, path))
    where = f"memory:{id(store)}" if isinstance(store, MemoryStore) else f"store:{id(store)}"
    return shared(f"{where}/{key}", lambda: ProcessLock(f"data_id {data_id!r}"))


def counter_path(store: Store, data_id: str) -> str | None:
    """The file of ``data_id``'s commit counter (see :mod:`commit_counter`); ``None`` off a folder."""
    if not isinstance(store, LocalStore):
        return None
    return str(store.root / counter_key(f"{OWN_PREFIX}/locks", file_name(data_id)))


def counted(store: Store, data_id: str) -> contextlib.AbstractContextManager[None]:
    """Around a change of ``data_id``'s commit record: its counter counts it (in a folder)."""
    path = counter_path(store, data_id)
    return contextlib.nullcontext() if path is None else counting(path)


def poison_counter(store: Store, data_id: str) -> None:
    """Readers of ``data_id`` read its commit record until the next commit (mode 'w', a deleted data_id)."""
    path = counter_path(store, data_id)
    if path is not None:
        poison(path)


def file_name(data_id: str) -> str:
    """The data_id as the name of its lock and record files: itself, or a digest when long.

    A data_id may have 255 UTF-8 bytes, the most a folder takes as a name; with '.json' and
    zarr's temporary suffix (``.<32 hex>.partial``) a record file would not fit. A digest's
    name starts with '._', which no data_id does (names never start with '.').
    """
    if len(data_id.encode("utf-8")) <= 150:
        return data_id
    return "._sha256_" + hashlib.sha256(data_id.encode("utf-8")).hexdigest()


def _is_s3(store: FsspecStore) -> bool:
    protocol = store.fs.protocol
    return "s3" in (protocol if isinstance(protocol, tuple) else (protocol,))


#: Committed rows of one data_id: ``{phase: {var_name: rows}}``.
Rows = dict[str, dict[str, int]]


@dataclass(frozen=True)
class Commit:
    """A data_id's commit record as stored: the last writer's token and the committed rows.

    ``rows`` is ``None`` for a data_id no storegate writer has committed yet (a store from
    before commit records, or one that other tools wrote): every variable is then visible.
    ``journal`` names the call that rewrites committed objects in place, while it runs: the
    objects the last commit holds are then in that call's undo journal (:mod:`.zarr_journal`).
    ``epoch`` counts the rewrites in place begun so far: a reader whose record changed
    during a read, but not its epoch, read nothing that was being rewritten.
    """

    token: str | None
    rows: Rows | None
    journal: str | None = None
    epoch: int = 0
    entries: int = 0  # how many entries the flagged call's journal holds


class Commits:
    """The commit records of one backend: read, written, and the token it last wrote.

    A data_id's record (``<root>/.storegate/commits/<data_id>.json``) holds every committed
    variable's row count and a token naming the writer. Writers write it last, in one
    object write (an atomic rename on a folder, one PUT on S3): that write is the commit
    point, and readers see only the rows and variables it lists.
    """

    def __init__(self) -> None:
        self._mine: dict[str, str | None] = {}
        # A record write that failed: its token and the record it replaced. The write may have
        # landed (a lost reply) while the undo could not put the old record back.
        self._failed: dict[str, tuple[str, str | None]] = {}

    def key(self, data_id: str) -> str:
        """The record's key below the store root."""
        return f"{OWN_PREFIX}/commits/{file_name(data_id)}.json"

    def read_raw(self, store: Store, data_id: str) -> str | None:
        """The stored record as text (``None`` when there is none), to put back later."""
        return _read(store, self.key(data_id))

    def restore(self, store: Store, data_id: str, raw: str | None) -> None:
        """Put back a record read with :meth:`read_raw` (an undone commit)."""
        self._mine[data_id] = None
        with counted(store, data_id):
            if raw is None:
                sync(store.delete(self.key(data_id)))
            else:
                _write(store, self.key(data_id), raw)
        self._failed.pop(data_id, None)

    def failed_commit(self, commit: Commit, data_id: str) -> tuple[bool, str | None]:
        """``(True, the record it replaced)`` when ``commit`` is a record write of this backend
        that raised (its call failed, yet the server got it); else ``(False, None)``."""
        failed = self._failed.get(data_id)
        if failed is None or commit.token != failed[0]:
            return False, None
        return True, failed[1]

    def read(self, store: Store, data_id: str) -> Commit:
        """The stored record (``Commit(None, None)`` when there is none); see :meth:`parse`."""
        return self.parse(_read(store, self.key(data_id)), data_id)

    def parse(self, raw: str | None, data_id: str) -> Commit:
        """The record in ``raw``, text read with :meth:`read_raw` (``None``: no record).

        Raises
        ------
        StoreGateError
            If the text is no record (written by something else).
        """
        if raw is None:
            return Commit(None, None)
        try:
            found = json.loads(raw)
            rows = {str(p): {str(v): _row_count(n) for v, n in vs.items()} for p, vs in found["rows"].items()}
            journal = found.get("journal")
            epoch, entries = _row_count(found.get("epoch", 0)), _row_count(found.get("entries", 0))
            return Commit(str(found["token"]), rows, journal if isinstance(journal, str) else None, epoch, entries)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreGateError(
                f"the commit record {self.key(data_id)!r} must be storegate's JSON ({exc}). Got {raw[:80]!r}. "
                "Delete it to see every variable as stored (then compile() to check them)."
            ) from exc

    def is_mine(self, commit: Commit, data_id: str) -> bool:
        """True when this backend wrote ``commit`` (nobody wrote since)."""
        return commit.token is not None and commit.token == self._mine.get(data_id)

    def write(
        self,
        store: Store,
        data_id: str,
        rows: Rows,
        replaces: str | None = None,
        journal: str | None = None,
        epoch: int = 0,
        entries: int = 0,
    ) -> str:
        """Commit ``rows``: the one object write that makes a call's writes visible; its text.

        ``replaces`` is the record it replaces, put back by :meth:`restore` when the call
        fails, or at the next call when that failed too (see :meth:`failed_commit`).
        ``journal`` (a call id) writes the same rows flagged: readers then take the objects
        that call rewrites in place from its undo journal, ``entries`` of them. ``epoch``: see
        :class:`Commit`.
        """
        token = uuid.uuid4().hex
        self._mine[data_id] = None  # a write that fails midway leaves an unknown record
        record: dict[str, object] = {"token": token, "rows": rows}
        if journal is not None:
            record["journal"], record["entries"] = journal, entries
        if epoch:
            record["epoch"] = epoch
        text = json.dumps(record, sort_keys=True)
        self._failed[data_id] = (token, replaces)
        with counted(store, data_id):
            _write(store, self.key(data_id), text)
        self._mine[data_id] = token
        return text

    def committed(self, data_id: str) -> None:
        """The call that wrote the last record succeeded: it is no failed commit any more."""
        self._failed.pop(data_id, None)

    def token_of(self, data_id: str) -> str | None:
        """The token of the record this backend last wrote for ``data_id`` (``None``: unknown)."""
        return self._mine.get(data_id)

    def forget(self, data_id: str) -> None:
        """Trust nothing cached of ``data_id`` at the next write (a failed call, a refresh)."""
        self._mine.pop(data_id, None)


def _row_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"a row count must be an int >= 0, not {value!r}")
    return value


def _read(store: Store, key: str) -> str | None:
    return read_object_text(store, key)


def read_object_text(store: Store, key: str) -> str | None:
    """One of storegate's own objects as text (``None`` when there is none)."""
    found = read_object(store, key)
    return None if found is None else found.decode("utf-8", "replace")


def read_object(store: Store, key: str) -> bytes | None:
    """One of storegate's own objects (``None`` when there is none)."""
    if isinstance(store, LocalStore):  # every read and write call reads one: a file read, not zarr's loop
        return _read_file(os.path.join(store.root, key))
    # Never a cache_dir's copy: these objects tell whether the copies are stale.
    found = sync(uncached(store).get(key, prototype=default_buffer_prototype()))
    return None if found is None else found.to_bytes()


def _read_file(path: str) -> bytes | None:
    # os.open / os.read: a third of the time of pathlib's read_bytes (3 against 9 us), and
    # get_data reads the commit record twice.
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        parts = []
        while part := os.read(fd, 1 << 16):
            parts.append(part)
        return b"".join(parts)
    finally:
        os.close(fd)


def _write(store: Store, key: str, text: str) -> None:
    write_object(store, key, text.encode("utf-8"))


def write_object(store: Store, key: str, data: bytes) -> None:
    """Write one of storegate's own objects whole, atomically: readers see the old or the new."""
    # A temporary file renamed (as zarr's LocalStore writes, without its trip through
    # zarr's event loop, which costs ten times the write); an S3 PUT is atomic by itself.
    if isinstance(store, LocalStore):
        path = store.root / key
        temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.partial")
        try:
            temporary.write_bytes(data)
        except FileNotFoundError:  # the first object of its folder
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(data)
        try:
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return
    sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))
