"""Write locks: one writer per data_id at a time, across threads, processes and machines.

Every mutating call of storegate holds the write lock of its data_id while it plans and
applies its writes (see :meth:`storegate.backends.Backend.writing`), so that writers never
interleave. What the lock is depends on where the store lives
(:func:`storegate.backends.zarr_locking.write_lock` chooses):

- **memory** (the numpy backend, a zarr ``MemoryStore``, ``memory://``): a lock of this
  process (other processes cannot see the data anyway);
- **a local or NAS folder**: an OS file lock (``flock``, through the well-kept ``filelock``
  package) on a file under ``<store>/.storegate/locks/``. On a local disk it is exact; on
  NFS it holds when the server supports locks (NFSv4, or NFSv3 with lockd);
- **S3**, which has no locks: a lease, an object written with a conditional PUT
  (``If-None-Match: *``) that expires unless its holder renews it (``If-Match`` on its
  ETag) every third of its time-to-live. A holder that finds its lease taken over (it
  stalled past the time-to-live) raises ConflictError when its call ends.

In every case the threads of one process take turns (a process-wide re-entrant lock per
data_id), and a writer that waits longer than its timeout gets a
:class:`~storegate.errors.ConflictError` naming the lock (and on S3 its holder).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import filelock
from zarr.core.sync import sync

from storegate.errors import ConflictError, NoReplyError, StorageError

__all__ = ["DEFAULT_LEASE_TTL", "DEFAULT_LOCK_TIMEOUT", "FolderLock", "Lease", "ProcessLock", "WriteLock", "holding"]

#: Seconds a writer waits for another one before it gets a ConflictError.
DEFAULT_LOCK_TIMEOUT = 120.0
#: Seconds an S3 lease lives without renewal; a crashed writer's lease frees after it.
DEFAULT_LEASE_TTL = 60.0
#: A holder stops writing once this share of the time-to-live passed since its last renewal:
#: before any other writer may take the lease over (clocks of different machines may differ
#: by the rest).
LEASE_MARGIN = 0.8


class WriteLock:
    """A re-entrant lock: the threads of this process in turn, then the lock other processes see.

    Subclasses implement :meth:`_acquire_outer` / :meth:`_release_outer`, taken when the
    first holder of this process enters and released when the last one leaves.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self._asked = DEFAULT_LOCK_TIMEOUT  # the timeout of the last acquire, for messages
        self._owner: object = None  # who took it first in this process (a backend)
        self._inner = threading.RLock()
        self._depth = 0

    @property
    def depth(self) -> int:
        """How many times the holding thread entered the lock (0: not held by this process)."""
        return self._depth

    def acquire(self, timeout: float, owner: object = None) -> None:
        """Wait for the lock (up to ``timeout`` seconds), or raise ConflictError.

        ``owner`` (a backend) marks who holds it: the same thread entering it again for
        another owner raises ConflictError at once. That is a second handle of the same
        store writing while the first one's call (an open writer) is not committed: each
        caches its own view of the data, and one would overwrite the other's rows.
        """
        began, self._asked = time.monotonic(), timeout
        if not self._inner.acquire(timeout=timeout):
            raise ConflictError(
                f"another thread of this process has held the write lock of {self.key} for more than "
                f"{timeout:g} s; nothing was written. Wait for it to finish, or give a longer lock_timeout."
            )
        try:
            if self._depth == 0:
                self._acquire_outer(max(0.0, timeout - (time.monotonic() - began)))
                self._owner = owner
            elif owner is not None and self._owner is not None and owner is not self._owner:
                raise ConflictError(
                    f"{self.key} is being written by another StoreGate of this process (an open writer, or a call "
                    "that has not returned): write through that StoreGate, or close its writer first. Nothing "
                    "was written."
                )
            self._depth += 1
        except BaseException:
            self._inner.release()
            raise

    def release(self) -> None:
        """Leave the lock; the last holder of this process releases the outer lock."""
        try:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._release_outer()
        finally:
            self._inner.release()

    def check(self) -> None:
        """Raise ConflictError if the lock was lost (a lease taken over); nothing by default."""

    def _acquire_outer(self, timeout: float) -> None:
        """Take the lock other processes see (nothing for a lock of this process only)."""

    def _release_outer(self) -> None:
        """Release the lock other processes see."""


