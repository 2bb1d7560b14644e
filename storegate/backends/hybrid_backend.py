"""The hybrid backend: a numpy tier and a zarr tier, with every call routed to one of them.

Composition, not inheritance: it holds one backend of each kind and forwards every call
to the backend of the current tier, as multiml's HybridDatabase did (multiml calls the
tier its "mode": ``StoreGate.set_mode('numpy')``). It implements the
:class:`~storegate.backends.base.TieredBackend` protocol.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from storegate.backends.base import Backend, Checkpoint, Finding, OtherObject, VarInfo
from storegate.backends.numpy_backend import NumpyBackend
from storegate.backends.zarr_backend import ZarrBackend
from storegate.errors import InvalidArgumentError
from storegate.indexing import Inner, Selection

__all__ = ["HybridBackend"]

TIERS = ("numpy", "zarr")


class HybridBackend(Backend):
    """Memory and storage together (multiml's ``hybrid``).

    ``backend_args`` are those of :class:`ZarrBackend`. The tier starts as ``'zarr'``.
    """

    name = "hybrid"
    persistent = True

    def __init__(self, **zarr_args: Any) -> None:
        self._tiers: dict[str, Backend] = {"numpy": NumpyBackend(), "zarr": ZarrBackend(**zarr_args)}
        self._tier = "zarr"

    # --- TieredBackend ---------------------------------------------------------------

    @property
    def tier(self) -> str:
        """The tier that calls go to now: 'numpy' (memory) or 'zarr' (storage)."""
        return self._tier

    def set_tier(self, tier: str) -> None:
        """Route calls to ``tier``: 'numpy' or 'zarr'."""
        if tier not in TIERS:
            raise InvalidArgumentError(f"mode must be one of {TIERS}. Got {tier!r} instead.")
        self._tier = tier

    def tiers(self) -> dict[str, Backend]:
        """The backend of each tier."""
        return dict(self._tiers)

    @property
    def current(self) -> Backend:
        """The backend of the current tier."""
        return self._tiers[self._tier]

    # --- Backend -----------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        # docstring inherited
        return self.current.writable

    @property
    def location(self) -> str:
        # docstring inherited
        return f"memory + {self._tiers['zarr'].location}"

    def reopen_args(self, mode: str = "r") -> dict[str, Any] | None:
        # docstring inherited: the storage tier reopens (as a hybrid backend in tier 'zarr');
        # data of the memory tier cannot be reopened elsewhere.
        return self.current.reopen_args(mode)

    # docstrings inherited from Backend

    def data_ids(self) -> list[str]:
        return sorted({d for backend in self._tiers.values() for d in backend.data_ids()})

    def create_data_id(self, data_id: str) -> None:
        self.current.create_data_id(data_id)

    def delete_data_id(self, data_id: str) -> None:
        self.current.delete_data_id(data_id)

    def var_names(self, data_id: str, phase: str) -> list[str]:
        return self.current.var_names(data_id, phase)

    def other_objects(self, data_id: str | None = None) -> list[OtherObject]:
        # Only the storage tier can hold what other tools wrote.
        return self._tiers["zarr"].other_objects(data_id)

    def has(self, data_id: str, phase: str, var: str) -> bool:
        return self.current.has(data_id, phase, var)

    def shape(self, data_id: str, phase: str, var: str) -> tuple[int, ...]:
        return self.current.shape(data_id, phase, var)

    def dtype(self, data_id: str, phase: str, var: str) -> np.dtype:
        return self.current.dtype(data_id, phase, var)

    def info(self, data_id: str, phase: str, var: str) -> VarInfo:
        return self.current.info(data_id, phase, var)

    def chunk_rows(self, data_id: str, phase: str, var: str) -> int | None:
        return self.current.chunk_rows(data_id, phase, var)

    def data_version(self, data_id: str) -> str | None:
        return self.current.data_version(data_id)

    def create(self, data_id: str, phase: str, var: str, data: np.ndarray, **options: Any) -> None:
        self.current.create(data_id, phase, var, data, **options)

    def append(self, data_id: str, phase: str, var: str, data: np.ndarray) -> None:
        self.current.append(data_id, phase, var, data)

    def read(self, data_id: str, phase: str, var: str, selection: Selection) -> np.ndarray:
        return self.current.read(data_id, phase, var, selection)

    def read_inner(self, data_id: str, phase: str, var: str, selection: Selection, inner: Inner) -> np.ndarray:
        return self.current.read_inner(data_id, phase, var, selection, inner)

    def read_cached(self, data_id: str, phase: str, var: str, selection: Selection, inner: Inner) -> np.ndarray:
        return self.current.read_cached(data_id, phase, var, selection, inner)

    def cached_row(self, data_id: str, phase: str, var: str, index: int) -> np.ndarray | None:
        return self.current.cached_row(data_id, phase, var, index)

    def warm_row(self, data_id: str, phase: str, var: str, index: int) -> np.ndarray | None:
        return self.current.warm_row(data_id, phase, var, index)

    def write(self, data_id: str, phase: str, var: str, selection: Selection, data: np.ndarray) -> None:
        self.current.write(data_id, phase, var, selection, data)

    def create_empty(
        self, data_id: str, phase: str, var: str, shape: tuple[int, ...], dtype: np.dtype, **options: Any
    ) -> None:
        self.current.create_empty(data_id, phase, var, shape, dtype, **options)

    def write_rows(self, data_id: str, phase: str, var: str) -> int | None:
        return self.current.write_rows(data_id, phase, var)

    def resize(self, data_id: str, phase: str, var: str, n_rows: int) -> None:
        self.current.resize(data_id, phase, var, n_rows)

    def replace(self, data_id: str, phase: str, var: str, data: np.ndarray, **options: Any) -> None:
        self.current.replace(data_id, phase, var, data, **options)

    def delete(self, data_id: str, phase: str, var: str) -> None:
        self.current.delete(data_id, phase, var)

    def load_state(self, data_id: str) -> dict[str, Any]:
        return self.current.load_state(data_id)

    def save_state(self, data_id: str, state: dict[str, Any]) -> None:
        self.current.save_state(data_id, state)

    @contextlib.contextmanager
    def writing(self, data_id: str) -> Iterator[None]:
        # docstring inherited: the storage tier's lock covers both tiers (moves write both),
        # and this process's threads take turns on the memory tier through it.
        with self._tiers["zarr"].writing(data_id), self._tiers["numpy"].writing(data_id):
            yield

    def commit(self, data_id: str) -> None:
        # docstring inherited: only the storage tier has a commit point.
        self._tiers["zarr"].commit(data_id)

    def uncommit(self, data_id: str) -> None:
        # docstring inherited
        self._tiers["zarr"].uncommit(data_id)

    def leftovers(self, data_id: str) -> list[Finding]:
        # docstring inherited: only the storage tier has a commit point.
        return self._tiers["zarr"].leftovers(data_id)

    def missing_chunks(self, data_id: str, phase: str, var: str) -> list[tuple[str, int, int]] | None:
        # docstring inherited: the current tier's variable, as var_names lists it.
        return self.current.missing_chunks(data_id, phase, var)

    def repair(self, data_id: str) -> list[Finding]:
        # docstring inherited
        return self._tiers["zarr"].repair(data_id)

    def refresh_if_changed(self, data_id: str) -> None:
        # docstring inherited
        self._tiers["zarr"].refresh_if_changed(data_id)

    def check_no_writer_block(self, data_id: str) -> None:
        # docstring inherited: a writer of a hybrid StoreGate writes through its current tier.
        super().check_no_writer_block(data_id)
        for tier in self._tiers.values():
            tier.check_no_writer_block(data_id)

    def start_read(self, data_id: str) -> None:
        # docstring inherited
        self._tiers["zarr"].start_read(data_id)

    def unchanged(self, data_id: str) -> bool:
        # docstring inherited
        return self._tiers["zarr"].unchanged(data_id)

    def refresh(self, data_id: str) -> None:
        for backend in self._tiers.values():
            backend.refresh(data_id)

    def checkpoint(self, data_id: str, phase: str, var: str, rows: slice | None = None) -> Checkpoint:
        return self.current.checkpoint(data_id, phase, var, rows)

    def rollback(self, checkpoint: Checkpoint) -> None:
        self.current.rollback(checkpoint)

    def detach(self, data_id: str, phase: str, var: str) -> Checkpoint:
        return self.current.detach(data_id, phase, var)

    def reattach(self, checkpoint: Checkpoint) -> None:
        self.current.reattach(checkpoint)

    def discard(self, checkpoint: Checkpoint) -> None:
        self.current.discard(checkpoint)
