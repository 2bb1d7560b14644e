"""The undo journal of a zarr store: the committed objects a call rewrites in place.

Appends and new variables need no journal: the commit record hides what lies past it.
A call that *rewrites* committed objects (an update of rows, a replace, a delete) first
writes each object it will change, as the last commit holds it, into the data_id's
journal (``<root>/.storegate/journal/<data_id>/<call id>/<n>.entry``, one atomic object
write per variable), then flags the commit record (``"journal": "<call id>"``), and only
then writes in place. Its commit writes the record without the flag; the journal is cleared after it.

- A call killed before its commit leaves the flag: readers take the journalled objects
  instead of the stored ones (they see the last commit), and the next writer or
  ``repair()`` puts them back and clears the flag.
- Entries without the flag (a call killed before its first write in place, or after its
  commit) changed nothing that is visible: they are simply deleted.

An entry is ``b"SGJ1"``, the length of a JSON header (8 bytes, big-endian), the header
(phase, variable, shape, whether every object was saved, and where each object's bytes
lie, ``null`` for an object that did not exist) and the objects' bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.core.sync import sync
from zarr.storage import LocalStore, WrapperStore

from storegate.backends.zarr_locking import OWN_PREFIX, file_name, read_object, write_object
from storegate.errors import StoreGateError

__all__ = ["CommittedView", "Entry", "Journal", "committed_objects", "decode", "encode"]

_MAGIC = b"SGJ1"
_SUFFIX = ".entry"


@dataclass(frozen=True)
class Entry:
    """The committed objects of one variable that a call is about to rewrite.

    Attributes
    ----------
    phase, var
        The variable.
    shape
        Its committed shape.
    whole
        True when every object of the variable is saved (a replace may change all of them);
        otherwise only the objects of the rows the call writes, and the metadata.
    objects
        Keys relative to the variable (``zarr.json``, ``c/0/1``...) and their bytes;
        ``None`` for an object that did not exist.
    """

    phase: str
    var: str
    shape: tuple[int, ...]
    whole: bool
    objects: dict[str, bytes | None]


def encode(entry: Entry) -> bytes:
    """The bytes of one journal entry."""
    spans: list[list[object]] = []
    offset = 0
    for key, value in entry.objects.items():
        spans.append([key, None] if value is None else [key, offset, len(value)])
        offset += 0 if value is None else len(value)
    blobs = b"".join(v for v in entry.objects.values() if v is not None)
    header = json.dumps(
        {
            "phase": entry.phase,
            "var": entry.var,
            "shape": list(entry.shape),
            "whole": entry.whole,
            "objects": spans,
            "sha256": hashlib.sha256(blobs).hexdigest(),  # a damaged entry is refused, never put back
        }
    ).encode("utf-8")
    return _MAGIC + len(header).to_bytes(8, "big") + header + blobs


def decode(data: bytes, where: str) -> Entry:
    """The entry in ``data``, read from ``where``.

    Raises
    ------
    StoreGateError
        If the bytes are no journal entry (damaged, or written by something else).
    """
    try:
        if data[:4] != _MAGIC:
            raise ValueError("it does not start with b'SGJ1'")
        size = int.from_bytes(data[4:12], "big")
        header = json.loads(data[12 : 12 + size])
        body = data[12 + size :]
        if hashlib.sha256(body).hexdigest() != header["sha256"]:
            raise ValueError("its objects do not match their SHA-256")
        objects: dict[str, bytes | None] = {}
        for span in header["objects"]:
            key = str(span[0])
            if span[1] is None:
                objects[key] = None
                continue
            start, length = int(span[1]), int(span[2])
            if start + length > len(body):
                raise ValueError("it is cut short")
            objects[key] = body[start : start + length]
        shape = tuple(int(n) for n in header["shape"])
        return Entry(str(header["phase"]), str(header["var"]), shape, bool(header["whole"]), objects)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise StoreGateError(
            f"the journal entry {where!r} must be storegate's ({exc}). Got {len(data)} bytes that are not. "
            "The store cannot be put back to its last commit from it: restore the variables it names from a "
            "copy, then delete the entry."
        ) from exc


class Journal:
    """The undo journals of one store's data_ids; this process's running call on each.

    Each call that journals gets its own folder, ``<prefix>/<call id>/``: the commit record's
    flag names it, so entries that a killed call left unflagged are never taken for another
    call's (``repair()`` deletes them).
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._call: dict[str, str] = {}
        self._added: dict[str, int] = {}

    def prefix(self, data_id: str) -> str:
        """The folder of a data_id's journals, below the store root."""
        return f"{OWN_PREFIX}/journal/{file_name(data_id)}"

    def add(self, data_id: str, entry: Entry) -> None:
        """Save one entry of this process's running call, atomically, after its earlier ones."""
        call = self._call.setdefault(data_id, uuid.uuid4().hex)
        n = self._added.get(data_id, 0)
        write_object(self._store, f"{self.prefix(data_id)}/{call}/{n:08d}{_SUFFIX}", encode(entry))
        self._added[data_id] = n + 1

    def call(self, data_id: str) -> str | None:
        """The id of this process's running call that journals ``data_id`` (``None``: none)."""
        return self._call.get(data_id)

    def added(self, data_id: str) -> int:
        """Entries the running call added so far."""
        return self._added.get(data_id, 0)

    def end(self, data_id: str) -> None:
        """Forget the running call (its entries stay until :meth:`clear`)."""
        self._call.pop(data_id, None)
        self._added.pop(data_id, None)

    def calls(self, data_id: str) -> list[str]:
        """The ids of the calls whose entries are stored."""
        return sorted({key.rsplit("/", 2)[-2] for key in self._keys(self.prefix(data_id))})

    def entries(self, data_id: str, call: str) -> list[Entry]:
        """The stored entries of a call, oldest first (an entry deleted while listing is skipped)."""
        found = []
        for key in self._keys(f"{self.prefix(data_id)}/{call}"):
            data = read_object(self._store, key)
            if data is not None:
                found.append(decode(data, key))
        return found

    def clear(self, data_id: str, call: str) -> None:
        """Delete a call's entries."""
        for key in self._keys(f"{self.prefix(data_id)}/{call}"):
            if isinstance(self._store, LocalStore):
                (self._store.root / key).unlink(missing_ok=True)
            else:
                sync(self._store.delete(key))
        if isinstance(self._store, LocalStore):
            with contextlib.suppress(OSError):  # not empty: an entry written meanwhile stays listed
                (self._store.root / self.prefix(data_id) / call).rmdir()

    def _keys(self, folder: str) -> list[str]:
        """The keys of the entries below ``folder``, sorted (oldest first within a call)."""
        if isinstance(self._store, LocalStore):
            found = []
            for parent, _, names in os.walk(self._store.root / folder):
                relative = os.path.relpath(parent, self._store.root).replace(os.sep, "/")
                found += [f"{relative}/{n}" for n in names if n.endswith(_SUFFIX)]
            return sorted(found)
        return sorted(k for k in sync(_listed(self._store, folder + "/")) if k.endswith(_SUFFIX))


