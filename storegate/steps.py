"""The write steps of a plan, each holding its own undo, and the plan that collects them.

Every builder takes what its undo needs *when it is called*, that is while the engine
plans a write and before anything is written: the backend's checkpoint of the variable
(the rows that the write may change), or the state dict it replaces. The engine runs the
steps of a plan in one :class:`~storegate.transaction.Transaction`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from storegate.backends import Backend, Checkpoint
from storegate.indexing import Selection, selection_span
from storegate.transaction import Step, deferred_interrupts

__all__ = [
    "Layout",
    "Plan",
    "append_step",
    "commit_step",
    "create_empty_step",
    "create_step",
    "delete_step",
    "guard_step",
    "layout_of",
    "replace_step",
    "state_step",
    "write_step",
]

#: A variable's layout as the compile state records it: ``[rows, dtype.str, row shape]``.
Layout = list[Any]


def layout_of(array: np.ndarray, n_rows: int | None = None) -> Layout:
    """The layout of a variable holding ``array`` (``n_rows`` rows when given)."""
    return [array.shape[0] if n_rows is None else n_rows, array.dtype.str, list(array.shape[1:])]


@dataclass
class Plan:
    """The steps of one call, and the layout each variable will have after them.

    ``layouts`` maps ``(phase, var)`` to the new layout, or ``None`` for a deletion;
    variables whose layout does not change (row updates) are not in it.
    """

    steps: list[Step] = field(default_factory=list)
    layouts: dict[tuple[str, str], Layout | None] = field(default_factory=dict)

    def add(self, step: Step) -> None:
        """Add a step that leaves every layout as it is."""
        self.steps.append(step)

    def add_change(self, step: Step, phase: str, var: str, layout: Layout | None) -> None:
        """Add a step after which ``var`` of ``phase`` has ``layout`` (``None``: deleted)."""
        self.steps.append(step)
        self.layouts[(phase, var)] = layout

    def extend(self, other: Plan) -> None:
        """Append the steps and layouts of another plan of the same data_id."""
        self.steps.extend(other.steps)
        self.layouts.update(other.layouts)


def _label(verb: str, phase: str, var: str) -> str:
    return f"{verb} {phase}/{var}"


def create_step(
    backend: Backend, data_id: str, phase: str, var: str, array: np.ndarray, options: dict[str, Any]
) -> Step:
    """Create a variable that does not exist; undone by deleting it."""
    absent = Checkpoint(data_id, phase, var, None, slice(0, 0, 1))
    apply = partial(backend.create, data_id, phase, var, array, **options)
    return Step(_label("create", phase, var), apply, partial(backend.rollback, absent))


def create_empty_step(
    backend: Backend,
    data_id: str,
    phase: str,
    var: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    options: dict[str, Any],
) -> Step:
    """Create a variable of zeros, replacing one of that name; undone by restoring it."""
    checkpoint = backend.checkpoint(data_id, phase, var)  # every row: the old variable comes back whole
    apply = partial(backend.create_empty, data_id, phase, var, shape, dtype, **options)
    return Step(_label("create_empty", phase, var), apply, partial(backend.rollback, checkpoint))


def append_step(backend: Backend, data_id: str, phase: str, var: str, rows: np.ndarray, n_rows: int) -> Step:
    """Append rows to a variable of ``n_rows`` rows; undone by cutting it back."""
    checkpoint = backend.checkpoint(data_id, phase, var, slice(n_rows, n_rows, 1))
    apply = partial(backend.append, data_id, phase, var, rows)
    return Step(_label("append", phase, var), apply, partial(backend.rollback, checkpoint))


def guard_step(backend: Backend, data_id: str, phase: str, var: str, n_rows: int) -> Step:
    """Write nothing, but undo every append made to the variable after it (the streaming writer).

    The undo cuts the variable back to ``n_rows`` rows only if it still holds at least those
    with the same dtype and row shape: a variable that another call deleted or replaced
    meanwhile is left as that call left it, never recreated from the guard.
    """
    checkpoint = backend.checkpoint(data_id, phase, var, slice(n_rows, n_rows, 1))
    layout = (backend.shape(data_id, phase, var)[1:], backend.dtype(data_id, phase, var))

    def undo() -> None:
        if not backend.has(data_id, phase, var):
            return
        shape, dtype = backend.shape(data_id, phase, var), backend.dtype(data_id, phase, var)
        if shape[0] >= n_rows and (shape[1:], dtype) == layout:
            backend.rollback(checkpoint)

    return Step(_label("grow", phase, var), lambda: None, undo)


def write_step(backend: Backend, data_id: str, phase: str, var: str, selection: Selection, rows: np.ndarray) -> Step:
    """Overwrite the rows of a selection; undone by writing the old rows back."""
    checkpoint = backend.checkpoint(data_id, phase, var, selection_span(selection))
    apply = partial(backend.write, data_id, phase, var, selection, rows)
    return Step(_label("write", phase, var), apply, partial(backend.rollback, checkpoint))


def replace_step(backend: Backend, data_id: str, phase: str, var: str, array: np.ndarray) -> Step:
    """Replace a whole variable (any length, dtype or row shape); undone by restoring it whole."""
    checkpoint = backend.checkpoint(data_id, phase, var)
    apply = partial(backend.replace, data_id, phase, var, array)
    return Step(_label("replace", phase, var), apply, partial(backend.rollback, checkpoint))


def delete_step(backend: Backend, data_id: str, phase: str, var: str) -> Step:
    """Delete a variable: detached at once, its data freed only when the transaction commits."""
    detached: list[Checkpoint] = []

    def undo() -> None:
        for checkpoint in detached:
            backend.reattach(checkpoint)

    def finish() -> None:
        for checkpoint in detached:
            backend.discard(checkpoint)

    def apply() -> None:
        with deferred_interrupts():  # the variable goes and its checkpoint is kept, or neither
            detached.append(backend.detach(data_id, phase, var))

    return Step(_label("delete", phase, var), apply, undo, finish)


def commit_step(backend: Backend, data_id: str) -> Step:
    """The commit point of a transaction: its writes become visible to readers, all at once.

    The last step of every transaction; undone by putting the previous commit back.
    """
    return Step(f"commit {data_id}", partial(backend.commit, data_id), partial(backend.uncommit, data_id))


def state_step(backend: Backend, data_id: str, state: dict[str, Any] | Callable[[], dict[str, Any]]) -> Step:
    """Save storegate's state dict of a data_id; undone by saving the old one back.

    ``state`` may be a function, called when the step applies: a state that describes what
    the earlier steps of the transaction wrote.
    """
    old = backend.load_state(data_id)

    def apply() -> None:
        backend.save_state(data_id, state() if callable(state) else state)

    return Step(f"save state of {data_id}", apply, partial(backend.save_state, data_id, old))
