"""One writer per data_id of a zarr store at a time, and writers that see each other's writes.

Every mutating call holds its data_id's write lock (:mod:`storegate.locks`) while it plans
and applies its writes. Under the lock a writer compares the data_id's *stamp* (a small
object naming the last process that wrote, ``<root>/.storegate/stamps/<data_id>``) with the
one it last wrote or saw: when another process wrote since, the writer forgets what it
cached of the data_id (shapes, the state) before planning, so it appends after the other
process's rows instead of over them. A process writing alone reads the stamp and writes
nothing more. Names starting with '.' are never data_ids, so ``.storegate`` cannot clash.
"""

from __future__ import annotations

import uuid

from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, MemoryStore

from storegate.locks import FolderLock, Lease, ProcessLock, WriteLock, shared

__all__ = ["OWN_PREFIX", "Stamps", "write_lock"]

#: Where storegate keeps its own objects in a store (locks, stamps): zarr sees no member there.
OWN_PREFIX = ".storegate"


def write_lock(store: Store, data_id: str) -> WriteLock:
    """The write lock of ``data_id`` in ``store``, shared by every handle of this process.

    A local or NAS folder gets an OS file lock, S3 a lease; a store in this process's memory,
    or another fsspec filesystem (which has neither locks nor conditional writes), a lock of
    this process only.
    """
    key = f"{OWN_PREFIX}/locks/{data_id}.lock"
    if isinstance(store, LocalStore):
        path = str(store.root / key)
        return shared(path, lambda: FolderLock(f"data_id {data_id!r}", path))
    if isinstance(store, FsspecStore) and _is_s3(store):
        path = f"{store.path.rstrip('/')}/{key}"
        return shared(f"s3://{path}", lambda: Lease(f"data_id {data_id!r}", store.fs, path))
    where = f"memory:{id(store)}" if isinstance(store, MemoryStore) else f"store:{id(store)}"
    return shared(f"{where}/{key}", lambda: ProcessLock(f"data_id {data_id!r}"))


def _is_s3(store: FsspecStore) -> bool:
    protocol = store.fs.protocol
    return "s3" in (protocol if isinstance(protocol, tuple) else (protocol,))


class Stamps:
    """The stamps one backend last saw or wrote, per data_id."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def catch_up(self, store: Store, data_id: str) -> bool:
        """Make this process the data_id's last writer; True when another one wrote since.

        Call it holding the data_id's write lock, before planning. The new stamp is written
        before any data, so a failure after it leaves other writers refreshing once more,
        never trusting a stale cache.
        """
        key = f"{OWN_PREFIX}/stamps/{data_id}"
        stamp = _read(store, key)
        mine = self._seen.get(data_id)
        if stamp is not None and stamp == mine:
            return False
        token = uuid.uuid4().hex
        _write(store, key, token)
        self._seen[data_id] = token
        return stamp != mine


def _read(store: Store, key: str) -> str | None:
    if isinstance(store, LocalStore):  # every write call reads it: a file read, not a trip through zarr's loop
        try:
            return (store.root / key).read_text("ascii", "replace")
        except FileNotFoundError:
            return None
    found = sync(store.get(key, prototype=default_buffer_prototype()))
    return None if found is None else found.to_bytes().decode("ascii", "replace")


def _write(store: Store, key: str, token: str) -> None:
    sync(store.set(key, default_buffer_prototype().buffer.from_bytes(token.encode("ascii"))))
