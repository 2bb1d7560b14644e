"""Rows of one chunk of a zarr v3 array, read and decoded in the calling thread (issue 12, items 2, 3 and 5).

zarr-python reads ``array[i]`` on its event loop: the chunk's object is read by one task and
decoded in another thread (``asyncio.to_thread``), then copied into the array it returns,
while the calling thread waits. For a 1 MiB zstd chunk on local disk that costs about
1.05 ms of CPU; reading the same file and decoding it with the same numcodecs codec in the
calling thread costs about 0.7 ms. A row read decodes a whole chunk either way, so this is
what a single-row read and a first touch of a chunk cost (benchmarks/bench_core.py (d), (e)
cold). The DataLoader reads each chunk it needs with one call, in its reader threads
(``storegate.loader.fetch_chunks``), so on S3 the requests overlap and the chunks decode
in parallel, as zarr's would.

Where the chunk's object comes from: a file of a ``LocalStore``'s folder, or the
``FsspecStore``'s own ``get`` (S3 and other fsspec URLs), waited for in the calling thread.

A zstd or blosc frame whose header states the chunk's exact decoded size (zstd's
Frame_Content_Size, which zarr's zstd codec writes; blosc's ``nbytes``) is decoded straight
into the array that is returned (numcodecs' ``decode(out=...)``, which checks that it wrote
that many bytes): no decoded copy beside it, and a read of all a chunk's rows returns that
array itself. A frame that states another size, or none, is decoded as before and its size
checked, so a short frame can never leave items unwritten.

Only zarr 3.1's public API and the zarr v3 specification are used: what the array is comes
from ``zarr.Array``'s properties (``store``, ``path``, ``shape``, ``chunks``, ``shards``,
``dtype``, ``order``, ``filters``, ``serializer``, ``compressors``) and its ``zarr.json``
document (``array.metadata.to_dict()``: chunk grid, chunk key encoding, storage
transformers); each codec is read from its specification form (``codec.to_dict()``) and
decoded with numcodecs' public codecs, the ones zarr's own codecs call. (``zarr.core.sync``
runs a store's ``get`` from a thread, as the rest of storegate does.)

:func:`direct_reader` says whether an array can be read so: a zarr v3 array in a
``LocalStore`` or ``FsspecStore`` (not a wrapper such as the journal's ``CommittedView``), a
regular chunk grid of whole rows, the default chunk key encoding, no shards, no filters, no
storage transformers, the ``bytes`` serializer of a fixed-size data type, compressors among
:data:`DECODERS` (zstd, blosc, gzip, crc32c when numcodecs has it), C order. Anything else,
and a chunk with no object (zarr returns the fill value, or raises for a lost chunk), goes
through zarr as before, so every read returns what ``array[...]`` returns. What is read is
the same object zarr would read, so a read stays checked against the commit record exactly
as before (``ZarrBackend.start_read`` / ``unchanged``).
"""

from __future__ import annotations

import gzip
import math
import os
import threading
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numcodecs
import numpy as np
import zarr
from numcodecs.abc import Codec as NumcodecsCodec
from zarr.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.errors import UnstableSpecificationWarning
from zarr.storage import FsspecStore, LocalStore

from storegate import chunk_buffers

__all__ = ["DECODERS", "DECODE_ERRORS", "DirectReader", "check_blosc_frame", "damaged_chunk", "direct_reader"]

#: zarr v3 bytes-to-bytes codecs by their specification name, and the numcodecs codec that
#: decodes them (the one zarr's own codec calls; decoding needs none of their settings).
#: numcodecs builds CRC32C only when a crc32c package is installed (zarr needs google_crc32c).
DECODERS: dict[str, Callable[[], NumcodecsCodec]] = {
    "zstd": numcodecs.Zstd,
    "blosc": numcodecs.Blosc,
    "gzip": numcodecs.GZip,
    **({"crc32c": numcodecs.CRC32C} if hasattr(numcodecs, "CRC32C") else {}),
}
#: What decoding a damaged chunk raises, through zarr or here: numcodecs' zstd, blosc and
#: crc32c errors (RuntimeError), gzip's. A damaged chunk read here raises one of them (a
#: wrong size is a RuntimeError), so a reader maps them to its own error in one place.
DECODE_ERRORS: tuple[type[Exception], ...] = (RuntimeError, EOFError, zlib.error, gzip.BadGzipFile)
#: Modules whose ValueError means a damaged chunk: zarr's crc32c codec raises one on a wrong
#: checksum, its bytes codec (through numpy) on a chunk of the wrong size.
_ZARR_CODECS = "zarr.codecs."
#: Errors a missing chunk object raises on local disk (``LocalStore.get`` returns None for them).
_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)
#: The bytes codec's ``endian`` (zarr v3 specification) as numpy's byte order.
_BYTE_ORDERS: dict[object, Literal["<", ">"]] = {"little": "<", "big": ">"}
#: numpy kinds of fixed-size data types the ``bytes`` codec stores as their raw items.
_FIXED_KINDS = frozenset("biufcmMSU")


