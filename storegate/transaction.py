"""One write transaction: steps applied in order, undone in reverse order when one fails.

Every mutating call of storegate (add, update, delete, create_empty, clear, the transforms,
shuffle, the hybrid moves and the streaming writer) is planned first: each :class:`Step`
takes what it needs to undo itself (a backend checkpoint) while it is built, before the
first byte is written. :meth:`Transaction.run` then applies the steps one by one. When a
step raises (an I/O error, a full disk, ``KeyboardInterrupt``), the steps applied so far
*and the failing step itself* are undone in reverse order, so the store is left exactly as
it was, and the error propagates. After the last step :meth:`Transaction.commit` lets each
step finish (e.g. purge the chunks of a deleted variable, hidden until then).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import FrameType

from storegate.errors import StoreGateWarning

__all__ = ["Step", "Transaction", "deferred_interrupts", "to_completion"]

#: Times an undo interrupted by Ctrl-C is started again before the interrupt is let through.
_RETRIES = 5


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Step:
    """One write of a transaction.

    Attributes
    ----------
    label
        What the step does, for messages and tests, e.g. ``"append train/x"``.
    apply
        Performs the write.
    undo
        Restores what ``apply`` changes. It must be safe to call whether ``apply`` ran
        completely, partly or not at all.
    finish
        Runs once the whole transaction succeeded (cleanup that cannot be undone).
    """

    label: str
    apply: Callable[[], None]
    undo: Callable[[], None] = _nothing
    finish: Callable[[], None] = _nothing


class Transaction:
    """Steps applied so far, and their undo in reverse order.

    Use :meth:`run` for a plan known up front; a long-lived writer calls :meth:`do` for
    each step as it comes, then :meth:`commit` or :meth:`rollback`.
    """

    def __init__(self) -> None:
        self._done: list[Step] = []

    @property
    def labels(self) -> list[str]:
        """Labels of the steps applied (or being applied) so far."""
        return [step.label for step in self._done]

    def do(self, step: Step) -> None:
        """Apply one step; it counts as done before it runs, so a partial apply is undone too."""
        self._done.append(step)
        step.apply()

    def run(self, steps: Iterable[Step]) -> None:
        """Apply every step, then commit; on any failure undo them all and re-raise."""
        try:
            for step in steps:
                self.do(step)
        except BaseException as exc:
            self.rollback(exc)
            raise
        self.commit()

    def rollback(self, cause: BaseException | None = None) -> None:
        """Undo every step done, newest first.

        An undo that fails does not stop the others; its error is added as a note to
        ``cause`` (the error that made the transaction fail), or raised after the others
        ran when there is no cause. Except when the storage did not answer (a timeout): each
        further undo would wait as long, so the rest are skipped, and the failed call ends
        within the time of one more request (what a skipped undo leaves past the last
        commit stays unseen, and the next writer cuts it off).
        """
        failures: list[BaseException] = []
        interrupted: KeyboardInterrupt | None = None
        for index, step in enumerate(reversed(self._done)):
            if failures and _timed_out(failures[-1]):
                skipped = len(self._done) - index
                if cause is not None:
                    cause.add_note(f"storegate: the storage did not answer; {skipped} more undo steps were skipped")
                break
            try:
                interrupted = to_completion(step.undo) or interrupted
            except Exception as exc:  # keep undoing: every other step must still be restored
                failures.append(exc)
                if cause is not None:
                    cause.add_note(f"storegate: undoing step {step.label!r} also failed: {exc!r}")
        self._done = []
        if failures and cause is None:
            raise failures[0]
        if interrupted is not None and cause is None:
            raise interrupted  # deferred until every step was undone

    def commit(self) -> None:
        """Let every step finish; the transaction can then no longer be undone.

        The writes are done and visible by now, so a cleanup that fails is reported as a
        :class:`~storegate.errors.StoreGateWarning` (what it left is invisible to readers),
        not as a failure of the call.
        """
        done, self._done = self._done, []
        for step in done:
            try:
                step.finish()
            except KeyboardInterrupt as exc:
                exc.add_note(
                    "storegate: the call had completed (every change is saved); Ctrl-C only stopped the cleanup "
                    "of objects no reader sees any more."
                )
                raise
            except Exception as exc:  # the call itself succeeded: say what was left behind
                warnings.warn(
                    f"storegate: cleanup after {step.label!r} failed ({exc!r}); the call succeeded, "
                    "but unreferenced objects may be left in the store.",
                    StoreGateWarning,
                    stacklevel=3,
                )


def _timed_out(exc: BaseException) -> bool:
    """True when ``exc`` or an error it came from is a timeout (Python's or botocore's)."""
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        if isinstance(found, TimeoutError) or type(found).__name__.endswith("TimeoutError"):
            return True
        seen.add(id(found))
        found = found.__cause__ or found.__context__
    return False


def to_completion(fn: Callable[[], None]) -> KeyboardInterrupt | None:
    """Run an idempotent ``fn`` to its end even if Ctrl-C arrives while it runs.

    An undo cut short would leave the store half restored: ``fn`` is started again instead
    (up to a few times), and the interrupt is returned so that the caller raises it once
    the store is whole.
    """
    interrupted: KeyboardInterrupt | None = None
    for _ in range(_RETRIES):
        try:
            fn()
        except KeyboardInterrupt as exc:
            interrupted = exc
            continue
        return interrupted
    fn()  # a user who keeps pressing Ctrl-C wins
    return interrupted


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back while the block runs, and deliver it when the block ends.

    For the few places where a change and its record must happen together: a detach and
    the checkpoint that undoes it, a writer's commit. Ctrl-C arrives as a signal, checked
    between bytecodes, so without this it could land between the two. Outside the main
    thread (where Python delivers no signal) the block just runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[tuple[int, FrameType | None]] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append((signum, frame))

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(*received[0])  # the default handler raises KeyboardInterrupt here
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt
