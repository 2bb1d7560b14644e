"""Every chunk kept: arrays that store their fill-valued chunks too, and reads that refuse a lost one.

zarr stores no chunk whose values all equal the fill value (its ``write_empty_chunks=False``
default) and reads a chunk it does not find as fill value. A chunk file deleted by hand, by a
sync tool or by a storage fault then read back as zeros, with no error, and nothing could
tell it from an empty chunk.

Arrays the zarr backend creates store every chunk (zarr's array config
``write_empty_chunks=True``, which zarr keeps per array object, not in the metadata; zarr-python
2 defaults to False too since 2.11, so multiml's stores may lack their zero chunks) and say
so in their attributes (:data:`EVERY_CHUNK_ATTR`). For such an array a chunk missing inside
its shape is a lost one: a read that needs it raises :class:`LostChunkError`, and
:func:`missing_chunks` lists them for ``verify()``. Arrays without the mark (written by
storegate before, or by other tools) read as before: a missing chunk is fill value.

The check sits where zarr's read path asks the store for a chunk and gets ``None``: the
``byte_getter.get`` calls of the array's codec pipeline. :func:`prepared` wraps the
pipeline of each array the backend opens (:class:`_CheckedPipeline`); only ``read`` changes,
so writes (which read a chunk they partly overwrite, and find none for a new one) are as
zarr's. The cost is one coroutine call per chunk read. The ``zarrs`` pipeline reads chunks
in Rust, out of reach of the wrapper: for it the chunk keys of a read are asked of the store
first (one existence check per chunk); and since zarrs (0.2) writes no all-fill chunk whatever
``write_empty_chunks`` says, a marked array writes through zarr's own pipeline. The
backend's direct reader (:mod:`storegate.backends.zarr_direct`) reads chunk files itself and
leaves a missing one to zarr, so its reads are checked here too.

A chunk object that is there but damaged (emptied, cut short, other bytes) is the decoders'
business (:func:`storegate.backends.zarr_direct.damaged_chunk`); bytes changed inside a
chunk decode silently unless its codec checks a checksum (gzip, zstd with ``checksum=True``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import numcodecs
import zarr
from zarr.codecs._v2 import V2Codec
from zarr.core.array_spec import ArrayConfig
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.core.metadata import ArrayV2Metadata

from storegate.backends.zarr_direct import check_blosc_frame
from storegate.errors import StorageError

__all__ = [
    "EVERY_CHUNK",
    "EVERY_CHUNK_ATTR",
    "LostChunkError",
    "every_chunk_attributes",
    "keeps_every_chunk",
    "missing_chunks",
    "prepared",
]

#: The array attribute that says every chunk inside the shape is stored, fill-valued ones too.
EVERY_CHUNK_ATTR = "storegate_chunks"
EVERY_CHUNK = "every"


class LostChunkError(StorageError):
    """A chunk of an array that keeps every chunk is not in the store (deleted, or lost by the storage).

    ``key`` is the chunk's store key.
    """

    def __init__(self, key: str) -> None:
        super().__init__(
            f"chunk {key!r} must be in the store: its array keeps every chunk (attribute "
            f"{EVERY_CHUNK_ATTR!r}), so a missing one was lost, not empty. Got no object at that key. "
            "sg.verify() lists every lost chunk; rewrite the variable from its source."
        )
        self.key = key


def keeps_every_chunk(array: zarr.Array[Any]) -> bool:
    """True when ``array`` carries the mark: every chunk inside its shape is stored."""
    return bool(array.metadata.attributes.get(EVERY_CHUNK_ATTR) == EVERY_CHUNK)


def every_chunk_attributes() -> dict[str, str]:
    """The attributes a new array gets, with ``write_empty_chunks=True`` (see :func:`prepared`)."""
    return {EVERY_CHUNK_ATTR: EVERY_CHUNK}


def prepared(array: zarr.Array[Any]) -> zarr.Array[Any]:
    """``array`` (just opened or created) set up to keep and check its chunks; the same object.

    A marked array writes every chunk and its reads refuse a missing chunk; others are left
    as zarr made them. Changed in place: zarr fixes the config and the pipeline when an
    array object is made, and the backend has just made this one.
    """
    if not keeps_every_chunk(array):
        return array
    inner = array.async_array
    if not inner.config.write_empty_chunks:
        object.__setattr__(inner, "config", ArrayConfig(order=inner.config.order, write_empty_chunks=True))
    pipeline = inner.codec_pipeline
    if not isinstance(pipeline, _CheckedPipeline):
        python = None if isinstance(pipeline, BatchedCodecPipeline) else _python_pipeline(array)
        object.__setattr__(inner, "codec_pipeline", _CheckedPipeline(pipeline, python, _blosc_objects(array)))
    return array


def _blosc_objects(array: zarr.Array[Any]) -> bool:
    """Whether each chunk object of ``array`` is one blosc frame (blosc its last compressor, no shards)."""
    compressors = array.compressors
    if array.shards is not None or not compressors:
        return False
    last = compressors[-1]
    if isinstance(last, numcodecs.Blosc):  # zarr v2
        return True
    to_dict = getattr(last, "to_dict", None)
    return callable(to_dict) and to_dict().get("name") == "blosc"


def _python_pipeline(array: zarr.Array[Any]) -> BatchedCodecPipeline:
    """zarr's own codec pipeline for ``array`` (what its config would pick without zarrs)."""
    metadata = array.metadata
    if isinstance(metadata, ArrayV2Metadata):
        return BatchedCodecPipeline.from_codecs([V2Codec(filters=metadata.filters, compressor=metadata.compressor)])
    return BatchedCodecPipeline.from_codecs(metadata.codecs)


