"""Copy a zarr store between a local folder, a NAS path and S3, with its metadata (``storegate cp``).

The copy is byte for byte: every zarr object (metadata documents and chunks) and storegate's
own records (``.storegate/commits``, the undo journal) of each data_id copied, so the copy
holds the same commits, chunk layout, codecs and attributes, and reads the same. Each
data_id is copied while its write lock is held on the source, so no storegate writer changes
it meanwhile (a writer of the source waits; what a killed writer left is put back first,
as the next writer would). Locks themselves are not copied.

The destination must hold nothing yet. When a copy fails (an unreachable destination, a
full disk, Ctrl-C), every object it wrote is deleted again, so the destination is left as
it was. ``verify()`` on the copy then checks it (the CLI does).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm
from zarr.abc.store import Store
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.sync import sync

from storegate.backends import Backend, create_backend
from storegate.backends.zarr_locking import OWN_PREFIX, file_name
from storegate.errors import InvalidArgumentError, NotFoundError, StoreGateError
from storegate.locations import ZARR_JSON, ZATTRS, ZGROUP, inspect_root, no_reply_endpoint, resolve_location, unsent_to
from storegate.settle import settle_requests

__all__ = ["UNFINISHED", "copy_store", "unfinished_copy"]

#: The object a copy writes first and removes last: a store holding it is an unfinished copy.
UNFINISHED = f"{OWN_PREFIX}/unfinished-copy.json"
#: Objects copied at a time.
_BATCH = 64


def copy_store(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    source_options: dict[str, Any] | None = None,
    destination_options: dict[str, Any] | None = None,
    data_ids: Sequence[str] | None = None,
    progress: bool = True,
) -> list[str]:
    """Copy the storegate zarr store at ``source`` to ``destination``, byte for byte.

    Parameters
    ----------
    source, destination
        Local or NAS directories, ``file://`` or fsspec URLs (``s3://bucket/prefix``), as
        the zarr backend's ``output_dir``.
    source_options, destination_options
        fsspec ``storage_options`` of each (matorage's names too), as the zarr backend's.
    data_ids
        The data_ids to copy (default: every one).
    progress
        A tqdm bar of the objects copied (on a terminal or in a notebook only).

    Returns
    -------
    list of str
        The data_ids copied.

    Raises
    ------
    NotFoundError
        If there is no store at ``source``, or it lacks a data_id asked for.
    InvalidArgumentError
        If ``destination`` already holds something (nothing is written then).
    StorageError
        If a location cannot be reached or a write fails; the destination is left empty.
    """
    _refuse_overlap(source, destination)
    backend = _open_source(source, source_options)
    chosen = _chosen(backend, data_ids)
    src_store = resolve_location(source, source_options).make_store(read_only=True)
    dst_store = _empty_destination(destination, destination_options)
    written: list[str] = [UNFINISHED]
    try:
        note = json.dumps({"copy_of": os.fspath(source), "data_ids": chosen}).encode()
        sync(dst_store.set(UNFINISHED, default_buffer_prototype().buffer.from_bytes(note)))  # first, removed last
        with tqdm(desc="storegate cp", unit=" objects", disable=None if progress else True) as bar:
            sync(_copy(src_store, dst_store, _root_keys(), written, bar))
            for data_id in chosen:
                with backend.writing(data_id):  # no storegate writer changes it while it is copied
                    keys = sync(_keys(src_store, data_id))
                    sync(_copy(src_store, dst_store, keys, written, bar))
    except BaseException as exc:
        # After a Ctrl-C the batch of the moment still runs on zarr's event loop: it must not land after the clean-up.
        with unsent_to(no_reply_endpoint(exc)):  # a silent server: the copies not sent yet fail at once
            interrupted = settle_requests()
        sync(_delete(dst_store, written))
        if interrupted is not None:
            raise interrupted from exc
        raise
    sync(dst_store.delete(UNFINISHED))
    return chosen


def unfinished_copy(location: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> str | None:
    """What a :func:`copy_store` into ``location`` that never finished (killed) noted there, or None."""
    store = resolve_location(location, storage_options).make_store(read_only=True)
    found = sync(store.get(UNFINISHED, default_buffer_prototype()))
    return None if found is None else found.to_bytes().decode(errors="replace")


def _refuse_overlap(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> None:
    """A destination inside the source (or the source inside it) would copy into what it reads."""
    src, dst = (os.fspath(p).rstrip("/") for p in (source, destination))
    if "://" not in src and "://" not in dst:
        src, dst = os.path.realpath(src), os.path.realpath(dst)
    if src == dst or dst.startswith(src + "/") or src.startswith(dst + "/"):
        raise InvalidArgumentError(
            f"destination must lie outside the source store (and hold it not). Got source {src!r} and destination "
            f"{dst!r}: choose a path beside the store."
        )


def _open_source(source: str | os.PathLike[str], options: dict[str, Any] | None) -> Backend:
    """The source's zarr backend, opened read-only first (so a missing store is never created)."""
    args: dict[str, Any] = {"output_dir": source, "storage_options": options}
    create_backend("zarr", {**args, "mode": "r"})  # raises NotFoundError when there is no store
    return create_backend("zarr", {**args, "mode": "a"})  # mode 'a' to take the write locks


def _chosen(backend: Backend, data_ids: Sequence[str] | None) -> list[str]:
    stored = backend.data_ids()
    if data_ids is None:
        return stored
    if isinstance(data_ids, str) or not all(isinstance(d, str) for d in data_ids):
        raise InvalidArgumentError(f"data_ids must be a list of str (or None). Got {data_ids!r} instead.")
    missing = [d for d in data_ids if d not in stored]
    if missing:
        raise NotFoundError(
            f"data_ids {missing} do not exist in the source store. Stored data_ids: {stored}. "
            "Choose among them, or leave data_ids out to copy every one."
        )
    return list(dict.fromkeys(data_ids))


def _empty_destination(destination: str | os.PathLike[str], options: dict[str, Any] | None) -> Store:
    location = resolve_location(destination, options)
    store = location.make_store(read_only=False)
    holds: bool = sync(_any_key(store))
    if holds or inspect_root(store).formats:
        raise InvalidArgumentError(
            f"destination must be an empty location (a copy never mixes with what lies there). Got "
            f"{location.describe()}, which holds objects already. Remove them first, or choose a new path."
        )
    return store


def _root_keys() -> list[str]:
    return [ZARR_JSON, ZGROUP, ZATTRS]


async def _any_key(store: Store) -> bool:
    async for _ in store.list():
        return True
    return False


async def _keys(store: Store, data_id: str) -> list[str]:
    """Every object of ``data_id``: its zarr group, its commit record and journal (locks left out)."""
    own = f"{OWN_PREFIX}/commits/{file_name(data_id)}.json"
    keys = [key async for key in store.list_prefix(f"{data_id}/")]
    keys += [key async for key in store.list_prefix(f"{OWN_PREFIX}/journal/{file_name(data_id)}/")]
    return [*sorted(keys), own]


async def _copy(src: Store, dst: Store, keys: list[str], written: list[str], bar: Any) -> None:
    prototype = default_buffer_prototype()
    for start in range(0, len(keys), _BATCH):
        batch = keys[start : start + _BATCH]
        got = await asyncio.gather(*(src.get(key, prototype) for key in batch), return_exceptions=True)
        _raise_first(got)
        values: list[Buffer | None] = got  # type: ignore[assignment]
        found: list[tuple[str, Buffer]] = [(k, v) for k, v in zip(batch, values, strict=True) if v is not None]
        written.extend(k for k, _ in found)  # before the writes: a failed one is deleted too
        # Every write settles before a failure is raised: one still running would land after the clean-up.
        _raise_first(await asyncio.gather(*(dst.set(key, value) for key, value in found), return_exceptions=True))
        bar.update(len(batch))


def _raise_first(results: list[Any]) -> None:
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _delete(store: Store, keys: list[str]) -> None:
    try:
        _raise_first(await asyncio.gather(*(store.delete(key) for key in keys), return_exceptions=True))
    except Exception as exc:  # the destination may be what failed: say what is left
        raise StoreGateError(
            f"a failed copy must leave the destination empty. Got an error while removing its {len(keys)} "
            f"objects ({type(exc).__name__}: {exc}). Remove the destination by hand."
        ) from exc
