"""Whole-variable transforms used by StoreGate.onehot / argmax, validated before any write."""

from __future__ import annotations

import numpy as np

from storegate.errors import InvalidArgumentError

__all__ = ["argmax", "check_num_classes", "onehot"]


def check_num_classes(num_classes: object) -> None:
    """Raise unless ``num_classes`` is a positive int."""
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1:
        raise InvalidArgumentError(f"num_classes must be a positive int. Got {num_classes!r} instead.")


def onehot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """float32 one-hot vectors: shape ``labels.shape + (num_classes,)``."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise InvalidArgumentError(f"onehot needs integer labels. Got dtype {labels.dtype} instead.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise InvalidArgumentError(
            f"labels for onehot must lie in [0, {num_classes}). "
            f"Got values from {labels.min()} to {labels.max()} instead."
        )
    return np.asarray(np.eye(num_classes, dtype=np.float32)[labels])


def argmax(data: np.ndarray, axis: int) -> np.ndarray:
    """``np.argmax`` along an axis of the full ``(N, ...)`` array, keeping the row axis."""
    is_int = isinstance(axis, (int, np.integer)) and not isinstance(axis, bool)
    if not is_int or not -data.ndim <= axis < data.ndim or axis % data.ndim == 0:
        raise InvalidArgumentError(
            f"axis must be an int naming a non-row axis of data of shape {data.shape} "
            f"(1..{data.ndim - 1} or a negative equivalent). Got {axis!r} instead."
        )
    return np.asarray(np.argmax(data, axis=axis))