class ProcessLock(WriteLock):
    """The lock of data this process alone can reach (memory)."""


class FolderLock(WriteLock):
    """An OS file lock on ``path`` (local disk, NAS folder)."""

    def __init__(self, key: str, path: str) -> None:
        super().__init__(key)
        self.path = path
        self._file: filelock.BaseFileLock | None = None

    def _acquire_outer(self, timeout: float) -> None:
        try:
            if self._file is None:  # made once: filelock's objects cost more than a lock does
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self._file = filelock.FileLock(self.path)
            self._file.acquire(timeout=timeout)
        except filelock.Timeout as exc:
            raise ConflictError(
                f"another writer has held the write lock of {self.key} ({self.path}) for more than "
                f"{self._asked:g} s; nothing was written. Wait for it to finish, or give a longer lock_timeout."
            ) from exc
        except OSError as exc:
            raise StorageError(f"cannot take the write lock {self.path}: {exc}") from exc

    def _release_outer(self) -> None:
        if self._file is not None:
            self._file.release()


@dataclass
class _Held:
    """The lease this process holds: its token and the ETag of its last write."""

    token: str
    etag: str
    renewed: float = field(default_factory=time.monotonic)  # when the lease was last written
    lost: bool = False


class Lease(WriteLock):
    """A lease on an object store: a lock object written with conditional PUTs.

    Parameters
    ----------
    fs
        An asynchronous fsspec filesystem that supports conditional writes (s3fs).
    path
        The lock object, e.g. ``bucket/prefix/.storegate/locks/train.lock``.
    ttl
        Seconds the lease lives without renewal.
    """

    def __init__(self, key: str, fs: Any, path: str, ttl: float = DEFAULT_LEASE_TTL) -> None:
        super().__init__(key)
        self.fs, self.path, self.ttl = fs, path, ttl
        self._held: _Held | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        # Tokens of leases this process may have left on the store: a release that failed, or a
        # take whose reply never came (the server may still carry it out). Still ours to take back.
        self._left: set[str] = set()

    def check(self) -> None:
        # docstring inherited. A process that stalled (SIGSTOP, swapping, a debugger) past most
        # of the time-to-live may have lost the lease without knowing yet (its renewer is late
        # too): by this process's own clock, so no request and no race with the renewer.
        held = self._held
        if held is not None and time.monotonic() - held.renewed > self.ttl * LEASE_MARGIN:
            held.lost = True
        if held is not None and held.lost:
            raise ConflictError(
                f"the write lease of {self.key} was taken over by another writer while this call ran (it "
                f"stalled for more than {self.ttl:g} s without renewing it): its writes may have interleaved "
                "with the other writer's. Check the data (compile(), get_data) before going on."
            )

    def _acquire_outer(self, timeout: float) -> None:
        token, deadline, pause = uuid.uuid4().hex, time.monotonic() + timeout, 0.05
        while True:
            try:
                etag = self._try_take(token)
            except Exception as exc:  # the store failed (a server gone): no lock, and say where
                self._left.add(token)  # the PUT may still land (a stopped server resumes): ours to take back
                kind = NoReplyError if isinstance(exc, NoReplyError) else StorageError
                raise kind(
                    f"cannot take the write lease {self.path} of {self.key}: {type(exc).__name__}: {exc}"
                ) from exc
            if etag is not None:
                self._held = _Held(token, etag)
                self._start_renewing()
                return
            if time.monotonic() >= deadline:
                raise ConflictError(
                    f"another writer has held the write lease of {self.key} for more than {self._asked:g} s "
                    f"({self._describe_holder()}); nothing was written. Wait for it to finish, or give a longer "
                    "lock_timeout."
                )
            time.sleep(pause)
            pause = min(1.0, pause * 2)

    def _release_outer(self) -> None:
        # A renewer inside a request to a server that stopped answering is not waited for: it
        # has its own stop signal and renews only the lease it was started for.
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=1.0)
        self._renewer = None
        held, self._held = self._held, None
        if held is None or held.lost:
            return
        try:  # bounded: an expired lease frees itself anyway, and this process may take it back
            sync(asyncio.wait_for(self.fs._rm_file(self.path), self.ttl / 3))
        except Exception:
            self._left.add(held.token)

    def _try_take(self, token: str) -> str | None:
        """Create the lock object, or take it over once expired; its ETag, or None if held."""
        try:
            return self._put(token, IfNoneMatch="*")
        except FileExistsError:
            pass
        found = self._read()
        if found is None:
            return None  # released meanwhile: try again
        body, etag = found
        mine = body.get("token") in self._left  # left by a failed release or take
        if not mine and time.time() < float(body.get("expires", 0)):
            return None
        try:
            taken = self._put(token, IfMatch=etag)  # an expired lease, or this process's own: take it over, once
            self._left.clear()
            return taken
        except FileNotFoundError:
            return None  # released meanwhile: try again
        except OSError as exc:
            if _precondition_failed(exc):
                return None  # another writer took it over first
            raise

    def _put(self, token: str, **condition: str) -> str:
        body = json.dumps(
            {"token": token, "host": socket.gethostname(), "pid": os.getpid(), "expires": time.time() + self.ttl}
        ).encode()
        out = sync(self.fs._pipe_file(self.path, body, **condition))
        return str((out or {}).get("ETag", "")) if isinstance(out, dict) else ""

    def _read(self) -> tuple[dict[str, Any], str] | None:
        try:
            info = sync(self.fs._info(self.path, refresh=True))
            raw = sync(self.fs._cat_file(self.path))
        except FileNotFoundError:
            return None
        try:
            body = json.loads(raw)
        except ValueError:  # not a lease storegate wrote: it expires at once
            body = {}
        return (body if isinstance(body, dict) else {}), str(info.get("ETag", ""))

    def _describe_holder(self) -> str:
        found = self._read()
        if found is None:
            return "released just now"
        body = found[0]
        expires = body.get("expires")
        left = (
            f"; unless renewed it frees itself in {max(0.0, float(expires) - time.time()):.0f} s"
            if isinstance(expires, int | float)
            else ""
        )
        return f"held by pid {body.get('pid')} on {body.get('host')}{left}: a crashed holder stops renewing it"

    def _start_renewing(self) -> None:
        self._stop = threading.Event()
        held, stop = self._held, self._stop
        self._renewer = threading.Thread(
            target=self._renew_loop, args=(held, stop), name=f"storegate-lease-{self.key}", daemon=True
        )
        self._renewer.start()

    def _renew_loop(self, held: _Held | None, stop: threading.Event) -> None:
        while not stop.wait(self.ttl / 3):
            if held is None or held is not self._held:
                return
            try:
                began = time.monotonic()  # the new expiry counts from before the request
                held.etag, held.renewed = self._put(held.token, IfMatch=held.etag), began
            except Exception:  # taken over, or the store is unreachable: this holder must not commit
                held.lost = True
                return


