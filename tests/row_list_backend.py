"""RowListBackend: what a third party might write, registered as backend ``'row-list'``.

It implements only the abstract methods of :class:`storegate.backends.Backend` (each
variable is a Python list of row arrays), so tests on it check every default the base
class builds on them, including the checkpoint / rollback / detach of write transactions.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from storegate import register_backend
from storegate.backends import Backend
from storegate.indexing import Selection


class RowListBackend(Backend):
    """A minimal in-memory backend: every variable is a list of rows plus its dtype."""

    name = "row-list"

    def __init__(self) -> None:
        self._vars: dict[tuple[str, str, str], tuple[list[np.ndarray], np.dtype, tuple[int, ...]]] = {}
        self._ids: set[str] = set()
        self._states: dict[str, dict[str, Any]] = {}

    def data_ids(self) -> list[str]:
        return sorted(self._ids)

    def create_data_id(self, data_id: str) -> None:
        self._ids.add(data_id)

    def delete_data_id(self, data_id: str) -> None:
        self._ids.discard(data_id)
        self._vars = {k: v for k, v in self._vars.items() if k[0] != data_id}

    def var_names(self, data_id: str, phase: str) -> list[str]:
        return sorted(v for d, p, v in self._vars if (d, p) == (data_id, phase))

    def _get(self, data_id: str, phase: str, var: str) -> tuple[list[np.ndarray], np.dtype, tuple[int, ...]]:
        try:
            return self._vars[(data_id, phase, var)]
        except KeyError:
            raise self.missing_error(data_id, phase, var) from None

    def shape(self, data_id: str, phase: str, var: str) -> tuple[int, ...]:
        rows, _, row_shape = self._get(data_id, phase, var)
        return (len(rows), *row_shape)

    def dtype(self, data_id: str, phase: str, var: str) -> np.dtype:
        return self._get(data_id, phase, var)[1]

    def create(self, data_id: str, phase: str, var: str, data: np.ndarray, **options: Any) -> None:
        self._ids.add(data_id)
        self._vars[(data_id, phase, var)] = ([np.array(r, copy=True) for r in data], data.dtype, data.shape[1:])

    def append(self, data_id: str, phase: str, var: str, data: np.ndarray) -> None:
        self._get(data_id, phase, var)[0].extend(np.array(r, copy=True) for r in data)

    def read(self, data_id: str, phase: str, var: str, selection: Selection) -> np.ndarray:
        rows, dtype, row_shape = self._get(data_id, phase, var)
        if isinstance(selection, int):
            return np.array(rows[selection], dtype=dtype)
        picked = rows[selection] if isinstance(selection, slice) else [rows[i] for i in selection]
        return np.array(picked, dtype=dtype).reshape(len(picked), *row_shape)

    def write(self, data_id: str, phase: str, var: str, selection: Selection, data: np.ndarray) -> None:
        rows = self._get(data_id, phase, var)[0]
        positions = range(len(rows))[selection] if not isinstance(selection, np.ndarray) else selection
        values = np.broadcast_to(data, (len(positions), *data.shape[1:]))
        for i, value in zip(positions, values, strict=True):
            rows[int(i)] = np.array(value, copy=True)

    def resize(self, data_id: str, phase: str, var: str, n_rows: int) -> None:
        rows, dtype, row_shape = self._get(data_id, phase, var)
        del rows[n_rows:]
        rows.extend(np.zeros(row_shape, dtype) for _ in range(n_rows - len(rows)))

    def delete(self, data_id: str, phase: str, var: str) -> None:
        self._vars.pop((data_id, phase, var), None)

    def load_state(self, data_id: str) -> dict[str, Any]:
        return copy.deepcopy(self._states.get(data_id, {}))

    def save_state(self, data_id: str, state: dict[str, Any]) -> None:
        self._states[data_id] = copy.deepcopy(state)


register_backend("row-list", "tests.row_list_backend:RowListBackend", replace=True)
