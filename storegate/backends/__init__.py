"""Storage backends and the registry that maps backend names to classes.

Classes are imported when first used, so a missing optional dependency only matters to
the backend that needs it, and the error says what to install.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from storegate.backends.base import (
    Backend,
    Checkpoint,
    Finding,
    OtherObject,
    TieredBackend,
    VarInfo,
    change_count,
    note_change,
)
from storegate.errors import InvalidArgumentError, StoreGateError

__all__ = [
    "Backend",
    "Checkpoint",
    "Finding",
    "OtherObject",
    "TieredBackend",
    "VarInfo",
    "available_backends",
    "change_count",
    "create_backend",
    "note_change",
    "register_backend",
]

# name -> (module path, class name, pip extra that provides its dependencies)
_REGISTRY: dict[str, tuple[str, str, str | None]] = {
    "numpy": ("storegate.backends.numpy_backend", "NumpyBackend", None),
    "zarr": ("storegate.backends.zarr_backend", "ZarrBackend", None),
    "hybrid": ("storegate.backends.hybrid_backend", "HybridBackend", None),
    "icechunk": ("storegate.backends.icechunk_backend", "IcechunkBackend", "icechunk"),
}

#: Classes registered as classes (a class defined in a script or notebook has no import path).
_CLASSES: dict[str, type[Backend]] = {}


def available_backends() -> list[str]:
    """Names accepted by ``StoreGate(backend=...)``."""
    return list(_REGISTRY)


def register_backend(
    name: str, target: str | type[Backend], extra: str | None = None, *, replace: bool = False
) -> None:
    """Register a backend class, given as ``'package.module:ClassName'`` or as the class itself.

    A string is imported when the backend is first used (so a missing optional dependency
    only matters then, with ``extra`` as the install hint); a class is checked now.

    Raises
    ------
    InvalidArgumentError
        If ``name`` is not a str, is taken and ``replace`` is false, or ``target`` is malformed.
    """
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"name must be a non-empty str. Got {name!r} instead.")
    if name in _REGISTRY and not replace:
        raise InvalidArgumentError(f"backend name {name!r} is already registered; pass replace=True to override it.")
    if isinstance(target, type):
        cls = _checked_class(name, target)
        _REGISTRY[name] = (cls.__module__, cls.__qualname__, extra)
        _CLASSES[name] = cls
        return
    module, _, attr = target.partition(":") if isinstance(target, str) else ("", "", "")
    if not module or not attr:
        raise InvalidArgumentError(
            f"target must look like 'package.module:Class' or be a Backend subclass. Got {target!r} instead."
        )
    _REGISTRY[name] = (module, attr, extra)
    _CLASSES.pop(name, None)


def create_backend(name: str, backend_args: dict[str, Any] | None) -> Backend:
    """Instantiate the backend registered as ``name`` with ``backend_args``."""
    if name not in _REGISTRY:
        raise InvalidArgumentError(f"backend must be one of {available_backends()}. Got {name!r} instead.")
    if backend_args is not None and not isinstance(backend_args, dict):
        raise InvalidArgumentError(f"backend_args must be a dict or None. Got {type(backend_args).__name__} instead.")
    cls = _load(name)
    if inspect.isabstract(cls):
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        raise InvalidArgumentError(
            f"backend {name!r} ({_path(cls)}) must implement every abstract method of storegate.Backend. "
            f"Got a class without {missing}."
        )
    try:
        return cls(**(backend_args or {}))
    except TypeError as exc:
        raise InvalidArgumentError(
            f"backend_args for backend {name!r} were not accepted ({exc}). See help({_path(cls)}) for the valid keys."
        ) from exc


def _load(name: str) -> type[Backend]:
    if name in _CLASSES:
        return _CLASSES[name]
    module, attr, extra = _REGISTRY[name]
    try:
        found = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):  # the target itself is not there
            raise InvalidArgumentError(
                f"backend {name!r} was registered as '{module}:{attr}', but no module {exc.name!r} can be "
                "imported. Check the target given to register_backend (and sys.path)."
            ) from exc
        hint = f" Install it with: pip install 'storegate[{extra}]'." if extra else ""
        raise StoreGateError(f"backend {name!r} needs a package that is missing ({exc}).{hint}") from exc
    except AttributeError as exc:
        raise InvalidArgumentError(
            f"backend {name!r} was registered as '{module}:{attr}', but module {module!r} has no {attr!r}."
        ) from exc
    return _checked_class(name, found)


def _checked_class(name: str, found: object) -> type[Backend]:
    if not (isinstance(found, type) and issubclass(found, Backend)):
        raise InvalidArgumentError(
            f"backend {name!r} must be registered as a subclass of storegate.Backend. Got {found!r} instead."
        )
    if not isinstance(getattr(found, "name", None), str):
        raise InvalidArgumentError(
            f"backend class {_path(found)} must set the class attribute name (a str, e.g. {name!r}). Got none."
        )
    return found


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
