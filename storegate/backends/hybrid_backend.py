"""The hybrid backend: a numpy store and a zarr store, with calls routed by a mode.

Composition, not inheritance: it holds one backend of each kind and forwards every call
to the store of the current mode, as multiml's HybridDatabase did.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from storegate.backends.base import Backend, VarInfo
from storegate.backends.numpy_backend import NumpyBackend
from storegate.backends.zarr_backend import ZarrBackend
from storegate.errors import InvalidArgumentError
from storegate.indexing import Selection

__all__ = ["HybridBackend"]

MODES = ("numpy", "zarr")


class HybridBackend(Backend):
    """Memory and storage together (multiml's ``hybrid``).

    ``backend_args`` are those of :class:`ZarrBackend`. The mode starts as ``'zarr'``.
    """

    name = "hybrid"
    persistent = True
    supports_modes = True

    def __init__(self, **zarr_args: Any) -> None:
        self._stores: dict[str, Backend] = {"numpy": NumpyBackend(), "zarr": ZarrBackend(**zarr_args)}
        self._mode = "zarr"

    @property
    def mode(self) -> str:
        # docstring inherited
        return self._mode

    def set_mode(self, mode: str) -> None:
        # docstring inherited
        if mode not in MODES:
            raise InvalidArgumentError(f"mode must be one of {MODES}. Got {mode!r} instead.")
        self._mode = mode

    @property
    def store(self) -> Backend:
        """The backend of the current mode."""
        return self._stores[self._mode]

    def stores(self) -> dict[str, Backend]:
        # docstring inherited
        return dict(self._stores)

    @property
    def writable(self) -> bool:
        # docstring inherited
        return self.store.writable

    @property
    def location(self) -> str:
        # docstring inherited
        return f"memory + {self._stores['zarr'].location}"

    # docstrings inherited from Backend

    def data_ids(self) -> list[str]:
        return sorted({d for store in self._stores.values() for d in store.data_ids()})

    def create_data_id(self, data_id: str) -> None:
        self.store.create_data_id(data_id)

    def delete_data_id(self, data_id: str) -> None:
        self.store.delete_data_id(data_id)

    def var_names(self, data_id: str, phase: str) -> list[str]:
        return self.store.var_names(data_id, phase)

    def has(self, data_id: str, phase: str, var: str) -> bool:
        return self.store.has(data_id, phase, var)

    def shape(self, data_id: str, phase: str, var: str) -> tuple[int, ...]:
        return self.store.shape(data_id, phase, var)

    def dtype(self, data_id: str, phase: str, var: str) -> np.dtype:
        return self.store.dtype(data_id, phase, var)

    def info(self, data_id: str, phase: str, var: str) -> VarInfo:
        return self.store.info(data_id, phase, var)

    def create(self, data_id: str, phase: str, var: str, data: np.ndarray, **options: Any) -> None:
        self.store.create(data_id, phase, var, data, **options)

    def append(self, data_id: str, phase: str, var: str, data: np.ndarray) -> None:
        self.store.append(data_id, phase, var, data)

    def read(self, data_id: str, phase: str, var: str, selection: Selection) -> np.ndarray:
        return self.store.read(data_id, phase, var, selection)

    def write(self, data_id: str, phase: str, var: str, selection: Selection, data: np.ndarray) -> None:
        self.store.write(data_id, phase, var, selection, data)

    def create_empty(
        self, data_id: str, phase: str, var: str, shape: tuple[int, ...], dtype: np.dtype, **options: Any
    ) -> None:
        self.store.create_empty(data_id, phase, var, shape, dtype, **options)

    def write_rows(self, data_id: str, phase: str, var: str) -> int | None:
        return self.store.write_rows(data_id, phase, var)

    def resize(self, data_id: str, phase: str, var: str, n_rows: int) -> None:
        self.store.resize(data_id, phase, var, n_rows)

    def replace(self, data_id: str, phase: str, var: str, data: np.ndarray, **options: Any) -> None:
        self.store.replace(data_id, phase, var, data, **options)

    def delete(self, data_id: str, phase: str, var: str) -> None:
        self.store.delete(data_id, phase, var)

    def load_state(self, data_id: str) -> dict[str, Any]:
        return self.store.load_state(data_id)

    def save_state(self, data_id: str, state: dict[str, Any]) -> None:
        self.store.save_state(data_id, state)

    def refresh(self, data_id: str) -> None:
        for store in self._stores.values():
            store.refresh(data_id)
