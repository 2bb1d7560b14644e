"""The StoreGate facade: multiml's API, parsed here and delegated to one engine per data_id.

``StoreGate`` keeps every argument form of multiml's StoreGate (seed
001_eb7e268b467e8f40.txt). It parses them (var_names forms, phase names and splits,
codecs, seeds) and hands the work to the :class:`~storegate.engine.GroupEngine` of the
current data_id, which plans and validates every write before the first byte is written
and runs it as one transaction. It knows nothing backend-specific.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from storegate import exchange, info, interop, moves, transforms, verify
from storegate.backends import Backend, Finding, TieredBackend, create_backend
from storegate.codecs import resolve_compressor
from storegate.engine import GroupEngine
from storegate.errors import InvalidArgumentError, NotFoundError
from storegate.moves import Callback
from storegate.names import check_data_id, parse_var_names
from storegate.phases import DEFAULT_SHUFFLE_SEED, PHASE_WORDS, permutation, resolve_phase
from storegate.ragged import check_batch_mode
from storegate.rules import check_bool, check_dtype, check_int, check_seed, check_shape, convert
from storegate.splits import parse_split, reorder
from storegate.verify import Report
from storegate.views import View
from storegate.writer import Writer

__all__ = ["DEFAULT_SHUFFLE_SEED", "StoreGate"]


class StoreGate:
    """Data management for ML pipelines: one API over numpy, zarr and hybrid backends (multiml).

    Parameters
    ----------
    backend
        ``'numpy'`` (in memory), ``'zarr'`` (chunked and compressed on storage),
        ``'hybrid'`` (both, with explicit moves), ``'icechunk'`` (zarr in an icechunk
        repository: one commit per call, versions; the ``icechunk`` extra) or a name given
        to ``register_backend``.
    backend_args
        Options of the backend, e.g. ``{'output_dir': 'data.zarr', 'mode': 'a'}`` for
        zarr; see :class:`storegate.backends.zarr_backend.ZarrBackend`.
    data_id
        The default data_id, used by every method.

    Raises
    ------
    InvalidArgumentError
        For an unknown backend or backend_args it does not accept.

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
        self._backend: Backend = create_backend(backend, backend_args)  # validates backend_args first
        self._backend_args = dict(backend_args or {})
        self._data_id: str | None = None
        self._phase_views: dict[str, View] = {}  # see __getitem__
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
            If ``data_id`` is not a valid name (see :func:`storegate.names.check_data_id`).
        NotFoundError
            If the store is read-only and holds no such data_id.
        """
        check_data_id(data_id)
        if self._backend.writable:
            self._backend.create_data_id(data_id)
        elif not self._backend.has_data_id(data_id):
            raise NotFoundError(
                f"data_id {data_id!r} does not exist in the read-only store at {self._backend.location}. "
                f"Stored data_ids: {self._backend.data_ids()}."
            )
        self._data_id = data_id

    @property
    def backend(self) -> str:
        """The backend name: 'numpy', 'zarr' or 'hybrid' (multiml)."""
        return self._backend_name

    @property
    def backend_args(self) -> dict[str, Any]:
        """A copy of the ``backend_args`` this StoreGate was made with."""
        return dict(self._backend_args)

    @property
    def backend_object(self) -> Backend:
        """The :class:`~storegate.backends.Backend` (for inspection; change data through StoreGate)."""
        return self._backend

    @property
    def version(self) -> str | None:
        """The version of the data this StoreGate reads: a snapshot id of the ``'icechunk'`` backend.

        A training run that logs it can read exactly the same data again later with
        ``StoreGate('icechunk', {'output_dir': ..., 'version': version})``. After a write it
        names the commit that write made. ``None`` for backends that keep no versions.
        """
        return self._backend.version

    @property
    def store(self) -> Backend:
        """Deprecated name of :attr:`backend_object` ("store" means a zarr Store in storegate)."""
        warnings.warn("StoreGate.store is deprecated; use StoreGate.backend_object.", DeprecationWarning, stacklevel=2)
        return self._backend

    def get_data_ids(self) -> list[str]:
        """Registered data_ids (for hybrid: of both tiers)."""
        return self._backend.data_ids()

    # --- add / update / get / delete -------------------------------------------------

    def add_data(
        self,
        var_names: Any,
        data: Any,
        phase: Any = "train",
        shuffle: bool | int = False,
        do_compile: bool = False,
        compressor: Any = None,
        progress: bool = False,
        ragged: bool = False,
    ) -> None:
        """Add data, appending when a variable already exists (multiml).

        Parameters
        ----------
        var_names, data
            A str and data ``(N, ...)``; a tuple of M names and data ``(N, M, ...)``; a list
            of names and a list of arrays with the same N. Arrays, lists or torch tensors,
            copied, never aliased or changed.
        phase
            ``'train'``, ``'valid'``, ``'test'``, ``'all'`` (split by the current phase
            sizes), three fractions (sum 1) or ints (sum N) for train / valid / test, or a
            :class:`~storegate.splits.StratifiedSplit` / :class:`~storegate.splits.KFold`
            (rows chosen by label or by fold, seeded).
        shuffle
            ``True`` shuffles rows with a fixed seed (separate calls stay aligned); an int is the seed.
        do_compile
            Compile in the same transaction: the data must pass compile()'s checks or nothing is written.
        compressor
            Codec of the variables this call creates (:func:`storegate.codecs.resolve_compressor`).
        progress
            A tqdm bar of the writes (one per variable and phase), for large data.
        ragged
            Store the rows as a ragged variable even when they all have one length. A list
            of arrays ``(L_i, *inner)`` whose ``L_i`` differ is ragged anyway (see
            :mod:`storegate.ragged_store` for the layout); rows appended to a ragged variable
            are its rows whatever their lengths.

        Raises
        ------
        InvalidArgumentError
            For malformed arguments, a row shape that differs from the stored one or a
            dtype that numpy's ``same_kind`` rule does not allow to cast; for ragged rows
            whose inner shapes differ, or given to a variable stored with a fixed shape.
        """
        names, phase_, options = parse_var_names(var_names), parse_split(phase), _codec_options(compressor)
        arrays, order = _shuffled(names.split(data, check_bool("ragged", ragged)), shuffle)
        phase_ = phase_ if order is None else reorder(phase_, order)  # labels given by array follow their rows
        engine, compile_ = self._engine(), check_bool("do_compile", do_compile)
        bar = "add_data" if check_bool("progress", progress) else None
        engine.apply(lambda: engine.plan_add(names, arrays, phase_, options), compile=compile_, progress=bar)

    def update_data(
        self, var_names: Any, data: Any, phase: Any = "train", index: Any = None, do_compile: bool = True
    ) -> None:
        """Replace data; variables that do not exist are added (multiml).

        ``index`` is ``None`` (every row) or any index form of :meth:`get_data`, and
        ``data`` then holds the rows of that selection (a tuple that selects inside rows
        writes as numpy assigns; randslice windows are refused); the other arguments are those of
        :meth:`add_data`. With ``do_compile`` the result must pass compile()'s checks or
        nothing is written.
        """
        engine, names, phase_ = self._engine(), parse_var_names(var_names), parse_split(phase)
        compile_ = check_bool("do_compile", do_compile)
        engine.apply(lambda: engine.plan_update(names, data, phase_, index), compile=compile_)

    def get_data(
        self, var_names: Any, phase: Any = "train", index: Any = None, batch_mode: Any = None, batch_args: Any = None
    ) -> Any:
        """Read data (multiml's return shapes).

        Parameters
        ----------
        var_names
            A str returns ``(N, ...)``, a tuple returns ``(N, M, ...)`` stacked, a list
            returns a list of arrays.
        phase
            ``'train'``, ``'valid'``, ``'test'`` or ``'all'`` / ``None`` (concatenated).
        index
            ``None`` (all rows), an int (drops the row axis), a slice, ``(start, stop)``,
            a list / array / tensor of ints or a boolean mask; or a numpy-style tuple
            ``(rows, *inner)`` that selects inside rows too, with ints, slices, one Ellipsis
            and :func:`~storegate.randslice` windows (lardon's), e.g.
            ``(slice(0, 8), Ellipsis, slice(100, 200))``; only the chunks that hold the
            selection are read. A tuple of two ints stays multiml's ``(start, stop)``.
            See :mod:`storegate.indexing`.
        batch_mode, batch_args
            How several rows of a ragged variable come back (lardon's ``batch_mode``): ``None``
            or ``'list'``, a list of arrays ``(L_i, *inner)``; ``'pad'``, a tuple ``(padded
            (n, length, *inner), lengths int64 (n,))`` padded at the end by ``np.pad`` with
            ``batch_args`` (e.g. ``{'constant_values': -1}``, ``{'mode': 'edge'}``) up to
            ``batch_args['length']`` (default: the longest row); ``'crop'``, ``(n, length,
            *inner)`` of each row's first ``length`` values (default: the shortest row).
            One row (an int index) is its own array; fixed-shape variables ignore them.

        Raises
        ------
        NotFoundError
            If a variable does not exist in the phase.
        InvalidArgumentError
            For a bad ``batch_mode`` / ``batch_args``, a ``length`` a row does not fit, or a
            ragged variable among var_names given as a tuple (stacked).
        InvalidArgumentError, IndexOutOfRangeError
            If the index has a form not accepted, or an item lies outside its axis (the
            message names the item); a randslice that does not fit its axis.
        """
        if (
            (type(index) is int or isinstance(index, np.integer))
            and type(var_names) is str
            and batch_mode is None
            and batch_args is None
        ):
            row = self._warm_row(var_names, phase, int(index))  # the hot path of random rows
            if row is not None:
                return row
        mode, args = check_batch_mode(batch_mode, batch_args)  # refuses the engine's own 'rows'
        return self._engine().get(parse_var_names(var_names), resolve_phase(phase), index, mode, args)

    def _warm_row(self, var: str, phase: Any, index: int) -> Any:
        """Row ``index`` of ``var`` when the backend serves it warm (see GroupEngine.warm_row); else None."""
        view = self._phase_views.get(phase) if type(phase) is str else None
        if view is None or view.engine.data_id != self._data_id:
            view = self[phase] if type(phase) is str and phase in PHASE_WORDS else None
        if view is None or view.phase is None:
            return None
        return view.engine.warm_row(view.phase, var, index)

    def delete_data(self, var_names: Any, phase: Any = "train", do_compile: bool = True) -> None:
        """Delete variables; a variable that does not exist is ignored (multiml)."""
        engine, names, phase_ = self._engine(), parse_var_names(var_names), resolve_phase(phase)
        compile_ = check_bool("do_compile", do_compile)
        engine.apply(lambda: engine.plan_delete(names, phase_), compile=compile_)

    def clear_data(self) -> None:
        """Delete every variable of the current data_id (in the current tier)."""
        self._engine().clear()

    def create_empty(
        self, var_names: Any, shape: Any, phase: Any = "train", dtype: Any = "f4", compressor: Any = None
    ) -> None:
        """Create variables of zeros of ``shape`` ``(N, ...)`` and ``dtype`` (multiml).

        ``phase`` may be a split or 'all', which share the N rows out as add_data does; a
        phase that gets no row gets no variable, and a variable that already exists raises
        InvalidArgumentError, both as in multiml.
        """
        names, phase_ = parse_var_names(var_names), parse_split(phase)
        shape_, dtype_, options, engine = (
            check_shape(shape),
            check_dtype(dtype),
            _codec_options(compressor),
            self._engine(),
        )
        engine.apply(lambda: engine.plan_create_empty(names, phase_, shape_, dtype_, options))

    def writer(
        self, phase: Any = "train", progress: bool = False, total: int | None = None, compressor: Any = None
    ) -> Writer:
        """A buffered writer for many small appends (matorage's DataSaver); see :class:`Writer`.

        ``progress`` shows a tqdm bar of the rows added (of ``total`` when given);
        ``compressor`` is the codec of the variables it creates, as in :meth:`add_data`.

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
        """
        # A writer is bound to the tier it opened in: set_mode inside its block moves nothing.
        backend = self._backend.tiers()[self._backend.tier] if isinstance(self._backend, TieredBackend) else None
        engine = self._engine() if backend is None else GroupEngine(backend, self._id())
        progress_ = check_bool("progress", progress)
        total_ = None if total is None else check_int("total", total, minimum=0)
        return Writer(engine, phase, progress=progress_, total=total_, options=_codec_options(compressor))

    # --- inspection ------------------------------------------------------------------

    def import_file(
        self,
        source: str | os.PathLike[str],
        var_names: Any = None,
        phase: Any = None,
        *,
        keys: Sequence[str] | None = None,
        sha256: str | None = None,
        format: str | None = None,
        storage_options: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> dict[str, list[dict[str, Any]]]:
        """Add the arrays of a file as variables, recording where they came from (DataStack's connectors).

        Parameters
        ----------
        source
            A ``.npy``, ``.npz``, ``.h5`` / ``.hdf5``, ``.csv`` or ``.tsv`` file: a local path
            or an fsspec URL (``https://...``, ``s3://...``); or a folder of ``.npy`` files,
            one row each, as one ragged variable (lardon's layout; named after the folder,
            its SHA-256 that of its manifest, see :func:`storegate.exchange.read_folder`).
        var_names
            Names of the variables: None (a ``.npy`` file's stem; else each key, '/' as '_',
            its phase left out), a str for one array, a list (one per key) or a dict from
            some keys to their names. An exported ragged variable (``'<var>@values'`` and
            ``'<var>@offsets'``) is one key, ``'<var>'``.
        phase
            As in :meth:`add_data`: a phase, fractions, counts or a split object; ``None``
            (the default) is ``'train'``, or for a file that :meth:`export_file` wrote from
            every phase (keys ``'<phase>/<var_name>'``), each key's own phase.
        keys
            What to import: npz members, HDF5 dataset paths or CSV / TSV columns (default:
            every one; a ``.npy`` file holds one array, key ``'data'``).
        sha256
            The file's SHA-256 (64 hex digits): checked before anything is written.
        format
            ``'npy'``, ``'npz'``, ``'hdf5'``, ``'csv'`` or ``'tsv'``; default from the suffix.
        storage_options
            fsspec options of the source URL.
        progress
            A tqdm bar of the bytes read.

        Returns
        -------
        dict
            The source records written (see :meth:`get_sources`).

        Raises
        ------
        ValidationError
            If the file does not have the SHA-256 given, or cannot be read as its format.
        NotFoundError
            If the file or a key does not exist.
        InvalidArgumentError, StorageError
            For bad arguments, or a source that cannot be read. In every case nothing was written.
        """
        show, phase_ = check_bool("progress", progress), None if phase is None else parse_split(phase)
        if keys is not None and (isinstance(keys, str) or len(set(keys)) != len(list(keys))):
            raise InvalidArgumentError(
                f"keys must be a list of distinct key names (npz members, HDF5 datasets, CSV columns). Got {keys!r} "
                "instead: give one key as ['name']."
            )
        if exchange.is_folder(source, storage_options):  # a folder of .npy files: one ragged variable
            if keys is not None:
                raise InvalidArgumentError(
                    f"keys must be left out for a folder of .npy files (its files are the rows). Got keys={keys!r}."
                )
            read = exchange.read_folder(source, sha256, storage_options, show)
            names = exchange.chosen_names(["rows"], var_names, read.url + ".npy", "npy")
            return exchange.import_file(self._engine(), read, exchange.FOLDER, names, {"rows": list(read.rows)}, phase_)
        format_ = exchange.file_format(os.fspath(source), format)  # before a byte is read
        read = exchange.read_source(source, sha256, storage_options, show)
        arrays = exchange.exported_layout(exchange.parse(read, format_, None if keys is None else list(keys)))
        names = exchange.chosen_names(list(arrays), var_names, read.url, format_)
        return exchange.import_file(self._engine(), read, format_, names, arrays, phase_)

    def export_file(
        self,
        destination: str | os.PathLike[str],
        var_names: Sequence[str] | None = None,
        phase: Any = "all",
        *,
        storage_options: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> list[str]:
        """Write variables to an ``.npz`` or HDF5 file (local path or fsspec URL); returns the keys written.

        Keys are the var_names for one phase, ``'<phase>/<var_name>'`` for ``'all'`` (the
        default: every phase, kept apart). Each variable is read whole. The file is written
        to a temporary file first: a failed export leaves nothing at ``destination``.
        """
        names = None if var_names is None else parse_var_names(list(var_names)).names
        return exchange.export_file(
            self._engine(), destination, names, resolve_phase(phase), storage_options, check_bool("progress", progress)
        )

    def to_dask(self, var_names: Any, phase: Any = "train") -> Any:
        """Variables as lazy ``dask.array`` objects over the stored chunks (nothing read now).

        The forms of :meth:`get_data`: a str gives one array ``(N, ...)``, a tuple one array
        ``(N, M, ...)`` stacked on axis 1, a list a list of arrays. Each block is one stored
        chunk of rows, read through storegate (at the last commit) when dask computes it, so
        a statistic over a phase never holds more than a few chunks in memory. Needs dask.

        Raises
        ------
        NotFoundError
            If a variable does not exist in the phase.
        InvalidArgumentError
            If dask is not installed (with the command that installs it).
        """
        return interop.to_dask(self._engine(), parse_var_names(var_names), resolve_phase(phase))

    def to_xarray(self, phase: Any = "train", var_names: Any = None) -> Any:
        """A lazy ``xarray.Dataset`` of a phase's variables (every one, or ``var_names``), dask-backed.

        Dimensions are those storegate writes as zarr v3 ``dimension_names``: ``row`` (shared
        by the phase) and ``'<var_name>_dim_<n>'``; attributes ``data_id`` and ``phase``.
        Needs xarray and dask.
        """
        names = None if var_names is None else parse_var_names(var_names)
        return interop.to_xarray(self._engine(), resolve_phase(phase), names)

    def get_sources(self) -> dict[str, list[dict[str, Any]]]:
        """Where the variables of the data_id came from, by ``'<phase>/<var_name>'``.

        One record per :meth:`import_file` that added rows to the variable: ``source``
        (URL or path), ``bytes``, ``sha256``, ``format``, ``key`` (inside the file), ``rows``
        (added to that phase) and ``imported`` (UTC time). A deleted variable's records go
        with it; other writes leave them as they were.
        """
        return self._engine().sources()

    def get_var_names(self, phase: Any = "train") -> list[str]:
        """Variable names of a phase (for 'all': of any phase)."""
        return self._engine().var_names(resolve_phase(phase))

    def get_var_shapes(self, var_names: Any, phase: Any = "train") -> Any:
        """The row shape of a variable, e.g. ``(3, 4)`` for rows added as ``(N, 3, 4)`` (multiml).

        ``None`` for a variable the phase does not hold; a list for a tuple or list of
        names. ``len(sg[phase])`` gives the number of rows.
        """
        names, engine, phase_ = parse_var_names(var_names), self._engine(), resolve_phase(phase)
        shapes = [engine.row_shape(phase_, var) for var in names.names]
        return shapes[0] if names.form == "str" else shapes

    def get_metadata(self) -> dict[str, Any]:
        """multiml's metadata: ``compiled``, ``total_events``, ``sizes``, ``valid_phases``.

        ``compiled`` is true only when ``compile()`` ran and the data have not changed
        since; ``sizes`` holds ``None`` for a phase whose variables disagree in length.
        """
        return self._engine().metadata()

    def refresh(self) -> None:
        """See what other processes committed since: forget what this handle cached of the data_id.

        A handle reads the data_id as of the last commit it saw (each variable's rows from the
        commit record, the array metadata), so x and y always agree even while another
        process writes. This drops that cache; the next call reads the new commit record
        (one small read) and the metadata of the variables it touches. ``get_metadata()``
        and ``compile()`` refresh too.
        """
        self._engine().refresh()

    def verify(self, read_data: bool = True, progress: bool = False) -> Report:
        """Check the current data_id as it is stored; a report of every problem found.

        Finds what writes that did not finish left past the last commit (rows, variables;
        see "Several writers at once" in the README), committed variables whose array is
        gone, objects that are no storegate variables, phases whose variables disagree in
        length, each chunk lost from a variable that keeps every chunk (path
        ``'<data_id>/<phase>/<var_name>/<chunk key>'``, with the rows it held; one listing
        per variable) and, with ``read_data`` (reads every committed row once, 64 MiB at a
        time), variables whose chunks cannot be read or decoded. Changes nothing.
        ``progress`` shows a tqdm bar over the variables.

        Returns
        -------
        storegate.verify.Report
            ``report.ok`` is True when nothing was found; ``print(report)`` lists the
            findings, each with its path and whether :meth:`repair` fixes it.
        """
        return verify.verify(
            self._engine(), check_bool("read_data", read_data), progress=check_bool("progress", progress)
        )

    def repair(self) -> list[Finding]:
        """Bring the current data_id back to its last commit; returns what was removed.

        Removes the rows past the last commit and the variables no commit lists (what a
        killed or failed writer left: readers never see it, and the next writer cuts the
        rows off anyway). Holds the write lock. Length mismatches, unreadable and lost
        chunks are the data's, not a leftover: :meth:`verify` reports them and repair
        leaves them (rewrite such a variable from its source: :meth:`update_data` with all
        its rows, or :meth:`delete_data` then :meth:`add_data`).

        Raises
        ------
        ReadOnlyError
            If the store was opened with mode 'r'.
        """
        return verify.repair(self._engine())

    def compile(self, reset: bool = False, show_info: bool = False) -> None:
        """Validate the data and record the compile state and sizes in the store (multiml).

        Every variable of a phase must have the same number of rows, and a variable one
        dtype and row shape across phases. ``reset=True`` (re)creates the ``active``
        variable, all ones, in every non-empty phase: int64 as multiml's ``[1] * n``, or the
        dtype ``active`` already has.

        Raises
        ------
        ValidationError
            If a check fails; nothing is written then.
        """
        self._engine().compile(check_bool("reset", reset))
        if show_info:
            self.show_info()

    # --- transforms --------------------------------------------------------------------

    def astype(self, var_names: Any, dtype: Any, phase: Any = "train") -> None:
        """Convert variables to ``dtype`` (holds the data in memory; multiml).

        An explicit conversion: floats into ints drop their fractional part, any value into
        bool is its truth; a value the new dtype cannot hold (300 into int8, NaN into an
        int, 'abc' into a number) raises InvalidArgumentError and nothing is written.
        """
        dtype_ = check_dtype(dtype)
        transforms.apply(
            self._engine(), parse_var_names(var_names), resolve_phase(phase), lambda a, v: convert(a, dtype_, v)
        )

    def onehot(self, var_names: Any, num_classes: int, phase: Any = "train") -> None:
        """Replace integer labels by float64 one-hot vectors of ``num_classes`` (multiml)."""
        transforms.check_num_classes(num_classes)
        fn = lambda a, _: transforms.onehot(a, num_classes)  # noqa: E731 (one expression, named for the line length)
        transforms.apply(self._engine(), parse_var_names(var_names), resolve_phase(phase), fn)

    def argmax(self, var_names: Any, axis: int, phase: Any = "train") -> None:
        """Replace variables by ``np.argmax`` along ``axis`` (an axis of the full array, >= 1)."""
        fn = lambda a, _: transforms.argmax(a, axis)  # noqa: E731
        transforms.apply(self._engine(), parse_var_names(var_names), resolve_phase(phase), fn)

    def shuffle(self, phase: Any = "all", seed: int = 0) -> None:
        """Shuffle the rows of every variable of a phase with one permutation per phase."""
        transforms.shuffle(self._engine(), resolve_phase(phase), check_seed(seed))

    # --- hybrid ------------------------------------------------------------------------

    def set_mode(self, mode: str) -> None:
        """Choose the tier that calls go to: 'numpy' or 'zarr' (hybrid backend only; multiml)."""
        self._tiered("set_mode").set_tier(mode)

    @property
    def mode(self) -> str:
        """The current tier of a hybrid backend (the backend name otherwise)."""
        return self._backend.tier if isinstance(self._backend, TieredBackend) else self._backend.name

    def to_memory(
        self,
        var_names: Any,
        phase: Any = "train",
        output_var_names: Any = None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> None:
        """Copy variables from storage (zarr) to memory (numpy); hybrid backend only (multiml).

        ``callback(output_var_names, data)`` may return new ``(var_names, data)``, with every
        row it was given. The storage tier keeps the variables, as in multiml (whose docs say
        "move"), so a read-only store can be cached in memory too. ``progress`` shows tqdm
        bars of the phases read and of the writes.
        """
        self._move("zarr", "numpy", var_names, phase, output_var_names, callback, progress)

    def to_storage(
        self,
        var_names: Any,
        phase: Any = "train",
        output_var_names: Any = None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> None:
        """Copy variables from memory (numpy) to storage (zarr); see :meth:`to_memory`."""
        self._move("numpy", "zarr", var_names, phase, output_var_names, callback, progress)

    def _move(
        self, src: str, dst: str, var_names: Any, phase: Any, out: Any, callback: Callback | None, progress: bool
    ) -> None:
        tiers, phase_ = self._tiered("to_memory / to_storage").tiers(), resolve_phase(phase)
        show = check_bool("progress", progress)
        moves.transfer(tiers[src], tiers[dst], self._id(), var_names, phase_, out, callback, progress=show)

    def _tiered(self, what: str) -> TieredBackend:
        if not isinstance(self._backend, TieredBackend):
            raise InvalidArgumentError(f"{what} needs backend 'hybrid'. Got backend {self._backend_name!r} instead.")
        return self._backend

    # --- display and item syntax -------------------------------------------------------

    def show_info(self) -> None:
        """Print a table of the current data_id: phase, tier, variable, dtype, rows..."""
        print(info.render_text(info.collect(self._backend_name, self._backend, self._data_id)))

    def _repr_html_(self) -> str:
        return info.render_html(info.collect(self._backend_name, self._backend, self._data_id))

    def __repr__(self) -> str:
        location = self._backend.location
        return f"StoreGate(backend={self._backend_name!r}, data_id={self._data_id!r}, location={location!r})"

    def __getitem__(self, item: Any) -> Any:
        view = self._phase_views.get(item) if type(item) is str else None
        if view is not None and view.engine.data_id == self._data_id:
            return view  # sg['train'] in a loop: one view per phase word and data_id
        view = View(self._engine())[item]
        if type(item) is str and isinstance(view, View) and view.phase is not None and view.var_names is None:
            self._phase_views[item] = view
        return view

    def __setitem__(self, item: Any, data: Any) -> None:
        View(self._engine())[item] = data

    def __delitem__(self, item: Any) -> None:
        del View(self._engine())[item]

    @staticmethod
    def _view_to_list(var_names: Any, data: Any) -> tuple[list[str], list[Any]]:
        """multiml's helper, kept because multiml's task code calls it.

        A str gives ``([name], [data])``; a tuple or list of M names and data ``(N, M, ...)``
        give the names and the M arrays ``data[:, i]``.

        Raises
        ------
        InvalidArgumentError
            If the names are not a str, tuple or list, or ``data`` is not ``(N, M, ...)``.
        """
        if isinstance(var_names, str):
            return [var_names], [data]
        names = parse_var_names(tuple(var_names) if isinstance(var_names, list) else var_names)
        return list(names.names), list(names.split(data))

    # --- internals -------------------------------------------------------------------

    def _id(self) -> str:
        if self._data_id is None:
            raise InvalidArgumentError(
                "data_id must be set before this call: pass data_id= to StoreGate() or call "
                "set_data_id(). Got None instead."
            )
        return self._data_id

    def _engine(self) -> GroupEngine:
        return GroupEngine(self._backend, self._id())


def _shuffled(arrays: list[np.ndarray], shuffle: bool | int) -> tuple[list[np.ndarray], np.ndarray | None]:
    """multiml's ``shuffle=``: ``True`` is seed 1, an int the seed, ``False`` and ``0`` no shuffle.

    Returns the arrays and the row order applied (None when none was).
    """
    if isinstance(shuffle, (bool, np.bool_)):
        shuffle = DEFAULT_SHUFFLE_SEED if shuffle else 0
    seed = check_seed(shuffle, arg="shuffle")
    if seed == 0:  # multiml tests ``if shuffle:``, so 0 leaves the rows in order
        return arrays, None
    order = permutation(arrays[0].shape[0], seed)
    return [a[order] for a in arrays], order  # fancy indexing copies: the caller's array is untouched


def _codec_options(compressor: Any) -> dict[str, Any]:
    """Backend options for a per-variable compressor, validated before anything is written."""
    if compressor is None:
        return {}
    resolve_compressor(compressor)
    return {"compressor": compressor}
