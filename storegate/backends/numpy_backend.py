"""The numpy backend: arrays held in memory, in nested dicts."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from storegate.backends.base import Backend, Checkpoint, VarInfo
from storegate.errors import StorageError
from storegate.indexing import Inner, Selection, has_list

__all__ = ["NumpyBackend"]

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _in_memory(method: _Method) -> _Method:
    """Run a data method; running out of memory is a StorageError naming the fix, not a MemoryError."""

    @functools.wraps(method)
    def wrapper(self: NumpyBackend, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except MemoryError as exc:
            raise StorageError(
                f"the numpy backend (memory) has not enough memory for {method.__name__} of {args[2]!r}: "
                "store large data with backend 'zarr' (on disk) or 'hybrid'."
            ) from exc

    return wrapper  # type: ignore[return-value]


class NumpyBackend(Backend):
    """In-memory backend (multiml's ``numpy``). Takes no ``backend_args``."""

    name = "numpy"

    def __init__(self) -> None:
        self._data: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        self._states: dict[str, dict[str, Any]] = {}

    # docstrings inherited from Backend

    def data_ids(self) -> list[str]:
        return sorted(self._data)

    def create_data_id(self, data_id: str) -> None:
        self._data.setdefault(data_id, {})

    def delete_data_id(self, data_id: str) -> None:
        self._data.pop(data_id, None)
        self._states.pop(data_id, None)

    def var_names(self, data_id: str, phase: str) -> list[str]:
        return sorted(self._data.get(data_id, {}).get(phase, {}))

    def shape(self, data_id: str, phase: str, var: str) -> tuple[int, ...]:
        return tuple(self._get(data_id, phase, var).shape)

    def dtype(self, data_id: str, phase: str, var: str) -> np.dtype:
        return self._get(data_id, phase, var).dtype

    def info(self, data_id: str, phase: str, var: str) -> VarInfo:
        """Dtype, shape and the bytes the array holds in memory (no chunks, no codec: codec 'none')."""
        array = self._get(data_id, phase, var)
        return VarInfo(array.dtype, tuple(array.shape), stored_bytes=int(array.nbytes), codec="none")

    @_in_memory
    def create(self, data_id: str, phase: str, var: str, data: np.ndarray, **options: Any) -> None:
        phases = self._data.setdefault(data_id, {})
        phases.setdefault(phase, {})[var] = np.array(data, copy=True, order="C")

    @_in_memory
    def append(self, data_id: str, phase: str, var: str, data: np.ndarray) -> None:
        old = self._get(data_id, phase, var)
        self._data[data_id][phase][var] = np.concatenate([old, data], axis=0)

    @_in_memory
    def read(self, data_id: str, phase: str, var: str, selection: Selection) -> np.ndarray:
        out = self._get(data_id, phase, var)[selection]
        # A basic slice is a view: copy so callers never alias the store.
        return np.array(out, copy=True)

    @_in_memory
    def read_inner(self, data_id: str, phase: str, var: str, selection: Selection, inner: Inner) -> np.ndarray:
        # One numpy index: only the selected part is copied. An int row array and ints inside
        # the row give numpy's orthogonal result here, as the array comes first.
        array = self._get(data_id, phase, var)
        if has_list(inner) and not isinstance(selection, slice):
            # numpy pairs two arrays up, and moves an array beside an int row first: rows first.
            lead = () if isinstance(selection, int) else (slice(None),)
            return np.array(array[selection][(*lead, *inner)], copy=True)
        return np.array(array[(selection, *inner)], copy=True)

    @_in_memory
    def write(self, data_id: str, phase: str, var: str, selection: Selection, data: np.ndarray) -> None:
        self._get(data_id, phase, var)[selection] = data

    @_in_memory
    def resize(self, data_id: str, phase: str, var: str, n_rows: int) -> None:
        old = self._get(data_id, phase, var)
        new = np.zeros((n_rows, *old.shape[1:]), dtype=old.dtype)
        keep = min(n_rows, old.shape[0])
        new[:keep] = old[:keep]
        self._data[data_id][phase][var] = new

    def delete(self, data_id: str, phase: str, var: str) -> None:
        self._data.get(data_id, {}).get(phase, {}).pop(var, None)

    def detach(self, data_id: str, phase: str, var: str) -> Checkpoint:
        # docstring inherited; the array object itself is kept, nothing is copied.
        variables = self._data.get(data_id, {}).get(phase, {})
        array = variables.get(var)
        shape = None if array is None else tuple(array.shape)
        checkpoint = Checkpoint(data_id, phase, var, shape, slice(0, 0 if shape is None else shape[0], 1), array)
        variables.pop(var, None)  # last: whatever stops the call before, the variable is still there
        return checkpoint

    def reattach(self, checkpoint: Checkpoint) -> None:
        # docstring inherited
        if checkpoint.existed:
            phases = self._data.setdefault(checkpoint.data_id, {})
            phases.setdefault(checkpoint.phase, {})[checkpoint.var] = checkpoint.saved

    def load_state(self, data_id: str) -> dict[str, Any]:
        return copy.deepcopy(self._states.get(data_id, {}))

    def save_state(self, data_id: str, state: dict[str, Any]) -> None:
        self._states[data_id] = copy.deepcopy(state)

    def _get(self, data_id: str, phase: str, var: str) -> np.ndarray:
        try:
            return self._data[data_id][phase][var]
        except KeyError:
            raise self.missing_error(data_id, phase, var) from None
