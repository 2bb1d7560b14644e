"""How a ragged variable is stored on any backend: flat values plus end offsets, two plain arrays.

A ragged variable ``var`` of a phase (rows of shape ``(L_i, *inner)``, see
:mod:`storegate.ragged`) is two ordinary backend arrays beside the other variables of
the phase, each chunked along its first axis like any variable::

    <data_id>/<phase>/<var>@values    (sum of L_i, *inner)   the rows' values, one after another
    <data_id>/<phase>/<var>@offsets   (N,) int64             the END offset of each row

Row ``i`` is ``values[offsets[i-1]:offsets[i]]`` (``offsets[-1]`` read as 0 for row 0), so
plain zarr reads it without storegate, and the offsets hold exactly one entry per row: the
phase's length check, appends, checkpoints and rollbacks, the journal and the compile
state all work per array unchanged, on every backend (numpy, zarr, hybrid, icechunk).
The engine folds the two arrays into one variable; ``@`` is the reserved separator
(a var_name may not end in ``@values`` or ``@offsets``).

A read of rows ``[a, b)`` costs two reads: the offsets ``[a-1, b)``, then the one span of
values they bound (:func:`read_span`), which is what windows inside rows build on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from storegate import steps
from storegate.backends import Backend
from storegate.errors import InvalidArgumentError
from storegate.indexing import Selection
from storegate.names import OFFSETS, VALUES
from storegate.ragged import common_dtype_of, make_rows, pack
from storegate.rules import cast, check_row_shape
from storegate.steps import Plan, layout_of

__all__ = [
    "OFFSETS",
    "VALUES",
    "check_names",
    "counted",
    "fold",
    "is_ragged",
    "lengths",
    "offsets_name",
    "plan_append",
    "plan_delete",
    "plan_replace",
    "plan_write",
    "read_rows",
    "read_span",
    "row_length",
    "values_name",
]


def values_name(var: str) -> str:
    """The backend name of a ragged variable's values."""
    return var + VALUES


def offsets_name(var: str) -> str:
    """The backend name of a ragged variable's end offsets."""
    return var + OFFSETS


def fold(stored: Iterable[str]) -> list[str]:
    """The variables the backend names ``stored`` hold: each ragged pair folded into its var_name."""
    names = set(stored)
    ragged = {n[: -len(OFFSETS)] for n in names if n.endswith(OFFSETS) and values_name(n[: -len(OFFSETS)]) in names}
    parts = {values_name(v) for v in ragged} | {offsets_name(v) for v in ragged}
    return sorted((names - parts) | ragged)


def counted(stored: Iterable[str]) -> list[str]:
    """The backend names with one entry per row of the phase (every name but ragged values)."""
    return [n for n in stored if not n.endswith(VALUES)]


def check_names(names: Iterable[str]) -> None:
    """Refuse var_names that end in the reserved ``@values`` / ``@offsets``.

    Raises
    ------
    InvalidArgumentError
        Naming the var_name and the fix.
    """
    for name in names:
        if name.endswith((VALUES, OFFSETS)):
            raise InvalidArgumentError(
                f"var_name must not end in {VALUES!r} or {OFFSETS!r}: storegate stores a ragged variable's values "
                f"and offsets under those names. Got {name!r} instead. Choose another name."
            )


def is_ragged(backend: Backend, data_id: str, phase: str, var: str) -> bool:
    """True when ``phase`` holds ``var`` as a ragged variable."""
    return backend.has(data_id, phase, offsets_name(var)) and backend.has(data_id, phase, values_name(var))


# --- reading -------------------------------------------------------------------------------


def _bounds(backend: Backend, data_id: str, phase: str, var: str, start: int, stop: int) -> np.ndarray:
    """The ``stop - start + 1`` value offsets that bound rows ``[start, stop)``."""
    if stop <= start:
        return np.zeros(1, dtype=np.int64)
    first = max(start - 1, 0)
    ends = backend.read(data_id, phase, offsets_name(var), slice(first, stop, 1)).astype(np.int64, copy=False)
    return ends if start > 0 else np.concatenate([np.zeros(1, dtype=np.int64), ends])


