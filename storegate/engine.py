"""The engine of one data_id (a zarr group): reads, phase lengths, write plans, the compile state.

:class:`GroupEngine` is everything the StoreGate facade, its views, the streaming writer,
the transforms and the hybrid moves do with the data of one data_id:

- **reads**, including phase ``'all'`` (the phases concatenated in order);
- **phase lengths**, checked: every variable of a phase has the same number of rows;
- **write plans**: every write is planned and validated before the first byte is written
  (:mod:`storegate.steps`), then applied in one transaction that undoes every step in
  reverse order when one fails (:mod:`storegate.transaction`);
- the **compile state** saved in the store: sizes and a fingerprint of every variable,
  checked against the data so that a stale state is detected, never trusted.

Arguments arrive parsed (:class:`~storegate.names.VarNames`, phase names, split specs of
:mod:`storegate.phases` and :mod:`storegate.splits`); the engine checks what depends on the
stored data.
"""

from __future__ import annotations

import contextlib
import difflib
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from storegate import ragged_store as rs
from storegate import steps
from storegate.backends import Backend, note_change
from storegate.errors import ConflictError, InvalidArgumentError, NotFoundError, ValidationError
from storegate.indexing import (
    Inner,
    InnerSelection,
    Selection,
    as_row_index,
    inner_shape,
    is_row,
    no_draw,
    normalize_index,
    normalize_inner,
    parse_index,
    selection_length,
    selects_inside,
    split_selection,
)
from storegate.names import VarNames
from storegate.phases import ALL, PHASES, phases_of
from storegate.ragged import batch, check_batch_mode, is_rows, make_rows, rows_or_array
from storegate.rules import as_array, cast, check_row_shape, common_dtype, common_length, with_rows
from storegate.splits import PhaseRows, SplitSpec, phase_rows
from storegate.steps import Layout, Plan, layout_of
from storegate.transaction import Step, Transaction
from storegate.windows import RandomWindow

__all__ = ["ACTIVE", "SOURCES", "Fingerprint", "GroupEngine", "VarLayout", "fit_rows", "validate"]

#: The boolean variable that ``compile(reset=True)`` (re)creates in every non-empty phase.
ACTIVE = "active"
#: The state key that records the files imported into each variable (storegate.exchange).
SOURCES = "sources"
#: Times a read is done again when another writer began rewriting the data_id meanwhile.
READ_ATTEMPTS = 5

#: ``{phase: {var: layout}}`` of every stored variable, as the compile state records it.
Fingerprint = dict[str, dict[str, Layout]]


