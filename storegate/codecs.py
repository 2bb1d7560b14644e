"""Compressors and codec pipelines, chosen per store or per variable.

Nothing here changes zarr's process-wide defaults: a compressor is passed to
``create_array`` and the ``zarrs`` codec pipeline is switched on only while one store
opens one array (zarr binds the pipeline to the array object when it is created).

Compressor forms accepted by :func:`resolve_compressor`:

- ``None`` or ``'none'``: no compression.
- ``'default'``: storegate's default, :data:`DEFAULT_COMPRESSOR` (not zarr's configurable
  default, so a store never depends on a global setting).
- a name from :data:`CODEC_NAMES`. ``'lz4'`` is LZ4 inside Blosc without byte shuffle,
  because numcodecs' bare LZ4 codec is not in the zarr v3 specification (zarr warns that
  other implementations may not read it); ``'blosc-lz4'`` adds the byte shuffle.
- matorage's / PyTables' ``{'complevel': 0-9, 'complib': ...}``: see :data:`COMPLIBS`.
  ``complevel`` 0 means no compression, as in PyTables.
- a zarr v3 bytes-to-bytes codec object (``zarr.codecs.ZstdCodec(level=5)``...) or a
  list / tuple of them.
- a numcodecs ``Zstd``, ``Blosc`` or ``GZip`` object, as multiml's ``compressor`` took
  (it set zarr 2's global default; here it is the store's or the variable's codec).

A zarr v2 store (written by multiml with zarr-python 2) keeps its format: its new arrays
get the numcodecs compressor equivalent to the chosen codec (:func:`v2_compressor`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numcodecs
import zarr
from numcodecs.abc import Codec as NumcodecsCodec
from zarr.abc.codec import BytesBytesCodec
from zarr.codecs import BloscCname, BloscCodec, BloscShuffle, GzipCodec, ZstdCodec

from storegate.errors import InvalidArgumentError, StoreGateError

__all__ = [
    "CODEC_NAMES",
    "COMPLIBS",
    "DEFAULT_COMPRESSOR",
    "DEFAULT_PIPELINE",
    "PIPELINES",
    "Compressors",
    "check_pipeline",
    "force_default_pipeline",
    "pipeline_scope",
    "resolve_compressor",
    "v2_compressor",
    "zarrs_available",
    "zarrs_in_use",
]

Compressors = tuple[BytesBytesCodec, ...]

#: What ``compressor='default'`` means. From bench_codecs (benchmarks/RESULTS.md), on
#: normalised 8-bit images stored as float32: zstd stores them 2.9x smaller (gzip: the same
#: size at a third of zstd's write speed and half its read speed; lz4 and the Blosc codecs
#: 1.2 to 1.3x), and costs about 4x the CPU of no compression to read. Data written once and
#: read by many jobs from S3 or a NAS move fewer bytes; pick 'lz4' or 'none' for CPU-bound
#: loaders on local disk.
DEFAULT_COMPRESSOR = "zstd"

_NAMED: dict[str, Callable[[], BytesBytesCodec]] = {
    "zstd": lambda: ZstdCodec(level=3),
    "lz4": lambda: BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle"),
    "blosc-lz4": lambda: BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    "blosc-zstd": lambda: BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
    "gzip": lambda: GzipCodec(level=5),
}
CODEC_NAMES: tuple[str, ...] = ("none", "default", *_NAMED)

# PyTables' complib names -> a zarr v3 codec at ``complevel``. zlib data in a gzip frame is
# the zarr v3 equivalent of zlib; 'blosc' alone is Blosc's own blosclz with shuffle, as in
# PyTables, and 'blosc:<name>' picks Blosc's inner compressor.
# snappy is in the Blosc spec but not in the Blosc that numcodecs builds.
_BLOSC_CNAMES: tuple[BloscCname, ...] = tuple(c for c in BloscCname if c.value != "snappy")


def _blosc(cname: BloscCname, level: int) -> BytesBytesCodec:
    return BloscCodec(cname=cname, clevel=level, shuffle="shuffle")


COMPLIBS: dict[str, Callable[[int], BytesBytesCodec]] = {
    "zlib": lambda level: GzipCodec(level=level),
    "blosc": partial(_blosc, BloscCname.blosclz),
    **{f"blosc:{cname.value}": partial(_blosc, cname) for cname in _BLOSC_CNAMES},
}
#: PyTables complibs with no zarr v3 codec: named in the error message.
_NO_ZARR_V3 = ("lzo", "bzip2")


def resolve_compressor(spec: object, arg: str = "compressor") -> Compressors:
    """Turn a compressor spec into the ``compressors`` argument of ``create_array``.

    Parameters
    ----------
    spec
        Any form listed in the module docstring.
    arg
        The argument name used in error messages.

    Returns
    -------
    tuple of BytesBytesCodec
        Empty for no compression.

    Raises
    ------
    InvalidArgumentError
        If ``spec`` is none of the accepted forms; the message lists them.
    """
    if spec is None or spec == "none":
        return ()
    if isinstance(spec, str):
        return _named(spec, arg)
    if isinstance(spec, dict):
        return _from_complib(spec, arg)
    if isinstance(spec, BytesBytesCodec):
        return (spec,)
    if isinstance(spec, (list, tuple)) and all(isinstance(c, BytesBytesCodec) for c in spec):
        return tuple(spec)
    if isinstance(spec, numcodecs.abc.Codec) and spec.codec_id in _FROM_NUMCODECS:
        return (_FROM_NUMCODECS[spec.codec_id](spec.get_config()),)
    raise InvalidArgumentError(
        f"{arg} must be None, one of {', '.join(map(repr, CODEC_NAMES))}, a dict "
        "{'complevel': 0-9, 'complib': ...}, a zarr v3 bytes-to-bytes codec (e.g. "
        "zarr.codecs.ZstdCodec()) or a numcodecs Zstd, Blosc or GZip. "
        f"Got {spec!r} of type {type(spec).__name__} instead."
    )


def _named(name: str, arg: str) -> Compressors:
    key = DEFAULT_COMPRESSOR if name == "default" else name
    if key not in _NAMED:
        raise InvalidArgumentError(f"{arg} must be one of {', '.join(map(repr, CODEC_NAMES))}. Got {name!r} instead.")
    return (_NAMED[key](),)


def _from_complib(spec: dict[Any, Any], arg: str) -> Compressors:
    unknown = set(spec) - {"complevel", "complib"}
    if unknown:
        raise InvalidArgumentError(
            f"{arg} as a dict takes the keys 'complevel' and 'complib'. Got the keys {sorted(map(str, spec))} instead."
        )
    complib = spec.get("complib", "zlib")  # matorage's defaults
    level = spec.get("complevel", 0)
    if complib not in COMPLIBS:
        missing = f" ({', '.join(_NO_ZARR_V3)} have no zarr v3 codec)" if complib in _NO_ZARR_V3 else ""
        raise InvalidArgumentError(
            f"{arg}['complib'] must be one of {', '.join(map(repr, COMPLIBS))}{missing}. Got {complib!r} instead."
        )
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 9:
        raise InvalidArgumentError(f"{arg}['complevel'] must be an int from 0 to 9. Got {level!r} instead.")
    return () if level == 0 else (COMPLIBS[complib](level),)


#: numcodecs' Blosc shuffle numbers, by zarr v3's names.
_V2_SHUFFLE = {
    "noshuffle": numcodecs.Blosc.NOSHUFFLE,
    "shuffle": numcodecs.Blosc.SHUFFLE,
    "bitshuffle": numcodecs.Blosc.BITSHUFFLE,
}


def v2_compressor(compressors: Compressors, arg: str = "compressor") -> NumcodecsCodec | None:
    """The zarr v2 (numcodecs) compressor that stores data as ``compressors`` would in zarr v3.

    Parameters
    ----------
    compressors
        What :func:`resolve_compressor` returned.
    arg
        The argument name used in error messages.

    Returns
    -------
    numcodecs.abc.Codec or None
        ``numcodecs.Zstd``, ``numcodecs.Blosc`` or ``numcodecs.GZip`` with the same
        settings; ``None`` for no compression.

    Raises
    ------
    InvalidArgumentError
        If zarr v2 cannot hold them: more than one codec (a v2 array has one compressor),
        or a codec other than zstd, Blosc and gzip.
    """
    if not compressors:
        return None
    if len(compressors) > 1:
        raise InvalidArgumentError(
            f"{arg} must be one codec for a zarr v2 store (a v2 array has one compressor). Got "
            f"{len(compressors)} codecs instead: {list(compressors)}. Choose one, or convert the store to "
            "zarr v3 with storegate.convert_to_v3."
        )
    codec = compressors[0]
    if isinstance(codec, ZstdCodec):
        return numcodecs.Zstd(level=codec.level, checksum=codec.checksum)
    if isinstance(codec, GzipCodec):
        return numcodecs.GZip(level=codec.level)
    if isinstance(codec, BloscCodec):
        shuffle = _V2_SHUFFLE[BloscShuffle(codec.shuffle).value]
        return numcodecs.Blosc(cname=codec.cname.value, clevel=codec.clevel, shuffle=shuffle, blocksize=codec.blocksize)
    raise InvalidArgumentError(
        f"{arg} must have a zarr v2 equivalent (zstd, Blosc or gzip) in a zarr v2 store. Got {codec!r} instead. "
        "Choose one of those, or convert the store to zarr v3 with storegate.convert_to_v3."
    )


def _blosc_from_v2(config: dict[str, Any]) -> BytesBytesCodec:
    shuffle = BloscShuffle({v: k for k, v in _V2_SHUFFLE.items()}[config.get("shuffle", 1)])
    return BloscCodec(
        cname=config["cname"], clevel=config["clevel"], shuffle=shuffle, blocksize=config.get("blocksize", 0)
    )


#: numcodecs compressors (multiml's ``compressor`` backend_arg) and their zarr v3 codec.
_FROM_NUMCODECS: dict[str, Callable[[dict[str, Any]], BytesBytesCodec]] = {
    "zstd": lambda c: ZstdCodec(level=c.get("level", 0), checksum=c.get("checksum", False)),
    "gzip": lambda c: GzipCodec(level=c.get("level", 1)),
    "blosc": _blosc_from_v2,
}


# --- codec pipelines --------------------------------------------------------------------

#: ``codec_pipeline`` values: zarr's configured pipeline, or the Rust ``zarrs`` pipeline.
PIPELINES: tuple[str, ...] = ("default", "zarrs")
#: zarr's own pipeline. bench_codecs measures zarrs at 1.6 to 2.3x less CPU per MiB on raw
#: data and 1.2 to 1.7x on zstd, but zarrs can deadlock in forked DataLoader workers
#: (zarrs-python issue 171) and on S3 falls back to zarr's pipeline anyway, so it stays an
#: opt-in per store (``codec_pipeline='zarrs'``), e.g. for preprocessing on local disk or a NAS.
DEFAULT_PIPELINE = "default"
_ZARRS_PATH = "zarrs.ZarrsCodecPipeline"
_ZARR_PATH = "zarr.core.codec_pipeline.BatchedCodecPipeline"
_state = {"forced_default": False, "zarrs_used": False}


def zarrs_available() -> bool:
    """True when the optional ``zarrs`` package (``pip install 'storegate[zarrs]'``) imports."""
    try:
        import zarrs  # noqa: F401
    except ImportError:
        return False
    return True


def check_pipeline(name: object, arg: str = "codec_pipeline") -> str:
    """Validate a ``codec_pipeline`` value.

    Raises
    ------
    InvalidArgumentError
        If ``name`` is not in :data:`PIPELINES`.
    StoreGateError
        If ``name`` is ``'zarrs'`` and the package is not installed.
    """
    if name not in PIPELINES:
        raise InvalidArgumentError(f"{arg} must be one of {PIPELINES}. Got {name!r} instead.")
    if name == "zarrs" and not zarrs_available():
        raise StoreGateError(f"{arg}='zarrs' needs the zarrs package: pip install 'storegate[zarrs]'.")
    return str(name)


@contextlib.contextmanager
def pipeline_scope(name: str) -> Iterator[None]:
    """Open or create arrays inside this block to give them pipeline ``name``.

    zarr reads ``codec_pipeline.path`` when it builds an array object and keeps that
    pipeline for the object's life, so the setting is needed only while arrays are opened.
    The config is restored on exit. zarrs handles local stores; on other stores (S3) it
    falls back to zarr's own pipeline by itself.
    """
    if name != "zarrs" or _state["forced_default"]:
        yield
        return
    _state["zarrs_used"] = True
    with zarr.config.set({"codec_pipeline.path": _ZARRS_PATH}):
        yield


def force_default_pipeline() -> None:
    """Never use the zarrs pipeline in this process from now on.

    Call it in a torch DataLoader ``worker_init_fn``: zarrs can deadlock in a forked
    worker once the parent process has decoded anything with it (zarrs-python issue 171).
    Stores opened afterwards in this process use zarr's own pipeline whatever their
    ``codec_pipeline``; if zarr's global config names zarrs (set by the user), it is
    reset to zarr's own pipeline, in this process only.
    """
    _state["forced_default"] = True
    if zarr.config.get("codec_pipeline.path") == _ZARRS_PATH:
        zarr.config.set({"codec_pipeline.path": _ZARR_PATH})


def zarrs_in_use() -> bool:
    """True when arrays in this process may use zarrs: storegate opened one with it, or
    zarr's global config names it. A forked worker of such a process should call
    :func:`force_default_pipeline` (or the loader should use the 'spawn' start method).
    """
    if _state["forced_default"]:
        return False
    return _state["zarrs_used"] or zarr.config.get("codec_pipeline.path") == _ZARRS_PATH
