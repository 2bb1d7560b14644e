"""xarray and dask over a StoreGate phase: lazy arrays over the stored chunks, no copy.

:func:`to_dask` gives a ``dask.array`` per variable whose blocks are the variable's stored
chunks (rows), each read through storegate when dask computes it (so every block is read
at the last commit, on every backend, and the numpy backend works too). :func:`to_xarray`
puts the variables of a phase in an ``xarray.Dataset`` whose dimensions are the names
storegate writes as zarr v3 ``dimension_names`` (:func:`storegate.names.dimension_names`):
one ``row`` dimension shared by the phase, ``'<var>_dim_<n>'`` for the others; a ragged
variable is its two stored arrays, ``'<var>@values'`` (first axis ``'<var>_value'``) and
``'<var>@offsets'`` (the end offset of each row). A store
written by storegate also opens with ``xarray.open_zarr(path, group='<data_id>/<phase>')``
(see the README for what that reads while a writer runs).

xarray and dask are optional: a call without them raises an InvalidArgumentError naming
the package to install.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from storegate.backends import TieredBackend
from storegate.engine import GroupEngine
from storegate.errors import InvalidArgumentError, StoreGateError
from storegate.names import OFFSETS, VALUES, VarNames, dimension_names
from storegate.phases import phases_of
from storegate.rules import optional_module

__all__ = ["to_dask", "to_xarray"]


class _Rows:
    """The array-like dask reads one block of: ``shape``, ``dtype``, ``ndim`` and ``[...]``."""

    def __init__(self, engine: GroupEngine, phase: str, var: str) -> None:
        self.engine, self.phase, self.var = engine, phase, var
        self.shape = engine.shape(phase, var)
        self.dtype = engine.layout(var, phases_of(phase)).dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        self._check_layout()
        key = key if isinstance(key, tuple) else (key,)
        rows, inner = key[0], key[1:]
        if not isinstance(rows, slice) or rows.step not in (None, 1):  # dask asks for blocks: slices
            rows = np.arange(self.shape[0])[rows]
        block = self.engine.read(self.phase, self.var, rows)
        return block[(slice(None), *inner)] if inner else block

    def _check_layout(self) -> None:
        """The variable still has the shape and dtype the dask array was made for (else its blocks would lie)."""
        self.engine.backend.refresh_if_changed(self.engine.data_id)
        now = (
            (self.engine.shape(self.phase, self.var), self.engine.layout(self.var, phases_of(self.phase)).dtype)
            if self.engine.has(self.phase, self.var)
            else None
        )
        if now != (self.shape, self.dtype):
            raise StoreGateError(
                f"var_name {self.var!r} of phase {self.phase!r} must keep the shape and dtype "
                f"{self.shape} {self.dtype} its dask array was made for. Got "
                f"{'no such variable' if now is None else f'{now[0]} {now[1]}'} now (written since): make the "
                "array again with to_dask / to_xarray."
            )


def _dask_array() -> Any:
    return optional_module("dask.array", "to_dask / to_xarray", "pip install 'dask[array]'")


def _xarray() -> Any:
    return optional_module("xarray", "to_xarray", "pip install xarray 'dask[array]'")


def _variable(engine: GroupEngine, phase: str, var: str) -> Any:
    """One variable as a dask array, one block per stored chunk of rows."""
    da = _dask_array()
    engine.require(phase, var)
    rows = _Rows(engine, phase, var)
    chunk = _chunk_rows(engine, phase, var)
    chunks = (chunk, *rows.shape[1:]) if rows.shape[0] else rows.shape
    # A name of its own: dask merges graphs by name, and two stores (or the same one before and
    # after a write) must never share the blocks of another.
    name = f"storegate-{engine.data_id}-{phase}-{var}-{uuid.uuid4().hex}"
    return da.from_array(rows, chunks=chunks, asarray=False, fancy=False, name=name)


def _chunk_rows(engine: GroupEngine, phase: str, var: str) -> int:
    """Rows per dask block: the stored chunk (the first phase's, for 'all'); every row in memory."""
    sizes = [
        engine.backend.chunk_rows(engine.data_id, p, var)
        for p in phases_of(phase)
        if engine.backend.has(engine.data_id, p, var)
    ]
    found = [s for s in sizes if s]
    return max(1, found[0] if found else engine.shape(phase, var)[0])


def _bound(engine: GroupEngine) -> GroupEngine:
    """The engine of the tier a hybrid backend reads now: lazy arrays keep reading it after set_mode."""
    backend = engine.backend
    if isinstance(backend, TieredBackend):
        return GroupEngine(backend.tiers()[backend.tier], engine.data_id)
    return engine


def to_dask(engine: GroupEngine, names: VarNames, phase: str) -> Any:
    """The variables as dask arrays, in the form of ``names`` (str: one, tuple: stacked on axis 1, list)."""
    engine = _bound(engine)
    for var in names.names:
        if engine.is_ragged(phase, var):
            raise InvalidArgumentError(
                f"var_names must name variables with one row shape for a dask array. Got the ragged variable "
                f"{var!r} (rows of different lengths): take its stored arrays, to_dask('{var}{VALUES}') (the "
                f"values, one row after another) and to_dask('{var}{OFFSETS}') (each row's end offset)."
            )
    arrays = [_variable(engine, phase, var) for var in names.names]
    if names.form == "str":
        return arrays[0]
    if names.form == "tuple":
        return _dask_array().stack(arrays, axis=1)
    return arrays


def to_xarray(engine: GroupEngine, phase: str, names: VarNames | None = None) -> Any:
    """An ``xarray.Dataset`` of the variables of ``phase`` (every one, or ``names``), lazy."""
    xr = _xarray()
    engine = _bound(engine)
    chosen = engine.var_names(phase) if names is None else list(names.names)
    variables = {}
    for var in chosen:
        # A ragged variable is its two stored arrays: the values (their own first axis) and the end offsets.
        stored = [var + VALUES, var + OFFSETS] if engine.is_ragged(phase, var) else [var]
        for name in stored:
            array = _variable(engine, phase, name)
            variables[name] = (dimension_names(name, array.ndim), array)
    return xr.Dataset(variables, attrs={"data_id": engine.data_id, "phase": phase})
