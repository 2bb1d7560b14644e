"""storegate: a Zarr-native array store for machine-learning data.

``StoreGate`` routes add / get / update / delete calls by data_id, phase and var_names to
a numpy (memory), zarr (chunked, compressed storage) or hybrid backend. ``convert_to_v3``
converts an older zarr v2 store (multiml's) to zarr v3.
"""

from __future__ import annotations

from storegate.backends import Backend, VarInfo, available_backends, register_backend
from storegate.errors import (
    ConflictError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    NoReplyError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
    StoreGateError,
    StoreGateWarning,
    ValidationError,
)
from storegate.gate import StoreGate
from storegate.migrate import convert_to_v3
from storegate.phases import PHASES
from storegate.splits import KFold, StratifiedSplit
from storegate.windows import RandomWindow, randslice

__all__ = [
    "PHASES",
    "Backend",
    "ConflictError",
    "IndexOutOfRangeError",
    "InvalidArgumentError",
    "KFold",
    "NoReplyError",
    "NotFoundError",
    "RandomWindow",
    "ReadOnlyError",
    "StorageError",
    "StoreGate",
    "StoreGateError",
    "StoreGateWarning",
    "StratifiedSplit",
    "ValidationError",
    "VarInfo",
    "available_backends",
    "convert_to_v3",
    "randslice",
    "register_backend",
]

__version__ = "0.1.0"
