"""The backend contract: one abstract class that every storage backend implements.

A backend stores plain numpy arrays addressed by ``(data_id, phase, var_name)`` and a
small JSON-able state dict per data_id. It knows nothing of var_names forms, phase
splits or compile rules: the facade (:mod:`storegate.gate`) owns those and validates
every argument before it calls a backend, so a backend only sees well-formed calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from storegate.errors import InvalidArgumentError, NotFoundError, ReadOnlyError, ValidationError
from storegate.indexing import Selection

__all__ = ["Backend", "VarInfo"]


@dataclass(frozen=True)
class VarInfo:
    """What a backend knows of one stored variable."""

    dtype: np.dtype
    shape: tuple[int, ...]
    chunk_rows: int | None = None
    stored_bytes: int | None = None
    codec: str | None = None


class Backend(ABC):
    """Abstract storage backend.

    Implementations must make ``read`` return a new array (never a view into storage)
    and ``create`` / ``append`` / ``write`` copy their input.
    """

    name: ClassVar[str]
    #: Data survive the process (a zarr store); ``False`` for memory.
    persistent: ClassVar[bool] = False
    #: The backend holds two stores and routes calls by a mode (hybrid).
    supports_modes: ClassVar[bool] = False

    @property
    def writable(self) -> bool:
        """False when the store was opened read-only."""
        return True

    @property
    def location(self) -> str:
        """Where the data live, for messages and show_info."""
        return "memory"

    # --- data ids --------------------------------------------------------------------

    @abstractmethod
    def data_ids(self) -> list[str]:
        """Sorted data_ids held by the backend."""

    @abstractmethod
    def create_data_id(self, data_id: str) -> None:
        """Create an empty data_id if it does not exist yet."""

    @abstractmethod
    def delete_data_id(self, data_id: str) -> None:
        """Remove a data_id and everything in it (no-op when absent)."""

    # --- variables -------------------------------------------------------------------

    @abstractmethod
    def var_names(self, data_id: str, phase: str) -> list[str]:
        """Sorted variable names stored under ``data_id`` / ``phase``."""

    @abstractmethod
    def shape(self, data_id: str, phase: str, var: str) -> tuple[int, ...]:
        """Full shape ``(N, ...)``; raises NotFoundError when absent. Must be cheap."""

    @abstractmethod
    def dtype(self, data_id: str, phase: str, var: str) -> np.dtype:
        """Stored dtype; raises NotFoundError when absent. Must be cheap."""

    @abstractmethod
    def create(self, data_id: str, phase: str, var: str, data: np.ndarray, **options: Any) -> None:
        """Store ``data`` as a new variable, replacing any variable of that name."""

    @abstractmethod
    def append(self, data_id: str, phase: str, var: str, data: np.ndarray) -> None:
        """Append rows; ``data`` already has the stored dtype and row shape."""

    @abstractmethod
    def read(self, data_id: str, phase: str, var: str, selection: Selection) -> np.ndarray:
        """Rows of a normalised selection, as a new array."""

    @abstractmethod
    def write(self, data_id: str, phase: str, var: str, selection: Selection, data: np.ndarray) -> None:
        """Overwrite the rows of a selection; ``data`` already has the stored dtype."""

    @abstractmethod
    def resize(self, data_id: str, phase: str, var: str, n_rows: int) -> None:
        """Grow (filled with zeros) or shrink a variable to ``n_rows`` rows."""

    @abstractmethod
    def delete(self, data_id: str, phase: str, var: str) -> None:
        """Remove a variable (no-op when absent)."""

    # --- storegate's own state -------------------------------------------------------

    @abstractmethod
    def load_state(self, data_id: str) -> dict[str, Any]:
        """The state dict saved for ``data_id`` (empty when none)."""

    @abstractmethod
    def save_state(self, data_id: str, state: dict[str, Any]) -> None:
        """Persist the state dict for ``data_id`` (JSON-able values only)."""

    def refresh(self, data_id: str) -> None:  # noqa: B027 (an optional hook: doing nothing is right)
        """Forget what is cached of ``data_id``: the next calls see the store as it is now.

        Another process may have changed a persistent store since it was opened. Note for
        implementers: the default does nothing (nothing cached); a backend that caches
        array metadata or the state must drop them, keeping only a state saved by this
        process that the store could not hold (read-only).
        """

    # --- built on the above ----------------------------------------------------------

    def has(self, data_id: str, phase: str, var: str) -> bool:
        """True when the variable exists."""
        return var in self.var_names(data_id, phase)

    def layout_across(
        self, data_id: str, var: str, phases: tuple[str, ...]
    ) -> tuple[list[tuple[str, tuple[int, ...]]], np.dtype, tuple[int, ...]]:
        """Where a variable is read as one array across ``phases``.

        Returns the ``(phase, shape)`` of every phase that holds it, the dtype they
        concatenate to and their common row shape.

        Raises
        ------
        NotFoundError
            If no phase holds the variable.
        ValidationError
            If the phases disagree on the row shape.
        """
        present = [(p, self.shape(data_id, p, var)) for p in phases if self.has(data_id, p, var)]
        if not present:
            where = "any phase" if len(phases) > 1 else f"phase {phases[0]!r}"
            raise NotFoundError(
                f"var_name {var!r} does not exist in {where} of data_id {data_id!r}. "
                f"Stored var_names there: {sorted({v for p in phases for v in self.var_names(data_id, p)})}."
            )
        rows = {shape[1:] for _, shape in present}
        if len(rows) > 1:
            raise ValidationError(
                f"var_name {var!r} must have one row shape across phases to be read as one array. "
                f"Got {sorted(rows)} instead."
            )
        dtype = np.result_type(*(self.dtype(data_id, p, var) for p, _ in present))
        return present, dtype, rows.pop()

    def info(self, data_id: str, phase: str, var: str) -> VarInfo:
        """Dtype and shape; backends with chunks add chunk rows, codec and stored bytes."""
        return VarInfo(self.dtype(data_id, phase, var), self.shape(data_id, phase, var))

    def replace(self, data_id: str, phase: str, var: str, data: np.ndarray, **options: Any) -> None:
        """Replace a variable's contents with ``data`` (any length, dtype or row shape).

        Note for implementers: the default recreates the variable; override when the
        store can resize in place (same dtype and row shape) more cheaply.
        """
        self.create(data_id, phase, var, data, **options)

    def create_empty(
        self, data_id: str, phase: str, var: str, shape: tuple[int, ...], dtype: np.dtype, **options: Any
    ) -> None:
        """Create a variable of zeros; ``options`` as in :meth:`create`.

        Note for implementers: the default materialises the zeros; a chunked store can
        rely on its fill value instead.
        """
        self.create(data_id, phase, var, np.zeros(shape, dtype=dtype), **options)

    def write_rows(self, data_id: str, phase: str, var: str) -> int | None:
        """Rows per stored object (a chunk or shard) of an existing variable.

        Appends that end on a multiple of it write each object once (the streaming writer
        relies on that). ``None`` when appends of any size cost the same (memory).
        """
        return None

    def stores(self) -> dict[str, Backend]:
        """The stores behind this backend by mode name (one, except for hybrid)."""
        return {self.name: self}

    def check_writable(self) -> None:
        """Raise ReadOnlyError when the store was opened read-only."""
        if not self.writable:
            raise ReadOnlyError(
                f"the store at {self.location} was opened with mode 'r' and refuses writes. "
                "Open it with mode 'a' to change it."
            )

    # --- modes (hybrid only) ---------------------------------------------------------

    @property
    def mode(self) -> str:
        """The store that calls go to; a single-store backend has only its own name."""
        return self.name

    def set_mode(self, mode: str) -> None:
        """Choose the store that calls go to (hybrid backend only)."""
        raise InvalidArgumentError(f"set_mode needs backend 'hybrid'. Got backend {self.name!r} instead.")

    # --- helpers for implementers ----------------------------------------------------

    def _missing(self, data_id: str, phase: str, var: str) -> NotFoundError:
        return NotFoundError(
            f"var_name {var!r} does not exist in data_id {data_id!r}, phase {phase!r}. "
            f"Stored var_names there: {self.var_names(data_id, phase)}."
        )
