"""aiobotocore sessions for s3fs that share botocore's parsed data files.

Every new s3fs filesystem makes its own ``AioSession``, whose first client parses botocore's
JSON data files (the S3 service model, endpoint rules, partitions): about 0.2 s of CPU. A
DataLoader worker opens its own filesystem, so each worker paid that again at the start of
every epoch, beside the parent that had parsed them already (0.26 s of a forked worker's
first batch on a 2-core machine, most of the start-up of a 1.6 s epoch).

:func:`session_for` makes the session storegate gives s3fs instead (``session=``). It is the
session s3fs would have made, with one change: its data loader (botocore's
``data_loader`` component, which keeps what it parsed) is one per process tree, so a forked
worker starts with the parsed files of its parent. botocore already shares that loader's
results between every client of a session; these sessions share it between sessions too.

A session is made per process, thread and set of options, as fsspec makes its filesystems
(its cache is keyed so too), so that no session serves two threads (botocore's sessions are
not thread-safe, and its loader only caches what it read), and a filesystem of other options
resolves its credentials again, as the session s3fs would have made did: a session keeps the
credentials it first resolved (environment, credentials file), so one session per thread
kept them for the thread's life (a rotated credentials file or new AWS_* variables were never
seen again by a store opened later with other options).
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from typing import Any

import fsspec
from fsspec.utils import tokenize

__all__ = ["session_for"]

#: s3fs options that do not go to its ``AioSession`` (fsspec's own, and fsspec's cache's).
_NOT_SESSION_OPTIONS = frozenset(
    {"use_listings_cache", "listings_expiry_time", "max_paths", "skip_instance_cache", "asynchronous", "loop"}
)

_loader: Any = None
# This thread's (pid, {options' token: session}): a forked child's main thread keeps its parent's.
_local = threading.local()


def session_for(options: dict[str, Any]) -> Any | None:
    """The ``AioSession`` to give s3fs with ``options``, or None to let s3fs make its own.

    None when ``options`` already name a ``session``, or hold options s3fs would hand to the
    session it makes (``profile`` and other botocore session arguments): those sessions
    read their own configuration, which may name other data files.
    """
    if "session" in options or _session_options(options):
        return None
    held = getattr(_local, "held", None)
    if held is None or held[0] != os.getpid():
        held = _local.held = (os.getpid(), {})
    token = tokenize(options)  # what fsspec keys its filesystems by (with the thread and process)
    session = held[1].get(token)
    if session is None:
        session = held[1][token] = _new_session()
    return session


def _session_options(options: dict[str, Any]) -> list[str]:
    """The options s3fs would pass to ``AioSession(**kwargs)``."""
    named = _s3fs_parameters()
    return [k for k in options if k not in named and k not in _NOT_SESSION_OPTIONS]


@functools.cache
def _s3fs_parameters() -> frozenset[str]:
    """The parameters s3fs's filesystem names (read once: every store opened asks)."""
    return frozenset(inspect.signature(fsspec.get_filesystem_class("s3").__init__).parameters)


def _new_session() -> Any:
    """A new ``AioSession`` with the process tree's data loader (two threads may each make
    one at first: the later one is kept, and the other's session keeps its own)."""
    global _loader
    from aiobotocore.session import AioSession
    from botocore.loaders import create_loader

    session = AioSession()
    if session.get_config_variable("data_path"):  # AWS_DATA_PATH: its own data files
        return session
    if _loader is None:
        _loader = create_loader()
    session.register_component("data_loader", _loader)
    return session
