"""Compressor specifications -> zarr v3 codecs, chosen per store or per variable.

Never changes zarr's process-wide defaults: every choice is passed to ``create_array``.
"""

from __future__ import annotations

from typing import Any

from zarr.abc.codec import BytesBytesCodec
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

from storegate.errors import InvalidArgumentError

__all__ = ["CODEC_NAMES", "resolve_compressor"]


def _named() -> dict[str, BytesBytesCodec]:
    return {
        "zstd": ZstdCodec(level=3),
        "gzip": GzipCodec(level=5),
        "blosc-lz4": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        "blosc-zstd": BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
    }


CODEC_NAMES: tuple[str, ...] = ("none", "default", *_named())


def resolve_compressor(spec: object, arg: str = "compressor") -> Any:
    """Turn a compressor spec into the ``compressors`` argument of ``create_array``.

    Parameters
    ----------
    spec
        ``None`` or ``'none'`` (no compression), ``'default'`` (zarr's default, zstd),
        a codec name from :data:`CODEC_NAMES`, or a zarr v3 bytes-to-bytes codec object.
    arg
        The argument name used in error messages.

    Raises
    ------
    InvalidArgumentError
        If ``spec`` is none of the above.
    """
    if spec is None or spec == "none":
        return None
    if spec == "default":
        return "auto"
    if isinstance(spec, BytesBytesCodec):
        return spec
    if isinstance(spec, str) and spec in _named():
        return _named()[spec]
    raise InvalidArgumentError(
        f"{arg} must be None, one of {', '.join(map(repr, CODEC_NAMES))} or a zarr v3 "
        f"bytes-to-bytes codec. Got {spec!r} instead."
    )
