"""The StoreGate facade: routes add / get / update / delete by data_id, phase and var_names.

The facade validates every argument before it touches a backend, so a call that fails
leaves the store as it was; it knows nothing backend-specific.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from storegate import transforms
from storegate.backends import Backend, create_backend
from storegate.codecs import resolve_compressor
from storegate.errors import InvalidArgumentError, NotFoundError, ValidationError
from storegate.indexing import Selection, normalize_index, selection_length, split_selection
from storegate.names import VarNames, as_array, parse_var_names
from storegate.phases import ALL, PHASES, is_split, resolve_phase, split_counts
from storegate.views import View  # views import gate only for typing: no cycle

if TYPE_CHECKING:
    from storegate.writer import Writer

__all__ = ["DEFAULT_SHUFFLE_SEED", "StoreGate"]

#: Seed used by ``add_data(shuffle=True)``, so separate calls stay aligned.
DEFAULT_SHUFFLE_SEED = 0
ACTIVE = "active"
Callback = Callable[[Any, Any], tuple[Any, Any]]


class StoreGate:
    """Data management for ML pipelines: one API over numpy, zarr and hybrid backends.

    Parameters
    ----------
    backend
        ``'numpy'`` (in memory), ``'zarr'`` (chunked and compressed on storage) or
        ``'hybrid'`` (both, with explicit moves).
    backend_args
        Options of the backend, e.g. ``{'output_dir': 'data.zarr', 'mode': 'a'}`` for
        zarr; see :class:`storegate.backends.zarr_backend.ZarrBackend`.
    data_id
        The default data_id, used by every method.

    Examples
    --------
    >>> import numpy as np
    >>> from storegate import StoreGate
    >>> sg = StoreGate(backend='numpy', data_id='demo')
    >>> sg.add_data('x', np.arange(10), phase=(0.7, 0.2, 0.1))
    >>> sg['train']['x'][-1]
    np.int64(6)
    >>> len(sg['valid'])
    2
    """

    def __init__(
        self, backend: str = "numpy", backend_args: dict[str, Any] | None = None, data_id: str | None = None
    ) -> None:
        if not isinstance(backend, str):
            raise InvalidArgumentError(f"backend must be a str. Got {type(backend).__name__} instead.")
        self._backend_name = backend
        self._db: Backend = create_backend(backend, backend_args)  # validates backend_args first
        self._backend_args = dict(backend_args or {})
        self._data_id: str | None = None
        if data_id is not None:
            self.set_data_id(data_id)

    # --- data_id and backend -----------------------------------------------------------

    @property
    def data_id(self) -> str | None:
        """The current data_id."""
        return self._data_id

    def set_data_id(self, data_id: str) -> None:
        """Set the default data_id, creating it in a writable store.

        Raises
        ------
        InvalidArgumentError
            If ``data_id`` is not a non-empty str without '/'.
        NotFoundError
            If the store is read-only and holds no such data_id.
        """
        if not isinstance(data_id, str) or not data_id or "/" in data_id or data_id.startswith("."):
            raise InvalidArgumentError(
                f"data_id must be a non-empty str without '/' and not starting with '.'. Got {data_id!r} instead."
            )
        if self._db.writable:
            self._db.create_data_id(data_id)
        elif data_id not in self._db.data_ids():
            raise NotFoundError(
                f"data_id {data_id!r} does not exist in the read-only store at {self._db.location}. "
                f"Stored data_ids: {self._db.data_ids()}."
            )
        self._data_id = data_id

    @property
    def backend(self) -> str:
        """The backend name: 'numpy', 'zarr' or 'hybrid'."""
        return self._backend_name

    @property
    def backend_args(self) -> dict[str, Any]:
        """A copy of the ``backend_args`` this StoreGate was made with."""
        return dict(self._backend_args)

    @property
    def store(self) -> Backend:
        """The backend object (for inspection; use the StoreGate methods to change data)."""
        return self._db

    def get_data_ids(self) -> list[str]:
        """Registered data_ids (for hybrid: of both stores)."""
        return self._db.data_ids()

    # --- add / update / get / delete -------------------------------------------------

    def add_data(
        self,
        var_names: Any,
        data: Any,
        phase: Any = "train",
        shuffle: bool | int = False,
        do_compile: bool = False,
        compressor: Any = None,
    ) -> None:
        """Add data, appending when a variable already exists.

        Parameters
        ----------
        var_names
            A str (data ``(N, ...)``), a tuple of M names (data ``(N, M, ...)``) or a
            list of names (a list of arrays with the same N).
        data
            Array-like, numpy array or torch tensor. It is copied, never aliased or changed.
        phase
            ``'train'``, ``'valid'``, ``'test'``, ``'all'`` (split by the current phase
            sizes) or three fractions (sum 1) or ints (sum N) for train / valid / test.
        shuffle
            ``True`` shuffles rows with a fixed seed (so separate calls stay aligned);
            an int is the seed.
        do_compile
            Compile after adding.
        compressor
            Codec of the variables this call creates (any form of
            :func:`storegate.codecs.resolve_compressor`; ``'none'`` for no compression).
            ``None`` uses the store's ``compressor``; existing variables keep their codec.
            Memory stores ignore it.

        Raises
        ------
        InvalidArgumentError
            For malformed arguments, a row shape that differs from the stored one or a
            dtype that numpy's ``same_kind`` rule does not allow to cast.
        """
        data_id = self._id()
        self._db.check_writable()
        names = parse_var_names(var_names)
        options = _codec_options(compressor)
        arrays = _shuffled(names.split(data), shuffle)
        plan = self._plan(data_id, arrays, phase)
        self._append_all(data_id, names, plan, options, precheck=do_compile)
        self._after_write(data_id, do_compile)

    def update_data(
        self, var_names: Any, data: Any, phase: Any = "train", index: Any = None, do_compile: bool = True
    ) -> None:
        """Replace data; variables that do not exist are added.

        Parameters
        ----------
        var_names, data, phase
            As in :meth:`add_data`; ``phase='all'`` writes across phases.
        index
            ``None`` replaces every row; otherwise any index form of :meth:`get_data`,
            and ``data`` holds the rows of that selection.
        do_compile
            Compile after updating.
        """
        data_id = self._id()
        self._update(data_id, var_names, data, phase, index, precheck=do_compile)  # marks the state stale
        if do_compile:
            self.compile()

    def get_data(self, var_names: Any, phase: Any = "train", index: Any = None) -> Any:
        """Read data.

        Parameters
        ----------
        var_names
            A str returns ``(N, ...)``, a tuple returns ``(N, M, ...)`` stacked, a list
            returns a list of arrays.
        phase
            ``'train'``, ``'valid'``, ``'test'`` or ``'all'`` / ``None`` (the phases
            concatenated in that order).
        index
            ``None`` (all rows), an int (negatives count from the end; drops the row
            axis), a slice, ``(start, stop)``, a list / array / tensor of ints or a
            boolean mask.

        Raises
        ------
        NotFoundError
            If a variable does not exist in the phase.
        """
        return self._get(self._id(), parse_var_names(var_names), resolve_phase(phase), index)

    def delete_data(self, var_names: Any, phase: Any = "train", do_compile: bool = True) -> None:
        """Delete variables; a variable that does not exist is ignored."""
        data_id = self._id()
        self._delete(data_id, var_names, phase, precheck=do_compile)  # marks stale only if it deleted
        if do_compile:
            self.compile()

    def clear_data(self) -> None:
        """Delete every variable of the current data_id (in the current store)."""
        data_id = self._id()
        self._db.check_writable()
        self._db.delete_data_id(data_id)
        self._db.create_data_id(data_id)

    def create_empty(
        self, var_names: Any, shape: Any, phase: Any = "train", dtype: Any = "f4", compressor: Any = None
    ) -> None:
        """Create variables of zeros with ``shape`` ``(N, ...)``, replacing existing ones.

        ``compressor`` is the codec of the new variables, as in :meth:`add_data`.
        """
        data_id = self._id()
        self._db.check_writable()
        names = parse_var_names(var_names)
        phase_ = resolve_phase(phase, allow_all=False)
        shape_ = _check_shape(shape)
        dtype_ = _check_dtype(dtype)
        options = _codec_options(compressor)
        for var in names.names:
            self._db.create_empty(data_id, phase_, var, shape_, dtype_, **options)
        self._mark_stale(data_id)

    def writer(
        self, phase: Any = "train", progress: bool = False, total: int | None = None, compressor: Any = None
    ) -> Writer:
        """A buffered writer for many small appends (matorage's DataSaver).

        Parameters
        ----------
        phase
            ``'train'``, ``'valid'`` or ``'test'``.
        progress
            Show a tqdm progress bar of the rows added (``total`` rows if given).
        compressor
            Codec of the variables the writer creates, as in :meth:`add_data`.

        Examples
        --------
        >>> import numpy as np
        >>> from storegate import StoreGate
        >>> sg = StoreGate(backend='zarr', data_id='demo')
        >>> with sg.writer(phase='train') as w:
        ...     for _ in range(10):
        ...         w.add({'x': np.zeros((8, 3), 'f4'), 'y': np.ones(8, 'i8')})
        >>> len(sg['train'])
        80

        See :class:`storegate.writer.Writer` for what happens when the block raises.
        """
        from storegate.writer import Writer

        data_id = self._id()
        return Writer(
            self._db,
            data_id,
            phase,
            progress=progress,
            total=total,
            compressor=compressor,
            on_close=partial(self._mark_stale, data_id),
        )

    # --- inspection ------------------------------------------------------------------

    def get_var_names(self, phase: Any = "train") -> list[str]:
        """Variable names of a phase (for 'all': of any phase)."""
        data_id = self._id()
        return sorted({v for p in _phases_of(resolve_phase(phase)) for v in self._db.var_names(data_id, p)})

    def get_var_shapes(self, var_names: Any, phase: Any = "train") -> Any:
        """Shape ``(N, ...)`` of a variable; a list of shapes for a tuple or list of names."""
        data_id = self._id()
        names = parse_var_names(var_names)
        phase_ = resolve_phase(phase)
        shapes = [self._shape(data_id, phase_, var) for var in names.names]
        return shapes[0] if names.form == "str" else shapes

    def get_metadata(self) -> dict[str, Any]:
        """Compile state and sizes of the current data_id.

        ``compiled`` is true only when ``compile()`` ran and the data have not changed
        since (the state is persisted in a zarr store and checked against the data).
        ``sizes`` holds ``None`` for a phase whose variables disagree in length.
        """
        data_id = self._id()
        self._db.refresh(data_id)  # another process may have changed the store
        fingerprint = self._fingerprint(data_id)
        state = self._db.load_state(data_id)
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

    # --- compile -----------------------------------------------------------------------

    def compile(self, reset: bool = False, show_info: bool = False) -> None:
        """Validate the data and record the compile state and sizes in the store.

        Checks that every variable of a phase has the same number of rows and that a
        variable has one dtype and row shape across phases. ``reset=True`` (re)creates
        the boolean ``active`` variable (all True) in every non-empty phase.

        Raises
        ------
        ValidationError
            If a check fails; nothing is written then.
        """
        data_id = self._id()
        self._db.refresh(data_id)  # validate the data as they are now, not as cached
        fingerprint = self._fingerprint(data_id)
        # reset=True replaces 'active', so an old 'active' of a stale length must not fail the checks.
        sizes = _validate(
            {p: {v: f for v, f in fp.items() if v != ACTIVE} for p, fp in fingerprint.items()} if reset else fingerprint
        )
        if reset:
            self._db.check_writable()
            self._reset_active(data_id, sizes)
            fingerprint = self._fingerprint(data_id)
        self._db.save_state(data_id, {"compiled": True, "sizes": sizes, "fingerprint": fingerprint})
        if show_info:
            self.show_info()

    # --- transforms --------------------------------------------------------------------

    def astype(self, var_names: Any, dtype: Any, phase: Any = "train") -> None:
        """Convert variables to ``dtype`` (an explicit cast; holds the data in memory)."""
        dtype_ = _check_dtype(dtype)
        self._transform(var_names, phase, lambda a: a.astype(dtype_))

    def onehot(self, var_names: Any, num_classes: int, phase: Any = "train") -> None:
        """Replace integer labels by float32 one-hot vectors of ``num_classes``."""
        transforms.check_num_classes(num_classes)
        self._transform(var_names, phase, lambda a: transforms.onehot(a, num_classes))

    def argmax(self, var_names: Any, axis: int, phase: Any = "train") -> None:
        """Replace variables by ``np.argmax`` along ``axis`` (an axis of the full array, >= 1)."""
        self._transform(var_names, phase, lambda a: transforms.argmax(a, axis))

    def shuffle(self, phase: Any = "all", seed: int = 0) -> None:
        """Shuffle the rows of every variable of a phase with one permutation per phase."""
        data_id = self._id()
        self._db.check_writable()
        _check_seed(seed)
        plans = []
        for phase_ in _phases_of(resolve_phase(phase)):
            n = self._checked_phase_len(data_id, phase_)
            perm = np.random.default_rng(seed).permutation(n)
            plans.append((phase_, perm))
        for phase_, perm in plans:
            for var in self._db.var_names(data_id, phase_):
                data = self._db.read(data_id, phase_, var, slice(0, len(perm), 1))
                self._db.replace(data_id, phase_, var, data[perm])
        self._mark_stale(data_id)

    # --- hybrid ------------------------------------------------------------------------

    def set_mode(self, mode: str) -> None:
        """Choose the store that calls go to: 'numpy' or 'zarr' (hybrid backend only)."""
        self._db.set_mode(mode)

    @property
    def mode(self) -> str:
        """The current store of a hybrid backend (the backend name otherwise)."""
        return self._db.mode

    def to_memory(
        self,
        var_names: Any,
        phase: Any = "train",
        output_var_names: Any = None,
        callback: Callback | None = None,
    ) -> None:
        """Move variables from storage (zarr) to memory (numpy); hybrid backend only.

        ``callback(output_var_names, data)`` may return new ``(var_names, data)``; it
        receives the names that will be written. Data leave the source only after the
        destination holds them, and the mode is restored whatever happens.
        """
        self._move("zarr", "numpy", var_names, phase, output_var_names, callback)

    def to_storage(
        self,
        var_names: Any,
        phase: Any = "train",
        output_var_names: Any = None,
        callback: Callback | None = None,
    ) -> None:
        """Move variables from memory (numpy) to storage (zarr); see :meth:`to_memory`."""
        self._move("numpy", "zarr", var_names, phase, output_var_names, callback)

    # --- display -------------------------------------------------------------------------

    def show_info(self) -> None:
        """Print a table of the current data_id: phase, store, variable, dtype, rows..."""
        from storegate.info import collect, render_text

        print(render_text(collect(self)))

    def _repr_html_(self) -> str:
        from storegate.info import collect, render_html

        return render_html(collect(self))

    def __repr__(self) -> str:
        return f"StoreGate(backend={self._backend_name!r}, data_id={self._data_id!r}, location={self._db.location!r})"

    # --- item syntax -------------------------------------------------------------------

    def __getitem__(self, item: Any) -> Any:
        return View(self, self._id())[item]

    # --- internals: shared by the methods above and by views ---------------------------

    def _id(self) -> str:
        if self._data_id is None:
            raise InvalidArgumentError(
                "data_id must be set before this call: pass data_id= to StoreGate() or call "
                "set_data_id(). Got None instead."
            )
        return self._data_id

    def _update(self, data_id: str, var_names: Any, data: Any, phase: Any, index: Any, precheck: bool = False) -> None:
        """Plan every write, optionally check that compile() will pass after them, then write.

        ``precheck`` makes a call that compiles afterwards fail before it writes anything.
        """
        self._db.check_writable()
        names = parse_var_names(var_names)
        if is_split(phase):
            if index is not None:
                raise InvalidArgumentError(f"index must be None when phase is a split. Got {index!r} instead.")
            steps = self._plan_split_replace(data_id, names, data, phase)
        else:
            steps = self._plan_update(data_id, names, data, resolve_phase(phase), index)
        if precheck:
            self._precheck(data_id, {(s.phase, s.var): s.layout for s in steps if s.layout is not None})
        for step in steps:
            step.run()
        self._mark_stale(data_id)

    def _precheck(self, data_id: str, changes: dict[tuple[str, str], list[Any] | None]) -> None:
        """Raise ValidationError if compile() would fail once ``changes`` are made (None deletes)."""
        predicted = self._fingerprint(data_id)
        for (phase, var), layout in changes.items():
            if layout is None:
                predicted[phase].pop(var, None)
            else:
                predicted[phase][var] = layout
        _validate(predicted)

    def _delete(self, data_id: str, var_names: Any, phase: Any, precheck: bool = False) -> None:
        self._db.check_writable()
        names = parse_var_names(var_names)
        present = [
            (p, var) for p in _phases_of(resolve_phase(phase)) for var in names.names if self._db.has(data_id, p, var)
        ]
        if precheck:
            self._precheck(data_id, dict.fromkeys(present))
        for phase_, var in present:
            self._db.delete(data_id, phase_, var)
        if present:  # deleting what is absent is a no-op, also for the compile state
            self._mark_stale(data_id)

    def _get(self, data_id: str, names: VarNames, phase: str, index: Any) -> Any:
        arrays = [self._read(data_id, phase, var, index) for var in names.names]
        scalar = _is_scalar_index(index)
        if scalar:  # one row of a 1-D variable is a numpy scalar, as numpy indexing gives
            arrays = [a[()] if a.ndim == 0 else a for a in arrays]
        return names.join(arrays, scalar=scalar)

    def _read(self, data_id: str, phase: str, var: str, index: Any) -> np.ndarray:
        if phase != ALL:
            selection = normalize_index(index, self._db.shape(data_id, phase, var)[0])
            return self._db.read(data_id, phase, var, selection)
        sizes, dtype, row = self._all_layout(data_id, var)
        selection = normalize_index(index, sum(sizes))
        if isinstance(selection, int):
            piece = next(split_selection(selection, sizes))
            # One row of 'all' has the dtype of the whole concatenation, not of its phase.
            return self._db.read(data_id, PHASES[piece.part], var, piece.local).astype(dtype, copy=False)
        out = np.empty((selection_length(selection) or 0, *row), dtype=dtype)
        for piece in split_selection(selection, sizes):
            out[piece.positions] = self._db.read(data_id, PHASES[piece.part], var, piece.local)
        return out

    def _all_layout(self, data_id: str, var: str) -> tuple[list[int], np.dtype, tuple[int, ...]]:
        """Per-phase rows, dtype and row shape of a variable read across phases."""
        present, dtype, row = self._db.layout_across(data_id, var, PHASES)
        shapes = dict(present)
        return [shapes[p][0] if p in shapes else 0 for p in PHASES], dtype, row

    def _shape(self, data_id: str, phase: str, var: str) -> tuple[int, ...]:
        if phase != ALL:
            return self._db.shape(data_id, phase, var)
        sizes, _, row = self._all_layout(data_id, var)
        return (sum(sizes), *row)

    def _plan(self, data_id: str, arrays: list[np.ndarray], phase: Any) -> dict[str, list[np.ndarray]]:
        """Which rows of each array go to which phase."""
        if not is_split(phase):
            phase_ = resolve_phase(phase)
            if phase_ != ALL:
                return {phase_: arrays}
            counts = self._phase_sizes_for_all(data_id, arrays[0].shape[0])
        else:
            counts = split_counts(phase, arrays[0].shape[0])
        bounds = np.cumsum([0, *counts])
        return {p: [a[bounds[i] : bounds[i + 1]] for a in arrays] for i, p in enumerate(PHASES) if counts[i] > 0}

    def _phase_sizes_for_all(self, data_id: str, n_rows: int) -> tuple[int, int, int]:
        sizes = tuple(self._checked_phase_len(data_id, p) for p in PHASES)
        if sum(sizes) != n_rows or n_rows == 0:
            raise InvalidArgumentError(
                f"data for phase 'all' must have as many rows as the phases hold together "
                f"(train/valid/test = {sizes}, total {sum(sizes)}). Got {n_rows} rows instead."
            )
        return sizes  # type: ignore[return-value]

    def _append_all(
        self,
        data_id: str,
        names: VarNames,
        plan: dict[str, list[np.ndarray]],
        options: dict[str, Any] | None = None,
        precheck: bool = False,
    ) -> None:
        """Check every piece, then write; on a failure undo the pieces written."""
        steps = [
            (phase, var, *self._prepare_append(data_id, phase, var, array))
            for phase, arrays in plan.items()
            for var, array in zip(names.names, arrays, strict=True)
        ]
        if precheck:
            self._precheck(
                data_id,
                {(p, v): _layout(a, a.shape[0] + (old or 0)) for p, v, a, old in steps},
            )
        done: list[tuple[str, str, int | None]] = []
        try:
            for phase, var, array, old_rows in steps:
                if old_rows is None:
                    self._db.create(data_id, phase, var, array, **(options or {}))
                else:
                    self._db.append(data_id, phase, var, array)
                done.append((phase, var, old_rows))
        except BaseException:
            self._undo_appends(data_id, done)
            raise

    def _prepare_append(self, data_id: str, phase: str, var: str, array: np.ndarray) -> tuple[np.ndarray, int | None]:
        if not self._db.has(data_id, phase, var):
            return array, None
        shape = self._db.shape(data_id, phase, var)
        _check_rows_fit(var, phase, shape[1:], array.shape[1:])
        return _cast(array, self._db.dtype(data_id, phase, var), var), shape[0]

    def _undo_appends(self, data_id: str, done: list[tuple[str, str, int | None]]) -> None:
        for phase, var, old_rows in reversed(done):
            if old_rows is None:
                self._db.delete(data_id, phase, var)
            else:
                self._db.resize(data_id, phase, var, old_rows)

    def _plan_update(self, data_id: str, names: VarNames, data: Any, phase: str, index: Any) -> list[_Step]:
        """Validate an update of every variable and return the writes to run."""
        scalar = _is_scalar_index(index)
        arrays = _split_for_index(names, data, scalar)
        steps: list[_Step] = []
        for var, array in zip(names.names, arrays, strict=True):
            steps.extend(self._plan_var_update(data_id, phase, var, array, index))
        return steps

    def _plan_var_update(self, data_id: str, phase: str, var: str, array: np.ndarray, index: Any) -> list[_Step]:
        exists = any(self._db.has(data_id, p, var) for p in _phases_of(phase))
        if not exists:
            if index is not None:
                raise NotFoundError(
                    f"var_name {var!r} does not exist in data_id {data_id!r}, phase {phase!r}, so rows "
                    f"cannot be updated by index. Got index {index!r}; pass index=None to add it."
                )
            plan = self._plan(data_id, [array], phase)
            return [self._create_step(data_id, p, var, a[0]) for p, a in plan.items()]
        if phase != ALL and index is None:
            return [self._plan_replace(data_id, phase, var, array)]
        return self._plan_index_write(data_id, phase, var, array, index)

    def _create_step(self, data_id: str, phase: str, var: str, array: np.ndarray) -> _Step:
        return _Step(partial(self._db.create, data_id, phase, var, array), phase, var, _layout(array))

    def _plan_replace(self, data_id: str, phase: str, var: str, array: np.ndarray) -> _Step:
        shape = self._db.shape(data_id, phase, var)
        _check_rows_fit(var, phase, shape[1:], array.shape[1:])
        cast = _cast(array, self._db.dtype(data_id, phase, var), var)
        return _Step(partial(self._db.replace, data_id, phase, var, cast), phase, var, _layout(cast))

    def _plan_index_write(self, data_id: str, phase: str, var: str, array: np.ndarray, index: Any) -> list[_Step]:
        shape = self._shape(data_id, phase, var)
        selection = _as_rows(normalize_index(index, shape[0]))
        n = selection_length(selection)
        if array.shape[1:] != shape[1:] or array.shape[0] not in (n, 1):
            raise InvalidArgumentError(
                f"data for var_name {var!r} must have shape ({n}, {', '.join(map(str, shape[1:]))}) "
                f"to fill the selected rows. Got shape {array.shape} instead."
            )
        rows = np.broadcast_to(array, (n or 0, *shape[1:]))
        if phase != ALL:
            cast = _cast(rows, self._db.dtype(data_id, phase, var), var)
            return [_Step(partial(self._db.write, data_id, phase, var, selection, cast), phase, var)]
        sizes, _, _ = self._all_layout(data_id, var)
        # Each phase keeps its own stored dtype: same_kind is checked against every one of them.
        casts = {p: _cast(rows, self._db.dtype(data_id, p, var), var) for p in PHASES if self._db.has(data_id, p, var)}
        pieces = [(PHASES[piece.part], piece) for piece in split_selection(selection, sizes)]
        return [
            _Step(partial(self._db.write, data_id, p, var, piece.local, casts[p][piece.positions]), p, var)
            for p, piece in pieces
        ]

    def _plan_split_replace(self, data_id: str, names: VarNames, data: Any, phase: Any) -> list[_Step]:
        arrays = names.split(data)
        plan = self._plan(data_id, arrays, phase)
        return [
            self._plan_replace(data_id, p, var, a)
            if self._db.has(data_id, p, var)
            else self._create_step(data_id, p, var, a)
            for p, pieces in plan.items()
            for var, a in zip(names.names, pieces, strict=True)
        ]

    def _after_write(self, data_id: str, do_compile: bool) -> None:
        self._mark_stale(data_id)
        if do_compile:
            self.compile()

    def _mark_stale(self, data_id: str) -> None:
        state = self._db.load_state(data_id)
        if state.get("compiled"):
            self._db.save_state(data_id, {**state, "compiled": False})

    def _fingerprint(self, data_id: str) -> dict[str, dict[str, list[Any]]]:
        """Rows, dtype and row shape of every variable, as JSON-able lists."""
        return {
            phase: {
                var: [
                    self._db.shape(data_id, phase, var)[0],
                    self._db.dtype(data_id, phase, var).str,
                    list(self._db.shape(data_id, phase, var)[1:]),
                ]
                for var in self._db.var_names(data_id, phase)
            }
            for phase in PHASES
        }

    def _checked_phase_len(self, data_id: str, phase: str) -> int:
        """Rows of a phase; raises when its variables disagree."""
        lengths = {var: self._db.shape(data_id, phase, var)[0] for var in self._db.var_names(data_id, phase)}
        if len(set(lengths.values())) > 1:
            raise ValidationError(
                f"every variable of phase {phase!r} in data_id {data_id!r} must have the same "
                f"number of rows. Got {lengths} instead."
            )
        return next(iter(lengths.values()), 0)

    def _reset_active(self, data_id: str, sizes: dict[str, int]) -> None:
        for phase, n in sizes.items():
            self._db.delete(data_id, phase, ACTIVE)
            if n:
                self._db.create(data_id, phase, ACTIVE, np.ones(n, dtype=bool))

    def _transform(self, var_names: Any, phase: Any, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        """Apply ``fn`` to whole variables: compute every result first, then write."""
        data_id = self._id()
        self._db.check_writable()
        names = parse_var_names(var_names)
        phase_ = resolve_phase(phase)  # None means 'all' here too
        targets = [
            (p, var)
            for p in _phases_of(phase_)
            for var in names.names
            if phase_ != ALL or self._db.has(data_id, p, var)
        ]
        results = [
            (
                p,
                var,
                fn(self._db.read(data_id, p, var, normalize_index(None, self._db.shape(data_id, p, var)[0]))),
            )
            for p, var in targets
        ]
        for p, var, result in results:
            self._db.replace(data_id, p, var, result)
        self._mark_stale(data_id)

    def _move(
        self, src: str, dst: str, var_names: Any, phase: Any, output_var_names: Any, callback: Callback | None
    ) -> None:
        if not self._db.supports_modes:
            raise InvalidArgumentError(
                "moving data between memory and storage needs backend 'hybrid'. "
                f"Got backend {self._backend_name!r} instead."
            )
        data_id = self._id()
        names = parse_var_names(var_names)
        out_names = names if output_var_names is None else parse_var_names(output_var_names)
        if len(out_names.names) != len(names.names):
            raise InvalidArgumentError(
                f"output_var_names must name as many variables as var_names ({len(names.names)}). "
                f"Got {output_var_names!r} instead."
            )
        previous = self._db.mode
        try:
            for phase_ in self._move_phases(data_id, src, names, resolve_phase(phase)):
                self._move_phase(data_id, src, dst, var_names, phase_, output_var_names or var_names, callback)
        finally:
            self._db.set_mode(previous)

    def _move_phases(self, data_id: str, src: str, names: VarNames, phase: str) -> list[str]:
        self._db.set_mode(src)
        if phase != ALL:
            return [phase]
        return [p for p in PHASES if all(self._db.has(data_id, p, v) for v in names.names)]

    def _move_phase(
        self,
        data_id: str,
        src: str,
        dst: str,
        var_names: Any,
        phase: str,
        out_names: Any,
        callback: Callback | None,
    ) -> None:
        self._db.set_mode(src)
        data = self.get_data(var_names, phase)
        if callback is not None:
            out_names, data = callback(out_names, data)
        self._db.set_mode(dst)
        self._db.create_data_id(data_id)
        self.update_data(out_names, data, phase, do_compile=False)
        # Only now that the destination holds the data may the source let go of them.
        self._db.set_mode(src)
        self.delete_data(var_names, phase, do_compile=False)


# --- module helpers ------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    """One planned backend write and the fingerprint entry it leaves (None: unchanged)."""

    run: Callable[[], None]
    phase: str
    var: str
    layout: list[Any] | None = None


def _layout(array: np.ndarray, n_rows: int | None = None) -> list[Any]:
    """The fingerprint entry (rows, dtype, row shape) of a variable holding ``array``."""
    return [array.shape[0] if n_rows is None else n_rows, array.dtype.str, list(array.shape[1:])]


def _phases_of(phase: str) -> tuple[str, ...]:
    return PHASES if phase == ALL else (phase,)


def _phase_size(variables: dict[str, list[Any]]) -> int | None:
    lengths = {v[0] for v in variables.values()}
    if len(lengths) > 1:
        return None
    return lengths.pop() if lengths else 0


def _validate(fingerprint: dict[str, dict[str, list[Any]]]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for phase, variables in fingerprint.items():
        size = _phase_size(variables)
        if size is None:
            lengths = {var: v[0] for var, v in variables.items()}
            raise ValidationError(
                f"every variable of phase {phase!r} must have the same number of rows. Got {lengths} instead."
            )
        sizes[phase] = size
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


def _shuffled(arrays: list[np.ndarray], shuffle: bool | int) -> list[np.ndarray]:
    if shuffle is False:
        return arrays
    seed = DEFAULT_SHUFFLE_SEED if shuffle is True else shuffle
    _check_seed(seed, arg="shuffle")
    perm = np.random.default_rng(seed).permutation(arrays[0].shape[0])
    return [a[perm] for a in arrays]  # fancy indexing copies: the caller's array is untouched


def _codec_options(compressor: Any) -> dict[str, Any]:
    """Backend options for a per-variable compressor, validated before anything is written."""
    if compressor is None:
        return {}
    resolve_compressor(compressor)
    return {"compressor": compressor}


def _check_seed(seed: object, arg: str = "seed") -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InvalidArgumentError(f"{arg} must be a bool or a non-negative int. Got {seed!r} instead.")


def _cast(array: np.ndarray, dtype: np.dtype, var: str) -> np.ndarray:
    if not np.can_cast(array.dtype, dtype, casting="same_kind"):
        raise InvalidArgumentError(
            f"data for var_name {var!r} must be castable to the stored dtype {dtype} under numpy's "
            f"'same_kind' rule. Got dtype {array.dtype} instead; use astype() to change the stored dtype."
        )
    return array.astype(dtype, copy=False)


def _check_rows_fit(var: str, phase: str, stored: tuple[int, ...], given: tuple[int, ...]) -> None:
    if stored != given:
        raise InvalidArgumentError(
            f"data for var_name {var!r} in phase {phase!r} must have row shape {stored} like the "
            f"stored rows. Got row shape {given} instead."
        )


def _check_shape(shape: Any) -> tuple[int, ...]:
    ok = (
        isinstance(shape, (tuple, list))
        and len(shape) >= 1
        and all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape)
    )
    if not ok:
        raise InvalidArgumentError(f"shape must be a tuple of non-negative ints (N, ...). Got {shape!r} instead.")
    return tuple(int(d) for d in shape)


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        return np.dtype(dtype)  # type: ignore[no-any-return]
    except TypeError as exc:
        raise InvalidArgumentError(f"dtype must be a numpy dtype or its name. Got {dtype!r} instead.") from exc


def _is_scalar_index(index: Any) -> bool:
    return isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_))


def _as_rows(selection: Selection) -> slice | np.ndarray:
    """A scalar selection as a one-row slice, so writes keep the row axis."""
    return slice(selection, selection + 1, 1) if isinstance(selection, int) else selection


def _split_for_index(names: VarNames, data: Any, scalar: bool) -> list[np.ndarray]:
    """Split update data; for a single-row index, data have no row axis."""
    if not scalar:
        return names.split(data)
    if names.form == "list":
        if not isinstance(data, (list, tuple)):
            return names.split(data)  # raises the list-form error
        return names.split([as_array(d, "data")[None] for d in data])
    return names.split(as_array(data, "data")[None])
