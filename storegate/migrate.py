"""Convert a zarr v2 store (as multiml wrote them) to zarr v3, in place and checked.

zarr-python's own migration (:mod:`zarr.metadata.migrate_v3`) does the conversion: it
writes a v3 ``zarr.json`` beside the v2 metadata of every group and array, naming the
existing chunks with v2's chunk key encoding, so no chunk is copied or rewritten. storegate
adds what makes it safe to run on a store that matters:

1. every array is first converted in a dry run, so an array zarr cannot convert is named
   before anything is written;
2. after the v3 metadata is written, every array is read both ways (v2 and v3) and
   compared, chunk row by chunk row;
3. only then is the v2 metadata removed (zarr's ``remove_metadata``).

If any step fails (a difference, an array zarr cannot convert, an I/O error, Ctrl-C), the
v3 metadata written so far is deleted and the v2 metadata is put back byte for byte: the
store is left exactly as it was, in zarr v2. Run it while nothing else writes the store.
"""

from __future__ import annotations

import asyncio
import json
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import zarr
from tqdm.auto import tqdm
from zarr.abc.store import Store
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.sync import sync
from zarr.errors import ZarrUserWarning
from zarr.metadata.migrate_v3 import migrate_to_v3, remove_metadata

from storegate.backends import create_backend
from storegate.errors import InvalidArgumentError, NotFoundError, StorageError, StoreGateError, ValidationError
from storegate.locations import (
    ZARR_JSON,
    ZARRAY,
    ZATTRS,
    ZGROUP,
    ZMETADATA,
    Location,
    RootInfo,
    inspect_root,
    no_reply_endpoint,
    resolve_location,
    unsent_to,
)
from storegate.names import dimension_names
from storegate.phases import PHASES
from storegate.settle import settle_requests

__all__ = ["add_dimension_names", "convert_to_v3"]

Node = zarr.Array[Any] | zarr.Group


def convert_to_v3(
    output_dir: str | os.PathLike[str] | Store,
    storage_options: dict[str, Any] | None = None,
    *,
    progress: bool = True,
) -> None:
    """Convert the zarr v2 store at ``output_dir`` to zarr v3, in place, checking every array.

    Every group and array gets zarr v3 metadata (zarr-python's own migration; the chunks
    stay as they are), every array is read back both ways and compared, and then the v2
    metadata is removed. Last, the variables get storegate's ``dimension_names``
    (:func:`add_dimension_names`). When anything fails, the store is left exactly as it was.

    Parameters
    ----------
    output_dir
        Where the store lives, as for the zarr backend: a local or NAS directory, a URL
        such as ``'s3://bucket/prefix'`` or a zarr ``Store`` object.
    storage_options
        fsspec options for a URL, as for the zarr backend.
    progress
        Show a tqdm progress bar of the bytes checked (on a terminal or in a notebook only).

    Raises
    ------
    NotFoundError
        If there is no zarr store at ``output_dir``.
    InvalidArgumentError
        If the store is not a zarr v2 group (already v3, or holding both formats), or an
        array uses something zarr v3 cannot express; nothing is written then.
    ValidationError
        If an array reads differently as zarr v3; the store is left as it was.
    StorageError
        If the location cannot be reached, or the storage fails during the conversion; the
        store is left as it was.
    """
    location = resolve_location(output_dir, storage_options)
    _check_v2(location)
    store = location.make_store(read_only=False)
    root = zarr.open_group(store=store, mode="r+", zarr_format=2, use_consolidated=False)
    nodes = _nodes(root, location)
    _refuse_v3_beside(location, store, nodes)
    saved = sync(_get_all(store, _v2_keys(nodes)))
    written = [_key(path, ZARR_JSON) for path in nodes]
    try:
        if _fill_nulls(store, nodes):  # zarr 2's empty() wrote "fill_value": null; v3 needs a value
            root = zarr.open_group(store=store, mode="r+", zarr_format=2, use_consolidated=False)
            nodes = _nodes(root, location)
        arrays = {path: node for path, node in nodes.items() if isinstance(node, zarr.Array)}
        _dry_run(arrays)
        with warnings.catch_warnings():
            # storegate's own locks and commit records (.storegate/) are no zarr node, and need no converting.
            warnings.filterwarnings("ignore", r"Object at \.storegate ", ZarrUserWarning)
            migrate_to_v3(root, root.store_path)
        _check_arrays(store, arrays, progress)
        sync(remove_metadata(store, 2))
    except BaseException as exc:
        # After a Ctrl-C, zarr's write of the moment still runs on its event loop: it must not land after the restore.
        with unsent_to(no_reply_endpoint(exc)):  # a silent server: the writes not sent yet fail at once
            interrupted = settle_requests()
        sync(_restore(store, saved, written))
        if interrupted is not None:
            raise interrupted from exc
        if isinstance(exc, StoreGateError) or not isinstance(exc, Exception):
            raise  # a storegate error says what happened; Ctrl-C stays Ctrl-C
        kind = StorageError if isinstance(exc, OSError) else StoreGateError
        raise kind(
            f"converting the store at {location.describe()} to zarr v3 failed ({type(exc).__name__}: {exc}). "
            "It was left as it was (zarr v2); run convert_to_v3 again once the cause is fixed."
        ) from exc
    add_dimension_names(output_dir, storage_options)  # xarray.open_zarr needs them; a valid v3 store without them