def read_span(
    backend: Backend, data_id: str, phase: str, var: str, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[start, stop)`` as their flat values ``(sum L_i, *inner)`` and int64 bounds ``(n + 1,)``.

    Row ``start + k`` is ``values[bounds[k] - bounds[0]:bounds[k + 1] - bounds[0]]``; two
    backend reads (offsets, then one span of values).
    """
    bounds = _bounds(backend, data_id, phase, var, start, stop)
    values = backend.read(data_id, phase, values_name(var), slice(int(bounds[0]), int(bounds[-1]), 1))
    return values, bounds


def row_length(backend: Backend, data_id: str, phase: str, var: str, row: int) -> int:
    """The length ``L_i`` of one row (one small read of the offsets)."""
    bounds = _bounds(backend, data_id, phase, var, row, row + 1)
    return int(bounds[1] - bounds[0])


def lengths(backend: Backend, data_id: str, phase: str, var: str) -> np.ndarray:
    """The length of every row, int64 ``(N,)`` (reads the offsets only)."""
    n = backend.shape(data_id, phase, offsets_name(var))[0]
    return np.diff(_bounds(backend, data_id, phase, var, 0, n))


def read_rows(backend: Backend, data_id: str, phase: str, var: str, selection: Selection) -> np.ndarray:
    """The rows of a normalised selection: one array for an int, else ragged rows (object array).

    Consecutive selected rows are read as one span of values.
    """
    if isinstance(selection, int):
        return read_span(backend, data_id, phase, var, selection, selection + 1)[0]
    if isinstance(selection, slice):
        return _split(*read_span(backend, data_id, phase, var, selection.start, selection.stop))
    wanted = np.unique(selection)
    found: dict[int, np.ndarray] = {}
    for run in np.split(wanted, np.flatnonzero(np.diff(wanted) != 1) + 1) if wanted.size else []:
        start = int(run[0])
        for k, row in enumerate(_split(*read_span(backend, data_id, phase, var, start, int(run[-1]) + 1))):
            found[start + k] = row
    # A row selected twice is one array twice, as numpy's fancy indexing gives equal rows.
    return make_rows([found[int(i)] for i in selection])


def _split(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    local = bounds - bounds[0]
    return make_rows([values[local[k] : local[k + 1]] for k in range(local.shape[0] - 1)])


# --- planning writes -----------------------------------------------------------------------


def _stored_layout(backend: Backend, data_id: str, phase: str, var: str) -> tuple[tuple[int, ...], np.dtype]:
    name = values_name(var)
    return backend.shape(data_id, phase, name)[1:], backend.dtype(data_id, phase, name)


def _fit(rows: Sequence[np.ndarray], inner: tuple[int, ...], dtype: np.dtype, var: str, phase: str) -> list[np.ndarray]:
    """The rows checked against the stored inner shape and cast to the stored dtype."""
    out = []
    for row in rows:
        if row.ndim == 0:
            raise InvalidArgumentError(
                f"data for the ragged var_name {var!r} in phase {phase!r} must hold rows of shape (L, *{inner}). Got "
                "a 0-d value instead: give each row as an array."
            )
        check_row_shape(var, phase, inner, row.shape[1:])
        out.append(cast(row, dtype, var))
    return out


def _new_layout(rows: Sequence[np.ndarray]) -> tuple[tuple[int, ...], np.dtype]:
    return rows[0].shape[1:], common_dtype_of(rows, "data")


def plan_create(
    backend: Backend, data_id: str, phase: str, var: str, rows: Sequence[np.ndarray], options: dict[str, object]
) -> Plan:
    """Create a ragged variable holding ``rows`` (nothing for no row, as for every variable)."""
    plan = Plan()
    if not rows:
        return plan
    inner, dtype = _new_layout(rows)
    values, ends = pack(rows, inner, dtype)
    for name, array in ((values_name(var), values), (offsets_name(var), ends)):
        plan.add_change(
            steps.create_step(backend, data_id, phase, name, array, dict(options)), phase, name, layout_of(array)
        )
    return plan


def plan_append(
    backend: Backend, data_id: str, phase: str, var: str, rows: Sequence[np.ndarray], options: dict[str, object]
) -> Plan:
    """Append rows to a ragged variable, creating it when absent.

    Raises
    ------
    InvalidArgumentError
        If a row's inner shape differs from the stored one, or its dtype does not cast.
    """
    if not is_ragged(backend, data_id, phase, var):
        return plan_create(backend, data_id, phase, var, rows, options)
    inner, dtype = _stored_layout(backend, data_id, phase, var)
    fitted = _fit(rows, inner, dtype, var, phase)
    plan = Plan()
    if not fitted:
        return plan
    n = backend.shape(data_id, phase, offsets_name(var))[0]
    total = backend.shape(data_id, phase, values_name(var))[0]
    values, ends = pack(fitted, inner, dtype, start=total)
    for name, array, before in ((values_name(var), values, total), (offsets_name(var), ends, n)):
        if array.shape[0]:
            step = steps.append_step(backend, data_id, phase, name, array, before)
            plan.add_change(step, phase, name, layout_of(array, before + array.shape[0]))
    return plan


def plan_write(
    backend: Backend, data_id: str, phase: str, var: str, selection: slice | np.ndarray, rows: Sequence[np.ndarray]
) -> Plan:
    """Overwrite whole rows of a ragged variable (``rows`` in selection order).

    Rows of unchanged lengths are written in place; otherwise the values from the first
    changed row on are rewritten (a replace of the values, a write of the offsets).
    """
    inner, dtype = _stored_layout(backend, data_id, phase, var)
    fitted = _fit(rows, inner, dtype, var, phase)
    n = backend.shape(data_id, phase, offsets_name(var))[0]
    positions = np.arange(selection.start, selection.stop) if isinstance(selection, slice) else selection
    plan = Plan()
    if not positions.size:
        return plan
    old = read_rows(backend, data_id, phase, var, slice(0, n, 1))
    new = list(old)
    for i, row in zip(positions.tolist(), fitted, strict=True):
        new[i] = row  # a row selected twice takes its last value, as numpy assigns
    if all(a.shape[0] == b.shape[0] for a, b in zip(old, new, strict=True)):
        return _plan_in_place(backend, data_id, phase, var, new, positions)
    values, ends = pack(new, inner, dtype)
    plan.add_change(
        steps.replace_step(backend, data_id, phase, values_name(var), values),
        phase,
        values_name(var),
        layout_of(values),
    )
    plan.add(steps.write_step(backend, data_id, phase, offsets_name(var), slice(0, n, 1), ends))
    return plan


def _plan_in_place(
    backend: Backend, data_id: str, phase: str, var: str, rows: list[np.ndarray], positions: np.ndarray
) -> Plan:
    """Write the values of the selected rows where they lie (the offsets do not change)."""
    inner, dtype = _stored_layout(backend, data_id, phase, var)
    ends = np.cumsum([r.shape[0] for r in rows], dtype=np.int64)
    starts = ends - np.array([r.shape[0] for r in rows], dtype=np.int64)
    chosen = np.unique(positions)
    where = np.concatenate([np.arange(starts[i], ends[i], dtype=np.int64) for i in chosen.tolist()])
    plan = Plan()
    if where.size:
        values = np.concatenate([rows[i] for i in chosen.tolist()]).reshape((-1, *inner)).astype(dtype, copy=False)
        plan.add(steps.write_step(backend, data_id, phase, values_name(var), where, values))
    return plan


def plan_replace(backend: Backend, data_id: str, phase: str, var: str, rows: Sequence[np.ndarray]) -> Plan:
    """Replace a whole ragged variable by ``rows`` (any count, inner shape or dtype): shuffle."""
    plan = Plan()
    inner, dtype = _new_layout(rows) if rows else _stored_layout(backend, data_id, phase, var)
    values, ends = pack(rows, inner, dtype)
    for name, array in ((values_name(var), values), (offsets_name(var), ends)):
        plan.add_change(steps.replace_step(backend, data_id, phase, name, array), phase, name, layout_of(array))
    return plan


def plan_delete(backend: Backend, data_id: str, phase: str, var: str) -> Plan:
    """Delete both arrays of a ragged variable."""
    plan = Plan()
    for name in (values_name(var), offsets_name(var)):
        if backend.has(data_id, phase, name):
            plan.add_change(steps.delete_step(backend, data_id, phase, name), phase, name, None)
    return plan
