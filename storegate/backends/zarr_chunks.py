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
``write_empty_chunks`` says, a marked array writes through zarr's own pipeline.

An array without compression also has its chunks' sizes checked, and a marked array refuses an
empty chunk object (gzip decodes one to nothing): a chunk file cut short or emptied reads as a
:class:`DamagedChunkError` instead of numpy's reshape error. Chunks of the
right size holding other bytes cannot be told apart without a checksum codec.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BytesCodec
from zarr.codecs._v2 import V2Codec
from zarr.core.array_spec import ArrayConfig
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.core.metadata import ArrayV2Metadata

from storegate.errors import StorageError, StoreGateError

__all__ = [
    "EVERY_CHUNK",
    "EVERY_CHUNK_ATTR",
    "DamagedChunkError",
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


class DamagedChunkError(StoreGateError):
    """A chunk stored empty, or one of an uncompressed array whose stored size is not its size."""

    def __init__(self, key: str, expected: int | None, got: int) -> None:
        size = "some bytes" if expected is None else f"{expected} bytes (an uncompressed chunk)"
        super().__init__(
            f"chunk {key!r} must hold {size}. Got {got} bytes: it was cut short or emptied. sg.verify() lists "
            "every such variable; rewrite it from its source."
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

    A marked array writes every chunk and its reads refuse a missing chunk; an uncompressed
    one checks its chunks' sizes. Changed in place: zarr fixes the config and the pipeline
    when an array object is made, and the backend has just made this one.
    """
    every = keeps_every_chunk(array)
    size = _raw_chunk_bytes(array)
    if not every and size is None:
        return array
    inner = array.async_array
    if every and not inner.config.write_empty_chunks:
        config = ArrayConfig(order=inner.config.order, write_empty_chunks=True)
        object.__setattr__(inner, "config", config)
    pipeline = inner.codec_pipeline
    if not isinstance(pipeline, _CheckedPipeline):
        python = None if isinstance(pipeline, BatchedCodecPipeline) else _python_pipeline(array)
        object.__setattr__(inner, "codec_pipeline", _CheckedPipeline(pipeline, every, size, python))
    return array


def _python_pipeline(array: zarr.Array[Any]) -> BatchedCodecPipeline:
    """zarr's own codec pipeline for ``array`` (what its config would pick without zarrs)."""
    metadata = array.metadata
    if isinstance(metadata, ArrayV2Metadata):
        return BatchedCodecPipeline.from_codecs([V2Codec(filters=metadata.filters, compressor=metadata.compressor)])
    return BatchedCodecPipeline.from_codecs(metadata.codecs)


def _raw_chunk_bytes(array: zarr.Array[Any]) -> int | None:
    """Stored bytes of every chunk of a zarr v3 array stored without any codec but ``bytes``
    (``None``: its chunk sizes vary, or are not known)."""
    codecs = getattr(array.metadata, "codecs", None)
    if not codecs or len(codecs) != 1 or not isinstance(codecs[0], BytesCodec):
        return None
    dtype = np.dtype(array.dtype)
    if dtype.hasobject or dtype.itemsize == 0:
        return None
    return math.prod(array.chunks) * dtype.itemsize


class _CheckedGetter:
    """A chunk's byte getter (zarr's ``StorePath``) whose reads refuse what :func:`prepared` checks."""

    __slots__ = ("_getter", "_lost", "_size")

    def __init__(self, getter: Any, lost: bool, size: int | None) -> None:
        self._getter, self._lost, self._size = getter, lost, size

    async def get(self, prototype: Any, byte_range: Any = None) -> Any:
        buffer = await self._getter.get(prototype, byte_range)
        if buffer is None:
            if self._lost:
                raise LostChunkError(str(self._getter.path))
        elif byte_range is None and (len(buffer) != self._size if self._size is not None else not len(buffer)):
            # No chunk storegate writes is empty (a codec's frame has a header; a raw chunk holds a row).
            raise DamagedChunkError(str(self._getter.path), self._size, len(buffer))
        return buffer


class _CheckedPipeline:
    """zarr's codec pipeline of one array, whose ``read`` refuses lost (or mis-sized) chunks.

    Everything but ``read`` is the wrapped pipeline's. ``lost``: a missing chunk raises;
    ``size``: the stored bytes of every chunk (uncompressed arrays).
    """

    def __init__(self, inner: Any, lost: bool, size: int | None, python: Any = None) -> None:
        self._inner, self._lost, self._size, self._python = inner, lost, size, python

    @property
    def wrapped(self) -> Any:
        """The codec pipeline zarr chose for the array (zarr's own, or zarrs')."""
        return self._inner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_inner", "_lost", "_size", "_python"):
            raise AttributeError(name)  # never recurse while unpickling, before _inner is set
        return getattr(self._inner, name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_CheckedPipeline, (self._inner, self._lost, self._size, self._python))

    async def write(self, batch_info: Iterable[tuple[Any, ...]], value: Any, drop_axes: tuple[int, ...] = ()) -> None:
        if self._lost and not isinstance(self._inner, BatchedCodecPipeline):
            # zarrs (0.2) writes no chunk that is all fill value, whatever write_empty_chunks says:
            # such an array writes through zarr's own pipeline, which keeps every chunk.
            await self._python.write(batch_info, value, drop_axes)
            return
        await self._inner.write(batch_info, value, drop_axes)

    async def read(self, batch_info: Iterable[tuple[Any, ...]], out: Any, drop_axes: tuple[int, ...] = ()) -> None:
        if isinstance(self._inner, BatchedCodecPipeline):  # zarr's own: every chunk goes through get()
            checked = [(_CheckedGetter(info[0], self._lost, self._size), *info[1:]) for info in batch_info]
            await self._inner.read(checked, out, drop_axes)
            return
        batch = list(batch_info)
        if self._lost:  # another pipeline (zarrs reads in Rust): ask the store for the keys first
            await _check_present([info[0] for info in batch])
        await self._inner.read(batch, out, drop_axes)


async def _check_present(getters: list[Any]) -> None:
    found = await asyncio.gather(*(g.store.exists(g.path) for g in getters))
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
