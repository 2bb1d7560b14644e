"""Splits that choose rows, not only counts: stratified by a label and k-fold (scikit-learn's habits).

A :class:`~storegate.phases.Split` gives each phase a run of consecutive rows. The two kinds
here give each phase a set of rows, chosen by a seeded numpy ``Generator``
(``np.random.default_rng(seed)``), so that the same call on the same rows always splits
them the same way, on every backend and in every process:

- :class:`StratifiedSplit` shares the rows out as a :class:`Split` with the same fractions
  does (the same number of rows per phase), and within each class of a label, each phase
  takes its share of the class within one row;
- :class:`KFold` cuts a seeded permutation of the rows into ``k`` folds whose sizes differ by
  at most one; fold ``fold`` is phase ``'valid'`` and the other folds are ``'train'``.

Each phase gets its rows in their original order. :func:`phase_rows` gives, for any split
spec, the rows of train, valid and test.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from storegate.errors import InvalidArgumentError
from storegate.phases import PHASES, Split, is_split, parse_phase
from storegate.rules import as_array, check_seed, is_int

__all__ = ["KFold", "PhaseRows", "SplitSpec", "StratifiedSplit", "parse_split", "phase_rows", "reorder"]

#: The rows of train, valid and test: a run of rows (a step-1 slice) or row numbers, sorted.
PhaseRows = tuple[Union[slice, np.ndarray], Union[slice, np.ndarray], Union[slice, np.ndarray]]


@dataclass(frozen=True, eq=False)
class StratifiedSplit:
    """A split that keeps the class proportions of a label in every phase.

    Parameters
    ----------
    fractions
        Three fractions (sum 1) or counts (sum N) for train / valid / test, as a plain split
        takes them; the phases get the same number of rows as that split gives.
    by
        The labels: an array, list or tensor ``(N,)`` (or ``(N, 1)``) of ints, bools, floats or
        strings, one per row of the data it splits, or the name of a variable added in the
        same call (``add_data(['x', 'y'], [x, y], phase=StratifiedSplit(..., by='y'))``).
        With ``add_data(..., shuffle=...)`` the labels are given in the order of the data
        before the shuffle, as the data are.
    seed
        Seed of ``np.random.default_rng``, which chooses the rows of each class that go to
        each phase.

    Notes
    -----
    Class ``c`` of ``n_c`` rows gets ``floor`` or ``ceil`` of ``n_c * rows_p / N`` rows in
    phase ``p`` (``rows_p`` the phase's rows): its proportion there is within one row of its
    proportion overall. A class must have at least one row per phase that gets rows; a
    class of few rows may still miss a small phase (its share there is under one row).

    Raises
    ------
    InvalidArgumentError
        If ``fractions`` is not three fractions or counts, ``by`` is neither labels ``(N,)``
        nor a variable name, or ``seed`` is not an int in ``[0, 2**32 - 1]``; when it splits,
        if the labels are not one per row or a class is too small.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.repeat([0, 1], [80, 20])
    >>> train, valid, test = phase_rows(StratifiedSplit((0.5, 0.25, 0.25), by=labels), 100)
    >>> [int((labels[rows] == 1).sum()) for rows in (train, valid, test)]
    [10, 5, 5]
    """

    fractions: Split
    by: np.ndarray | str
    seed: int = 0

    def __init__(self, fractions: Any, by: Any, seed: int = 0) -> None:
        object.__setattr__(self, "fractions", _fractions(fractions))
        object.__setattr__(self, "by", by if isinstance(by, str) else _labels(by))
        object.__setattr__(self, "seed", check_seed(seed))

    def rows(self, n_rows: int, named: Mapping[str, np.ndarray] | None = None) -> PhaseRows:
        """The rows of train, valid and test, for ``n_rows`` rows (variables by name in ``named``)."""
        labels = self._labels_for(n_rows, named or {})
        classes, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
        phase_sizes = np.array(self.fractions.counts(n_rows), dtype=np.int64)
        _check_classes(classes, sizes, phase_sizes)
        counts = stratified_counts(sizes, phase_sizes)
        return _assign(inverse.reshape(-1), counts, np.random.default_rng(self.seed))

    def take(self, order: np.ndarray) -> StratifiedSplit:
        """This split for the rows reordered as ``rows[order]`` (labels given as an array follow)."""
        if isinstance(self.by, str):
            return self
        return StratifiedSplit(self.fractions.values, self.by[order], self.seed)

    def _labels_for(self, n_rows: int, named: Mapping[str, np.ndarray]) -> np.ndarray:
        if isinstance(self.by, str):
            if self.by not in named:
                raise InvalidArgumentError(
                    f"by must name a variable given in the same call to stratify by it. Got {self.by!r}, and the "
                    f"call gives {sorted(named) or 'no data'}: pass the labels array itself (by=labels), or add "
                    "the labels in the same call."
                )
            labels = _labels(named[self.by], f"by={self.by!r}")
        else:
            labels = self.by
        if labels.shape[0] != n_rows:
            raise InvalidArgumentError(
                f"by must give one label per row: {n_rows} rows to split. Got {labels.shape[0]} labels instead: "
                "pass the labels of exactly the rows given, in the same order."
            )
        return labels

    def __repr__(self) -> str:
        by = repr(self.by) if isinstance(self.by, str) else f"<{self.by.shape[0]} labels>"
        return f"StratifiedSplit({self.fractions.values!r}, by={by}, seed={self.seed})"


@dataclass(frozen=True)
class KFold:
    """Fold ``fold`` of ``k`` as phase ``'valid'``, the other folds as ``'train'`` (none in test).

    Parameters
    ----------
    k
        The number of folds, at least 2.
    fold
        Which fold is ``'valid'``: ``0`` to ``k - 1``.
    seed
        Seed of ``np.random.default_rng``, whose permutation of the rows is cut into the
        ``k`` folds: the same seed gives the same folds for every ``fold``, so that
        ``KFold(k, 0, seed)`` ... ``KFold(k, k - 1, seed)`` use every row as valid once.

    Notes
    -----
    The folds differ in size by at most one row: the first ``N % k`` folds have
    ``N // k + 1`` rows, as in scikit-learn's ``KFold``.

    Raises
    ------
    InvalidArgumentError
        If ``k`` < 2, ``fold`` is outside ``[0, k - 1]`` or ``seed`` is not an int in
        ``[0, 2**32 - 1]``; when it splits, if there are fewer rows than folds.

    Examples
    --------
    >>> train, valid, test = phase_rows(KFold(5, fold=0, seed=0), 10)
    >>> len(train), len(valid), len(test)
    (8, 2, 0)
    """

    k: int
    fold: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not is_int(self.k) or self.k < 2:
            raise InvalidArgumentError(
                f"k must be an int >= 2 (the number of folds). Got {self.k!r} instead: for one train / valid "
                "split use fractions such as phase=(0.8, 0.2, 0.0)."
            )
        if not is_int(self.fold) or not 0 <= self.fold < self.k:
            raise InvalidArgumentError(
                f"fold must be an int in [0, {self.k - 1}] (folds are numbered from 0, as range(k) gives them). "
                f"Got {self.fold!r} instead: loop with for fold in range({self.k})."
            )
        object.__setattr__(self, "k", int(self.k))
        object.__setattr__(self, "fold", int(self.fold))
        object.__setattr__(self, "seed", check_seed(self.seed))

    def rows(self, n_rows: int, named: Mapping[str, np.ndarray] | None = None) -> PhaseRows:
        """The rows of train, valid (this fold) and test (none), for ``n_rows`` rows."""
        if n_rows < self.k:
            raise InvalidArgumentError(
                f"KFold(k={self.k}) needs at least one row per fold. Got {n_rows} rows instead: lower k, or split "
                "more rows at once."
            )
        order = np.random.default_rng(self.seed).permutation(n_rows)
        size, extra = divmod(n_rows, self.k)
        start = self.fold * size + min(self.fold, extra)
        stop = start + size + (self.fold < extra)
        valid = np.zeros(n_rows, dtype=bool)
        valid[order[start:stop]] = True
        return np.flatnonzero(~valid), np.flatnonzero(valid), np.zeros(0, dtype=np.int64)


#: Every split spec: consecutive runs by fractions or counts, stratified, or k-fold.
SplitSpec = Union[Split, StratifiedSplit, KFold]


def parse_split(phase: object) -> str | SplitSpec:
    """A phase name, a :class:`Split`, or a :class:`StratifiedSplit` / :class:`KFold` as given.

    Raises
    ------
    InvalidArgumentError
        As :func:`storegate.phases.parse_phase` does for anything else.
    """
    if isinstance(phase, (StratifiedSplit, KFold)):
        return phase
    return parse_phase(phase)


def phase_rows(spec: SplitSpec, n_rows: int, named: Mapping[str, np.ndarray] | None = None) -> PhaseRows:
    """The rows of train, valid and test that ``spec`` gives ``n_rows`` rows.

    A :class:`Split` gives runs (slices, so that its pieces are views); the other kinds give
    sorted row numbers. ``named`` holds the variables of the call, by name, for a
    :class:`StratifiedSplit` whose ``by`` is a name.
    """
    if isinstance(spec, Split):
        bounds = np.cumsum([0, *spec.counts(n_rows)]).tolist()
        return slice(bounds[0], bounds[1]), slice(bounds[1], bounds[2]), slice(bounds[2], bounds[3])
    return spec.rows(n_rows, named)


def reorder(spec: str | SplitSpec, order: np.ndarray) -> str | SplitSpec:
    """``spec`` for the rows reordered as ``rows[order]`` (``add_data(..., shuffle=...)``)."""
    return spec.take(order) if isinstance(spec, StratifiedSplit) else spec


def stratified_counts(class_sizes: np.ndarray, phase_sizes: np.ndarray) -> np.ndarray:
    """Rows of each class in each phase: ``(K, 3)`` int64, each ``floor`` or ``ceil`` of its share.

    The share of class ``c`` in phase ``p`` is ``class_sizes[c] * phase_sizes[p] / N``. Every
    such matrix has a rounding that keeps both its row sums (the classes) and its column
    sums (the phases); it is found as a flow: the floors first, then one more row for the
    cells that need it, moved along augmenting paths when a phase is full.
    """
    total = int(class_sizes.sum())
    product = np.outer(class_sizes.astype(np.int64), phase_sizes.astype(np.int64))
    counts = product // max(total, 1)
    can_grow = product % max(total, 1) != 0
    room = phase_sizes - counts.sum(axis=0)
    grown = np.zeros(counts.shape, dtype=bool)
    for c, need in enumerate((class_sizes - counts.sum(axis=1)).tolist()):
        for _ in range(need):
            _augment(c, can_grow, grown, room)
    return counts + grown


def _augment(c: int, can_grow: np.ndarray, grown: np.ndarray, room: np.ndarray) -> None:
    """Give class ``c`` one more row in some phase, moving other classes' extra rows if needed.

    A breadth-first search over the phases: from a full phase, a class that has its extra
    row there may move it to a phase it can grow in.
    """
    parent: dict[int, tuple[int | None, int]] = {}
    queue: deque[int] = deque()
    for p in np.flatnonzero(can_grow[c] & ~grown[c]).tolist():
        parent[p] = (None, c)
        queue.append(p)
    while queue:
        p = queue.popleft()
        if room[p] > 0:
            room[p] -= 1
            _apply_path(p, parent, grown)
            return
        for q in range(len(PHASES)):
            movers = np.flatnonzero(grown[:, p] & can_grow[:, q] & ~grown[:, q])
            if q not in parent and movers.size:
                parent[q] = (p, int(movers[0]))
                queue.append(q)
    raise AssertionError("a rounding that keeps the class and phase sizes always exists")  # pragma: no cover


def _apply_path(end: int, parent: dict[int, tuple[int | None, int]], grown: np.ndarray) -> None:
    p: int | None = end
    while p is not None:
        previous, mover = parent[p]
        grown[mover, p] = True
        if previous is not None:
            grown[mover, previous] = False
        p = previous


def _assign(classes: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> PhaseRows:
    """Rows of each phase: each class's rows in a seeded order, its first ``counts[c, 0]`` to
    train, the next ``counts[c, 1]`` to valid, the rest to test."""
    shuffled = rng.permutation(classes.shape[0])
    grouped = shuffled[np.argsort(classes[shuffled], kind="stable")]  # by class, random within
    sizes = counts.sum(axis=1)
    starts = np.cumsum(sizes) - sizes
    cls = classes[grouped]
    rank = np.arange(grouped.shape[0]) - starts[cls]
    phase = (rank >= counts[cls, 0]).astype(np.int64) + (rank >= counts[cls, 0] + counts[cls, 1])
    return tuple(np.sort(grouped[phase == p]) for p in range(len(PHASES)))  # type: ignore[return-value]


def _check_classes(classes: np.ndarray, sizes: np.ndarray, phase_sizes: np.ndarray) -> None:
    """Every class needs a row for each phase that gets rows."""
    needed = int((phase_sizes > 0).sum())
    small = np.flatnonzero(sizes < needed)
    if small.size:
        c = int(small[0])
        phases = [p for p, n in zip(PHASES, phase_sizes.tolist(), strict=True) if n]
        raise InvalidArgumentError(
            f"by must give every class at least one row per phase that gets rows ({needed}: {', '.join(phases)}). "
            f"Got class {classes[c].item()!r} with {int(sizes[c])} row(s) ({small.size} class(es) too small): "
            "drop or merge the rare classes, or give a phase fraction 0."
        )


def _fractions(fractions: Any) -> Split:
    """Three fractions or counts, checked as a plain split checks them."""
    try:
        spec = parse_phase(fractions) if is_split(fractions) else None
    except InvalidArgumentError:
        spec = None
    if not isinstance(spec, Split):
        raise InvalidArgumentError(
            "fractions must be three non-negative fractions (summing to 1) or counts (summing to the rows split) "
            f"for train / valid / test, e.g. (0.8, 0.1, 0.1). Got {fractions!r} instead."
        )
    return spec


def _labels(by: Any, arg: str = "by") -> np.ndarray:
    """Labels ``(N,)`` from an array, list or tensor ``(N,)`` or ``(N, 1)``."""
    labels = as_array(by, arg)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise InvalidArgumentError(
            f"{arg} must be labels of shape (N,), one per row, or a variable name. Got shape {labels.shape} "
            "instead: for one-hot labels pass labels.argmax(axis=1)."
        )
    return labels
