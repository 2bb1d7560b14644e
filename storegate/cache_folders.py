"""A ``cache_dir``'s copies of one store's objects, and the commit records they were copied under.

fsspec's ``simplecache`` keeps a local copy of every object it reads and never asks the
store again, so a copy stays what the object was when it was first read. storegate's
writers change objects in place (an append rewrites a chunk's object and the array's
``zarr.json``, an update rewrites chunks), and commit each change by writing the data_id's
commit record. So the copies are only right while every data_id's record is the one they
were copied under (the reader reads the record itself from the store on every call,
never from the cache: :func:`storegate.locations.uncached`).

A store's copies live in ``<cache_dir>/<store digest>/<generation>/``, and
``<cache_dir>/<store digest>/records.json`` names the current generation and, per
data_id, the record text it was filled under. A reader that finds another record than the
one listed (a commit since, by any process, also before this process started) starts a new,
empty generation and reads again from the store: no copy from before the commit is ever
served. Old generations are deleted when the one after the next begins (a read still in
flight in the previous one can finish; a copy lost meanwhile is read from the store again:
:class:`Copies`), and when a store's folder has no ``records.json``
(a crash mid-way, or files from an older storegate) everything in it is deleted first.

Like lardon's and KappaData's local copies of remote files, the cache holds data a reader
has already read; unlike theirs, it never serves data older than the store's last commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from typing import Any

from fsspec.implementations.cached import SimpleCacheFileSystem

__all__ = ["MARKER", "CacheFolder", "Copies", "store_folder"]

_UNLISTED = object()  # a data_id the marker names no record for

#: The file, in a store's folder of the cache_dir, naming the generation and the records.
MARKER = "records.json"


class Copies(SimpleCacheFileSystem):  # type: ignore[misc]  # fsspec has no type hints
    """fsspec's ``simplecache`` whose copies are written whole, never read half-written.

    simplecache downloads straight into the copy's file, where another thread or process
    may open it half-written, and zarr takes a copy lost to a folder being switched or
    deleted (a FileNotFoundError) for a chunk that was never written: zeros, silently.
    Here each object is read from the store into memory and returned as read; its copy is
    written beside and renamed into place (a copy that cannot be written is only not kept).
    A FileNotFoundError therefore always means the store has no such object.

    ``direct`` is the same store read without copies and ``folder`` the cache_dir folder the
    copies go to, set by whoever makes it (``storegate.locations``).
    """

    direct: Any = None
    folder: CacheFolder | None = None

    async def _cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        path = self._strip_protocol(path)
        folder = self.storage[-1]
        copy = os.path.join(folder, self._mapper(path))
        try:
            with open(copy, "rb") as file:  # a local file, read as simplecache reads it
                data = file.read()
        except OSError:
            data = await self.fs._cat_file(path, **kwargs)
            _keep(folder, copy, data)
        return bytes(data[start:end])

    async def _cat_ranges(
        self, paths: list[str], starts: list[int | None], ends: list[int | None], **kwargs: Any
    ) -> list[bytes | BaseException]:
        # Each object as _cat_file reads it, concurrently; errors returned in place (fsspec's
        # on_error='return', which zarr passes) or the first one raised.
        found = await asyncio.gather(
            *(self._cat_file(path, start, end) for path, start, end in zip(paths, starts, ends, strict=True)),
            return_exceptions=True,
        )
        if kwargs.get("on_error", "return") != "return":
            for item in found:
                if isinstance(item, BaseException):
                    raise item
        return list(found)


def _keep(folder: str, copy: str, data: bytes) -> None:
    """Write ``copy`` whole (a temporary file renamed); a folder switched or deleted meanwhile keeps none."""
    temporary = f"{copy}.{uuid.uuid4().hex[:12]}.partial"
    try:
        os.makedirs(folder, exist_ok=True)
        with open(temporary, "wb") as file:
            file.write(data)
        os.replace(temporary, copy)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(temporary)


def store_folder(cache_dir: str, where: str) -> str:
    """The folder of ``cache_dir`` for the store at ``where`` (its URL and endpoint)."""
    return os.path.join(cache_dir, hashlib.sha256(where.encode("utf-8")).hexdigest()[:24])


class CacheFolder:
    """One store's folder of a ``cache_dir``: its current generation and the records it holds.

    Parameters
    ----------
    root
        The store's folder (:func:`store_folder`).
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._lock = threading.Lock()  # the threads of one handle switch generations one at a time
        self._fs: Any = None
        self._marker: dict[str, Any] | None = None

    def storage(self) -> str:
        """The folder of the current generation (made, with the marker, when there is none)."""
        with self._lock:
            marker = self._load()
            if marker is None:  # nothing tells what the files there were filled under: none is kept
                marker = self._begin({}, keep=None)
            self._marker = marker
            return self._generation(marker)

    def attach(self, fs: Any) -> None:
        """The simplecache filesystem whose copies go to this folder (its ``storage`` is switched)."""
        self._fs = fs

    def check(self, data_id: str, record: str | None) -> None:
        """Go by ``record``, the commit record of ``data_id`` just read from the store.

        When the folder's marker lists another record for ``data_id``, or none, the copies
        may be stale: a new, empty generation begins and the filesystem copies into it (the
        first reader of each data_id of a store thus starts one generation).
        """
        with self._lock:
            known = self._marker
            if (
                known is not None
                and data_id in known["records"]
                and known["records"][data_id] == record
                and self._current() == self._generation(known)
            ):
                return  # the record the copies were filled under: no file read
            marker = self._load()
            if marker is None:
                marker = self._begin({data_id: record}, keep=None)
            elif marker["records"].get(data_id, _UNLISTED) != record:
                # Also for a data_id the marker does not list: two processes that wrote the
                # marker at once may have dropped its record, so its copies may be of any commit.
                marker = self._begin({**marker["records"], data_id: record}, keep=marker["generation"])
            self._marker = marker
            self._switch(self._generation(marker))

    # --- the folder --------------------------------------------------------------------

    def _current(self) -> str | None:
        return None if self._fs is None else str(self._fs.storage[-1])

    def _switch(self, folder: str) -> None:
        if self._fs is not None and self._current() != folder:
            os.makedirs(folder, exist_ok=True)
            self._fs.storage = [folder]

    def _generation(self, marker: dict[str, Any]) -> str:
        return os.path.join(self.root, str(marker["generation"]))

    def _begin(self, records: dict[str, str | None], keep: str | None) -> dict[str, Any]:
        """A new, empty generation. The ones older than ``keep`` (the previous) are deleted, or, without
        ``keep``, every other file of the folder (nothing tells what they were filled under)."""
        # Named by time, so that the generations another process begins meanwhile are newer and kept.
        marker = {"generation": f"{time.time_ns():016x}{uuid.uuid4().hex[:8]}", "records": records}
        os.makedirs(self._generation(marker), exist_ok=True)
        self._write(marker)
        for entry in os.scandir(self.root):
            if entry.name.startswith(MARKER) or entry.name == marker["generation"]:
                continue
            if keep is not None and not entry.name < keep:
                continue  # the previous generation (a read may still use it) or a newer one
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):  # another process deleted it first
                    os.remove(entry.path)
        return marker

    def _load(self) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.root, MARKER), encoding="utf-8") as file:
                found = json.load(file)
        except (OSError, ValueError):
            return None
        if not isinstance(found, dict) or not isinstance(found.get("records"), dict):
            return None
        if not isinstance(found.get("generation"), str) or not found["generation"].isalnum():
            return None
        return found

    def _write(self, marker: dict[str, Any]) -> None:
        # A temporary file renamed: another process reads the old marker or the new one.
        os.makedirs(self.root, exist_ok=True)
        path = os.path.join(self.root, MARKER)
        temporary = f"{path}.{uuid.uuid4().hex[:12]}.partial"
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(marker, file)
        os.replace(temporary, path)