@dataclass(frozen=True)
class VarLayout:
    """Where one variable lies across phases, read as one array.

    Attributes
    ----------
    parts
        ``(phase, shape)`` of every phase that holds the variable, in phase order.
    dtype
        The dtype the parts concatenate to.
    row_shape
        Their common row shape.
    """

    parts: tuple[tuple[str, tuple[int, ...]], ...]
    dtype: np.dtype
    row_shape: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the phases read as one array: their rows added up, then the row shape."""
        return (sum(self.sizes), *self.row_shape)

    @property
    def sizes(self) -> list[int]:
        """Rows of each of train, valid and test (0 where the variable is absent)."""
        shapes = dict(self.parts)
        return [shapes[p][0] if p in shapes else 0 for p in PHASES]


class GroupEngine:
    """Reads and writes of one data_id of a backend.

    Parameters
    ----------
    backend
        Where the data live.
    data_id
        The data_id (a zarr group of the store).
    """

    def __init__(self, backend: Backend, data_id: str) -> None:
        self.backend = backend
        self.data_id = data_id

    # --- reading ---------------------------------------------------------------------

    def var_names(self, phase: str) -> list[str]:
        """Sorted variable names of a phase (of any phase for ``'all'``)."""
        self.backend.refresh_if_changed(self.data_id)
        return sorted({v for p in phases_of(phase) for v in rs.fold(self.backend.var_names(self.data_id, p))})

    def has(self, phase: str, var: str) -> bool:
        """True when the variable exists in the phase (in any phase for ``'all'``)."""
        return any(
            self.backend.has(self.data_id, p, var) or rs.is_ragged(self.backend, self.data_id, p, var)
            for p in phases_of(phase)
        )

    def is_ragged(self, phase: str, var: str) -> bool:
        """True when the phase (any phase, for ``'all'``) holds ``var`` as a ragged variable."""
        return any(rs.is_ragged(self.backend, self.data_id, p, var) for p in phases_of(phase))

    def shape(self, phase: str, var: str) -> tuple[int, ...]:
        """Shape ``(N, ...)`` of a variable; for ``'all'`` the phases' rows added up.

        A ragged variable's shape is ``(N,)``: its rows differ in length (see :meth:`row_shape`).
        """
        if self.is_ragged(phase, var):
            offsets = rs.offsets_name(var)
            return (sum(self.backend.shape(self.data_id, p, offsets)[0] for p in self._ragged_phases(phase, var)),)
        if phase != ALL:
            return self.backend.shape(self.data_id, phase, var)
        layout = self.layout(var, promote=False)
        return (sum(layout.sizes), *layout.row_shape)

    def require(self, phase: str, var: str) -> None:
        """Raise NotFoundError unless the phase (any phase, for 'all') holds the variable."""
        if not self.has(phase, var):
            stored = self.var_names(phase)
            close = difflib.get_close_matches(var, stored, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            where = "any phase" if phase == ALL else f"phase {phase!r}"
            raise NotFoundError(
                f"var_name {var!r} does not exist in {where} of data_id {self.data_id!r}. "
                f"Stored var_names there: {stored}.{hint}"
            )

    def _ragged_phases(self, phase: str, var: str) -> list[str]:
        return [p for p in phases_of(phase) if rs.is_ragged(self.backend, self.data_id, p, var)]

    def row_shape(self, phase: str, var: str) -> tuple[int | None, ...] | None:
        """The shape of one row of a variable (multiml's ``get_var_shapes``); None when absent.

        A ragged variable's rows are ``(None, *inner)``: None stands for the length that varies.
        """
        if self.is_ragged(phase, var):
            inner = self.row_shape(phase, rs.values_name(var))
            assert inner is not None
            return (None, *inner)
        rows = {
            self.backend.shape(self.data_id, p, var)[1:]
            for p in phases_of(phase)
            if self.backend.has(self.data_id, p, var)
        }
        if len(rows) > 1:  # 'all' has no one row shape: get_data would refuse it too
            raise ValidationError(
                f"var_name {var!r} must have one row shape across phases to have a row shape in phase {phase!r}. "
                f"Got {sorted(rows)} instead: ask for one phase, or convert the phases to one layout."
            )
        return rows.pop() if rows else None

    def layout(self, var: str, phases: tuple[str, ...] = PHASES, promote: bool = True) -> VarLayout:
        """Where a variable lies across ``phases``, to be read as one array.

        Raises
        ------
        NotFoundError
            If no phase holds the variable, or a phase that holds rows lacks it (read as one
            array it would not line up with the phases' rows; multiml raised there too).
        ValidationError
            If the phases disagree on the row shape.
        """
        parts = tuple(
            (p, self.backend.shape(self.data_id, p, var)) for p in phases if self.backend.has(self.data_id, p, var)
        )
        if not parts:
            where = "any phase" if len(phases) > 1 else f"phase {phases[0]!r}"
            stored = sorted({v for p in phases for v in self.backend.var_names(self.data_id, p)})
            raise NotFoundError(
                f"var_name {var!r} does not exist in {where} of data_id {self.data_id!r}. "
                f"Stored var_names there: {stored}."
            )
        held = {p for p, _ in parts}
        lacking = [p for p in phases if p not in held and self._holds_rows(p)]
        if lacking:
            raise NotFoundError(
                f"var_name {var!r} of data_id {self.data_id!r} is missing from phase(s) {lacking}, which hold rows: "
                f"read as one array it would not line up with them. Read the phases that hold it "
                f"({sorted(held)}), or add it to {lacking}."
            )
        rows = {shape[1:] for _, shape in parts}
        if len(rows) > 1:
            raise ValidationError(
                f"var_name {var!r} must have one row shape across phases to be read as one array. "
                f"Got {sorted(rows)} instead."
            )
        dtypes = [self.backend.dtype(self.data_id, p, var) for p, _ in parts]
        # Reads need the one dtype that holds every phase's values; writes cast per phase.
        dtype = common_dtype(dtypes, f"var_name {var!r} of data_id {self.data_id!r}") if promote else dtypes[0]
        return VarLayout(parts, dtype, rows.pop())

    def _holds_rows(self, phase: str) -> bool:
        stored = rs.counted(self.backend.var_names(self.data_id, phase))
        return any(self.backend.shape(self.data_id, phase, v)[0] for v in stored)

    def phase_length(self, phase: str) -> int:
        """Rows of a phase (all phases added up for ``'all'``).

        Raises
        ------
        ValidationError
            If the variables of a phase disagree in length.
        """
        self.backend.refresh_if_changed(self.data_id)
        return sum(self._checked_length(p) for p in phases_of(phase))

    def _checked_length(self, phase: str) -> int:
        lengths = {
            var: self.backend.shape(self.data_id, phase, var)[0]
            for var in rs.counted(self.backend.var_names(self.data_id, phase))
        }
        return common_length(lengths, f"every variable of phase {phase!r} in data_id {self.data_id!r}")

    def get(
        self,
        names: VarNames,
        phase: str,
        index: Any,
        batch_mode: Any = None,
        batch_args: Any = None,
        *,
        rows: np.ndarray | None = None,
    ) -> Any:
        """The rows ``index`` of ``names`` in ``phase``, in the form ``names`` asks for.

        ``index`` may select inside rows too (see :mod:`storegate.indexing`). ``rows``: the
        phase rows of a view; the row index then picks positions among them. A batch of a
        ragged variable comes in the form of ``batch_mode`` (see :func:`storegate.ragged.batch`);
        ``batch_mode='rows'`` gives the ragged rows themselves (an object array), as copies
        between tiers need them.
        """
        # The batch mode only shapes ragged rows, which _cached_row leaves to the read below
        # (the callers, get_data and the item syntax, checked it already).
        one = type(index) is int or isinstance(index, np.integer)
        if one and rows is None and names.form == "str" and phase != ALL:
            row = self._cached_row(phase, names.names[0], int(index))
            if row is not None:
                return row
        rows_wanted = batch_mode == "rows"
        mode, args = check_batch_mode(None if rows_wanted else batch_mode, batch_args)
        arrays = self._read_unchanged(names, phase, index, rows)
        scalar = self._scalar_row(names, phase, index)
        if any(is_rows(a) for a in arrays) and names.form == "tuple":
            raise InvalidArgumentError(
                f"var_names given as a tuple are stacked, which ragged rows cannot be. Got {names.names!r} with "
                "a ragged variable among them. Read them as a list, or read the ragged variable alone."
            )
        if scalar:  # one row of a 1-D variable is a numpy scalar, as numpy indexing gives
            arrays = [a[()] if a.ndim == 0 else a for a in arrays]
        if not rows_wanted:
            arrays = [
                batch(list(a), mode, args, None if len(a) else self._no_rows(phase, var)) if is_rows(a) else a
                for var, a in zip(names.names, arrays, strict=True)
            ]
        return names.join(arrays, scalar=scalar)

    def warm_row(self, phase: str, var: str, index: int) -> Any:
        """Row ``index`` (an int) of ``var`` as :meth:`get` gives it, when the backend serves it
        warm (see :meth:`Backend.warm_row`); else None: the caller reads it with :meth:`get`."""
        return _as_read(self.backend.warm_row(self.data_id, phase, var, index))

    def _cached_row(self, phase: str, var: str, index: int) -> Any:
        """One row as :meth:`get` gives it, when the backend holds it decoded; else None.

        The hot path of random row reads (``sg['train']['x'][i]``): checked as every read is
        (:meth:`Backend.start_read` / :meth:`Backend.unchanged`), without the layout lookups.
        """
        warm = self.warm_row(phase, var, index)
        if warm is not None:
            return warm
        self.backend.start_read(self.data_id)
        row = self.backend.cached_row(self.data_id, phase, var, index)
        if row is None or not self.backend.unchanged(self.data_id):
            return None  # the read as usual (it starts again, by the newest commit when that changed)
        return _as_read(row)

    def _no_rows(self, phase: str, var: str) -> np.ndarray:
        """An empty ``(0, *inner)`` array of a ragged variable's values: the form of a batch of no row."""
        values = self._values_layout(phase, var)
        return np.empty((0, *values.row_shape), dtype=values.dtype)

    def _values_layout(self, phase: str, var: str) -> VarLayout:
        """The layout of a ragged variable's values over the phases that hold it."""
        return self.layout(rs.values_name(var), tuple(self._ragged_phases(phase, var)))

    def _ndim(self, phase: str, var: str) -> int:
        """Axes of the variable, rows included (a ragged one: rows, each row's length, then its inner axes)."""
        if self.is_ragged(phase, var):
            return 2 + len(self._values_layout(phase, var).row_shape)
        return len(self.shape(phase, var))

    def _scalar_row(self, names: VarNames, phase: str, index: Any) -> bool:
        """True when the index takes one row (its row axis dropped), for every variable read."""
        if not selects_inside(index):
            return is_row(index)
        scalar = {is_row(parse_index(index, self._ndim(phase, var)).rows) for var in names.names}
        if len(scalar) > 1:  # a leading Ellipsis over variables of different ranks
            raise InvalidArgumentError(
                f"index must take the rows the same way for every var_name read. Got {index!r:.80}, whose leading "
                f"Ellipsis covers the row axis of some of {list(names.names)} only: give the row item first."
            )
        return scalar.pop()

    def _read_unchanged(
        self, names: VarNames, phase: str, index: Any, rows: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """Read each variable, again when another writer began a rewrite in place meanwhile.

        The last try of a writable store holds the write lock, so no writer can start
        meanwhile: only a read-only handle under writers that rewrite without pause runs
        out of tries.
        """
        for attempt in range(READ_ATTEMPTS):
            last = attempt == READ_ATTEMPTS - 1 and self.backend.writable
            with self.writing() if last else contextlib.nullcontext():
                self.backend.start_read(self.data_id)  # each read sees the newest commit
                try:
                    arrays = [self.read(phase, var, index, rows) for var in names.names]
                except Exception:
                    if self.backend.unchanged(self.data_id):
                        raise
                    arrays = None  # it failed because the data changed under it (a deleted variable's chunks)
                if arrays is not None and self.backend.unchanged(self.data_id):
                    return arrays
            time.sleep(0.002 * 2**attempt * random.random())  # out of step with a writer that loops
        raise ConflictError(
            f"data_id {self.data_id!r} must stay unchanged while it is read. Got {READ_ATTEMPTS} reads in a row "
            "during which another writer (a process, or another thread of this StoreGate) began rewriting it in "
            "place (update, shuffle, astype, delete...). Retry, or read while nobody rewrites it."
        )

    def read(self, phase: str, var: str, index: Any, rows: np.ndarray | None = None) -> np.ndarray:
        """The rows ``index`` (any accepted index form, inside rows too) of one variable.

        ``rows``: the phase rows of a view, among which the row index picks positions. A
        ragged variable gives one row ``(L_i, *inner)`` for an int, else ragged rows (an
        object array of them, see :mod:`storegate.ragged`).
        """
        if self.is_ragged(phase, var):
            return self._read_ragged_index(phase, var, index, rows)
        layout = self.layout(var) if phase == ALL else None
        shape = self.backend.shape(self.data_id, phase, var) if layout is None else layout.shape
        if not selects_inside(index) and rows is None:  # the hot path: one plain row read
            return self._read_part(phase, var, normalize_index(index, shape[0]), (), layout)
        parsed = parse_index(index, len(shape))
        if rows is None:
            selection = normalize_index(parsed.rows, shape[0])
        else:
            selection = normalize_index(as_row_index(rows[normalize_index(parsed.rows, rows.shape[0])]), shape[0])
        if parsed.inner is None:
            return self._read_part(phase, var, selection, (), layout)
        inner = normalize_inner(parsed.inner, shape[1:], parsed.rows)
        if inner.windows:
            return self._read_windows(phase, var, selection, inner, shape[1:], layout)
        part = self._read_part(phase, var, selection, inner.resolve(shape[1:], no_draw), layout)
        return inner.reverse(part, _has_rows(selection))

    def _read_ragged_index(self, phase: str, var: str, index: Any, rows: np.ndarray | None) -> np.ndarray:
        """Rows of a ragged variable, then inside each row what the index selects (windows drawn per row).

        The rows are read whole, then cut in memory: each has its own length.
        """
        parsed = parse_index(index, self._ndim(phase, var))
        row_index = parsed.rows
        if rows is not None:
            row_index = as_row_index(rows[normalize_index(parsed.rows, rows.shape[0])])
        got = self._read_ragged(phase, var, row_index)
        if parsed.inner is None:
            return got

        def cut(row: np.ndarray) -> np.ndarray:
            inner = normalize_inner(parsed.inner or (), tuple(row.shape), parsed.rows)
            return inner.reverse(row[inner.resolve(tuple(row.shape), RandomWindow.draw)], False)

        if not is_rows(got):
            return cut(got)
        return make_rows([cut(row) for row in got])

    def _read_windows(
        self,
        phase: str,
        var: str,
        selection: Selection,
        inner: InnerSelection,
        row_shape: tuple[int, ...],
        layout: VarLayout | None,
    ) -> np.ndarray:
        """One row at a time, each with windows of its own (lardon draws one per item)."""
        if isinstance(selection, int):
            part = self._read_part(phase, var, selection, inner.resolve(row_shape, RandomWindow.draw), layout)
            return inner.reverse(part, False)
        numbers = np.arange(selection.start, selection.stop) if isinstance(selection, slice) else selection
        parts = [self._read_windows(phase, var, int(r), inner, row_shape, layout) for r in numbers]
        if parts:
            return np.stack(parts)
        dtype = self._read_part(phase, var, slice(0, 0, 1), (), layout).dtype
        return np.zeros((0, *inner.window_shape(row_shape)), dtype=dtype)

    def _read_part(
        self, phase: str, var: str, selection: Selection, inner: Inner, layout: VarLayout | None
    ) -> np.ndarray:
        """Normalised rows and a resolved inner selection (``()``: whole rows); ``layout`` for 'all'."""
        if layout is None:
            return self._read_stored(phase, var, selection, inner)
        if isinstance(selection, int):
            piece = next(split_selection(selection, layout.sizes))
            # One row of 'all' has the dtype of the whole concatenation, not of its phase.
            return self._read_stored(PHASES[piece.part], var, piece.local, inner).astype(layout.dtype, copy=False)
        shape = inner_shape(inner, layout.row_shape) if inner else layout.row_shape
        out = np.empty((selection_length(selection) or 0, *shape), dtype=layout.dtype)
        for piece in split_selection(selection, layout.sizes):
            out[piece.positions] = self._read_stored(PHASES[piece.part], var, piece.local, inner)
        return out

    def _read_ragged(self, phase: str, var: str, index: Any) -> np.ndarray:
        phases = self._ragged_phases(phase, var)
        if phase != ALL:
            selection = normalize_index(index, self.shape(phase, var)[0])
            return rs.read_rows(self.backend, self.data_id, phase, var, selection)
        lacking = [p for p in PHASES if p not in phases and self._holds_rows(p)]
        if lacking:  # read as one list it would not line up with those phases' rows
            raise NotFoundError(
                f"var_name {var!r} of data_id {self.data_id!r} is missing from phase(s) {lacking}, which hold rows: "
                f"read as one list it would not line up with them. Read the phases that hold it ({phases}), or "
                f"add it to {lacking}."
            )
        dtype = self._values_layout(phase, var).dtype  # one inner shape, and the dtype every phase's values fit
        sizes = [self.shape(p, var)[0] if p in phases else 0 for p in PHASES]
        selection = normalize_index(index, sum(sizes))
        pieces = split_selection(selection, sizes)
        if isinstance(selection, int):
            piece = next(pieces)
            return rs.read_rows(self.backend, self.data_id, PHASES[piece.part], var, piece.local).astype(dtype)
        out = np.empty(selection_length(selection) or 0, dtype=object)
        for piece in pieces:
            part = rs.read_rows(self.backend, self.data_id, PHASES[piece.part], var, piece.local)
            out[piece.positions] = make_rows([row.astype(dtype, copy=False) for row in part])
        return out

    def _read_stored(self, phase: str, var: str, selection: Selection, inner: Inner) -> np.ndarray:
        # Small reads may come from the backend's decoded chunks (the zarr backend's cache).
        return self.backend.read_cached(self.data_id, phase, var, selection, inner)

    # --- planning writes -------------------------------------------------------------

    def split(
        self, arrays: list[np.ndarray], phase: str | SplitSpec, names: VarNames | None = None
    ) -> dict[str, list[np.ndarray]]:
        """Which rows of each array go to which phase.

        A phase name takes every row; ``'all'`` splits by the current phase lengths; a
        :class:`~storegate.phases.Split` by its fractions or counts, a :class:`~storegate.splits.StratifiedSplit`
        or :class:`~storegate.splits.KFold` by the rows it chooses (``names``, one per array,
        let a stratified split name its labels), leaving out a phase that gets no row.
        With multiml's rule for empty phases (``continue`` when a phase's part is empty), a
        call never creates a variable of 0 rows nor writes one there.
        """
        if isinstance(phase, str) and phase != ALL:
            return {phase: arrays}  # no row: checked against an existing variable, nothing created
        n_rows = arrays[0].shape[0]
        if isinstance(phase, str):
            bounds = np.cumsum([0, *self._lengths_for_all(n_rows)]).tolist()
            parts: PhaseRows = tuple(slice(bounds[i], bounds[i + 1]) for i in range(3))  # type: ignore[assignment]
        else:
            named = {} if names is None else dict(zip(names.names, arrays, strict=True))
            parts = phase_rows(phase, n_rows, named)
        return {p: [a[part] for a in arrays] for p, part in zip(PHASES, parts, strict=True) if _part_size(part)}

    def _lengths_for_all(self, n_rows: int) -> tuple[int, int, int]:
        sizes = tuple(self._checked_length(p) for p in PHASES)
        if sum(sizes) != n_rows or n_rows == 0:
            raise InvalidArgumentError(
                f"phase 'all' shares rows out as the phases hold them (train/valid/test = {sizes}), so it needs "
                f"{sum(sizes)} rows{' (and some phase must hold rows)' if not sum(sizes) else ''}. Got {n_rows} "
                "rows instead: name one phase, or give a split such as (0.8, 0.1, 0.1)."
            )
        return sizes  # type: ignore[return-value]

    def plan_add(
        self, names: VarNames, arrays: list[np.ndarray], phase: str | SplitSpec, options: dict[str, Any]
    ) -> Plan:
        """Append ``arrays`` (one per name) to their variables, creating missing ones."""
        self.backend.check_writable()
        rs.check_names(names.names)
        plan = Plan()
        for p, pieces in self.split(arrays, phase, names).items():
            for var, array in zip(names.names, pieces, strict=True):
                plan.extend(self._plan_append(p, var, array, options))
        return plan

    def _plan_append(self, phase: str, var: str, array: np.ndarray, options: dict[str, Any]) -> Plan:
        if is_rows(array) or rs.is_ragged(self.backend, self.data_id, phase, var):
            self._check_not_fixed(phase, var)
            self._check_same_kind(phase, var, ragged=True)
            return rs.plan_append(self.backend, self.data_id, phase, var, self._rows(array, var), options)
        plan = Plan()
        if not self.backend.has(self.data_id, phase, var):
            self._check_same_kind(phase, var, ragged=False)
            if not array.shape[0]:  # multiml creates nothing for a phase that gets no row
                return plan
            step = steps.create_step(self.backend, self.data_id, phase, var, array, options)
            plan.add_change(step, phase, var, layout_of(array))
            return plan
        shape = self.backend.shape(self.data_id, phase, var)
        check_row_shape(var, phase, shape[1:], array.shape[1:])
        rows = cast(array, self.backend.dtype(self.data_id, phase, var), var)
        if rows.shape[0]:  # no rows to append: checked, nothing to write
            step = steps.append_step(self.backend, self.data_id, phase, var, rows, shape[0])
            plan.add_change(step, phase, var, layout_of(rows, shape[0] + rows.shape[0]))
        return plan

    def _check_not_fixed(self, phase: str, var: str) -> None:
        """Ragged rows may not go into a fixed-shape variable."""
        if self.backend.has(self.data_id, phase, var):
            shape = self.backend.shape(self.data_id, phase, var)
            raise InvalidArgumentError(
                f"data for var_name {var!r} in phase {phase!r} must fit its rows of shape {shape[1:]}. Got ragged rows "
                "(arrays of different lengths) instead. Pad or crop them to one length, or store them as a new "
                "(ragged) variable."
            )

    def _check_same_kind(self, phase: str, var: str, ragged: bool) -> None:
        """A variable is ragged in every phase that holds it, or in none (phase 'all' reads them as one)."""
        others = [p for p in PHASES if p != phase and self.has(p, var) and self.is_ragged(p, var) != ragged]
        if others:
            kind, fix = ("fixed-shape", "Pad or crop the rows") if ragged else ("ragged", "Pass ragged=True")
            raise InvalidArgumentError(
                f"data for var_name {var!r} in phase {phase!r} must be of the kind the variable has in phase(s) "
                f"{others}: {kind}. Got {'ragged' if ragged else 'fixed-shape'} rows instead. {fix}, or use another "
                "var_name."
            )

    def _rows(self, array: np.ndarray, var: str) -> list[np.ndarray]:
        """The rows to write to a ragged variable: ragged rows, or the rows of ``(n, L, ...)``."""
        if is_rows(array):
            return list(array)
        if array.ndim < 2:
            raise InvalidArgumentError(
                f"data for the ragged var_name {var!r} must hold rows of shape (L, ...). Got shape {array.shape} "
                "instead: give a list of arrays, one per row."
            )
        return list(array)

    def plan_update(self, names: VarNames, data: Any, phase: str | SplitSpec, index: Any) -> Plan:
        """Write rows of existing variables (every row when ``index`` is None); add missing ones.

        As in multiml, writing follows numpy's assignment rule (``x[rows] = data``): the data
        must broadcast to the rows written, so an update never changes a variable's length.
        With a split or ``'all'`` (and no index) the data are split first; each phase that
        gets rows writes them, or creates the variable where it is missing.
        """
        self.backend.check_writable()
        rs.check_names(names.names)
        _refuse_windows(index)
        if not isinstance(phase, str) or (phase == ALL and index is None):
            if index is not None:
                raise InvalidArgumentError(f"index must be None when phase is a split. Got {index!r} instead.")
            return self._plan_split_write(names, names.split(data), phase)
        plan = Plan()
        ragged = [var for var in names.names if self.is_ragged(phase, var)]
        if ragged and selects_inside(index):
            raise InvalidArgumentError(
                f"index must take whole rows to write ragged variable(s) {ragged}: writes inside a ragged row are "
                f"not supported. Got {index!r:.80} instead: write whole rows, as in sg[phase][var][1] = new_row or "
                "update_data(..., index=1)."
            )
        scalar = self._write_scalar_row(names, phase, index)
        for var, array in zip(names.names, _split_for_index(names, data, scalar), strict=True):
            if names.form != "str" and scalar and self.is_ragged(phase, var):
                array = array[0]  # one row of a ragged variable is its own array: no row axis added
            plan.extend(self._plan_var_update(phase, var, array, index))
        return plan

    def _write_scalar_row(self, names: VarNames, phase: str, index: Any) -> bool:
        """True when an update's index takes one row, so its data have no row axis.

        Known before the variables are looked up, so that data whose form does not match the
        var_names are refused first whatever the index, as for a row index; the variables are
        then checked in the order given. A tuple that selects inside rows takes its rows with
        its first item, unless that is an Ellipsis: only the variables' ranks place the rows
        then, so a missing variable is reported first.
        """
        if not selects_inside(index):
            return is_row(index)
        if not index or index[0] is not Ellipsis:  # () takes every row, as numpy's x[()]
            return bool(index) and is_row(index[0])
        missing = [var for var in names.names if not self.has(phase, var)]
        if missing:
            raise self._missing_for_index(phase, missing[0], index)
        return self._scalar_row(names, phase, index)

    def _missing_for_index(self, phase: str, var: str, index: Any) -> NotFoundError:
        return NotFoundError(
            f"var_name {var!r} does not exist in data_id {self.data_id!r}, phase {phase!r}, so rows "
            f"cannot be updated by index. Got index {index!r:.80}; pass index=None to add it."
        )

    def _plan_var_update(self, phase: str, var: str, array: np.ndarray, index: Any) -> Plan:
        if not self.has(phase, var):
            if index is not None:
                raise self._missing_for_index(phase, var, index)
            return self._plan_split_write(VarNames((var,), "str"), [with_rows(array, "data")], phase)
        if selects_inside(index):
            return self._plan_inner_write(phase, var, array, index)
        return self._plan_index_write(phase, var, array, index)

    def _plan_inner_write(self, phase: str, var: str, array: np.ndarray, index: tuple[Any, ...]) -> Plan:
        """A write inside rows (``x[3, :, 1:2] = v``): the rows read, changed as numpy assigns, written whole.

        The rows are planned as any row write, so the write transaction saves and puts
        back exactly those rows when the call fails.
        """
        shape = self.shape(phase, var)
        parsed = parse_index(index, len(shape))
        _refuse_windows(parsed.rows)
        if parsed.inner is None:  # (rows, ...): whole rows
            return self._plan_index_write(phase, var, array, parsed.rows)
        inner = normalize_inner(parsed.inner, shape[1:], parsed.rows)
        if inner.windows:
            _refuse_windows(next(i for i in parsed.inner if isinstance(i, RandomWindow)))
        selection = normalize_index(parsed.rows, shape[0])
        rows: Any = slice(selection, selection + 1) if isinstance(selection, int) else selection
        block = self.read(phase, var, rows)
        values = cast(as_array(array, "data"), block.dtype, var)
        # The items as given (numpy takes negative steps itself), lists as their checked positions.
        items = (n if isinstance(n, np.ndarray) else raw for raw, n in zip(parsed.inner, inner.items, strict=True))
        where: tuple[Any, ...] = (slice(None), *items)
        try:
            block[where] = values
        except ValueError:
            one = isinstance(selection, int)  # one row: say the shapes without its axis
            target, given = block[where].shape[one:], values.shape
            if one and len(given) > len(target) and given[0] == 1:
                given = given[1:]  # the row axis the var_names forms add to one row's data
            raise InvalidArgumentError(
                f"data for var_name {var!r} must broadcast to the part of the rows index {index!r:.60} selects, "
                f"shape {target} (numpy's assignment rules). Got shape {given} instead."
            ) from None
        return self._plan_index_write(phase, var, block, rows)

    def _plan_index_write(self, phase: str, var: str, array: np.ndarray, index: Any) -> Plan:
        if self.is_ragged(phase, var):
            return self._plan_ragged_write(phase, var, array, index)
        if is_rows(array):
            self._check_not_fixed(phase, var)
        shape = self.shape(phase, var)
        selection = normalize_index(index, shape[0])
        if isinstance(selection, int):  # a one-row slice, so the write keeps the row axis
            selection = slice(selection, selection + 1, 1)
        where = " in phase 'all'" if phase == ALL else f" in phase {phase!r}"
        rows = fit_rows(array, (selection_length(selection) or 0, *shape[1:]), var, where, index)
        plan = Plan()
        if phase != ALL:
            cast_rows = cast(rows, self.backend.dtype(self.data_id, phase, var), var)
            if cast_rows.shape[0]:  # no row selected: checked, nothing to write
                plan.add(steps.write_step(self.backend, self.data_id, phase, var, selection, cast_rows))
            return plan
        layout = self.layout(var, promote=False)
        dtypes = {p: self.backend.dtype(self.data_id, p, var) for p, _ in layout.parts}
        for dtype in dtypes.values():  # each phase keeps its dtype: same_kind holds against every one
            cast(rows[:0], dtype, var)
        for piece in split_selection(selection, layout.sizes):
            p = PHASES[piece.part]
            values = cast(rows[piece.positions], dtypes[p], var)  # each value must fit its own phase
            plan.add(steps.write_step(self.backend, self.data_id, p, var, piece.local, values))
        return plan

    def _plan_ragged_write(self, phase: str, var: str, array: np.ndarray, index: Any) -> Plan:
        """Write whole rows of a ragged variable; one row (an int index) is given as one array."""
        n = self.shape(phase, var)[0]
        selection = normalize_index(index, n)
        if isinstance(selection, int):  # one row, given as its array
            rows = list(array) if is_rows(array) else [array]
            selection = np.array([selection], dtype=np.int64)
        else:
            rows = self._rows(array, var)
        count = selection_length(selection) or 0
        if len(rows) != count:
            raise InvalidArgumentError(
                f"data for the ragged var_name {var!r} must hold one row per selected row ({count}). Got {len(rows)} "
                "rows instead. Give a list of arrays, one per selected row."
            )
        plan = Plan()
        pieces = split_selection(selection, [self.shape(p, var)[0] if self.has(p, var) else 0 for p in PHASES])
        for piece in pieces if phase == ALL else [None]:
            p = phase if piece is None else PHASES[piece.part]
            local = selection if piece is None else piece.local
            mine = rows if piece is None else [rows[i] for i in np.arange(count)[piece.positions].tolist()]
            assert not isinstance(local, int)
            plan.extend(rs.plan_write(self.backend, self.data_id, p, var, local, mine))
        return plan

    def _plan_split_write(self, names: VarNames, arrays: list[np.ndarray], phase: str | SplitSpec) -> Plan:
        """Write every row of the variables of each phase a split gives rows; create missing ones."""
        plan = Plan()
        for p, pieces in self.split(arrays, phase, names).items():
            for var, array in zip(names.names, pieces, strict=True):
                if self.has(p, var):
                    plan.extend(self._plan_index_write(p, var, array, None))
                elif is_rows(array):
                    self._check_same_kind(p, var, ragged=True)
                    plan.extend(rs.plan_append(self.backend, self.data_id, p, var, list(array), {}))
                elif array.shape[0]:  # no row, no variable (multiml)
                    self._check_same_kind(p, var, ragged=False)
                    step = steps.create_step(self.backend, self.data_id, p, var, array, {})
                    plan.add_change(step, p, var, layout_of(array))
        return plan

    def plan_delete(self, names: VarNames, phase: str) -> Plan:
        """Delete variables; those that do not exist are ignored."""
        self.backend.check_writable()
        plan = Plan()
        deleted = []
        for p in phases_of(phase):
            for var in names.names:
                if rs.is_ragged(self.backend, self.data_id, p, var):
                    plan.extend(rs.plan_delete(self.backend, self.data_id, p, var))
                    deleted.append(f"{p}/{var}")
                elif self.backend.has(self.data_id, p, var):
                    plan.add_change(steps.delete_step(self.backend, self.data_id, p, var), p, var, None)
                    deleted.append(f"{p}/{var}")
        if any(key in self.sources() for key in deleted):  # a deleted variable's sources go with it
            plan.add(self.sources_step(lambda sources: {k: v for k, v in sources.items() if k not in deleted}))
        return plan

    # --- sources: where imported variables came from ---------------------------------

    def sources(self) -> dict[str, list[dict[str, Any]]]:
        """The files imported into each variable, by ``'<phase>/<var>'`` (see :mod:`storegate.exchange`)."""
        found = self.backend.load_state(self.data_id).get(SOURCES, {})
        return found if isinstance(found, dict) else {}

    def sources_step(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Step:
        """A step that saves ``change(sources)`` as the sources, read when it applies."""

        def state() -> dict[str, Any]:
            now = self.backend.load_state(self.data_id)
            sources = change(dict(now.get(SOURCES, {})))
            return {**{k: v for k, v in now.items() if k != SOURCES}, **({SOURCES: sources} if sources else {})}

        return steps.state_step(self.backend, self.data_id, state)

    def plan_create_empty(
        self, names: VarNames, phase: str | SplitSpec, shape: tuple[int, ...], dtype: np.dtype, options: dict[str, Any]
    ) -> Plan:
        """Create variables of zeros of ``shape`` ``(N, ...)``; a split or 'all' splits the N rows.

        As in multiml, a phase that gets no row gets no variable.

        Raises
        ------
        InvalidArgumentError
            If a variable already exists in a phase it would be created in (multiml refused
            too: zeros would silently replace its data).
        """
        self.backend.check_writable()
        rs.check_names(names.names)
        if isinstance(phase, str) and phase != ALL:
            rows = {phase: shape[0]} if shape[0] else {}  # no row, no variable (multiml)
        else:
            split = self.split([np.empty((shape[0], 0), dtype=np.int8)], phase)  # which phase gets how many rows
            rows = {p: piece.shape[0] for p, (piece,) in split.items()}
        plan = Plan()
        for var in names.names:
            for p, n in rows.items():
                if self.has(p, var):
                    raise InvalidArgumentError(
                        f"var_name {var!r} already exists in phase {p!r} of data_id {self.data_id!r}; create_empty "
                        "does not replace a variable (as in multiml). Delete it first, or write it with update_data."
                    )
                part = (n, *shape[1:])
                step = steps.create_empty_step(self.backend, self.data_id, p, var, part, dtype, options)
                plan.add_change(step, p, var, [part[0], dtype.str, list(part[1:])])
        return plan

    def plan_replace(self, results: Iterable[tuple[str, str, np.ndarray]]) -> Plan:
        """Replace whole variables by new arrays (any dtype or row shape): transforms, shuffle."""
        self.backend.check_writable()
        plan = Plan()
        for phase, var, array in results:
            if is_rows(array):  # a ragged variable: shuffled rows
                plan.extend(rs.plan_replace(self.backend, self.data_id, phase, var, list(array)))
                continue
            plan.add_change(
                steps.replace_step(self.backend, self.data_id, phase, var, array), phase, var, layout_of(array)
            )
        return plan

    # --- applying a plan ---------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the data_id's write lock: plan and run inside it (see :meth:`Backend.writing`)."""
        self.backend.check_no_writer_block(self.data_id)
        with self.backend.writing(self.data_id):
            yield

    @contextlib.contextmanager
    def writer_block(self) -> Iterator[None]:
        """Hold the write lock for a ``sg.writer()`` block: no other call of this thread writes meanwhile."""
        with self.writing(), self.backend.writer_block(self.data_id):
            yield

    def apply(self, make_plan: Callable[[], Plan], compile: bool = False, progress: str | None = None) -> None:
        """Plan and run one call under the data_id's write lock.

        The plan is made once the lock is held, from the data as the previous writer (of
        any process) left them, so two writers never plan from the same stale length.
        """
        with self.writing():
            self.run(make_plan(), compile, progress)

    def run(self, plan: Plan, compile: bool = False, progress: str | None = None) -> None:
        """Apply a plan in one transaction, then mark the compile state stale.

        A plan without steps changes nothing, not even the state. With ``compile`` the
        data the plan leaves must pass ``compile()``'s checks, or nothing is written; the
        same transaction then saves the compiled state instead of marking it stale.
        """
        if not compile:
            self._transact(self.steps_of(plan), progress)
            return
        try:
            sizes = validate(self.predicted(plan))
        except ValidationError as exc:
            raise ValidationError(
                f"{exc} (do_compile=True checks the whole data_id as this call would leave it, and nothing was "
                "written. Pass do_compile=False to write without the check, then fix the data and compile().)"
            ) from exc
        compiled = steps.state_step(self.backend, self.data_id, lambda: self._compiled_state(sizes))
        self._transact([*plan.steps, compiled], progress)

    def _transact(self, steps_: Iterable[Step], progress: str | None = None) -> None:
        """Run steps as one transaction; count it as a change of the store, done or undone.

        ``progress``: the description of a tqdm bar over the steps (None: no bar).
        """
        listed = list(steps_)
        bar = (
            None
            if progress is None or not listed
            else tqdm(total=len(listed), desc=progress, unit=" writes", disable=None)
        )
        try:
            run = listed if bar is None else with_progress(listed, bar)
            Transaction().run([*run, steps.commit_step(self.backend, self.data_id)] if listed else [])
        finally:
            if bar is not None:
                bar.close()
            note_change(self.backend)

    def _compiled_state(self, sizes: dict[str, int]) -> dict[str, Any]:
        return {**self._kept_state(), "compiled": True, "sizes": sizes, "fingerprint": self.fingerprint()}

    def _kept_state(self) -> dict[str, Any]:
        """What of the state a compile keeps: the record of imported files (:data:`SOURCES`)."""
        state = self.backend.load_state(self.data_id)
        return {SOURCES: state[SOURCES]} if SOURCES in state else {}

    def steps_of(self, plan: Plan) -> list[Step]:
        """The steps of a plan followed by the step that marks the compile state stale."""
        return [*plan.steps, *self.stale_steps()] if plan.steps else []

    def stale_steps(self) -> list[Step]:
        """A step marking the compile state stale, when it says compiled (else none)."""
        if not self.backend.load_state(self.data_id).get("compiled"):
            return []
        # Read when the step applies: an earlier step of the transaction may have changed the state.
        return [
            steps.state_step(
                self.backend, self.data_id, lambda: {**self.backend.load_state(self.data_id), "compiled": False}
            )
        ]

    def predicted(self, plan: Plan) -> Fingerprint:
        """The fingerprint the store will have once ``plan`` ran."""
        return _changed(self.fingerprint(), plan.layouts)

    def clear(self) -> None:
        """Delete every variable of every phase and forget the compile state, in one transaction."""
        self.backend.check_writable()
        with self.writing():
            names = [(p, v) for p in PHASES for v in self.backend.var_names(self.data_id, p)]
            plan = [steps.delete_step(self.backend, self.data_id, p, v) for p, v in names]
            self._transact([*plan, steps.state_step(self.backend, self.data_id, {})])

    # --- the compile state -------------------------------------------------------------

    def fingerprint(self) -> Fingerprint:
        """Rows, dtype and row shape of every variable, as JSON-able lists."""
        return {
            phase: {
                var: layout_of_stored(
                    self.backend.shape(self.data_id, phase, var), self.backend.dtype(self.data_id, phase, var)
                )
                for var in self.backend.var_names(self.data_id, phase)
            }
            for phase in PHASES
        }

    def compile(self, reset: bool = False) -> None:
        """Validate the data and save the compile state; with ``reset`` (re)create ``active``.

        Raises
        ------
        ValidationError
            If a check fails; nothing is written then.
        """
        with self.writing():
            self._compile(reset)

    def _compile(self, reset: bool) -> None:
        self.backend.refresh(self.data_id)  # validate the data as they are now, not as cached
        fingerprint = self.fingerprint()
        # reset=True replaces 'active', so an old 'active' of a stale length must not fail the checks.
        checked = (
            {p: {v: f for v, f in fp.items() if v != ACTIVE} for p, fp in fingerprint.items()} if reset else fingerprint
        )
        sizes = validate(checked)
        plan = self._plan_active(sizes) if reset else Plan()
        state = {
            **self._kept_state(),
            "compiled": True,
            "sizes": sizes,
            "fingerprint": _changed(fingerprint, plan.layouts),
        }
        self._transact([*plan.steps, steps.state_step(self.backend, self.data_id, state)])

    def _plan_active(self, sizes: dict[str, int]) -> Plan:
        self.backend.check_writable()
        plan = Plan()
        for phase, n in sizes.items():
            exists = self.backend.has(self.data_id, phase, ACTIVE)
            # multiml's update_data('active', [1] * n): int64 ones, or ones in the dtype it has.
            ones = np.ones(n, dtype=self.backend.dtype(self.data_id, phase, ACTIVE) if exists else np.int64)
            if exists and n:
                step = steps.replace_step(self.backend, self.data_id, phase, ACTIVE, ones)
            elif exists:
                step = steps.delete_step(self.backend, self.data_id, phase, ACTIVE)
            elif n:
                step = steps.create_step(self.backend, self.data_id, phase, ACTIVE, ones, {})
            else:
                continue
            plan.add_change(step, phase, ACTIVE, layout_of(ones) if n else None)
        return plan

    def refresh(self) -> None:
        """Forget what the backend cached of this data_id (see :meth:`Backend.refresh`)."""
        self.backend.refresh(self.data_id)

    def metadata(self) -> dict[str, Any]:
        """multiml's metadata: ``compiled``, ``total_events``, ``sizes`` and ``valid_phases``.

        ``compiled`` is true only when the saved state matches the data as they are now.
        ``sizes`` holds ``None`` for a phase whose variables disagree in length.
        """
        self.backend.refresh(self.data_id)  # another process may have changed the store
        fingerprint = self.fingerprint()
        state = self.backend.load_state(self.data_id)
        compiled = bool(state.get("compiled")) and state.get("fingerprint") == fingerprint
        sizes: dict[str, int | None] = {p: _phase_size(fingerprint.get(p, {})) for p in PHASES}
        known = [s for s in sizes.values() if s is not None]
        total = sum(known) if len(known) == len(PHASES) else None
        return {
            "compiled": compiled,
            "total_events": total,
            "sizes": {**sizes, ALL: total},
            "valid_phases": [p for p in PHASES if sizes[p]],
        }


def with_progress(steps_: list[Step], bar: Any) -> list[Step]:
    """The steps, each moving ``bar`` (a tqdm bar) on once it is done."""

    def done(step: Step) -> Callable[[], None]:
        def apply() -> None:
            bar.set_postfix_str(step.label, refresh=False)
            step.apply()
            bar.update(1)

        return apply

    return [Step(s.label, done(s), s.undo, s.finish) for s in steps_]


def layout_of_stored(shape: tuple[int, ...], dtype: np.dtype) -> Layout:
    """The layout of a stored variable of ``shape`` and ``dtype``."""
    return [shape[0], np.dtype(dtype).str, list(shape[1:])]


def _changed(fingerprint: Fingerprint, layouts: dict[tuple[str, str], Layout | None]) -> Fingerprint:
    """``fingerprint`` with the new layouts of a plan (``None``: deleted)."""
    changed = {phase: dict(variables) for phase, variables in fingerprint.items()}
    for (phase, var), layout in layouts.items():
        if layout is None:
            changed[phase].pop(var, None)
        else:
            changed[phase][var] = layout
    return changed


def _phase_size(variables: dict[str, Layout]) -> int | None:
    lengths = {v[0] for name, v in variables.items() if name in rs.counted([name])}
    if len(lengths) > 1:
        return None
    return lengths.pop() if lengths else 0


def validate(fingerprint: Fingerprint) -> dict[str, int]:
    """compile()'s checks: the rows of each phase, or ValidationError.

    Every variable of a phase has the same number of rows, and one variable has one
    dtype and row shape across phases.
    """
    sizes = {
        phase: common_length(
            {var: v[0] for var, v in variables.items() if var in rs.counted([var])},
            f"every variable of phase {phase!r}",
        )
        for phase, variables in fingerprint.items()
    }
    layouts: dict[str, set[tuple[str, tuple[int, ...]]]] = {}
    for variables in fingerprint.values():
        for var, (_, dtype, row) in variables.items():
            layouts.setdefault(var, set()).add((dtype, tuple(row)))
    for var, seen in layouts.items():
        if len(seen) > 1:
            raise ValidationError(
                f"var_name {var!r} must have one dtype and row shape across phases. Got {sorted(seen)} instead."
            )
    return sizes


def _refuse_windows(index: object) -> None:
    """A write never goes to a random window: the rows or positions it changes must be chosen."""
    if isinstance(index, RandomWindow):
        raise InvalidArgumentError(
            f"index of a write must choose what it writes. Got {index!r}, a random window: a write to positions "
            "drawn at random is refused. Give ints or slices."
        )


def _has_rows(selection: Selection) -> bool:
    """True when a read of ``selection`` keeps the row axis (not one int row)."""
    return not isinstance(selection, int)


def _part_size(part: slice | np.ndarray) -> int:
    return part.stop - part.start if isinstance(part, slice) else int(part.shape[0])


def _split_for_index(names: VarNames, data: Any, scalar: bool) -> list[np.ndarray]:
    """Split update data; for a single-row index, data have no row axis (one is added)."""
    if names.form == "str":
        return [rows_or_array(data, "data")]  # numpy assignment: any shape that broadcasts to the rows
    if not scalar:
        return names.split(data)
    if names.form == "list":
        if not isinstance(data, (list, tuple)):
            return names.split(data)  # raises the list-form error
        return names.split([as_array(d, "data")[None] for d in data])
    array, m = as_array(data, "data"), len(names.names)
    if array.ndim < 1 or array.shape[0] != m:  # said here: the split would show the row axis added
        raise InvalidArgumentError(
            f"data for a tuple of {m} var_names written at one row must have shape ({m}, ...), without a row "
            f"axis. Got shape {array.shape} instead: give that row's values, or index the row as [i] to give "
            "data with a row axis."
        )
    return names.split(array[None])


def fit_rows(array: np.ndarray, shape: tuple[int, ...], var: str, where: str = "", index: Any = None) -> np.ndarray:
    """``array`` broadcast to the ``shape`` ``(n, ...)`` of the selected rows, as numpy assigns.

    As in ``a[rows] = value``: leading axes of length 1 beyond the target's are dropped and
    the rest must broadcast (``[100]`` fills one row of a 1-D variable, a row fills many).

    Raises
    ------
    InvalidArgumentError
        Naming the variable, the shape the selection needs and the shape given.
    """
    value = array
    while value.ndim > len(shape) and value.shape[0] == 1:
        value = value[0]
    try:
        return np.broadcast_to(value, shape)
    except ValueError:
        raise InvalidArgumentError(
            f"data for var_name {var!r}{where} must broadcast to the selected rows, shape {shape} (numpy's "
            f"assignment rules). Got shape {array.shape} instead. {_fit_hint(index)}"
        ) from None


def _fit_hint(index: Any) -> str:
    if index is None:
        return (
            "An update writes every row and never changes a variable's length: add rows with add_data, or "
            "replace the variable with delete_data then add_data."
        )
    if is_row(index) and int(index) == -1:
        return "index=-1 is the last row (multiml used -1 for every row): pass index=None to write every row."
    return "Give one value per selected row, or one row to write to all of them."


def _as_read(row: np.ndarray | None) -> Any:
    """A row a backend served, as :meth:`GroupEngine.get` gives it: one row of a 1-D variable is a numpy scalar."""
    if row is None:
        return None
    return row[()] if row.ndim == 0 else row
