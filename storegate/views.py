"""Immutable views behind the item syntax ``sg[phase][var_names][index]``.

Every ``[...]`` returns a new view (or data), so a view held in a variable never changes
when another chain is built: ``a = sg['train']; b = sg['test']; a['x'][:]`` reads train.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from storegate.engine import GroupEngine
from storegate.errors import InvalidArgumentError, NotFoundError
from storegate.names import VarNames, parse_var_names
from storegate.phases import ALL, PHASE_WORDS, PHASES, closest_phase, resolve_phase
from storegate.rules import common_length

__all__ = ["View"]

_ITER_BLOCK = 1024


def _is_phase(item: Any) -> bool:
    return isinstance(item, str) and item in PHASE_WORDS


def _is_names(item: Any) -> bool:
    if isinstance(item, str):
        return not _is_phase(item)
    return isinstance(item, (tuple, list)) and bool(item) and all(isinstance(i, str) for i in item)


@dataclass(frozen=True)
class View:
    """A selection of data_id, phase and var_names; index it to read or write rows.

    The phase defaults to ``'train'``, as in :meth:`StoreGate.get_data`. A chain chooses
    the phase once and the var_names once: a second choice raises instead of silently
    replacing the first, and a first key that misspells a phase (``'validation'``) and names
    no stored variable raises NotFoundError instead of being read as var_names.
    """

    engine: GroupEngine
    phase: str | None = None
    var_names: Any = None

    def __getitem__(self, item: Any) -> Any:
        if _is_phase(item):
            self._check_unset("phase", self.phase, item)
            # Direct construction: dataclasses.replace costs ~3x more on this hot path.
            return View(self.engine, resolve_phase(item), self.var_names)
        if _is_names(item):
            self._check_unset("var_names", self.var_names, item)
            if self.phase is None and isinstance(item, str):
                self._refuse_misspelt_phase(item)
            return View(self.engine, self.phase, item)
        return self.engine.get(self._names(), self._phase(), item)

    def __setitem__(self, item: Any, data: Any) -> None:
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
        if not _is_names(item):
            raise InvalidArgumentError(f"del needs var_names, as in del sg['train']['x']. Got {item!r} instead.")
        names, phase = parse_var_names(item), self._phase()
        self.engine.apply(lambda: self.engine.plan_delete(names, phase))

    def __len__(self) -> int:
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
            rows = self.engine.get(names, self._phase(), slice(start, min(n, start + _ITER_BLOCK)))
            yield from (zip(*rows, strict=True) if names.form == "list" else rows)

    def __repr__(self) -> str:
        return f"View(data_id={self.engine.data_id!r}, phase={self._phase()!r}, var_names={self.var_names!r})"

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

    def _update(self, var_names: Any, data: Any, index: Any) -> None:
        names, phase = parse_var_names(var_names), self._phase()
        self.engine.apply(lambda: self.engine.plan_update(names, data, phase, index))
