"""Moves between the tiers of a tiered backend (multiml's hybrid ``to_memory`` / ``to_storage``).

A move reads the variables from the source tier, lets a callback change them, checks the
result, and then writes the destination and deletes the source in one transaction: the
source lets go of the data only after the destination holds them, and a failure anywhere
leaves both tiers as they were. The current tier of the backend never changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from storegate.backends import Backend
from storegate.engine import GroupEngine
from storegate.errors import InvalidArgumentError, NotFoundError
from storegate.names import VarNames, parse_var_names
from storegate.phases import ALL, PHASES
from storegate.steps import Plan
from storegate.transaction import Transaction

__all__ = ["Callback", "move"]

#: ``callback(output_var_names, data) -> (var_names, data)``, as in multiml.
Callback = Callable[[Any, Any], tuple[Any, Any]]


def move(
    source: Backend,
    target: Backend,
    data_id: str,
    var_names: Any,
    phase: str,
    output_var_names: Any,
    callback: Callback | None,
) -> None:
    """Move variables of ``data_id`` from the ``source`` backend to the ``target`` backend.

    Parameters
    ----------
    var_names, output_var_names
        The variables to move and the names they get (the same when None).
    phase
        A phase name; ``'all'`` moves every phase that holds all of ``var_names``.
    callback
        Called per phase as ``callback(output_var_names, data)``; returns the names and
        data to write instead.
    """
    names = parse_var_names(var_names)
    out_arg = var_names if output_var_names is None else output_var_names
    if len(parse_var_names(out_arg).names) != len(names.names):
        raise InvalidArgumentError(
            f"output_var_names must name as many variables as var_names ({len(names.names)}). "
            f"Got {output_var_names!r} instead."
        )
    src, dst = GroupEngine(source, data_id), GroupEngine(target, data_id)
    target.check_writable()
    source.check_writable()
    phases = _phases_holding(src, names, phase)
    plans = [_plan_phase(src, dst, names, p, out_arg, callback) for p in phases]
    target.create_data_id(data_id)
    steps = [s for target_plan, source_plan in plans for s in [*target_plan.steps, *source_plan.steps]]
    if steps:
        steps += [*dst.stale_steps(), *src.stale_steps()]
    Transaction().run(steps)


def _phases_holding(src: GroupEngine, names: VarNames, phase: str) -> list[str]:
    """The phases to move: the one given, or for 'all' every phase that holds the variables.

    Raises
    ------
    NotFoundError
        If a variable is missing from the phase given, from every phase ('all'), or from a
        phase that holds some of the others (a move never splits a set of variables).
    """
    for var in names.names:
        src.require(phase, var)
    if phase != ALL:
        return [phase]
    held = {p: [v for v in names.names if src.has(p, v)] for p in PHASES}
    for p, present in held.items():
        if present and len(present) < len(names.names):
            missing = sorted(set(names.names) - set(present))
            raise NotFoundError(
                f"phase {p!r} of data_id {src.data_id!r} holds {present} but not {missing}: move the variables "
                "phase by phase (phase='train', ...) or give var_names that every phase holds."
            )
    return [p for p, present in held.items() if present]


def _plan_phase(
    src: GroupEngine, dst: GroupEngine, names: VarNames, phase: str, out_arg: Any, callback: Callback | None
) -> tuple[Plan, Plan]:
    """The writes to the target and the deletions from the source for one phase.

    What the callback returns is checked before anything is planned: every array keeps the
    phase's rows, so a move never leaves a phase whose variables disagree in length.
    """
    data = src.get(names, phase, None)
    if callback is not None:
        result = callback(out_arg, data)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise InvalidArgumentError(
                "callback of a move must return (var_names, data), as in multiml. "
                f"Got {type(result).__name__} {result!r:.80} instead; nothing was moved."
            )
        out_arg, data = result
        _check_rows(parse_var_names(out_arg), data, src.shape(phase, names.names[0])[0], phase)
    return dst.plan_update(parse_var_names(out_arg), data, phase, None), src.plan_delete(names, phase)


def _check_rows(out: VarNames, data: Any, n_rows: int, phase: str) -> None:
    lengths = {var: array.shape[0] for var, array in zip(out.names, out.split(data), strict=True)}
    if any(n != n_rows for n in lengths.values()):
        raise InvalidArgumentError(
            f"the callback of a move must return every row it was given: {n_rows} rows of phase {phase!r} per "
            f"variable. Got {lengths} instead; nothing was moved. Filter rows after the move instead."
        )