def _precondition_failed(exc: OSError) -> bool:
    """True for S3's 412 Precondition Failed (s3fs raises it as an OSError)."""
    cause = exc.__cause__ or exc.__context__
    code = getattr(cause, "response", {}).get("Error", {}).get("Code") if cause is not None else None
    return code == "PreconditionFailed" or "pre-condition" in str(exc).lower()


@contextlib.contextmanager
def holding(lock: WriteLock, timeout: float = DEFAULT_LOCK_TIMEOUT, owner: object = None) -> Iterator[WriteLock]:
    """Hold ``lock`` in a ``with`` block, waiting up to ``timeout`` seconds for it (see ``acquire``)."""
    lock.acquire(timeout, owner)
    try:
        yield lock
    finally:
        lock.release()


# --- one lock object per key in each process ---------------------------------------------

_registry: dict[str, WriteLock] = {}
_registry_guard = threading.Lock()


def shared(key: str, make: Callable[[], WriteLock]) -> WriteLock:
    """The lock of ``key`` in this process: every StoreGate on the same data_id shares it."""
    with _registry_guard:
        lock = _registry.get(key)
        if lock is None:
            lock = _registry[key] = make()
        return lock


def _forget_after_fork() -> None:
    """A forked child holds none of its parent's locks (its threads are gone too)."""
    _registry.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
