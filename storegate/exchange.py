"""Import external files into a store, and export variables back out (DataStack's connectors).

:func:`import_file` brings ``.npy``, ``.npz``, HDF5 (``.h5`` / ``.hdf5``) and CSV / TSV
files into variables of a data_id and phase (or a split), from a local path or any fsspec
URL (``http(s)://``, ``s3://``...). The file is read whole and, when the caller gives a
SHA-256, checked before anything is written; the variables are then added in one call
(appended when they exist, as ``add_data`` does), and the same transaction records where
each came from under the data_id's *sources* (:meth:`StoreGate.get_sources`): the URL, its
size in bytes, its SHA-256, the format, the key inside the file and the rows it added to
each phase. A variable's sources go when the variable is deleted; later writes (updates,
astype, shuffles) leave them as they were: they say where rows came from, not that the
variable still equals the file.

:func:`export_file` writes variables to ``.npz`` or HDF5, locally or to an fsspec URL,
through a temporary file, so a failed export leaves nothing at the destination.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import fsspec.implementations.local
import numpy as np
from tqdm.auto import tqdm

from storegate.engine import GroupEngine
from storegate.errors import InvalidArgumentError, NotFoundError, StorageError, ValidationError
from storegate.names import OFFSETS, VALUES, VarNames, parse_var_names
from storegate.phases import ALL, PHASES, phases_of
from storegate.rules import common_length, optional_module
from storegate.splits import SplitSpec
from storegate.steps import Plan

__all__ = [
    "FOLDER",
    "FORMATS",
    "Source",
    "export_file",
    "file_format",
    "import_file",
    "is_folder",
    "parse",
    "read_folder",
    "read_source",
]

#: The format of a folder of ``.npy`` files, one row each (a ragged variable).
FOLDER = "npy-folder"
#: File formats by suffix.
FORMATS = {".npy": "npy", ".npz": "npz", ".h5": "hdf5", ".hdf5": "hdf5", ".csv": "csv", ".tsv": "tsv"}
_READ_BLOCK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Source:
    """A file read whole (its bytes), or a folder of ``.npy`` files (its rows): where it came
    from, its size in bytes and its SHA-256 (a folder's: see :func:`read_folder`)."""

    url: str
    data: bytes
    sha256: str
    size: int
    rows: tuple[np.ndarray, ...] = ()


def read_source(
    url: str | os.PathLike[str],
    sha256: str | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool = False,
) -> Source:
    """Read a local file or an fsspec URL whole, and check its SHA-256 when one is given.

    Raises
    ------
    InvalidArgumentError
        If ``sha256`` is not 64 hex digits.
    NotFoundError
        If nothing lies at ``url``.
    ValidationError
        If the bytes read do not have the SHA-256 given.
    StorageError
        If the file cannot be read.
    """
    text = _where(url)
    expected = _check_sha256(sha256)
    digest, out = hashlib.sha256(), io.BytesIO()
    try:
        with fsspec.open(text, "rb", **(storage_options or {})) as handle, _bar(progress, text) as bar:
            while block := handle.read(_READ_BLOCK):
                digest.update(block)
                out.write(block)
                bar.update(len(block))
    except FileNotFoundError as exc:
        raise NotFoundError(f"source must name a file that exists. Got {text!r}, where there is none.") from exc
    except (OSError, ValueError) as exc:  # aiohttp's errors are OSErrors; fsspec raises ValueError for bad URLs
        raise StorageError(f"reading the source {text!r} failed ({type(exc).__name__}: {exc}).") from exc
    found = digest.hexdigest()
    if expected is not None and found != expected:
        raise ValidationError(
            f"source {text!r} must have the SHA-256 given, {expected}. Got {found} ({out.tell()} bytes) instead: "
            "the file changed or is not the one meant. Nothing was written."
        )
    return Source(text, out.getvalue(), found, out.tell())


def is_folder(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> bool:
    """True when ``url`` names a folder (a local directory or an fsspec prefix holding objects)."""
    try:
        fs, path = fsspec.core.url_to_fs(os.fspath(url), **(storage_options or {}))
        return bool(fs.isdir(path))
    except (OSError, ValueError):  # unreachable or unknown: read_source says why
        return False


def read_folder(
    url: str | os.PathLike[str],
    sha256: str | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool = False,
) -> Source:
    """The ``.npy`` files of a folder, sorted by name, as the rows of one ragged variable (lardon's layout).

    Each file is one row ``(L_i, *inner)``. The folder's SHA-256 is that of its manifest: one
    line ``'<file name>\t<SHA-256 of the file>\n'`` per file, in name order (``sha256sum``'s
    hashes, so it can be computed without storegate); a ``sha256`` given is checked against it
    before anything is written.

    Raises
    ------
    NotFoundError
        If the folder holds no ``.npy`` file.
    ValidationError
        If the manifest does not have the SHA-256 given, or a file is no ``.npy`` array.
    """
    text = _where(url).rstrip("/")
    expected = _check_sha256(sha256)
    fs, path = fsspec.core.url_to_fs(text, **(storage_options or {}))
    files = sorted(f for f in fs.ls(path, detail=False) if str(f).endswith(".npy"))
    if not files:
        raise NotFoundError(
            f"source must be a folder holding .npy files (one row each). Got {text!r}, which holds none."
        )
    manifest, rows, size = hashlib.sha256(), [], 0
    for name in tqdm(files, desc=f"reading {text}", unit=" files", disable=None if progress else True):
        data = fs.cat_file(name)
        size += len(data)
        manifest.update(f"{Path(str(name)).name}\t{hashlib.sha256(data).hexdigest()}\n".encode())
        try:
            rows.append(np.load(io.BytesIO(data), allow_pickle=False))
        except ValueError as exc:
            raise ValidationError(f"file {name!r} of source {text!r} must be a .npy array ({exc}).") from exc
    found = manifest.hexdigest()
    if expected is not None and found != expected:
        raise ValidationError(
            f"source {text!r} must have the SHA-256 given, {expected} (of its manifest: one 'name<TAB>sha256' line per "
            f".npy file, in name order). Got {found} ({len(files)} files) instead. Nothing was written."
        )
    return Source(text, b"", found, size, tuple(rows))


def _where(url: str | os.PathLike[str]) -> str:
    """A URL as given; a local path made absolute (the sources record it for later)."""
    text = os.fspath(url)
    return text if "://" in text else os.path.abspath(text)


def _check_sha256(sha256: object) -> str | None:
    if sha256 is None:
        return None
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256.lower()):
        raise InvalidArgumentError(f"sha256 must be 64 hexadecimal digits (or None). Got {sha256!r} instead.")
    return sha256.lower()


def _bar(progress: bool, what: str) -> Any:
    return tqdm(desc=f"reading {what}", unit="B", unit_scale=True, disable=None if progress else True)


# --- parsing -------------------------------------------------------------------------


def file_format(url: str, format: str | None = None) -> str:
    """The format of ``url`` from its suffix, or ``format`` when given."""
    if format is not None:
        if format not in set(FORMATS.values()):
            raise InvalidArgumentError(
                f"format must be one of {sorted(set(FORMATS.values()))} (or None: from the suffix). Got {format!r}."
            )
        return format
    suffix = Path(url.split("?", 1)[0]).suffix.lower()
    if suffix not in FORMATS:
        raise InvalidArgumentError(
            f"source must end in one of {sorted(FORMATS)} to tell its format. Got {url!r}: pass format=... "
            "to say what it holds."
        )
    return FORMATS[suffix]


def parse(source: Source, format: str, keys: Sequence[str] | None) -> dict[str, np.ndarray]:
    """The arrays a file holds, by key (an npz member, an HDF5 dataset, a CSV column, 'data' for npy)."""
    try:
        found: dict[str, np.ndarray] = _READERS[format](source.data)
    except (ValueError, OSError, KeyError, EOFError, IndexError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValidationError(
            f"source {source.url!r} must be a valid {format} file. Got one that cannot be read "
            f"({type(exc).__name__}: {exc})."
        ) from exc
    if keys is not None:
        missing = [k for k in keys if k not in found]
        if missing:
            raise NotFoundError(f"keys {missing} must be in source {source.url!r}. It holds {sorted(found)}.")
        found = {k: found[k] for k in keys}
    if not found:
        raise ValidationError(f"source {source.url!r} must hold at least one array to import. Got none.")
    scalars = [k for k, v in found.items() if v.ndim == 0]
    if scalars:  # a sample rate, a version: no rows to add
        raise InvalidArgumentError(
            f"every array imported must have rows (a leading axis). Got 0-d arrays {scalars} in source "
            f"{source.url!r}: leave them out with keys=[...] (the others: {sorted(set(found) - set(scalars))})."
        )
    return found


def _npy(data: bytes) -> dict[str, np.ndarray]:
    return {"data": np.load(io.BytesIO(data), allow_pickle=False)}


def _npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def _hdf5(data: bytes) -> dict[str, np.ndarray]:
    h5py = _h5py()
    found: dict[str, np.ndarray] = {}
    with h5py.File(io.BytesIO(data), "r") as f:

        def visit(name: str, node: Any) -> None:
            if isinstance(node, h5py.Dataset):
                found[name] = np.asarray(node[()])

        f.visititems(visit)
    return found


def _table(delimiter: str) -> Any:
    def read(data: bytes) -> dict[str, np.ndarray]:
        text = data.decode("utf-8-sig")  # a byte-order mark is no part of the first name
        if '"' in text:
            raise ValueError(
                "it must hold no quoted fields (numpy's reader splits them at the delimiter). Got quotes: "
                "convert the file first (e.g. pandas.read_csv(...).to_numpy() per column, then .npy files)"
            )
        if not text.strip():
            raise ValueError("it is empty: it must hold a header row and at least one row of data")
        no_comments: dict[str, Any] = {"comments": None}  # '#' is data in a CSV, not the start of a comment
        table = np.genfromtxt(
            io.StringIO(text), delimiter=delimiter, names=True, dtype=None, deletechars="", usemask=True, **no_comments
        )
        names = table.dtype.names or ()
        numeric = [n for n in names if _is_number(n)]
        if names and len(numeric) == len(names):  # genfromtxt took the first data row for the header
            raise ValueError(
                f"its first row must name the columns. Got numbers {list(names)[:5]}: add a header row "
                "(one name per column)"
            )
        if not names or table.size == 0:
            raise ValueError("it must hold a header row and at least one row of data. Got none")
        out = {}
        for name in names:
            column = np.atleast_1d(table[name])
            if np.ma.is_masked(column):  # genfromtxt would fill -1 (ints) or nan (floats) without a word
                raise ValueError(f"column {name!r} must have a value in every row. Got empty fields")
            out[name] = np.asarray(column.data).copy()
        return out

    return read


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_READERS = {"npy": _npy, "npz": _npz, "hdf5": _hdf5, "csv": _table(","), "tsv": _table("\t")}


def _h5py() -> Any:
    return optional_module("h5py", "reading and writing HDF5 files", "pip install h5py")


# --- importing -----------------------------------------------------------------------


def exported_layout(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Arrays as :func:`export_file` wrote them, back to variables: each ragged pair
    ``'<var>@values'`` / ``'<var>@offsets'`` folded into the variable's rows (keys keep their
    ``'<phase>/'``)."""
    out: dict[str, Any] = {}
    for key, array in arrays.items():
        if key.endswith(OFFSETS) and key[: -len(OFFSETS)] + VALUES in arrays:
            continue
        if key.endswith(VALUES) and key[: -len(VALUES)] + OFFSETS in arrays:
            base, ends = key[: -len(VALUES)], arrays[key[: -len(VALUES)] + OFFSETS]
            if ends.ndim != 1 or (ends.size and (np.any(np.diff(ends) < 0) or ends[-1] != array.shape[0])):
                raise ValidationError(
                    f"{base + OFFSETS!r} must hold the end offset of each row of {key!r} (non-decreasing, the last "
                    f"one {array.shape[0]}). Got {ends[:5]!r}... instead: the file is no storegate export."
                )
            out[base] = [array[a:b] for a, b in zip(np.r_[0, ends[:-1]], ends, strict=True)]
            continue
        out[key] = array
    return out


def phase_of_key(key: str) -> tuple[str | None, str]:
    """``('train', 'x')`` for ``'train/x'`` (an export of every phase), ``(None, key)`` otherwise."""
    head, sep, rest = key.partition("/")
    return (head, rest) if sep and head in PHASES else (None, key)


def chosen_names(keys: list[str], var_names: object, url: str, format: str) -> dict[str, str]:
    """The var_name of each key: ``var_names`` as a str (one key), a list (one per key), a dict
    (key -> name), or None: the file's stem for ``.npy``, the name after its phase for a key
    ``'<phase>/<name>'``, else the key with '/' as '_'."""
    if var_names is None:
        stem = Path(url.split("?", 1)[0]).stem
        return {k: stem if format == "npy" else phase_of_key(k)[1].replace("/", "_") for k in keys}
    if isinstance(var_names, str) and len(keys) == 1:
        return {keys[0]: var_names}
    if isinstance(var_names, (list, tuple)) and len(var_names) == len(keys):
        return dict(zip(keys, var_names, strict=True))
    if isinstance(var_names, dict) and set(var_names) <= set(keys):
        return {k: var_names.get(k, chosen_names([k], None, url, format)[k]) for k in keys}
    raise InvalidArgumentError(
        f"var_names must be None, a str (for one array), a list of {len(keys)} names or a dict from some of the "
        f"keys imported {keys} to a name. Got {var_names!r:.120} instead."
    )


def import_file(
    engine: GroupEngine,
    source: Source,
    format: str,
    var_names: dict[str, str],
    arrays: dict[str, Any],
    phase: str | SplitSpec | None,
) -> dict[str, list[dict[str, Any]]]:
    """Add ``arrays`` (by key) as variables (``var_names[key]``) in one transaction with their sources.

    Keys ``'<phase>/<name>'`` (an export of every phase) go to their phase; ``phase`` (None:
    ``'train'``) takes the others. Returns the source records written, by ``'<phase>/<var>'``.
    """
    groups: dict[str | SplitSpec, list[str]] = {}
    for key in arrays:
        own = phase_of_key(key)[0]
        if own is not None and phase is not None:
            raise InvalidArgumentError(
                f"phase must be left out for a file whose keys name their phase (an export of every phase). Got "
                f"phase={phase!r} and key {key!r}: leave phase out, or pick keys=[...] without a phase."
            )
        groups.setdefault(own if own is not None else (phase if phase is not None else "train"), []).append(key)
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {"source": source.url, "bytes": source.size, "sha256": source.sha256, "format": format}
    parts = []
    for spec, keys in groups.items():
        names = parse_var_names([var_names[k] for k in keys])
        # A folder's rows, or an exported ragged variable (a list of rows), are ragged rows; arrays are
        # checked as add_data checks them, and the variables of a phase must have one number of rows.
        pieces = [
            VarNames((var,), "str").split(arrays[k], ragged=format == FOLDER or isinstance(arrays[k], list))[0]
            for k, var in zip(keys, names.names, strict=True)
        ]
        lengths = {var: p.shape[0] for var, p in zip(names.names, pieces, strict=True)}
        common_length(lengths, f"the arrays of {source.url!r} imported into one phase")
        parts.append((spec, keys, names, pieces))
    written: dict[str, list[dict[str, Any]]] = {}

    def make_plan() -> Any:
        plan = Plan()
        written.clear()
        for spec, keys, names, pieces in parts:
            plan.extend(engine.plan_add(names, pieces, spec, {}))
            for p, split in engine.split(pieces, spec, names).items():
                for key, var, part in zip(keys, names.names, split, strict=True):
                    if part.shape[0]:
                        written[f"{p}/{var}"] = [{**record, "key": key, "rows": int(part.shape[0]), "imported": when}]
        if written:
            plan.add(engine.sources_step(lambda now: _added(now, written)))
        return plan

    engine.apply(make_plan)
    return written


def _added(sources: dict[str, Any], new: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {**sources, **{k: [*sources.get(k, []), *v] for k, v in new.items()}}


# --- exporting -----------------------------------------------------------------------


def export_file(
    engine: GroupEngine,
    destination: str | os.PathLike[str],
    var_names: Sequence[str] | None,
    phase: str,
    storage_options: dict[str, Any] | None = None,
    progress: bool = False,
) -> list[str]:
    """Write variables of ``phase`` (every phase for ``'all'``) to an ``.npz`` or HDF5 file.

    Keys are ``'<var>'`` for one phase and ``'<phase>/<var>'`` for ``'all'`` (the phases
    kept apart, as in the store). Returns the keys written.
    """
    target = os.fspath(destination)
    format = file_format(target)
    if format not in ("npz", "hdf5"):
        raise InvalidArgumentError(f"destination must end in .npz, .h5 or .hdf5. Got {target!r} instead.")
    items = list(_items(engine, var_names, phase))
    try:
        fs, path = fsspec.core.url_to_fs(target, **(storage_options or {}))
    except (ValueError, ImportError) as exc:  # an unknown protocol, or its package missing
        raise InvalidArgumentError(f"destination must be a path or an fsspec URL. Got {target!r} ({exc}).") from exc
    local = isinstance(fs, fsspec.implementations.local.LocalFileSystem)
    # Written beside the destination (local) or in a temporary folder (remote), then moved into
    # place at once: a failed or killed export leaves any earlier file as it was.
    folder = os.path.dirname(path) if local else None
    if folder:
        os.makedirs(folder, exist_ok=True)
    handle, scratch = tempfile.mkstemp(prefix=".storegate-export-", suffix=Path(path).suffix, dir=folder)
    os.close(handle)
    try:
        with tqdm(
            total=len(items), desc=f"exporting to {target}", unit=" variables", disable=None if progress else True
        ) as bar:
            _write(Path(scratch), format, items, lambda p, var: engine.read(p, var, None), bar)
        if local:
            os.replace(scratch, path)
        else:
            fs.put_file(scratch, path)  # one object write: it appears whole or not at all
    except (OSError, TypeError, ValueError) as exc:  # TypeError: a dtype HDF5 cannot hold (str, datetime)
        raise StorageError(
            f"writing {target!r} failed ({type(exc).__name__}: {exc}); an earlier file there was left as it was."
        ) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)
    return [key for key, _, _ in items]


def _items(engine: GroupEngine, var_names: Sequence[str] | None, phase: str) -> Iterator[tuple[str, str, str]]:
    """``(key, phase, stored array)`` of every variable to export, checked before anything is written.

    A ragged variable is written as its two stored arrays, ``'<var>@values'`` and
    ``'<var>@offsets'`` (each row's end offset), as the store holds them.
    """
    chosen = list(var_names) if var_names is not None else None
    for var in chosen or []:
        engine.require(phase, var)
    for p in phases_of(phase):
        for var in engine.var_names(p):
            if chosen is not None and var not in chosen:
                continue
            stored = [var + VALUES, var + OFFSETS] if engine.is_ragged(p, var) else [var]
            for name in stored:
                yield (f"{p}/{name}" if phase == ALL else name), p, name


def _write(path: Path, format: str, items: list[tuple[str, str, str]], read: Any, bar: Any) -> None:
    """Each variable read whole (one at a time for HDF5), written under its key."""
    if format == "npz":
        arrays = {}
        for key, p, var in items:
            arrays[key] = read(p, var)
            bar.update(1)
        np.savez(path, **arrays)
        return
    h5py = _h5py()
    with h5py.File(path, "w") as f:
        for key, p, var in items:
            f.create_dataset(key, data=read(p, var))
            bar.update(1)
