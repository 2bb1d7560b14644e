"""Which reads of a dataset follow a sampler's epoch order: the passes of an ordinary DataLoader.

A :class:`storegate.torch.StoreGateDataLoader` tags each batch with its pass, so a process
that reads a dataset reads the commit record at a pass's first batch and whenever it reads
chunks, not before every batch. An ordinary ``DataLoader(dataset, sampler=ChunkShuffleSampler
(dataset), ...)`` hands the dataset bare row numbers instead. :class:`Passes` recognises the
calls that are nothing else than the next batch of a sampler's order, and gives them a pass
token (the same relaxed check); any other call gets none (the record is read before it).

The proof is the order itself. A sampler made over the dataset is followed (weakly; a
pickled dataset, a spawned DataLoader worker's, carries the sampler as it is then). A call
with items ``r`` (length ``m``) of the process that is DataLoader worker ``w`` of ``W``
(``0`` of ``1`` outside workers)

- starts a pass when ``r`` equals the order's slice at ``w * m``: the first batch torch
  deals to that worker;
- continues the pass when ``r`` equals the order's slice at the position the pass expects
  next, ``W * m`` after the previous call's: torch deals batch ``j`` to worker ``j % W``.

The order is the sampler's ``pass_order()`` for its epoch as this process sees it: a forked or
spawned worker has the epoch set before its DataLoader iteration began (a sampler over a view
holds its items' order, a row each, and is not pickled: a spawned worker then checks each
call); a persistent
worker keeps that epoch, so once the main process sets another, its calls match no order
and each reads the record (correct, only slower). Each process that checks a call holds
the epoch's order (8 bytes a row) while the epoch is the same.
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections.abc import Hashable
from typing import Any, Protocol

import numpy as np

__all__ = ["Order", "Passes"]

#: Pass tokens are ``(pid, n)``: never equal to a StoreGateDataLoader iteration (an int), and
#: unique across the processes of a DataLoader (a forked worker counts on from its parent's n).
_TOKENS = itertools.count()


class Order(Protocol):
    """What a followed sampler gives: its epoch order for this process's rank."""

    def pass_order(self) -> tuple[Hashable, np.ndarray]:
        """A key of the order (it changes when the order does) and the order, int64 items."""
        ...

    def reached(self) -> tuple[int, ...]:
        """How many items of the order each iteration of the sampler under way in this process
        has given (empty when none is under way)."""
        ...

    def per_row(self) -> bool:
        """Whether the sampler holds data per row (a view's order of items): it then stays home
        when the dataset is pickled, which carries configuration only."""
        ...


class _Follow:
    """Where a followed sampler's current pass is in this process."""

    __slots__ = ("key", "next", "order", "size", "stride", "token")

    def __init__(self) -> None:
        self.key: Hashable = None
        self.next = -1  # the position the pass expects next; -1: no pass
        self.token: tuple[int, int] | None = None
        self.order: np.ndarray | None = None
        self.size = self.stride = 0  # the last call's items, and the positions from one call to the next


class Passes:
    """The samplers a dataset follows, and which of its calls are the next batch of their order."""

    def __init__(self) -> None:
        self._followed: weakref.WeakKeyDictionary[Any, _Follow] = weakref.WeakKeyDictionary()
        self._pinned: tuple[Order, ...] = ()  # samplers carried by pickling: nothing else holds them
        self._pid = os.getpid()

    def follow(self, sampler: Order) -> None:
        """Recognise the calls that follow ``sampler``'s order from now on."""
        self._followed.setdefault(sampler, _Follow())

    def token(
        self, items: np.ndarray, worker: int = 0, workers: int = 1, *, live_only: bool = False
    ) -> tuple[int, int] | None:
        """The pass the call with ``items`` belongs to, or None when it follows no followed order.

        ``items``: the call's dataset items, int64 ``(m,)``; ``worker`` and ``workers``: this
        process's DataLoader worker id and the number of workers (0 and 1 outside workers).
        ``live_only``: only the items an iteration of the sampler under way in this process has
        just given count: the call's items must end where one of them stands (outside DataLoader
        workers, where a DataLoader without workers asks the sampler for a batch's items and
        then reads them; a sampler made for later, say an in-order one for evaluation, one whose
        iterator was left open after its first batch, or one that this process iterates ahead
        for DataLoader workers would otherwise take the user's own ``dataset[0]``,
        ``dataset[1]``... for its batches).
        """
        m = items.shape[0]
        if m == 0 or not self._followed:
            return None
        if os.getpid() != self._pid:  # a forked worker: its parent's passes are not its own
            self._pid = os.getpid()
            for state in self._followed.values():
                state.key = None
        for sampler, state in list(self._followed.items()):
            given = sampler.reached() if live_only else None
            if given == ():
                continue
            key, order = sampler.pass_order()
            if state.key != key:
                state.key, state.next, state.token, state.order = key, -1, None, None
            if state.next >= 0 and _equal(order, state.next, items, given):
                state.next += workers * m
            elif _equal(order, worker * m, items, given):
                state.token = (self._pid, next(_TOKENS))
                state.next = (worker + workers) * m
            else:
                continue
            state.order, state.size, state.stride = order, m, workers * m
            return state.token
        return None

    def ahead(self, token: object, calls: int) -> np.ndarray | None:
        """The items of the call ``calls`` after the last one of pass ``token`` in this process, if
        the pass goes on that far (``None`` otherwise, and for any other token)."""
        found = self._state(token)
        if found is None:
            return None
        state, order = found
        start = state.next + (calls - 1) * state.stride
        items = order[start : start + state.size]
        return items if items.size else None

    def span(self, token: object, calls: int) -> np.ndarray | None:
        """The items of this process's calls of pass ``token`` from its last one through the one
        ``calls`` after it (as far as the pass goes), or None for any other token."""
        found = self._state(token)
        if found is None:
            return None
        state, order = found
        starts = state.next + np.arange(-1, calls) * state.stride
        return np.concatenate([order[start : start + state.size] for start in starts.tolist()])

    def _state(self, token: object) -> tuple[_Follow, np.ndarray] | None:
        """Where pass ``token`` of this process stands, and its order; None for any other token."""
        for state in self._followed.values():
            if state.token == token and state.order is not None and state.next >= 0:
                return state, state.order
        return None

    def __getstate__(self) -> dict[str, Any]:
        return {"_pinned": tuple(sampler for sampler in self._followed if not sampler.per_row())}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._pinned = state["_pinned"]
        self._followed = weakref.WeakKeyDictionary((sampler, _Follow()) for sampler in self._pinned)
        self._pid = os.getpid()


def _equal(order: np.ndarray, start: int, items: np.ndarray, given: tuple[int, ...] | None = None) -> bool:
    """Whether ``order[start : start + len(items)]`` is ``items`` (and ends where an iteration
    stands, when ``given``: how many items each iteration under way has given)."""
    stop = start + items.shape[0]
    return (
        stop <= order.shape[0] and (given is None or stop in given) and bool(np.array_equal(order[start:stop], items))
    )
