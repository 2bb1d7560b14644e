"""Whole-variable transforms (multiml's astype / onehot / argmax) and shuffle.

Each transform reads the variables it changes, computes every result in memory, and only
then writes them all in one transaction of the engine: a result that cannot be computed
(labels out of range, a bad axis) raises before anything is written, and a write that
fails midway is undone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from storegate.engine import GroupEngine
from storegate.errors import InvalidArgumentError, StorageError
from storegate.names import VarNames
from storegate.phases import permutation, phases_of
from storegate.rules import check_positive, is_int

__all__ = ["apply", "argmax", "check_num_classes", "onehot", "shuffle"]


def apply(engine: GroupEngine, names: VarNames, phase: str, fn: Callable[[np.ndarray, str], np.ndarray]) -> None:
    """Replace each variable of ``names`` in ``phase`` by ``fn`` of it (phases that hold it, for 'all').

    Raises
    ------
    NotFoundError
        If a variable is in no phase (``'all'``) or not in the phase given: nothing is written.
    """
    with engine.writing():  # read and replace as one call: no other writer in between
        for var in names.names:
            engine.require(phase, var)
        targets = [(p, var) for p in phases_of(phase) for var in names.names if engine.has(p, var)]
        for p, var in targets:
            if engine.is_ragged(p, var):  # its rows differ in length: an axis of the variable means nothing
                raise InvalidArgumentError(
                    f"var_name {var!r} of phase {p!r} must have rows of one shape for astype / onehot / argmax. "
                    "Got a ragged variable (rows of different lengths) instead; nothing was written. Read its rows "
                    "(get_data), convert them, and store them again with update_data."
                )
        try:
            results = [(p, var, fn(engine.read(p, var, None), var)) for p, var in targets]
        except MemoryError as exc:  # e.g. onehot into 10**9 classes
            raise StorageError(
                f"the transform of {list(names.names)} needs more memory than this process has; nothing was written."
            ) from exc
        engine.run(engine.plan_replace(results))


def shuffle(engine: GroupEngine, phase: str, seed: int) -> None:
    """Shuffle the rows of every variable of a phase with one permutation per phase."""
    with engine.writing():
        orders = {p: permutation(engine.phase_length(p), seed) for p in phases_of(phase)}
        results = [
            (p, var, engine.read(p, var, None)[order]) for p, order in orders.items() for var in engine.var_names(p)
        ]
        engine.run(engine.plan_replace(results))


def check_num_classes(num_classes: object) -> None:
    """Raise unless ``num_classes`` is a positive int."""
    check_positive("num_classes", num_classes)


def onehot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """float64 one-hot vectors of shape ``labels.shape + (num_classes,)``, as multiml's
    ``np.identity(num_classes)[labels]`` gives them (in rows x classes memory, not classes**2)."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise InvalidArgumentError(f"onehot needs integer labels. Got dtype {labels.dtype} instead.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise InvalidArgumentError(
            f"labels for onehot must lie in [0, {num_classes}). "
            f"Got values from {labels.min()} to {labels.max()} instead."
        )
    shape = (*labels.shape, num_classes)
    try:  # O(rows x classes): np.eye(num_classes) would need classes**2 floats first
        out = np.zeros(shape, dtype=np.float64)
    except (MemoryError, ValueError) as exc:  # numpy: ValueError "array is too big" past the address space
        raise StorageError(
            f"onehot of {labels.size} labels into {num_classes} classes needs {8 * math.prod(shape)} bytes, "
            "more memory than this process has; nothing was written."
        ) from exc
    np.put_along_axis(out, labels[..., None].astype(np.intp), 1.0, axis=-1)
    return out


def argmax(data: np.ndarray, axis: int) -> np.ndarray:
    """``np.argmax`` along an axis of the full ``(N, ...)`` array, keeping the row axis."""
    if not is_int(axis) or not -data.ndim <= axis < data.ndim or axis % data.ndim == 0:
        raise InvalidArgumentError(
            f"axis must be an int naming a non-row axis of data of shape {data.shape} "
            f"(1..{data.ndim - 1} or a negative equivalent). Got {axis!r} instead."
        )
    return np.asarray(np.argmax(data, axis=axis))
