"""Immutable views behind the item syntax ``sg[phase][var_names][index]``, and views of rows.

Every ``[...]`` returns a new view (or data), so a view held in a variable never changes
when another chain is built: ``a = sg['train']; b = sg['test']; a['x'][:]`` reads train.

A view may also choose rows, lazily: :meth:`View.subset`, :meth:`View.filter`,
:meth:`View.oversample`, :meth:`View.repeat`, :meth:`View.shuffled` and :func:`concat`
(or ``+``) each return a new view whose rows are a :class:`~storegate.rowmaps.RowMap` over
the rows of its phase. Nothing is read or copied when such a view is made; its rows are
worked out on its first read (a filter reads its label variable then, and nothing else),
and reads go to the stored rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np

from storegate.engine import GroupEngine
from storegate.errors import InvalidArgumentError, NotFoundError, ValidationError
from storegate.indexing import Selection, as_row_index, normalize_index, selection_length, split_selection
from storegate.names import VALUES, VarNames, parse_var_names
from storegate.phases import ALL, PHASE_WORDS, PHASES, closest_phase, phases_of, resolve_phase
from storegate.ragged import batch, check_batch_mode
from storegate.rowmaps import (
    Concat,
    Filter,
    Oversample,
    Range,
    Repeat,
    RowMap,
    Shuffle,
    Whole,
    Window,
    check_bound,
    check_classes,
    check_repeat,
)
from storegate.rules import check_seed, common_dtype, common_length

__all__ = ["ConcatView", "View", "concat"]

_ITER_BLOCK = 1024
_KEPT_CHILDREN = 256  # views of one variable a view keeps (see View._child)


def _is_phase(item: Any) -> bool:
    return isinstance(item, str) and item in PHASE_WORDS


def _is_names(item: Any) -> bool:
    if isinstance(item, str):
        return not _is_phase(item)
    return isinstance(item, (tuple, list)) and bool(item) and all(isinstance(i, str) for i in item)


class _RowChoices:
    """The views of rows every view offers: subset, filter, oversample, repeat, shuffled, ``+``.

    Each returns a new view whose rows are a :class:`~storegate.rowmaps.RowMap` over the rows
    of this one; the class using it gives :meth:`_row_map`, :meth:`_with_rows` and
    :meth:`_check_label`.
    """

    def _row_map(self) -> RowMap:
        raise NotImplementedError

    def _with_rows(self, rows: RowMap) -> Self:
        raise NotImplementedError

    def _check_label(self, var: object) -> None:
        raise NotImplementedError

    def subset(self, start: int | float | None = None, stop: int | float | None = None) -> Self:
        """The rows ``[start, stop)`` of this view, as a view.

        Parameters
        ----------
        start, stop
            Positions in this view: ints as a Python slice takes them (negatives count from
            the end, out-of-range bounds are clipped), or floats in ``[0, 1]``, fractions of
            the view's rows (KappaData's ``from_percent`` / ``to_percent``): position
            ``floor(n * f)``, from ``f``'s decimal form. ``None`` is an open end.

        Raises
        ------
        InvalidArgumentError
            If a bound is neither None, an int nor a float in ``[0, 1]``.
        """
        bounds = check_bound("start", start), check_bound("stop", stop)
        return self._with_rows(Range(self._row_map(), *bounds))

    def filter(self, var: str, *, keep: Any = None, drop: Any = None) -> Self:
        """The rows whose label ``var`` is one of ``keep`` (or none of ``drop``), as a view.

        ``var`` is a variable of the phase with one label per row, shape ``(N,)``; its values
        are read on the view's first read, and no other variable is read to filter. The rows
        keep their order.

        Raises
        ------
        InvalidArgumentError
            Unless exactly one of ``keep`` and ``drop`` is given (a value or a list, set or
            array of values), or if ``var`` has rows of more than one value.
        NotFoundError
            If the phase holds no variable ``var``.
        """
        self._check_label(var)
        values, kept = check_classes(keep, drop)
        return self._with_rows(Filter(self._row_map(), var, values, kept))

    def oversample(self, var: str) -> Self:
        """Class-balanced by oversampling the label ``var``, as a view (KappaData's OversamplingWrapper).

        The view's rows, then, for every class but the largest, more of its rows (cycled in
        their order) until each class has as many rows as the largest. Deterministic: follow
        with :meth:`shuffled` to mix the copies in.

        Raises
        ------
        InvalidArgumentError
            If ``var`` is not a str, or (on first read) has rows of more than one value.
        NotFoundError
            If the phase holds no variable ``var``.
        """
        self._check_label(var)
        return self._with_rows(Oversample(self._row_map(), var))

    def repeat(self, times: int | None = None, *, min_rows: int | None = None) -> Self:
        """The rows of this view ``times`` times over (as ``torch.Tensor.repeat`` and ``np.tile``).

        With ``min_rows`` instead, as many whole times as give at least ``min_rows`` rows
        (once at least; an empty view stays empty).

        Raises
        ------
        InvalidArgumentError
            Unless exactly one of ``times`` (an int >= 1) and ``min_rows`` (an int >= 0) is given.
        """
        return self._with_rows(Repeat(self._row_map(), *check_repeat(times, min_rows)))

    def shuffled(self, seed: int = 0) -> Self:
        """The rows of this view in a random order, as a view (``np.random.default_rng(seed)``).

        The same seed gives the same order in every process, on every backend. Nothing is
        written: :meth:`StoreGate.shuffle` is the one that reorders stored rows.

        Raises
        ------
        InvalidArgumentError
            If ``seed`` is not an int in ``[0, 2**32 - 1]``.
        """
        return self._with_rows(Shuffle(self._row_map(), check_seed(seed)))

    def __add__(self, other: object) -> View | ConcatView:
        if not isinstance(other, (View, ConcatView)):
            return NotImplemented
        return concat([self, other])  # type: ignore[list-item]


@dataclass(frozen=True)
class View(_RowChoices):
    """A selection of data_id, phase and var_names; index it to read or write rows.

    The phase defaults to ``'train'``, as in :meth:`StoreGate.get_data`. A chain chooses
    the phase once and the var_names once: a second choice raises instead of silently
    replacing the first, and a first key that misspells a phase (``'validation'``) and names
    no stored variable raises NotFoundError instead of being read as var_names.

    :meth:`subset`, :meth:`filter`, :meth:`oversample`, :meth:`repeat`, :meth:`shuffled` and
    ``+`` return views of some rows of the phase (:attr:`rows`), read-only, worked out lazily.
    """

    engine: GroupEngine
    phase: str | None = None
    var_names: Any = None
    #: The rows of the phase this view shows, in order; None for every row.
    rows: RowMap | None = None
    #: Views of one variable made from this one, kept: ``sg['train']['x'][i]`` in a loop
    #: makes none anew (see ``_child``).
    _children: dict[str, View] = field(default_factory=dict, compare=False, repr=False)

    def __getitem__(self, item: Any) -> Any:
        # The hot path of random rows, sg['train']['x'][i]: each step as short as it can be.
        if (
            (type(item) is int or isinstance(item, np.integer))  # numpy's too: rng.integers, loops over arrays
            and type(self.var_names) is str
            and self.rows is None
            and self.phase is not None
        ):
            row = self.engine.warm_row(self.phase, self.var_names, int(item))
            if row is not None:
                return row
        elif type(item) is str and item in self._children:
            return self._children[item]
        if _is_phase(item):
            self._check_unset("phase", self.phase, item)  # a view of rows has chosen its phase
            # Direct construction: dataclasses.replace costs ~3x more on this hot path.
            return View(self.engine, resolve_phase(item), self.var_names)
        if _is_names(item):
            self._check_unset("var_names", self.var_names, item)
            if self.phase is None and isinstance(item, str):
                self._refuse_misspelt_phase(item)
            return self._child(item) if isinstance(item, str) else View(self.engine, self.phase, item, self.rows)
        return self._read(self._names(), item)

    def _child(self, var: str) -> View:
        """The view of ``var`` in this one, kept (up to :data:`_KEPT_CHILDREN`) for the next ask."""
        child = View(self.engine, self.phase, var, self.rows)
        if len(self._children) < _KEPT_CHILDREN:
            self._children[var] = child
        return child

    def get(self, index: Any = None, batch_mode: Any = None, batch_args: Any = None) -> Any:
        """The rows ``index`` of the chosen var_names, as ``view[index]`` gives them, with
        :meth:`StoreGate.get_data`'s ``batch_mode`` / ``batch_args`` for ragged variables
        (``sg['train']['audio'].get([0, 5], batch_mode='pad')`` gives ``(padded, lengths)``).

        Raises
        ------
        InvalidArgumentError
            If no var_names were chosen, or for a bad ``batch_mode`` / ``batch_args``.
        """
        return self._read(self._names(), index, batch_mode, batch_args)

    def row_numbers(self) -> np.ndarray:
        """The rows of :attr:`base_phase` that this view shows, in order: int64 ``(len(self),)``, read-only."""
        return self._row_map().rows(self._labels)

    @property
    def base_phase(self) -> str:
        """The phase whose rows the view shows (``'all'`` for a concatenation of phases)."""
        return self._phase()

    # --- writes ------------------------------------------------------------------------

    def __setitem__(self, item: Any, data: Any) -> None:
        self._check_no_rows("write")
        if _is_phase(item):
            raise InvalidArgumentError(
                f"assignment needs var_names (and an index), as in sg['train']['x'][0:2] = data. Got phase {item!r} "
                "instead: choose the phase first, sg[phase][var_names] = data."
            )
        if _is_names(item):
            self._check_unset("var_names", self.var_names, item)  # sg['train']['x']['y'] = ... would write y
            self._update(item, data, None)
        else:
            self._update(self._names_arg(), data, item)

    def __delitem__(self, item: Any) -> None:
        self._check_no_rows("delete")
        if not _is_names(item):
            raise InvalidArgumentError(f"del needs var_names, as in del sg['train']['x']. Got {item!r} instead.")
        names, phase = parse_var_names(item), self._phase()
        self.engine.apply(lambda: self.engine.plan_delete(names, phase))

    def __len__(self) -> int:
        if self.rows is not None:
            return int(self.row_numbers().shape[0])
        if self.var_names is None:
            return self.engine.phase_length(self._phase())
        lengths = {var: self.engine.shape(self._phase(), var)[0] for var in self._names().names}
        # Stored data that disagree are a ValidationError, as for len(sg[phase]).
        return common_length(lengths, "the var_names of this view")

    def __contains__(self, item: object) -> bool:
        if self.var_names is not None:
            raise InvalidArgumentError(
                "'in' asks a phase whether it holds a variable, as in 'x' in sg['train']. "
                f"Got a view that chose var_names {self.var_names!r} instead."
            )
        return isinstance(item, str) and self.engine.has(self._phase(), item)

    def __iter__(self) -> Iterator[Any]:
        names = self._names()
        n = len(self)
        for start in range(0, n, _ITER_BLOCK):
            rows = self._read(names, slice(start, min(n, start + _ITER_BLOCK)))
            yield from (zip(*rows, strict=True) if names.form == "list" else rows)

    def __repr__(self) -> str:
        rows = "" if self.rows is None else f", rows={self.rows!r}"
        return f"View(data_id={self.engine.data_id!r}, phase={self._phase()!r}, var_names={self.var_names!r}{rows})"

    # --- internals -------------------------------------------------------------------

    def _phase(self) -> str:
        return self.phase or "train"

    def _check_unset(self, what: str, chosen: Any, item: Any) -> None:
        if chosen is not None:
            raise InvalidArgumentError(
                f"a chain chooses {what} once: this view already chose {chosen!r}. Got {item!r} as well; "
                f"start a new chain (sg[phase][var_names][index]) to read {item!r}."
            )

    def _refuse_misspelt_phase(self, word: str) -> None:
        """A first key close to a phase name and naming no stored variable is a misspelt phase."""
        hint = closest_phase(word)
        if hint and not self.engine.has(ALL, word):
            raise NotFoundError(
                f"{word!r} is neither a phase nor a variable of data_id {self.engine.data_id!r}: the phases are "
                f"{', '.join(map(repr, (*PHASES, ALL)))}.{hint}"
            )

    def _names_arg(self) -> Any:
        if self.var_names is None:
            raise InvalidArgumentError(
                "choose var_names before an index, as in sg['train']['x'][0:2]. Got no var_names."
            )
        return self.var_names

    def _names(self) -> VarNames:
        return parse_var_names(self._names_arg())

    def _read(self, names: VarNames, index: Any, batch_mode: Any = None, batch_args: Any = None) -> Any:
        batch_mode, batch_args = check_batch_mode(batch_mode, batch_args)  # refuses the engine's own 'rows'
        if self.rows is None:
            return self.engine.get(names, self._phase(), index, batch_mode, batch_args)
        return self.engine.get(names, self._phase(), index, batch_mode, batch_args, rows=self.row_numbers())

    def _labels(self, var: str) -> np.ndarray:
        return np.asarray(self.engine.get(VarNames((var,), "str"), self._phase(), None))

    def _dtype(self, var: str) -> np.dtype:
        """The dtype reads of ``var`` give (the common dtype of the phases, for 'all'; a ragged variable's values')."""
        self.engine.require(self._phase(), var)
        stored = var + VALUES if self._is_ragged(var) else var
        return self.engine.layout(stored, phases_of(self._phase())).dtype

    def _is_ragged(self, var: str) -> bool:
        return self.engine.is_ragged(self._phase(), var)

    def _row_map(self) -> RowMap:
        if self.rows is not None:
            return self.rows
        return Whole(len(self))

    def _with_rows(self, rows: RowMap) -> View:
        return View(self.engine, self._phase(), self.var_names, rows)

    def _check_label(self, var: object) -> None:
        if not isinstance(var, str):
            raise InvalidArgumentError(f"var must be the name of a label variable (a str). Got {var!r} instead.")
        self.engine.require(self._phase(), var)
        if self.engine.is_ragged(self._phase(), var):
            raise InvalidArgumentError(
                f"var must name a label variable with one value per row. Got the ragged variable {var!r} (rows of "
                "different lengths) instead: filter or oversample by a label variable."
            )

    def _check_no_rows(self, what: str) -> None:
        if self.rows is not None:
            raise InvalidArgumentError(
                "a view that chose rows (subset, filter, oversample, repeat, shuffled, concat) is read-only and "
                f"cannot {what}. "
                f"Got {what} on {self!r}: {what} through sg[phase] (its rows are view.row_numbers() of "
                "view.base_phase)."
            )

    def _update(self, var_names: Any, data: Any, index: Any) -> None:
        names, phase = parse_var_names(var_names), self._phase()
        self.engine.apply(lambda: self.engine.plan_update(names, data, phase, index))


def concat(views: Sequence[View | ConcatView]) -> View | ConcatView:
    """The rows of each view, one view after the other, as one view (``torch``'s ``ConcatDataset``).

    Views of one StoreGate and data_id stay a :class:`View`: of their phase when they share
    one, else of phase ``'all'`` (their rows shifted to where their phase lies there), which
    reads each variable across the phases, so every phase that holds rows must hold the
    variables read. Views of several stores or data_ids (KappaData's and DataStack's
    concatenated datasets) give a :class:`ConcatView`, which reads each part from its own
    store. ``a + b`` is ``concat([a, b])``.

    Raises
    ------
    InvalidArgumentError
        If ``views`` is empty, holds something else than views, or views that chose
        different var_names.
    """
    parts = list(views) if isinstance(views, (list, tuple)) else None
    if not parts or not all(isinstance(v, (View, ConcatView)) for v in parts):
        raise InvalidArgumentError(f"views must be a non-empty list of views (sg[phase]...). Got {views!r} instead.")
    first = parts[0]
    for view in parts[1:]:
        if view.var_names != first.var_names:
            raise InvalidArgumentError(
                "views must have chosen the same var_names (or none) to be concatenated. Got "
                f"{first!r} and {view!r}: choose the same var_names (or none) for each."
            )
    if not all(isinstance(v, View) and _same_group(v, first) for v in parts):
        return ConcatView(tuple(parts), first.var_names)
    views_ = [v for v in parts if isinstance(v, View)]
    phases = {view.base_phase for view in views_}
    head = views_[0]
    if len(phases) == 1:
        return View(head.engine, head.base_phase, head.var_names, Concat(tuple(v._row_map() for v in views_)))
    return View(head.engine, ALL, head.var_names, Concat(tuple(_in_all(v) for v in views_)))


def _same_group(view: View, first: View | ConcatView) -> bool:
    """True when both views read one data_id of one backend."""
    return (
        isinstance(first, View)
        and view.engine.backend is first.engine.backend
        and view.engine.data_id == first.engine.data_id
    )


@dataclass(frozen=True)
class ConcatView(_RowChoices):
    """Views of several stores or data_ids, one after the other, read-only.

    Made by :func:`concat` (or ``+``) of views that do not share one StoreGate and data_id.
    Like a :class:`View`: choose var_names (``cv['x']``), index it (``cv['x'][3]``,
    ``cv['x'][10:20]``, a list or mask of rows), ``len``, iterate, and choose rows
    (subset, filter, oversample, repeat, shuffled, ``+``). Item ``i`` is row
    ``i - sum(len(p) for p in parts[:k])`` of part ``k``; each variable comes back in the one
    dtype that holds every part's (as phase ``'all'`` reads phases). For a DataLoader, wrap
    one :class:`~storegate.torch.StoreGateDataset` per part in
    :class:`storegate.torch.ConcatDataset`.
    """

    parts: tuple[View | ConcatView, ...]
    var_names: Any = None
    #: Positions of the concatenation this view shows, in order; None for every one.
    rows: RowMap | None = None

    def __getitem__(self, item: Any) -> Any:
        if _is_phase(item):
            raise InvalidArgumentError(
                f"a concatenation of views has chosen its phases (one per part). Got phase {item!r}: choose the "
                "phase of each part before concat(), as in concat([a['train'], b['train']])."
            )
        if _is_names(item):
            if self.var_names is not None:
                raise InvalidArgumentError(
                    f"a chain chooses var_names once: this view already chose {self.var_names!r}. Got {item!r} as "
                    "well; start a new chain to read it."
                )
            return ConcatView(self.parts, item, self.rows)
        if self.var_names is None:
            raise InvalidArgumentError("choose var_names before an index, as in view['x'][0:2]. Got no var_names.")
        return self._read(parse_var_names(self.var_names), item)

    def get(self, index: Any = None, batch_mode: Any = None, batch_args: Any = None) -> Any:
        """The rows ``index`` of the chosen var_names, as :meth:`View.get` gives them (a ragged
        variable's batch padded or cropped with ``batch_mode`` / ``batch_args``)."""
        if self.var_names is None:
            raise InvalidArgumentError("choose var_names before get(), as in view['x'].get(...). Got no var_names.")
        names = parse_var_names(self.var_names)
        mode, args = check_batch_mode(batch_mode, batch_args)
        got = self._read(names, index)
        arrays = [got] if names.form == "str" else list(got)
        out = [batch(a, mode, args, None) if isinstance(a, list) and a else a for a in arrays]
        return out[0] if names.form == "str" else out

    def __contains__(self, item: object) -> bool:
        if self.var_names is not None:
            raise InvalidArgumentError(
                "'in' asks whether every part holds a variable, as in 'x' in view. Got a view that chose var_names "
                f"{self.var_names!r} instead."
            )
        return isinstance(item, str) and all(item in part for part in self.parts)

    def __setitem__(self, item: Any, data: Any) -> None:
        raise InvalidArgumentError(
            f"a concatenation of views is read-only and cannot write. Got a write on {self!r}: write through "
            "each part's StoreGate."
        )

    def __len__(self) -> int:
        if self.rows is not None:
            return int(self.row_numbers().shape[0])
        return sum(self._sizes())

    def __iter__(self) -> Iterator[Any]:
        if self.var_names is None:
            raise InvalidArgumentError("choose var_names before iterating, as in view['x']. Got no var_names.")
        names = parse_var_names(self.var_names)
        n = len(self)
        for start in range(0, n, _ITER_BLOCK):
            rows = self._read(names, slice(start, min(n, start + _ITER_BLOCK)))
            yield from (zip(*rows, strict=True) if names.form == "list" else rows)

    def row_numbers(self) -> np.ndarray:
        """The positions of the parts' concatenation that this view shows: int64 ``(len(self),)``."""
        return self._row_map().rows(self._labels)

    def __repr__(self) -> str:
        rows = "" if self.rows is None else f", rows={self.rows!r}"
        return f"ConcatView(parts={list(self.parts)!r}, var_names={self.var_names!r}{rows})"

    # --- internals -------------------------------------------------------------------

    def _sizes(self) -> list[int]:
        return [len(part) for part in self.parts]

    def _read(self, names: VarNames, index: Any) -> Any:
        if self.rows is None:
            selection = normalize_index(index, sum(self._sizes()))
        else:
            rows = self.row_numbers()
            selection = _as_selection(rows[normalize_index(index, rows.shape[0])])
        if names.form == "tuple" and any(self._is_ragged(var) for var in names.names):
            raise InvalidArgumentError(
                f"var_names given as a tuple are stacked, which ragged variables cannot be. Got {names.names!r}: "
                "give them as a list."
            )
        arrays = [self._read_var(var, selection) for var in names.names]
        scalar = isinstance(selection, int)
        if scalar:  # one row of a 1-D variable is a numpy scalar, as numpy indexing gives
            arrays = [a[()] if a.ndim == 0 else a for a in arrays]
        return names.join(arrays, scalar=scalar)

    def _is_ragged(self, var: str) -> bool:
        return any(part._is_ragged(var) for part in self.parts)

    def _read_var(self, var: str, selection: Selection) -> Any:
        if self._is_ragged(var):
            return self._read_rows(var, selection)
        dtype = self._dtype(var)
        one = VarNames((var,), "str")
        pieces = [
            (piece, np.asarray(self.parts[piece.part]._read(one, _local_index(piece.local))))
            for piece in split_selection(selection, self._sizes())
        ]
        if isinstance(selection, int):
            return pieces[0][1].astype(dtype, copy=False)
        if not pieces:  # no row: the first part's row shape
            empty = np.asarray(self.parts[0]._read(one, np.zeros(0, dtype=np.int64)))
            return empty.astype(dtype, copy=False)
        row_shape = pieces[0][1].shape[1:]
        out = np.empty((selection_length(selection) or 0, *row_shape), dtype=dtype)
        for piece, values in pieces:
            if values.shape[1:] != row_shape:
                raise ValidationError(
                    f"var_name {var!r} must have one row shape in every part of a concatenation to be read as one "
                    f"array. Got {row_shape} in part {pieces[0][0].part} and {values.shape[1:]} in part {piece.part} "
                    "instead."
                )
            out[piece.positions] = values
        return out

    def _read_rows(self, var: str, selection: Selection) -> Any:
        """A ragged variable: one row's array, or a list of them (each part's rows in the one dtype)."""
        if not all(part._is_ragged(var) for part in self.parts):
            raise ValidationError(
                f"var_name {var!r} must be ragged in every part of a concatenation, or in none. Got it ragged in "
                "some parts only: store it one way in every store."
            )
        dtype, one = self._dtype(var), VarNames((var,), "str")
        pieces = [
            (piece, self.parts[piece.part]._read(one, _local_index(piece.local)))
            for piece in split_selection(selection, self._sizes())
        ]
        if isinstance(selection, int):
            return np.asarray(pieces[0][1]).astype(dtype, copy=False)
        rows: list[Any] = [None] * (selection_length(selection) or 0)
        for piece, values in pieces:
            positions = (
                range(piece.positions.start, piece.positions.stop)
                if isinstance(piece.positions, slice)
                else piece.positions.tolist()
            )
            for position, row in zip(positions, values, strict=True):
                rows[position] = np.asarray(row).astype(dtype, copy=False)
        return rows

    def _dtype(self, var: str) -> np.dtype:
        """The one dtype that holds ``var`` in every part."""
        dtypes = [part._dtype(var) for part in self.parts]
        try:
            return common_dtype(dtypes, f"var_name {var!r} of the concatenated views")
        except ValidationError as exc:
            raise ValidationError(
                f"{exc} In a concatenation of stores, convert the part whose dtype differs with astype() first."
            ) from None

    def _labels(self, var: str) -> np.ndarray:
        one = VarNames((var,), "str")
        return np.concatenate([np.asarray(part._read(one, None)) for part in self.parts])

    def _row_map(self) -> RowMap:
        return self.rows if self.rows is not None else Whole(len(self))

    def _with_rows(self, rows: RowMap) -> ConcatView:
        return ConcatView(self.parts, self.var_names, rows)

    def _check_label(self, var: object) -> None:
        for part in self.parts:
            part._check_label(var)


def _local_index(local: Selection) -> Any:
    """A piece's rows as an index of its part: slices and ints as they are, arrays as runs when they are."""
    return local if isinstance(local, (int, slice)) else as_row_index(local)


def _as_selection(rows: Any) -> Selection:
    """Positions picked from row_numbers(): an int for one row, else a 1-D int64 array."""
    if np.ndim(rows) == 0:
        return int(rows)
    return np.asarray(rows, dtype=np.int64)


def _in_all(view: View) -> RowMap:
    """A view's rows as rows of phase 'all' (the phases concatenated in order)."""
    if view.base_phase == ALL:
        return view._row_map()
    lengths = [view.engine.phase_length(p) for p in PHASES]
    i = PHASES.index(view.base_phase)
    return Window(view._row_map(), sum(lengths[:i]), lengths[i])
