"""zarr v2 stores as multiml left them, built two ways, and helpers to look at the files.

multiml's ZarrDatabase opened ``zarr.open(output_dir, mode='a')`` with zarr-python 2: a root
group, one group per data_id holding the groups train / valid / test, and one array per
variable made by ``group.array(name, data, chunks=(1000, None, ...))`` with zarr 2's default
compressor (Blosc lz4, level 5, byte shuffle), then grown by ``append``. No attributes.

- :func:`write_zarr2_files` writes the files byte for byte as zarr-python 2.x does (its
  ``json_dumps``: sorted keys, 4-space indent; whole edge chunks padded with the fill value;
  ``dimension_separator`` only in a ``.zarray`` that zarr 2 rewrote, i.e. after an append),
  following the zarr v2 specification.
- :func:`write_with_zarr3` uses zarr-python 3's v2 writer (``zarr_format=2``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from zarr.abc.store import Store

DATA_ID = "d"
CHUNK_ROWS = 1000  # multiml's default chunk
#: zarr-python 2's default compressor, as its .zarray holds it.
BLOSC_CONFIG = {"blocksize": 0, "clevel": 5, "cname": "lz4", "id": "blosc", "shuffle": 1}
ROWS = {"train": 2500, "valid": 300, "test": 200}

Contents = dict[tuple[str, str], np.ndarray]


def contents() -> Contents:
    """What the store holds: ``x`` (N, 3) float32 and ``y`` (N,) int64 in every phase."""
    rng = np.random.default_rng(8)
    out: Contents = {}
    for phase, n in ROWS.items():
        out[(phase, "x")] = rng.normal(size=(n, 3)).astype(np.float32)
        out[(phase, "y")] = rng.integers(0, 10, n)
    return out


def _zarr2_json(document: dict[str, Any]) -> bytes:
    """zarr-python 2's ``zarr.util.json_dumps``."""
    return json.dumps(document, indent=4, sort_keys=True, ensure_ascii=True, separators=(",", ": ")).encode("ascii")


def _zarr2_array(folder: Path, data: np.ndarray, appended: bool) -> None:
    chunks = (CHUNK_ROWS, *data.shape[1:])
    fill = 0.0 if data.dtype.kind == "f" else 0  # zarr 2's encode_fill_value
    meta: dict[str, Any] = {
        "chunks": list(chunks),
        "compressor": BLOSC_CONFIG,
        "dtype": data.dtype.str,
        "fill_value": fill,
        "filters": None,
        "order": "C",
        "shape": list(data.shape),
        "zarr_format": 2,
    }
    if appended:  # zarr 2 writes the separator when it rewrites .zarray (append, resize)
        meta["dimension_separator"] = "."
    folder.mkdir(parents=True)
    (folder / ".zarray").write_bytes(_zarr2_json(meta))
    codec = numcodecs.get_codec(BLOSC_CONFIG)
    for i, start in enumerate(range(0, data.shape[0], CHUNK_ROWS)):
        block = np.zeros(chunks, dtype=data.dtype)  # an edge chunk is stored whole
        piece = data[start : start + CHUNK_ROWS]
        block[: len(piece)] = piece
        key = ".".join([str(i)] + ["0"] * (data.ndim - 1))
        (folder / key).write_bytes(codec.encode(np.ascontiguousarray(block)))


def write_zarr2_files(root: Path) -> Contents:
    """The store multiml wrote with zarr-python 2, file by file (train's arrays were appended to)."""
    data = contents()
    group = _zarr2_json({"zarr_format": 2})
    for folder in (root, root / DATA_ID, *(root / DATA_ID / p for p in ROWS)):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".zgroup").write_bytes(group)
    for (phase, var), array in data.items():
        _zarr2_array(root / DATA_ID / phase / var, array, appended=phase == "train")
    return data


def write_with_zarr3(store: str | Store) -> Contents:
    """The same store written by zarr-python 3's v2 writer."""
    data = contents()
    root = zarr.open_group(store=store, mode="w", zarr_format=2)
    for phase in ROWS:
        root.require_group(DATA_ID).require_group(phase)
    for (phase, var), array in data.items():
        chunks = (CHUNK_ROWS, *array.shape[1:])
        target = root[f"{DATA_ID}/{phase}"].create_array(
            var, shape=array.shape, chunks=chunks, dtype=array.dtype, compressors=numcodecs.Blosc()
        )
        target[...] = array
    return data


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes, by relative path (not storegate's locks and commit records)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not str(p.relative_to(root)).startswith(".storegate/")
    }


def metadata_names(keys: Any) -> set[str]:
    """The names of the metadata documents among ``keys`` (paths), e.g. {'.zgroup', '.zarray'}."""
    names = {str(key).rsplit("/", 1)[-1] for key in keys}
    return names & {"zarr.json", ".zgroup", ".zarray", ".zattrs", ".zmetadata"}
