"""Transfers between the tiers of a tiered backend (multiml's hybrid ``to_memory`` / ``to_storage``).

multiml documents these as moves but copies: it reads the variables from one tier and
writes them to the other, and the source keeps them. storegate keeps that behaviour, so a
pipeline that caches a dataset in memory never loses it on disk (and a store opened
read-only can be cached too). A transfer reads the variables, lets a callback change them,
checks the result, and writes the destination in one transaction; a failure leaves the
destination as it was. The current tier of the backend never changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

from storegate.backends import Backend
from storegate.engine import GroupEngine
from storegate.errors import InvalidArgumentError, NotFoundError
from storegate.names import VarNames, parse_var_names
from storegate.phases import ALL, PHASES
from storegate.steps import Plan

__all__ = ["Callback", "transfer"]

#: ``callback(output_var_names, data) -> (var_names, data)``, as in multiml.
Callback = Callable[[Any, Any], tuple[Any, Any]]


def transfer(
    source: Backend,
    target: Backend,
    data_id: str,
    var_names: Any,
    phase: str,
    output_var_names: Any,
    callback: Callback | None,
    progress: bool = False,
) -> None:
    """Copy variables of ``data_id`` from the ``source`` backend to the ``target`` backend.

    Parameters
    ----------
    var_names, output_var_names
        The variables to copy and the names they get (the same when None).
    phase
        A phase name; ``'all'`` moves every phase that holds all of ``var_names``.
    callback
        Called per phase as ``callback(output_var_names, data)``; returns the names and
        data to write instead.
    progress
        tqdm bars of the phases read and of the writes.
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
    with dst.writing():
        phases = _phases_holding(src, names, phase)
        reading = tqdm(phases, desc=f"reading from {source.name}", unit=" phases", disable=None if progress else True)
        plans = [_plan_phase(src, dst, names, p, out_arg, callback) for p in reading]
        target.create_data_id(data_id)
        plan = Plan()
        for each in plans:
            plan.extend(each)
        dst.run(plan, progress=f"writing to {target.name}" if progress else None)


def _phases_holding(src: GroupEngine, names: VarNames, phase: str) -> list[str]:
    """The phases to copy: the one given, or for 'all' every phase that holds the variables.

    Raises
    ------
    NotFoundError
        If a variable is missing from the phase given, from every phase ('all'), or from a
        phase that holds some of the others (a transfer never splits a set of variables).
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
                f"phase {p!r} of data_id {src.data_id!r} holds {present} but not {missing}: copy the variables "
                "phase by phase (phase='train', ...) or give var_names that every phase holds."
            )
    return [p for p, present in held.items() if present]


def _plan_phase(
    src: GroupEngine, dst: GroupEngine, names: VarNames, phase: str, out_arg: Any, callback: Callback | None
) -> Plan:
    """The writes to the target for one phase.

    What the callback returns is checked before anything is planned: every array keeps the
    phase's rows, so a transfer never leaves a phase whose variables disagree in length.
    """
    if callback is None:  # read in the form the names are written in: a list stays a list
        data = src.get(VarNames(names.names, parse_var_names(out_arg).form), phase, None, batch_mode="rows")
    else:  # ragged variables as ragged rows (object arrays), so they stay ragged whatever their lengths
        data = src.get(names, phase, None, batch_mode="rows")
    if callback is not None:
        result = callback(out_arg, data)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise InvalidArgumentError(
                "callback of to_memory / to_storage must return (var_names, data), as in multiml. "
                f"Got {type(result).__name__} {result!r:.80} instead; nothing was written."
            )
        out_arg, data = result
        _check_rows(parse_var_names(out_arg), data, src.shape(phase, names.names[0])[0], phase)
    return dst.plan_update(parse_var_names(out_arg), data, phase, None)


def _check_rows(out: VarNames, data: Any, n_rows: int, phase: str) -> None:
    lengths = {var: array.shape[0] for var, array in zip(out.names, out.split(data), strict=True)}
    if any(n != n_rows for n in lengths.values()):
        raise InvalidArgumentError(
            f"the callback of to_memory / to_storage must return every row it was given: {n_rows} rows of "
            f"phase {phase!r} per variable. Got {lengths} instead; nothing was written. Filter rows afterwards."
        )
