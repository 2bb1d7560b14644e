"""Random windows along one axis: lardon's ``randslice(length=1, start=None, stop=None)``.

A :class:`RandomWindow` is an index object: put it in an index tuple and the axis it
stands on is read through a window of ``length`` consecutive positions whose start is
drawn at random inside ``[start, stop)`` at each read (lardon: "retrieve random parts of
the imported sequence at each call"). It needs nothing but the length of its axis to pick
a window (:meth:`RandomWindow.window`), so rows of different lengths (ragged rows) each get
a window of their own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from storegate.errors import InvalidArgumentError
from storegate.rules import check_seed, is_int

__all__ = ["RandomWindow", "randslice"]


@dataclass(frozen=True)
class RandomWindow:
    """A window of ``length`` positions at a random place of ``[start, stop)`` along one axis.

    Make one with :func:`randslice`. It draws from its own generator,
    ``np.random.default_rng(seed)`` (fresh entropy when ``seed`` is None), which advances at
    each read: two windows made with the same seed give the same sequence of windows.
    It pickles with its generator's state.
    """

    length: int = 1
    start: int | None = None
    stop: int | None = None
    seed: int | None = None
    _rng: Any = field(default=None, init=False, repr=False, compare=False)
    _lock: Any = field(default=None, init=False, repr=False, compare=False)

    def window(self, axis_length: int, rng: np.random.Generator) -> slice:
        """A window ``slice(a, a + length, 1)`` of an axis of ``axis_length`` positions, ``a`` drawn from ``rng``.

        ``start`` and ``stop`` are taken as Python slice bounds over the axis (negatives
        count from the end, bounds past it are clipped); ``a`` is uniform over
        ``[start, stop - length]``.

        Raises
        ------
        InvalidArgumentError
            If ``[start, stop)`` holds fewer than ``length`` positions of this axis.
        """
        lo, hi, _ = slice(self.start, self.stop).indices(axis_length)
        room = hi - lo - self.length + 1
        if room < 1:
            raise InvalidArgumentError(
                f"{self!r} must fit its axis: it needs {self.length} positions in [start, stop). Got an axis of "
                f"{axis_length} positions, {max(0, hi - lo)} of them in [start, stop), instead. Use a shorter "
                "length, or leave shorter rows out (e.g. with a view's filter)."
            )
        begin = lo + int(rng.integers(room))
        return slice(begin, begin + self.length, 1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rng", np.random.default_rng(self.seed))
        object.__setattr__(self, "_lock", threading.Lock())

    def draw(self, axis_length: int) -> slice:
        """:meth:`window` drawn from this object's own generator (item syntax and ``get_data``)."""
        with self._lock:  # threads of one process share the generator: one draw at a time
            return self.window(axis_length, self._rng)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}  # the generator travels, with its state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())


def randslice(
    length: int = 1, start: int | None = None, stop: int | None = None, *, seed: int | None = None
) -> RandomWindow:
    """A random window index (lardon's ``randslice``), for item syntax, ``get_data`` and StoreGateDataset.

    ``sg['train']['audio'][0:8, :, randslice(16000)]`` reads, for each of the 8 rows, a
    window of 16000 consecutive positions of the last axis at a random place (one window
    per row, as lardon draws one per item); the next read draws new windows. Read with
    several var_names at once, each variable draws its own windows from the same generator
    (StoreGateDataset's ``inner`` can give variables the same windows).

    Parameters
    ----------
    length
        Positions in the window, ``>= 1`` (lardon's default 1).
    start, stop
        Bounds of the range the window lies in, as Python slice bounds (``None``: the
        axis's ends).
    seed
        Seed of the window's generator, an int in ``[0, 2**32 - 1]``; ``None``: fresh entropy.

    Raises
    ------
    InvalidArgumentError
        If ``length`` is not an int >= 1, a bound is not an int or None, or ``seed`` is not
        a valid seed. A window that does not fit its axis raises on read.
    """
    if not is_int(length) or length < 1:
        raise InvalidArgumentError(f"length must be an int >= 1. Got {length!r} instead: e.g. randslice(100).")
    for arg, bound in (("start", start), ("stop", stop)):
        if bound is not None and not is_int(bound):
            raise InvalidArgumentError(
                f"{arg} must be an int or None (a Python slice bound). Got {bound!r} instead: "
                "e.g. randslice(10, start=10, stop=50)."
            )
    return RandomWindow(
        int(length),
        None if start is None else int(start),
        None if stop is None else int(stop),
        None if seed is None else check_seed(seed),
    )
