"""Immutable views behind the item syntax ``sg[phase][var_names][index]``.

Every ``[...]`` returns a new view (or data), so a view held in a variable never changes
when another chain is built: ``a = sg['train']; b = sg['test']; a['x'][:]`` reads train.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storegate.errors import InvalidArgumentError, ValidationError
from storegate.names import parse_var_names
from storegate.phases import ALL, PHASES

if TYPE_CHECKING:
    from storegate.gate import StoreGate

__all__ = ["View"]

_PHASE_WORDS = (*PHASES, ALL)
_ITER_BLOCK = 1024


def _is_phase(item: Any) -> bool:
    return isinstance(item, str) and item in _PHASE_WORDS


def _is_names(item: Any) -> bool:
    if isinstance(item, str):
        return not _is_phase(item)
    return isinstance(item, (tuple, list)) and bool(item) and all(isinstance(i, str) for i in item)


@dataclass(frozen=True)
class View:
    """A selection of data_id, phase and var_names; index it to read or write rows.

    The phase defaults to ``'train'``, as in :meth:`StoreGate.get_data`.
    """

    gate: StoreGate
    data_id: str
    phase: str | None = None
    var_names: Any = None

    def __getitem__(self, item: Any) -> Any:
        if _is_phase(item):
            # Direct construction: dataclasses.replace costs ~3x more on this hot path.
            return View(self.gate, self.data_id, item, self.var_names)
        if _is_names(item):
            return View(self.gate, self.data_id, self.phase, item)
        return self.gate._get(self.data_id, self._names(), self._phase(), item)

    def __setitem__(self, item: Any, data: Any) -> None:
        if _is_names(item):
            self._update(item, data, None)
        else:
            self._update(self._names_arg(), data, item)

    def __delitem__(self, item: Any) -> None:
        if not _is_names(item):
            raise InvalidArgumentError(f"del needs var_names, as in del sg['train']['x']. Got {item!r} instead.")
        self.gate._delete(self.data_id, item, self._phase())

    def __len__(self) -> int:
        if self.var_names is None:
            return self._phase_len()
        shapes = {var: self.gate._shape(self.data_id, self._phase(), var) for var in self._names().names}
        lengths = {var: s[0] for var, s in shapes.items()}
        if len(set(lengths.values())) > 1:
            # Stored data that disagree are a ValidationError, as for len(sg[phase]).
            raise ValidationError(f"the var_names of this view must have the same length. Got {lengths} instead.")
        return next(iter(lengths.values()))

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, str):
            return False
        phases = PHASES if self._phase() == ALL else (self._phase(),)
        return any(self.gate._db.has(self.data_id, p, item) for p in phases)

    def __iter__(self) -> Iterator[Any]:
        names = self._names()
        n = len(self)
        for start in range(0, n, _ITER_BLOCK):
            rows = self.gate._get(self.data_id, names, self._phase(), slice(start, min(n, start + _ITER_BLOCK)))
            yield from (zip(*rows, strict=True) if names.form == "list" else rows)

    def __repr__(self) -> str:
        return f"View(data_id={self.data_id!r}, phase={self._phase()!r}, var_names={self.var_names!r})"

    # --- internals -------------------------------------------------------------------

    def _phase(self) -> str:
        return self.phase or "train"

    def _names_arg(self) -> Any:
        if self.var_names is None:
            raise InvalidArgumentError(
                "choose var_names before an index, as in sg['train']['x'][0:2]. Got no var_names."
            )
        return self.var_names

    def _names(self) -> Any:
        return parse_var_names(self._names_arg())

    def _phase_len(self) -> int:
        phases = PHASES if self._phase() == ALL else (self._phase(),)
        return sum(self.gate._checked_phase_len(self.data_id, p) for p in phases)

    def _update(self, var_names: Any, data: Any, index: Any) -> None:
        self.gate._update(self.data_id, var_names, data, self._phase(), index)