def add_dimension_names(
    output_dir: str | os.PathLike[str] | Store, storage_options: dict[str, Any] | None = None
) -> int:
    """Give every variable of a zarr v3 store the ``dimension_names`` storegate writes today.

    Stores written before storegate named the axes (and stores converted from zarr v2) then
    open with ``xarray.open_zarr(path, group='<data_id>/<phase>')``. Only each array's
    ``zarr.json`` is rewritten (one atomic object write each, under its data_id's write lock);
    arrays that have names keep them. Returns the number of arrays named.

    Raises
    ------
    NotFoundError
        If there is no store at ``output_dir``.
    InvalidArgumentError
        If the store is zarr v2 (convert it with :func:`convert_to_v3` first, which names them).
    """
    backend = create_backend("zarr", {"output_dir": output_dir, "storage_options": storage_options, "mode": "a"})
    if getattr(backend, "zarr_format", 3) != 3:
        raise InvalidArgumentError(
            "output_dir must hold a zarr v3 store to name its dimensions. Got a zarr v2 store: convert it with "
            "convert_to_v3 (storegate migrate), which names them too."
        )
    store = resolve_location(output_dir, storage_options).make_store(read_only=False)
    named = 0
    for data_id in backend.data_ids():
        with backend.writing(data_id):
            keys = [f"{data_id}/{p}/{var}/{ZARR_JSON}" for p in PHASES for var in backend.var_names(data_id, p)]
            named += sync(_name_dimensions(store, keys))
        backend.refresh(data_id)
    return named


async def _name_dimensions(store: Store, keys: list[str]) -> int:
    prototype, named = default_buffer_prototype(), 0
    for key in keys:
        found = await store.get(key, prototype)
        document = json.loads(found.to_bytes()) if found is not None else None
        if not isinstance(document, dict) or document.get("node_type") != "array" or document.get("dimension_names"):
            continue
        var = key.rsplit("/", 2)[-2]
        document["dimension_names"] = list(dimension_names(var, len(document.get("shape", []))))
        await store.set(key, prototype.buffer.from_bytes(json.dumps(document, indent=2).encode()))
        named += 1
    return named


def _check_v2(location: Location) -> None:
    """Refuse, before opening anything for writing, a location that is not a zarr v2 group."""
    where = location.describe()
    try:
        root = inspect_root(location.make_store(read_only=True))
    except FileNotFoundError:  # a local directory that does not exist
        root = RootInfo((), None, False)
    if not root.formats:
        raise NotFoundError(f"output_dir must hold a zarr v2 store to convert. Got {where}, where there is none.")
    if root.formats != (2,) or root.node_type != "group":
        what = "zarr v3 already" if root.formats == (3,) else "both zarr v2 and v3 metadata"
        if root.node_type == "array":
            what = "a zarr array, not a group"
        raise InvalidArgumentError(
            f"output_dir must hold a zarr v2 group to convert. Got {where}, which holds {what}. Nothing was changed."
        )


def _nodes(root: zarr.Group, location: Location) -> dict[str, Node]:
    """Every group and array of the hierarchy by path (``''`` for the root)."""
    try:
        with warnings.catch_warnings():
            # zarr warns about files that are no v2 node (a zarr.json among them): none is converted.
            warnings.simplefilter("ignore", ZarrUserWarning)
            return {"": root, **dict(root.members(max_depth=None))}
    except (ValueError, TypeError, KeyError) as exc:  # e.g. an object array (dtype '|O' with a pickle codec)
        raise InvalidArgumentError(
            f"every array must be readable by zarr 3 to convert the store at {location.describe()}. Got an array "
            f"it cannot read ({type(exc).__name__}: {exc}); object arrays (dtype 'O') have no zarr v3 form: "
            "delete them or rewrite them as fixed-length strings first. Nothing was changed."
        ) from exc


def _fill_nulls(store: Store, nodes: dict[str, Node]) -> bool:
    """Give numeric arrays whose v2 fill value is null (zarr 2's ``empty``) the fill value 0.

    Null meant "unwritten chunks hold anything": 0 is one such value, and zarr v3 needs one.
    """
    changed = False
    for path, node in nodes.items():
        if isinstance(node, zarr.Array) and node.metadata.fill_value is None and node.dtype.kind in "biufc":
            key = _key(path, ZARRAY)
            document = json.loads(sync(_get_all(store, [key]))[key].to_bytes())
            document["fill_value"] = False if node.dtype.kind == "b" else 0
            sync(store.set(key, default_buffer_prototype().buffer.from_bytes(json.dumps(document).encode())))
            changed = True
    return changed


