"""Waiting out zarr's requests that are still in flight after a call failed.

zarr runs a call's object reads and writes as tasks on its event loop, gathered with
``asyncio.gather``, which does not cancel the others when one fails: they go on after the
error is raised. Undoing a failed write (the zarr backend's put-back, ``convert_to_v3``'s
restore) while they run would let one of them land after the undo. :func:`settle_requests`
waits for them first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from zarr.core.sync import sync

from storegate.transaction import to_completion

__all__ = ["SETTLE_TIMEOUT", "settle_requests"]

#: Seconds to wait for the requests of a failed call still in flight (one S3 request to a
#: silent server gives up within ``storegate.locations.no_reply_bound()``, 48 s by default).
SETTLE_TIMEOUT = 120.0


def settle_requests() -> KeyboardInterrupt | None:
    """Wait until no other task runs on zarr's event loop (the requests of a failed call).

    Tasks still running after :data:`SETTLE_TIMEOUT` seconds are cancelled. A Ctrl-C while
    waiting does not stop the wait (the undo that follows must not race the failed call's
    requests); it is returned, to be raised once the undo is done.
    """
    deadline = time.monotonic() + SETTLE_TIMEOUT

    async def others_done() -> None:
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
            for task in still:
                task.cancel()

    def wait() -> None:
        with contextlib.suppress(Exception):
            sync(others_done())

    return to_completion(wait)