class _CheckedGetter:
    """A chunk's byte getter (zarr's ``StorePath``) whose reads refuse a missing chunk, and
    with ``blosc`` a chunk object that is not one whole blosc frame: numcodecs' Blosc decodes
    as many bytes as the frame's header says, past the end of a truncated object."""

    __slots__ = ("_blosc", "_getter")

    def __init__(self, getter: Any, blosc: bool = False) -> None:
        self._getter, self._blosc = getter, blosc

    async def get(self, prototype: Any, byte_range: Any = None) -> Any:
        buffer = await self._getter.get(prototype, byte_range)
        if buffer is None:
            raise LostChunkError(str(self._getter.path))
        if self._blosc and byte_range is None:
            check_blosc_frame(buffer.as_numpy_array())  # RuntimeError: a damaged chunk
        return buffer


class _CheckedPipeline:
    """zarr's codec pipeline of one marked array, whose ``read`` refuses a lost chunk.

    Everything but ``read`` and ``write`` is the wrapped pipeline's; ``python`` is zarr's own
    pipeline for the array when the wrapped one is another (zarrs).
    """

    def __init__(self, inner: Any, python: Any = None, blosc: bool = False) -> None:
        self._inner, self._python, self._blosc = inner, python, blosc

    @property
    def wrapped(self) -> Any:
        """The codec pipeline zarr chose for the array (zarr's own, or zarrs')."""
        return self._inner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_inner", "_python", "_blosc"):
            raise AttributeError(name)  # never recurse while unpickling, before _inner is set
        return getattr(self._inner, name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_CheckedPipeline, (self._inner, self._python, self._blosc))

    async def write(self, batch_info: Iterable[tuple[Any, ...]], value: Any, drop_axes: tuple[int, ...] = ()) -> None:
        if self._python is not None:
            # zarrs (0.2) writes no chunk that is all fill value, whatever write_empty_chunks says:
            # such an array writes through zarr's own pipeline, which keeps every chunk.
            await self._python.write(batch_info, value, drop_axes)
            return
        await self._inner.write(batch_info, value, drop_axes)

    async def read(self, batch_info: Iterable[tuple[Any, ...]], out: Any, drop_axes: tuple[int, ...] = ()) -> None:
        if self._python is None:  # zarr's own: every chunk goes through get()
            checked = [(_CheckedGetter(info[0], self._blosc), *info[1:]) for info in batch_info]
            await self._inner.read(checked, out, drop_axes)
            return
        batch = list(batch_info)  # another pipeline (zarrs reads in Rust): ask the store for the keys first
        await _check_present([info[0] for info in batch])
        await self._inner.read(batch, out, drop_axes)


async def _check_present(getters: list[Any]) -> None:
    """Raise LostChunkError for the first of ``getters`` whose key the store does not hold
    (asked a bounded number at a time, as zarr's own requests are)."""
    limit = asyncio.Semaphore(int(zarr.config.get("async.concurrency")))

    async def exists(getter: Any) -> bool:
        async with limit:
            return bool(await getter.store.exists(getter.path))

    found = await asyncio.gather(*(exists(g) for g in getters))
    for getter, present in zip(getters, found, strict=True):
        if not present:
            raise LostChunkError(str(getter.path))


async def missing_chunks(array: zarr.Array[Any], rows: int) -> list[tuple[str, int, int]]:
    """``(key, start, stop)`` of each stored object (chunk, or shard) that holds some of the first
    ``rows`` rows of a marked array and is not in the store: its key relative to the array and
    the rows ``[start, stop)`` it held; sorted by position. One listing of the array's prefix."""
    if not rows or not array.ndim or 0 in array.shape[1:]:
        return []
    store_path = array.store_path
    prefix = store_path.path.rstrip("/") + "/"
    stored = {key.removeprefix(prefix) async for key in store_path.store.list_prefix(prefix)}
    shape = (min(rows, int(array.shape[0])), *array.shape[1:])
    step = int((array.shards or array.chunks)[0])  # the objects are shards when sharded
    lost = []
    for coords in array.metadata.chunk_grid.all_chunk_coords(shape):
        key = array.metadata.encode_chunk_key(coords)
        if key not in stored:
            lost.append((key, coords[0] * step, min((coords[0] + 1) * step, shape[0])))
    return lost