async def _listed(store: Store, prefix: str) -> list[str]:
    return [key async for key in store.list_prefix(prefix)]


def committed_objects(entries: list[Entry]) -> dict[tuple[str, str], Entry]:
    """Per variable, the objects as the last commit holds them: the oldest entry of a key wins.

    A call may journal one variable twice (rows updated, then the variable replaced): the
    second entry holds what the first write made, the first what was committed.
    """
    merged: dict[tuple[str, str], Entry] = {}
    for entry in reversed(entries):
        key = (entry.phase, entry.var)
        earlier = merged.get(key)
        if earlier is None or entry.whole:
            merged[key] = entry
        else:
            objects = {**earlier.objects, **entry.objects}
            merged[key] = Entry(entry.phase, entry.var, entry.shape, earlier.whole, objects)
    return merged


class CommittedView(WrapperStore[Store]):
    """A store that shows one variable as its last commit holds it, for readers.

    The variable's journalled objects (``entry``) are served from memory; its other objects
    from the store, since the rewrite in progress leaves them as committed. Everything else
    passes through. Read only.
    """

    def __init__(self, store: Store, prefix: str = "", entry: Entry | None = None) -> None:
        super().__init__(store)
        self._prefix = prefix.rstrip("/") + "/"
        self._entry = entry
        self._objects = {} if entry is None else {self._prefix + k: v for k, v in entry.objects.items()}

    def _with_store(self, store: Store) -> CommittedView:
        return CommittedView(store, self._prefix, self._entry)

    def _hidden(self, key: str) -> bool:
        """True for an object a whole rewrite added: the committed variable had none there."""
        return self._entry is not None and self._entry.whole and key.startswith(self._prefix)

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        if key in self._objects:
            value = self._objects[key]
            return None if value is None else prototype.buffer.from_bytes(_cut(value, byte_range))
        if self._hidden(key):
            return None
        return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def exists(self, key: str) -> bool:
        if key in self._objects:
            return self._objects[key] is not None
        return not self._hidden(key) and await self._store.exists(key)

    async def set(self, key: str, value: Buffer) -> None:
        raise PermissionError("a committed view is read only")

    async def delete(self, key: str) -> None:
        raise PermissionError("a committed view is read only")

    def __eq__(self, value: object) -> bool:
        return value is self

    def __hash__(self) -> int:
        return id(self)


def _cut(value: bytes, byte_range: Any) -> bytes:
    if byte_range is None:
        return value
    if isinstance(byte_range, RangeByteRequest):
        return value[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return value[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return value[-byte_range.suffix :] if byte_range.suffix else b""
    raise TypeError(f"unknown byte range {byte_range!r}")