#: Bytes of a thread's reused read buffer at most: a larger chunk object is read into a buffer
#: of its own, freed with it, so that a thread (the caller's main thread, a reader thread)
#: does not keep the largest chunk it ever read (up to 1 GiB, twice that grown) for its life.
MAX_REUSED_BYTES = 16 << 20

_buffers = threading.local()


def _read_buffer(size: int) -> memoryview:
    """This thread's buffer for a chunk's compressed bytes, of ``size`` bytes at least (a new
    one past :data:`MAX_REUSED_BYTES`)."""
    if size > MAX_REUSED_BYTES:
        return memoryview(bytearray(size))
    buffer: bytearray | None = getattr(_buffers, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _buffers.buffer = bytearray(min(max(size, 2 * len(buffer or b"")), MAX_REUSED_BYTES))
    return memoryview(buffer)[:size]


@dataclass(frozen=True)
class FolderObjects:
    """Chunk objects of an array in a local folder: one file read each."""

    directory: str

    def get(self, key: str) -> Any | None:
        """The object's bytes, or None when it has none: a view of this thread's read buffer,
        valid until its next ``get`` (so the reader threads do not allocate and free a chunk's
        compressed bytes for every read, which fragments the heap)."""
        try:
            with open(os.path.join(self.directory, key), "rb", buffering=0) as file:
                size = os.fstat(file.fileno()).st_size
                buffer = _read_buffer(size + 1)  # one byte more: a file that grew is seen as grown
                n = file.readinto(buffer)
        except _MISSING:
            return None
        if n > size:  # the file grew between fstat and read (a writer rewrote it): read it whole
            with open(os.path.join(self.directory, key), "rb") as file:
                return file.read()
        return buffer[:n]


@dataclass(frozen=True)
class StoreObjects:
    """Chunk objects of an array in an fsspec store (S3): the store's own ``get``, waited for
    in the calling thread, so that several threads fetch at once and decode in parallel."""

    store: FsspecStore
    prefix: str  # the array's path in the store, with a trailing '/'

    def get(self, key: str) -> Any | None:
        """The object's bytes (a uint8 array over zarr's buffer), or None when it has none."""
        found = sync(self.store.get(self.prefix + key, prototype=default_buffer_prototype()))
        return None if found is None else found.as_numpy_array()


@dataclass(frozen=True)
class DirectReader:
    """Reads rows inside one chunk of one array, as ``array[...]`` returns them.

    Built by :func:`direct_reader`; ``array`` is the handle it was built from (a backend
    keeps one reader per opened array).
    """

    array: zarr.Array[Any]
    objects: FolderObjects | StoreObjects
    separator: str  # of the default chunk key encoding: chunk (c, 0, 0) is 'c/<c>/0/0'
    tail: str  # the key's part past the chunk's row coordinate: '/0/0' (every row is in chunk (c, 0, ...))
    dtype: np.dtype  # what zarr returns: the array's data type
    stored: np.dtype  # the items as the bytes codec stores them (its byte order)
    decoders: tuple[NumcodecsCodec, ...]  # in decoding order (the array's last codec first)
    chunk_shape: tuple[int, ...]
    chunk_rows: int

    def rows(self, selection: int | slice | np.ndarray) -> np.ndarray | None:
        """Row ``selection`` (an int in ``[-n, n)`` for an array of ``n`` rows) or rows ``selection`` (a slice of step 1
        inside one chunk) as ``np.asarray(array[selection])`` returns them, in an array of the
        caller's own: a new one, or for all of a chunk's rows the array they were decoded into.

        Returns None when this reader does not serve the selection (an array of positions,
        a step, rows of several chunks, out of range) or the chunk has no object: the caller
        reads it through zarr.

        Raises
        ------
        RuntimeError, EOFError, zlib.error, gzip.BadGzipFile
            One of :data:`DECODE_ERRORS` when the chunk's object cannot be decoded.
        """
        n = int(self.array.shape[0])  # as of now: zarr updates a handle's metadata in place when it resizes
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
        decoded = self._decoded(start // self.chunk_rows)
        if decoded is None:
            return None
        chunk, own = decoded
        first = start - start % self.chunk_rows
        if not isinstance(selection, slice):
            return np.array(chunk[start - first], dtype=self.dtype)
        rows = chunk[start - first : stop - first]
        if own and stop - start == min(self.chunk_rows, n - first) and chunk.dtype == self.dtype:
            return rows  # all the chunk's rows, decoded into an array of this call's own: no copy
        # A copy: the decoded buffer may be read-only, and a view would keep the whole chunk alive.
        return np.array(rows, dtype=self.dtype)

    def _decoded(self, cid: int) -> tuple[np.ndarray, bool] | None:
        """Chunk ``cid`` decoded, and whether the array is this call's own (writable, no other
        reference), or None when it has no object."""
        data = self.objects.get(f"c{self.separator}{cid}{self.tail}")
        if data is None:
            return None
        expected = math.prod(self.chunk_shape) * self.stored.itemsize
        try:
            for codec in self.decoders[:-1]:
                data = codec.decode(_whole_frame(codec, data))
            if self.decoders:
                last = self.decoders[-1]
                data = _whole_frame(last, data)
                if frame_size(last, data) == expected:
                    # Straight into the chunk's array: the frame says it fills it exactly, and
                    # numcodecs checks that it did (a short frame would leave items unwritten).
                    out = chunk_buffers.empty(self.chunk_shape, self.stored)  # maybe an evicted chunk's
                    last.decode(data, out=out)
                    return out, True
                data = last.decode(data)
        except ValueError as exc:  # numcodecs' crc32c on fewer than 4 bytes: a damaged chunk too
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
        raw = memoryview(data).cast("B")
        if raw.nbytes != expected:  # zarr raises a ValueError from numpy for it
            shape, stored = self.chunk_shape, self.stored
            raise RuntimeError(f"a chunk of {shape} {stored} items holds {expected} bytes, not {raw.nbytes}")
        return np.frombuffer(raw, dtype=self.stored).reshape(self.chunk_shape), False


#: The magic number that opens a zstd frame (RFC 8878, 3.1.1), little-endian.
_ZSTD_MAGIC = 0xFD2FB528
#: Bytes of a zstd frame's Dictionary_ID field by its flag, and of its Frame_Content_Size field
#: by its flag (flag 0: 1 byte in a single-segment frame, else absent).
_ZSTD_DICT_ID_BYTES = (0, 1, 2, 4)
_ZSTD_CONTENT_SIZE_BYTES = (0, 2, 4, 8)


def frame_size(codec: NumcodecsCodec, data: Any) -> int | None:
    """The decoded size in bytes that ``data``'s own header states for ``codec``, or None when
    it states none (or ``codec`` is neither zstd nor blosc).

    zstd: the frame header's Frame_Content_Size (RFC 8878, 3.1.1.1); blosc: ``nbytes``, bytes
    4 to 7 of its 16-byte header (little-endian).
    """
    view = memoryview(data).cast("B")
    if isinstance(codec, numcodecs.Blosc):
        return int.from_bytes(view[4:8], "little") if view.nbytes >= 16 else None
    if not isinstance(codec, numcodecs.Zstd) or view.nbytes < 6:
        return None
    if int.from_bytes(view[:4], "little") != _ZSTD_MAGIC:
        return None
    descriptor = view[4]
    single_segment = (descriptor >> 5) & 1
    start = 5 + (0 if single_segment else 1) + _ZSTD_DICT_ID_BYTES[descriptor & 3]
    size = _ZSTD_CONTENT_SIZE_BYTES[descriptor >> 6] or single_segment
    if size == 0 or view.nbytes < start + size:
        return None
    value = int.from_bytes(view[start : start + size], "little")
    return value + 256 if size == 2 else value


def _whole_frame(codec: NumcodecsCodec, data: Any) -> Any:
    """``data``, checked to be one whole blosc frame when ``codec`` is Blosc.

    numcodecs' Blosc decodes as many bytes as the frame's header says, whatever the length
    of the buffer it is given: a truncated or empty object was read past its end (silently
    wrong rows: a local object's bytes past its end are those of the chunk the thread read
    before). A blosc frame's ``cbytes`` (bytes 12 to 15 of its 16-byte header, little-endian)
    is its whole length, so a frame of another length is a damaged chunk.

    Raises
    ------
    RuntimeError
        When ``data`` is shorter than a blosc header or its length is not the header's ``cbytes``.
    """
    if isinstance(codec, numcodecs.Blosc):
        check_blosc_frame(data)
    return data


def check_blosc_frame(data: Any) -> None:
    """Raise RuntimeError unless ``data`` (bytes-like) is one whole blosc frame: at least its
    16-byte header, and as long as the ``cbytes`` the header states (see :func:`_whole_frame`)."""
    view = memoryview(data).cast("B")
    stated = int.from_bytes(view[12:16], "little") if view.nbytes >= 16 else None
    if stated != view.nbytes:
        raise RuntimeError(f"a blosc frame of {view.nbytes} bytes states {stated} bytes (a truncated or damaged chunk)")


def damaged_chunk(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a read of zarr or of a :class:`DirectReader`, says a chunk's
    object cannot be decoded.

    One of :data:`DECODE_ERRORS`, or a ValueError raised inside one of zarr's codecs (a wrong
    crc32c checksum, a chunk of the wrong size): other ValueErrors of a read are not about
    the stored bytes. Inside means below a codec's frame: the bytes codec's reshape of an
    uncompressed chunk of the wrong size raises in ``zarr.core.buffer``, which it calls.
    """
    if isinstance(exc, DECODE_ERRORS):
        return True
    if not isinstance(exc, ValueError):
        return False
    traceback = exc.__traceback__
    while traceback is not None:  # from the read down to where the error was raised
        if str(traceback.tb_frame.f_globals.get("__name__", "")).startswith(_ZARR_CODECS):
            return True
        traceback = traceback.tb_next
    return False


def direct_reader(array: zarr.Array[Any]) -> DirectReader | None:
    """A :class:`DirectReader` for ``array``, or None when its reads must go through zarr.

    Parameters
    ----------
    array
        An opened zarr array (any shape, any data type).

    Returns
    -------
    DirectReader or None
        A reader when ``array`` is a zarr v3 array of a local folder or an fsspec store that the module's
        docstring lists as readable here (a storegate performance path of its own, issue 12;
        no seed system reads so); None for every other array, whose reads zarr serves.
        Looks at the array's properties and its ``zarr.json`` document only: raises nothing
        of its own.
    """
    store = array.store
    if type(store) is LocalStore:
        objects: FolderObjects | StoreObjects = FolderObjects(os.path.join(str(store.root), array.path))
    elif type(store) is FsspecStore:
        objects = StoreObjects(store, f"{array.path}/" if array.path else "")
    else:
        return None  # e.g. a wrapper such as the journal's CommittedView, or an in-memory store
    if array.ndim < 1 or array.shards is not None or array.filters:
        return None
    if tuple(array.chunks[1:]) != tuple(array.shape[1:]) or 0 in array.shape[1:] or array.order != "C":
        return None  # chunks inside rows: a row spans several chunks
    with warnings.catch_warnings():
        # str and bytes variables' fixed-length string types have no final v3 specification:
        # zarr warns when it writes their document, as storegate's writes do (README, Dtypes).
        warnings.simplefilter("ignore", UnstableSpecificationWarning)
        document = array.metadata.to_dict()  # the zarr.json document (zarr v3 specification)
    separator = _default_separator(document)
    if separator is None:
        return None
    dtype = np.dtype(array.dtype)
    stored = _stored_dtype(array.serializer, dtype)
    decoders = _decoders(array.compressors)
    if stored is None or decoders is None:
        return None
    return DirectReader(
        array=array,
        objects=objects,
        separator=separator,
        tail=(separator + "0") * (array.ndim - 1),
        dtype=dtype,
        stored=stored,
        decoders=decoders[::-1],
        chunk_shape=tuple(int(c) for c in array.chunks),
        chunk_rows=int(array.chunks[0]),
    )


def _default_separator(document: dict[str, Any]) -> str | None:
    """The separator of a zarr v3 array's default chunk key encoding; None for anything else."""
    if document.get("zarr_format") != 3 or document.get("storage_transformers"):
        return None
    grid, encoding = document.get("chunk_grid"), document.get("chunk_key_encoding")
    if not isinstance(grid, dict) or grid.get("name") != "regular" or not isinstance(encoding, dict):
        return None
    separator = (encoding.get("configuration") or {}).get("separator", "/")
    return separator if encoding.get("name") == "default" and separator in ("/", ".") else None


def _stored_dtype(serializer: Any, dtype: np.dtype) -> np.dtype | None:
    """The items as the ``bytes`` codec ``serializer`` stores ``dtype``; None for another serializer or data type."""
    spec = serializer.to_dict() if serializer is not None else None
    if not isinstance(spec, dict) or spec.get("name") != "bytes" or dtype.kind not in _FIXED_KINDS:
        return None
    endian = (spec.get("configuration") or {}).get("endian")
    if endian is None:  # one-byte items (or items with no byte order): stored as they are
        return dtype
    order = _BYTE_ORDERS.get(endian)
    return None if order is None else dtype.newbyteorder(order)


def _decoders(compressors: tuple[Any, ...]) -> tuple[NumcodecsCodec, ...] | None:
    """numcodecs decoders of zarr v3 compressors, in the array's order; None if one has none."""
    names = [c.to_dict().get("name") if callable(getattr(c, "to_dict", None)) else None for c in compressors]
    if not all(name in DECODERS for name in names):
        return None  # e.g. a numcodecs.zarr3 wrapper ('numcodecs.zstd') or a v2 compressor
    return tuple(DECODERS[str(name)]() for name in names)
