"""Rows of one chunk of a local zarr v3 array, read and decoded in the calling thread (issue 12, item 3).

zarr-python reads ``array[i]`` on its event loop: the chunk's file is read in one worker
thread and decoded in another (``asyncio.to_thread``), while the calling thread waits. For
a 1 MiB zstd chunk on local disk that costs about 1.05 ms of CPU; reading the same file and
running the same codec objects (their ``_decode_sync``, which zarr's worker threads run) in
the calling thread costs about 0.72 ms. A row read decodes a whole chunk either way, so
this is what a single-row read and a first touch of a chunk cost (benchmarks/bench_core.py
(d), (e) cold).

:func:`direct_reader` says whether an array can be read so: a zarr v3 array in a
``LocalStore`` (not a wrapper such as the journal's ``CommittedView``), chunked by whole
rows, no shards, zarr's own codec pipeline (not ``zarrs``) with the plain ``bytes`` codec
and only compressors whose asynchronous decode is their ``_decode_sync`` in a thread (zstd,
blosc, gzip, crc32c), C order. Anything else, and a chunk with no object (zarr returns the
fill value), goes through zarr as before, so every read returns what ``array[...]`` returns.
What is read is the same object zarr would read, so a read stays checked against the commit
record exactly as before (``ZarrBackend.start_read`` / ``unchanged``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Union, cast

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ZstdCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.storage import LocalStore

__all__ = ["DirectReader", "direct_reader"]

#: Compressors whose ``_decode_single`` runs their ``_decode_sync`` (in a thread or not):
#: decoding with ``_decode_sync`` here gives what zarr's pipeline gives.
SYNC_COMPRESSORS = (ZstdCodec, BloscCodec, GzipCodec, Crc32cCodec)
SyncCompressor = Union[ZstdCodec, BloscCodec, GzipCodec, Crc32cCodec]
#: Errors a missing chunk object raises on local disk (``LocalStore.get`` returns None for them).
_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


@dataclass(frozen=True)
class DirectReader:
    """Reads rows inside one chunk of one array, as ``array[...]`` returns them.

    Built by :func:`direct_reader`; ``array`` is the handle it was built from (a backend
    keeps one reader per opened array).
    """

    array: zarr.Array[Any]
    directory: str
    spec: ArraySpec
    dtype: np.dtype  # what zarr returns: the array's data type (the bytes codec may store another byte order)
    compressors: tuple[SyncCompressor, ...]  # in decoding order (the array's last codec first)
    array_bytes: BytesCodec
    chunk_rows: int
    other_axes: tuple[int, ...]  # chunk coordinates past the first: every row is in chunk (c, 0, ...)

    def rows(self, selection: int | slice | np.ndarray) -> np.ndarray | None:
        """Row ``selection`` (an int in ``[0, n)`` for an array of ``n`` rows) or rows ``selection`` (a slice of step 1
        inside one chunk) as a new array, as ``np.asarray(array[selection])`` returns them.

        Returns None when this reader does not serve the selection (an array of positions,
        a step, rows of several chunks, out of range) or the chunk has no object: the caller reads it
        through zarr.
        """
        n = int(self.array.metadata.shape[0])  # as of now: zarr updates a handle's metadata in place when it resizes
        if isinstance(selection, slice):
            start, stop, step = selection.indices(n)
            if step != 1:
                return None
        elif isinstance(selection, (int, np.integer)) and not isinstance(selection, bool):
            start = int(selection) + n if selection < 0 else int(selection)
            stop = start + 1
        else:
            return None
        if not 0 <= start < stop <= n or (stop - 1) // self.chunk_rows != start // self.chunk_rows:
            return None
        chunk = self._decoded(start // self.chunk_rows)
        if chunk is None:
            return None
        first = start - start % self.chunk_rows
        # A copy: the decoded buffer is read-only, and a view would keep the whole chunk alive.
        rows = chunk[start - first : stop - first] if isinstance(selection, slice) else chunk[start - first]
        return np.array(rows, dtype=self.dtype)

    def _decoded(self, cid: int) -> np.ndarray | None:
        """Chunk ``cid`` decoded (read-only), or None when it has no object."""
        key = self.array.metadata.encode_chunk_key((cid, *self.other_axes))
        try:
            with open(os.path.join(self.directory, key), "rb") as file:
                data = file.read()
        except _MISSING:
            return None
        buffer = self.spec.prototype.buffer.from_bytes(data)
        for codec in self.compressors:
            buffer = codec._decode_sync(buffer, self.spec)
        return self.array_bytes._decode_sync(buffer, self.spec).as_numpy_array()


def direct_reader(array: zarr.Array[Any]) -> DirectReader | None:
    """A :class:`DirectReader` for ``array``, or None when its reads must go through zarr
    (see the module's docstring for which arrays qualify)."""
    store = array.store_path.store
    metadata = array.metadata
    if type(store) is not LocalStore or metadata.zarr_format != 3 or array.ndim < 1 or array.shards is not None:
        return None
    if tuple(array.chunks[1:]) != tuple(array.shape[1:]) or 0 in array.shape[1:]:
        return None  # chunks inside rows: a row spans several chunks
    pipeline = array.async_array.codec_pipeline
    if type(pipeline) is not BatchedCodecPipeline or pipeline.array_array_codecs:
        return None
    array_bytes = pipeline.array_bytes_codec
    compressors = tuple(pipeline.bytes_bytes_codecs)
    if type(array_bytes) is not BytesCodec or not all(type(c) in SYNC_COMPRESSORS for c in compressors):
        return None
    if not all(callable(getattr(c, "_decode_sync", None)) for c in (array_bytes, *compressors)):
        return None  # a zarr older than the 3.1 this was checked with (pyproject allows 3.0.8)
    config = getattr(array.async_array, "config", None)
    if config is None or config.order != "C":
        return None
    coords = (0,) * array.ndim
    spec = metadata.get_chunk_spec(coords, config, default_buffer_prototype())
    return DirectReader(
        array=array,
        directory=os.path.join(str(store.root), array.store_path.path),
        spec=spec,
        dtype=np.dtype(spec.dtype.to_native_dtype()),
        compressors=cast(tuple[SyncCompressor, ...], compressors[::-1]),
        array_bytes=array_bytes,
        chunk_rows=int(array.chunks[0]),
        other_axes=coords[1:],
    )