def _key(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


def _refuse_v3_beside(location: Location, store: Store, nodes: dict[str, Node]) -> None:
    """A node that already has zarr v3 metadata makes a mixed store: zarr would refuse midway."""
    found = sync(_existing(store, [_key(path, ZARR_JSON) for path in nodes]))
    if found:
        raise InvalidArgumentError(
            f"output_dir must hold zarr v2 metadata only to convert. Got {location.describe()}, which also "
            f"holds zarr v3 metadata: {found[:5]}. Nothing was changed; delete those zarr.json files first if "
            "they hold nothing you need."
        )


def _dry_run(arrays: dict[str, zarr.Array[Any]]) -> None:
    """Convert every array's metadata without writing it, to name one zarr cannot convert."""
    for path, array in arrays.items():
        try:
            migrate_to_v3(array, array.store_path, dry_run=True)
        except Exception as exc:  # zarr raises TypeError, ValueError... for what v3 cannot express
            raise InvalidArgumentError(
                f"every array must be expressible in zarr v3 to convert the store. Got array {path!r}, which "
                f"zarr cannot convert ({type(exc).__name__}: {exc}). Nothing was changed."
            ) from exc


def _v2_keys(nodes: dict[str, Node]) -> list[str]:
    """The v2 metadata documents that remove_metadata may delete (absent ones included)."""
    names = (ZGROUP, ZARRAY, ZATTRS)
    return [ZMETADATA, *(_key(path, name) for path in nodes for name in names)]


def _check_arrays(store: Store, arrays: dict[str, zarr.Array[Any]], progress: bool) -> None:
    """Read every array as v2 and as v3 and compare them, one block of chunk rows at a time."""
    total = sum(int(a.nbytes) for a in arrays.values())
    with tqdm(
        total=total, unit="B", unit_scale=True, desc="checking zarr v3", disable=None if progress else True
    ) as bar:
        for path, v2 in arrays.items():
            v3 = zarr.open_array(store=store, path=path, mode="r", zarr_format=3)
            _check_layout(path, v2, v3)
            for rows in _blocks(v2):
                before, after = np.asarray(v2[rows]), np.asarray(v3[rows])
                if not _same(before, after):
                    raise ValidationError(
                        f"array {path!r} must read the same as zarr v3 as it does as zarr v2. Got different "
                        f"values in rows {_describe(rows)}. The store was left as it was (zarr v2); please "
                        "report this with the array's .zarray file."
                    )
                bar.update(before.nbytes)


def _check_layout(path: str, v2: zarr.Array[Any], v3: zarr.Array[Any]) -> None:
    native = [np.dtype(a.dtype).newbyteorder("=") for a in (v2, v3)]  # v3 reads big-endian v2 data natively
    if v2.shape != v3.shape or native[0] != native[1]:
        raise ValidationError(
            f"array {path!r} must keep its shape and dtype as zarr v3. Got {v2.shape} {v2.dtype} as v2 and "
            f"{v3.shape} {v3.dtype} as v3. The store was left as it was (zarr v2)."
        )


def _blocks(array: zarr.Array[Any]) -> Iterator[Any]:
    """Whole chunk rows along the first axis (the whole array when it is 0-d)."""
    if array.ndim == 0:
        yield ()
        return
    step = int(array.chunks[0])
    for start in range(0, array.shape[0], step):
        yield slice(start, min(start + step, array.shape[0]))


def _same(before: np.ndarray, after: np.ndarray) -> bool:
    if before.dtype.kind in "mM" and before.dtype == after.dtype:  # NaT equals NaT here, bit for bit
        return before.shape == after.shape and bool(np.array_equal(before.view("i8"), after.view("i8")))
    nan_aware = before.dtype.kind in "fc"  # NaN equals NaN here; equal_nan fails on other kinds
    return before.shape == after.shape and bool(np.array_equal(before, after, equal_nan=nan_aware))


def _describe(rows: Any) -> str:
    return "()" if rows == () else f"{rows.start}:{rows.stop}"


async def _existing(store: Store, keys: list[str]) -> list[str]:
    found = await asyncio.gather(*(store.exists(key) for key in keys))
    return [key for key, there in zip(keys, found, strict=True) if there]


async def _get_all(store: Store, keys: list[str]) -> dict[str, Buffer]:
    prototype = default_buffer_prototype()
    values = await asyncio.gather(*(store.get(key, prototype) for key in keys))
    return {key: value for key, value in zip(keys, values, strict=True) if value is not None}


async def _restore(store: Store, saved: dict[str, Buffer], written: list[str]) -> None:
    """Put the v2 metadata back and delete the v3 metadata: the store as it was."""
    try:
        await asyncio.gather(*(store.set(key, value) for key, value in saved.items()))
        await asyncio.gather(*(store.delete(key) for key in written))
    except Exception as exc:  # the original error matters more; say what is left
        raise StoreGateError(
            f"converting the store failed and putting it back failed too ({exc!r}): some zarr.json files may "
            "be left and some v2 metadata missing (the chunks are untouched). Check the storage, then delete "
            "every zarr.json file under output_dir and put back the missing .zarray / .zgroup files."
        ) from exc
