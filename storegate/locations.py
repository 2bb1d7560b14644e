"""Where a zarr store lives, and how to open it.

A location is a local or NAS directory, a ``file://`` URL, an fsspec URL
(``s3://bucket/prefix``, ``gs://...``, ``memory://...``) or a zarr ``Store`` object.
Local paths open as zarr's ``LocalStore``; URLs as zarr's ``FsspecStore`` with the
``storage_options`` handed to fsspec unchanged, apart from two documented additions:

- matorage's names map onto s3fs options (:data:`MATORAGE_NAMES`);
- S3 gets bounded timeouts and retries (:data:`DEFAULT_S3_CONFIG`) unless the user's
  ``config_kwargs`` say otherwise, and the bucket is checked once when the store is
  opened, so a missing bucket, refused credentials or a silent endpoint raise a
  :class:`~storegate.errors.StorageError` within :data:`PROBE_TIMEOUT` seconds;
- remote URLs list directories afresh every time (fsspec's ``use_listings_cache=False``)
  unless the user's options say otherwise, so a long-lived reader sees what other
  processes add, as it does on a local folder.

What lies at a location is checked before it is used (:func:`inspect_root`): a store opens
in the zarr format it was written in (v2 or v3; a new store is v3), and a location that
holds both formats, a zarr array, other files (for mode 'w', which would delete them) or a
file instead of a directory is refused with an error that names what is there.

A :class:`Location` holds only plain data (strings and dicts), so it can be pickled and
sent to worker processes, which open their own store from it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import copy
import functools
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import fsspec
import zarr
from zarr.abc.store import Store
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.group import GroupMetadata
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, StorePath

from storegate.cache_folders import CacheFolder, Copies, store_folder
from storegate.errors import InvalidArgumentError, NoReplyError, NotFoundError, StorageError, StoreGateError
from storegate.s3_sessions import session_for

__all__ = [
    "DEFAULT_REMOTE_CONCURRENCY",
    "DEFAULT_REMOTE_OPTIONS",
    "DEFAULT_S3_CONFIG",
    "MATORAGE_NAMES",
    "METADATA_KEYS",
    "MIN_UPLOAD_RATE",
    "PROBE_TIMEOUT",
    "S3FS_RETRIES",
    "S3_DEFAULT_OPTIONS",
    "ZARRAY",
    "ZARR_JSON",
    "ZATTRS",
    "ZGROUP",
    "ZMETADATA",
    "Location",
    "RootInfo",
    "bounded_http_session",
    "cache_folder",
    "concurrency_scope",
    "copied_options",
    "inspect_root",
    "keys_under",
    "new_group",
    "no_reply_bound",
    "no_reply_endpoint",
    "put_documents",
    "request_attempts",
    "resolve_location",
    "uncached",
    "unsent_to",
]

Mode = Literal["w", "a", "r"]
#: What holds the write locks of an existing store while mode 'w' replaces it (given its root group).
Hold = Callable[[zarr.Group], AbstractContextManager[None]]
S3_PROTOCOLS = ("s3", "s3a")

#: botocore ``Config`` options storegate sets for S3 unless ``storage_options['config_kwargs']``
#: gives them: seconds to open a connection, seconds to wait for a reply (silence on an open
#: connection), and attempts per request in all ('standard' mode backs off between them:
#: up to 1 s, then up to 2 s). ``max_pool_connections`` lets
#: :data:`DEFAULT_REMOTE_CONCURRENCY` requests run at once. Every S3 store sends its requests
#: through :func:`bounded_http_session` (``config_kwargs`` key ``http_session_cls``), which
#: makes those timeouts hold and ends a request that got no reply on its last attempt with a
#: :class:`~storegate.errors.NoReplyError` that s3fs does not repeat: a request to a silent
#: server fails within :func:`no_reply_bound` seconds (48 s with these values; a read and an
#: add_data to a moto server stopped with SIGSTOP raised after 32 s, see the README), where
#: s3fs's retries on top of botocore's made one read take 338 s before.
DEFAULT_S3_CONFIG: dict[str, Any] = {
    "connect_timeout": 5,
    "read_timeout": 10,
    "retries": {"total_max_attempts": 3, "mode": "standard"},
    "max_pool_connections": 32,
}

#: s3fs options storegate sets for S3 unless the user's ``storage_options`` give them. s3fs
#: (2024.12 on) sends a HEAD before each whole-object read when ``max_concurrency`` > 1 (its
#: default is 10), to split large objects into ranges; zarr already reads many chunks at once,
#: so that HEAD only doubled the requests of every chunk and metadata read.
S3_DEFAULT_OPTIONS: dict[str, Any] = {"max_concurrency": 1}
#: Times s3fs tries a request that failed with an error it retries (a connection cut, a body
#: cut off, which botocore does not retry). s3fs's own default is 5 and it takes no option for
#: it. s3fs nests two such loops around a read (its ``_cat_file`` and ``_call_s3``), each
#: around all of botocore's attempts: a timeout used to be tried 2 x 2 x 4 times; a request
#: that got no reply on botocore's last attempt now ends at once (:func:`bounded_http_session`).
S3FS_RETRIES = 2

#: Bytes per second an upload to S3 must at least move: a request gets ``connect_timeout +
#: read_timeout + its body's bytes / MIN_UPLOAD_RATE`` seconds until its reply starts, then
#: fails as a read timeout (and is retried). 32 chunk uploads share a link at once.
MIN_UPLOAD_RATE = 64 * 1024

#: Seconds the check of an S3 bucket at open time may take before it fails.
PROBE_TIMEOUT = 20.0

#: zarr's ``async.concurrency`` (chunk requests in flight) during reads and writes of a remote store.
DEFAULT_REMOTE_CONCURRENCY = 32

#: fsspec options storegate sets for remote URLs unless the user's ``storage_options`` give them:
#: fsspec filesystems (s3fs, gcsfs, adlfs) cache directory listings for the life of the
#: process, so a reader would never see the data_ids and variables that another process adds.
DEFAULT_REMOTE_OPTIONS: dict[str, Any] = {"use_listings_cache": False}

#: How many entries of a location an error message names, out of how many it reads at most.
SHOWN_ENTRIES, LISTED_ENTRIES = 5, 1000

#: matorage's ``backend_args`` names and the s3fs option each becomes.
MATORAGE_NAMES: dict[str, str] = {
    "endpoint": "client_kwargs['endpoint_url'] ('http://' or 'https://' + endpoint, by secure)",
    "access_key": "key",
    "secret_key": "secret",
    "secure": "the scheme of endpoint_url: https when True, http when False (the default)",
}


@dataclass(frozen=True)
class Location:
    """A resolved storage location; build it with :func:`resolve_location`.

    Attributes
    ----------
    kind
        ``'local'`` (a directory, also for ``file://``), ``'fsspec'`` (any other URL) or
        ``'store'`` (a zarr Store object given by the user).
    path
        The absolute directory or the URL; ``None`` for a Store object.
    storage_options
        fsspec options: the user's, with matorage's names mapped, without storegate's
        defaults (which :meth:`fsspec_options` adds).
    cache_dir
        A local directory that caches the files read from a remote store, or ``None``.
    store
        The zarr Store object when ``kind`` is ``'store'``.
    """

    kind: Literal["local", "fsspec", "store"]
    path: str | None
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    cache_dir: str | None = None
    store: Store | None = None

    # --- what it is ------------------------------------------------------------------

    @property
    def protocol(self) -> str | None:
        """The URL's protocol (the innermost one of a chained URL), ``None`` when not a URL."""
        if self.kind != "fsspec" or self.path is None:
            return None
        return self.path.split("::")[-1].partition("://")[0]

    @property
    def remote(self) -> bool:
        """True for URLs that reach the network (not ``memory://`` or local files)."""
        return self.protocol not in (None, "memory", "file", "local")

    @property
    def is_s3(self) -> bool:
        """True for an unchained ``s3://`` (or ``s3a://``) URL."""
        return self.protocol in S3_PROTOCOLS and "::" not in (self.path or "")

    @property
    def bucket(self) -> str | None:
        """The bucket of an S3 URL."""
        if not self.is_s3 or self.path is None:
            return None
        return self.path.partition("://")[2].split("/", 1)[0]

    @property
    def endpoint(self) -> str:
        """The S3 endpoint requests go to, for messages."""
        opts = self.storage_options
        client = opts.get("client_kwargs") or {}
        found = opts.get("endpoint_url") or client.get("endpoint_url")
        found = found or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return str(found) if found else "the default AWS endpoint"

    @property
    def reopenable(self) -> bool:
        """False for a store in this process's memory (a Store object, ``memory://``)."""
        return self.kind != "store" and self.protocol != "memory"

    def describe(self) -> str:
        """Where the store lives, for messages (never includes credentials)."""
        if self.kind == "store":
            return str(self.store)
        if self.is_s3:
            return f"{self.path} (bucket {self.bucket!r}, endpoint {self.endpoint})"
        return str(self.path)

    # --- opening ---------------------------------------------------------------------

    def fsspec_options(self) -> dict[str, Any]:
        """The options given to fsspec: the user's plus storegate's defaults for remote URLs and S3."""
        opts = copied_options(self.storage_options)
        if self.remote and "::" not in (self.path or ""):
            opts = {**DEFAULT_REMOTE_OPTIONS, **opts}
        if self.protocol in S3_PROTOCOLS:
            config = {**DEFAULT_S3_CONFIG, **(opts.get("config_kwargs") or {})}
            opts["config_kwargs"] = {"http_session_cls": bounded_http_session(request_attempts(config)), **config}
            opts = {**S3_DEFAULT_OPTIONS, **opts}
            session = session_for(opts)
            if session is not None:  # botocore's data files parsed once per process tree
                opts["session"] = session
        return opts

    def open_group(self, mode: Mode, keep: str | None = None, hold: Hold | None = None) -> zarr.Group:
        """Open (mode 'r' or 'a') or replace (mode 'w') the root group of the store.

        An existing store opens in its own zarr format (2 or 3); a new one is zarr v3.
        Consolidated metadata is never used: every listing reads the store as it is.
        Mode 'w' deletes everything but the objects under the prefix ``keep`` (e.g. lock
        files that other processes hold), inside ``hold(root)`` when a store of one format
        is there (the writers' locks of its data_ids). The location is inspected once: on
        S3 a new store costs the bucket check, four small reads, two checks that nothing
        else is there and one write.

        Raises
        ------
        NotFoundError
            If ``mode`` is 'r' and there is no zarr store at the location.
        InvalidArgumentError
            If the location is a file; if mode 'w' would delete files of something that is
            not a zarr store; or, for modes 'r' and 'a', if it holds a zarr array instead of
            a group or both zarr v2 and v3 metadata; or, for mode 'a', consolidated metadata
            (which storegate's writes would leave stale).
        StorageError
            If the location cannot be reached or used.
        """
        if self.cache_dir is not None and mode != "r":
            raise InvalidArgumentError(
                f"cache_dir needs mode 'r' (a cache of a store that is being written goes stale). Got mode {mode!r}."
            )
        try:
            return self._open_group(mode, keep, hold)
        except StoreGateError:
            raise
        except FileNotFoundError as exc:
            if mode != "r":  # e.g. a missing bucket of a URL that check_bucket does not cover
                raise StorageError(f"cannot open the zarr store at {self.describe()}: {exc!r}") from exc
            raise self._no_store() from exc
        except Exception as exc:  # botocore's errors are not OSErrors
            raise StorageError(f"cannot open the zarr store at {self.describe()}: {exc!r}") from exc

    def _open_group(self, mode: Mode, keep: str | None, hold: Hold | None) -> zarr.Group:
        store = self.make_store(read_only=mode == "r")
        root = inspect_root(uncached(store))  # a cache_dir's copy may be of a store since replaced
        if not root.formats:
            self._refuse_a_file(store)
        if mode == "w":
            return self._replace(store, root, keep, hold)
        if not root.formats and mode == "r":
            raise self._no_store()
        self._check_root(root, mode)
        zarr_format: Literal[2, 3] = 2 if root.formats == (2,) else 3  # a new store is v3
        if not root.formats:  # mode 'a' at a new location: the root's zarr.json, one write
            return new_group(store, "", 3)
        found = _root_group(store, root)  # the zarr.json inspect_root read: no second read
        if found is not None:
            return found
        return zarr.open_group(store=store, mode=mode, zarr_format=zarr_format, use_consolidated=False)

    def _replace(self, store: Store, root: RootInfo, keep: str | None, hold: Hold | None) -> zarr.Group:
        """Mode 'w': an empty zarr v3 store in place of what is there (see :meth:`open_group`)."""
        entries = None if root.formats else self._refuse_other_files(store)
        existing = _existing_root(store, root) if hold is not None else None
        with nullcontext() if existing is None or hold is None else hold(existing):
            if self.kind == "store" and (keep is None or not isinstance(store, LocalStore | FsspecStore)):
                # Other stores keep no lock files (storegate's locks of them live in this process).
                return zarr.open_group(store=store, mode="w", zarr_format=3)
            # zarr's own mode 'w' removes the root itself: an S3 bucket root would lose
            # its bucket, a NAS mount point cannot be removed. Clear what is inside instead
            # (nothing to clear at a location that holds nothing).
            if entries != []:
                self._clear(store, keep)
            return new_group(store, "", 3)  # the root's zarr.json is gone: one write, no reads

    def make_store(self, read_only: bool) -> Store:
        """The zarr Store of this location (the user's Store object for kind 'store').

        Checks the S3 bucket first, and that a local path is (or can become) a directory.

        Raises
        ------
        InvalidArgumentError
            If a local path is a file or lies inside one.
        StorageError
            If the S3 bucket cannot be used (see :meth:`check_bucket`).
        FileNotFoundError
            If ``read_only`` and a local directory does not exist.
        """
        if self.kind == "store":
            assert self.store is not None
            return self.store
        assert self.path is not None  # only a 'store' location has no path
        if self.is_s3:
            self.check_bucket()
        if self.kind == "local":
            _check_directory(self.path)
            if read_only and not Path(self.path).is_dir():
                raise FileNotFoundError(self.path)
            return LocalStore(self.path, read_only=read_only)
        if self.cache_dir is not None:
            return self._cached_store(read_only)
        store = FsspecStore.from_url(self.path, storage_options=self.fsspec_options(), read_only=read_only)
        self._bound_retries(store.fs)
        return store

    def _cached_store(self, read_only: bool) -> Store:
        """The store read through local copies in cache_dir (see :mod:`storegate.cache_folders`),
        registered with the same store read directly (:func:`uncached`) and its folder."""
        assert self.cache_dir is not None
        assert self.path is not None
        folder = CacheFolder(store_folder(self.cache_dir, f"{self.endpoint}|{self.path}"))
        inner = fsspec.filesystem(self.protocol, **{**self.fsspec_options(), "asynchronous": True})
        self._bound_retries(inner)
        # A filesystem of this store's own (fsspec would share one): its folder switches.
        copies = Copies(fs=inner, cache_storage=folder.storage(), skip_instance_cache=True)
        folder.attach(copies)
        path = inner._strip_protocol(self.path)
        copies.direct, copies.folder = FsspecStore(fs=inner, path=path, read_only=read_only), folder
        return FsspecStore(fs=copies, path=path, read_only=read_only)

    def _bound_retries(self, fs: Any) -> None:
        if self.is_s3 and hasattr(fs, "retries"):
            fs.retries = S3FS_RETRIES  # an instance attribute: s3fs takes no option for it

    def _refuse_a_file(self, store: Store) -> None:
        """An object (a file) at a URL's path cannot hold a store (a local path is checked in make_store)."""
        if isinstance(store, FsspecStore) and sync(store.fs._isfile(store.path)):
            raise InvalidArgumentError(
                f"output_dir must be a prefix (a directory) for the zarr store. Got {self.describe()}, which is "
                "a file (an object). Choose another URL."
            )

    def _no_store(self) -> NotFoundError:
        return NotFoundError(
            f"output_dir must hold a zarr store when mode is 'r'. Got {self.describe()}, where there is none."
        )

    def _check_root(self, root: RootInfo, mode: Mode) -> None:
        """Refuse a root that storegate cannot open as one group of one format."""
        where = self.describe()
        if len(root.formats) > 1:
            raise InvalidArgumentError(
                f"output_dir must hold a zarr store of one format. Got {where}, which holds both zarr v2 "
                "(.zgroup) and zarr v3 (zarr.json) metadata at its root: a mixed store (earlier storegate versions "
                "wrote v3 metadata into v2 stores opened with mode 'a'; plain zarr reads only the v3 part). "
                "Keep one format: if the v3 part holds nothing you need, delete every zarr.json file under "
                "output_dir, then open the v2 store again."
            )
        if root.node_type == "array":
            raise InvalidArgumentError(
                f"output_dir must hold a zarr group (a storegate store). Got {where}, which holds a zarr array. "
                "Open its parent folder, or choose another output_dir."
            )
        if root.consolidated and mode == "a":
            how = (
                "delete its .zmetadata file"
                if root.formats == (2,)
                else "delete 'consolidated_metadata' from its zarr.json"
            )
            raise InvalidArgumentError(
                f"mode must be 'r' for a store with consolidated metadata, which storegate's writes would leave "
                f"stale for other readers. Got mode 'a' for {where}. Open it with mode 'r', or {how} first."
            )

    def _refuse_other_files(self, store: Store) -> list[str]:
        """Mode 'w' deletes everything at the location: only ever a zarr store, or nothing
        (what it returns: ``[]``)."""
        entries = sync(_first_entries(store, LISTED_ENTRIES))
        if not entries:
            return entries
        shown = ", ".join(map(repr, entries[:SHOWN_ENTRIES]))
        if len(entries) > SHOWN_ENTRIES:
            more = len(entries) - SHOWN_ENTRIES
            shown += f" and {more} more" if len(entries) < LISTED_ENTRIES else " and more"
        raise InvalidArgumentError(
            f"output_dir must be empty, new or a zarr store when mode is 'w', which deletes everything in it. "
            f"Got {self.describe()}, which holds no zarr store but other files: {shown}. Choose a new or empty "
            "output_dir, or move those files away first."
        )

    def _clear(self, store: Store, keep: str | None) -> None:
        if isinstance(store, LocalStore):
            _clear_directory(store.root, keep)
        elif isinstance(store, FsspecStore):
            sync(_clear_prefix(store, keep))

    def check_bucket(self) -> None:
        """Check once that the S3 bucket exists and the credentials may use it.

        Raises
        ------
        StorageError
            Naming the endpoint and the bucket, within :data:`PROBE_TIMEOUT` seconds.
        """
        fs = fsspec.filesystem(self.protocol or "s3", asynchronous=True, **self.fsspec_options())
        where = f"bucket {self.bucket!r} at endpoint {self.endpoint}"
        try:
            sync(asyncio.wait_for(fs._info(self.bucket), PROBE_TIMEOUT))
        except StoreGateError:
            raise  # e.g. NoReplyError: it names the silent endpoint and the fix already
        except FileNotFoundError as exc:
            raise StorageError(f"{where} does not exist. Create it first or change output_dir.") from exc
        except PermissionError as exc:
            raise StorageError(
                f"{where} refused the credentials ({exc}). Check key/secret in storage_options "
                "(or access_key/secret_key)."
            ) from exc
        except TimeoutError as exc:
            raise StorageError(f"{where}: the endpoint did not answer within {PROBE_TIMEOUT:.0f} s.") from exc
        except Exception as exc:  # botocore's connection errors are not OSErrors
            raise StorageError(f"{where} cannot be reached: {exc}") from exc

    # --- handing over to another process ---------------------------------------------

    def backend_args(self) -> dict[str, Any]:
        """``output_dir``, ``storage_options`` and ``cache_dir`` that reopen this location."""
        args: dict[str, Any] = {"output_dir": self.store if self.kind == "store" else self.path}
        if self.storage_options:
            args["storage_options"] = copied_options(self.storage_options)
        if self.cache_dir is not None:
            args["cache_dir"] = self.cache_dir
        return args


def _copies(store: Store) -> Copies | None:
    """The copying filesystem of a store opened with a ``cache_dir`` (``None`` for any other store)."""
    fs = getattr(store, "fs", None)
    return fs if isinstance(fs, Copies) else None


def uncached(store: Store) -> Store:
    """``store`` itself, or, for a store opened with a ``cache_dir``, the same store read directly.

    storegate's own objects (commit records, journals) tell whether the data changed: they
    are always read from the store, never from a local copy.
    """
    copies = _copies(store)
    return store if copies is None else copies.direct


def cache_folder(store: Store) -> CacheFolder | None:
    """The cache_dir folder of a store opened with a ``cache_dir`` (``None`` for any other store)."""
    copies = _copies(store)
    return None if copies is None else copies.folder


# --- S3 requests that end in bounded time ------------------------------------------------


def request_attempts(config: Mapping[str, Any]) -> int | None:
    """Attempts per S3 request that botocore ``config_kwargs`` give, in all (first one included).

    botocore's ``retries['max_attempts']`` counts retries (``3``: 4 attempts) and
    ``total_max_attempts`` counts attempts (it wins when both are given). ``None`` when
    neither is given (botocore then picks them from its mode and ``AWS_MAX_ATTEMPTS``).
    """
    retries = config.get("retries") or {}
    if retries.get("total_max_attempts") is not None:
        return int(retries["total_max_attempts"])
    if retries.get("max_attempts") is not None:
        return int(retries["max_attempts"]) + 1
    return None


def no_reply_bound(config_kwargs: Mapping[str, Any] | None = None, body_bytes: int = 0) -> float:
    """Seconds after which one S3 request to a server that sends no reply has failed.

    With storegate's S3 settings (:data:`DEFAULT_S3_CONFIG`, updated by ``config_kwargs``
    as ``storage_options['config_kwargs']`` does): each attempt waits at most
    ``connect_timeout + read_timeout + body_bytes / MIN_UPLOAD_RATE`` seconds, botocore
    backs off between attempts ('standard' mode: at most 1, 2, 4 ... 20 s), and the last
    attempt raises :class:`~storegate.errors.NoReplyError`, which s3fs does not repeat. A
    server that accepts connections but never answers (stopped, hung) usually fails a
    request sooner, after ``read_timeout`` per attempt. A call fails at its first such
    request, plus the time its other requests in flight take to end (they started at about
    the same time) and, for a write, one more request for its undo and up to 20 s for the
    release of the lease.

    Raises
    ------
    InvalidArgumentError
        If ``config_kwargs`` leaves the number of attempts to botocore (``retries`` without
        ``max_attempts`` or ``total_max_attempts``): the bound then depends on botocore's
        mode and environment.
    """
    config = {**DEFAULT_S3_CONFIG, **(config_kwargs or {})}
    attempts = request_attempts(config)
    if attempts is None:
        raise InvalidArgumentError(
            "config_kwargs['retries'] must give 'total_max_attempts' or 'max_attempts' to bound a request. "
            f"Got {config.get('retries')!r}. Add one of them."
        )
    wait = float(config.get("connect_timeout") or 0) + float(config.get("read_timeout") or 0)
    backoff = sum(min(2.0**k, 20.0) for k in range(attempts - 1))
    return attempts * (wait + body_bytes / MIN_UPLOAD_RATE) + backoff


#: Attempts of the request being sent that got no reply: one request runs in one asyncio task,
#: botocore's attempts and s3fs's retries of it included (each zarr chunk request, each
#: ``sync`` call is its own task). Back to 0 at any reply.
_silent_attempts: contextvars.ContextVar[int] = contextvars.ContextVar("storegate_silent_attempts", default=0)
#: Endpoints to which no request is sent for now (see :func:`unsent_to`), with their holders.
_unsent: collections.Counter[str] = collections.Counter()
_unsent_lock = threading.Lock()


@functools.cache
def bounded_http_session(attempts: int | None = None) -> type:
    """aiobotocore's HTTP session, made to keep botocore's timeouts (the class, one per ``attempts``).

    botocore sends every upload with ``Expect: 100-continue``, and aiohttp waits for the
    server's ``100 Continue`` without any timeout: a server that stops answering held an
    upload (and the call around it) for ever, whatever ``read_timeout`` said. This session
    drops that header (S3 takes the body at once; botocore does not sign the header) and
    gives each attempt a deadline until its reply starts, ``connect_timeout + read_timeout +
    body bytes / MIN_UPLOAD_RATE`` (aiohttp does not time a body write that blocks), after
    which the attempt fails as a botocore ``ReadTimeoutError``, which is retried as usual.

    A request gets ``attempts`` attempts without a reply in all (``None``: botocore's
    ``amz-sdk-request`` header says how many), whoever makes them: the one that reaches that
    count raises :class:`~storegate.errors.NoReplyError`, which neither botocore nor s3fs
    repeats. s3fs retries a botocore timeout in two nested loops (:data:`S3FS_RETRIES` each),
    each around all of botocore's attempts (one read from a stopped server waited 16 timeouts,
    338 s with the former 20 s and 4 attempts), and does so too when botocore's retry quota
    is spent. Other errors (a connection cut, a body cut off, a 5xx reply) are still retried
    by both. No request is sent to an endpoint held by :func:`unsent_to`.
    """
    from aiobotocore.httpsession import AIOHTTPSession
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    class BoundedHTTPSession(AIOHTTPSession):  # type: ignore[misc]
        async def send(self, request: Any) -> Any:
            request.headers.pop("Expect", None)
            endpoint = _endpoint_of(request)
            if _unsent[endpoint]:
                raise NoReplyError(
                    f"{request.method} {_url_of(request)} was not sent: the S3 server at {endpoint} sent no reply to "
                    "another request of this process just now (the call has failed). Check that the server runs "
                    "and answers, then retry the call.",
                    endpoint,
                )
            timeout = self._timeout
            size = int(request.headers.get("Content-Length") or 0)
            deadline = (timeout.sock_connect or 0) + (timeout.sock_read or 0) + size / MIN_UPLOAD_RATE
            waited = timeout.sock_read
            try:
                try:
                    reply = await (
                        asyncio.wait_for(super().send(request), deadline) if deadline else super().send(request)
                    )
                except TimeoutError as exc:
                    waited = deadline
                    raise ReadTimeoutError(endpoint_url=request.url, error=exc) from exc
            except (ConnectTimeoutError, ReadTimeoutError) as exc:
                silent = _silent_attempts.get() + 1
                last = attempts if attempts is not None else _max_attempts(request)
                if last is None or silent < last:
                    _silent_attempts.set(silent)
                    raise  # botocore (or s3fs) tries again
                _silent_attempts.set(0)
                connect = isinstance(exc, ConnectTimeoutError)
                setting = timeout.sock_connect if connect else timeout.sock_read
                raise _no_reply(request, connect, setting if connect else waited, setting, last) from exc
            _silent_attempts.set(0)
            return reply

    return BoundedHTTPSession


@contextlib.contextmanager
def unsent_to(endpoint: str | None) -> Iterator[None]:
    """Send no S3 request to ``endpoint`` inside the block (``None``: no effect).

    Once a request of a call got no reply on any attempt, the call has failed; its other
    requests that zarr has not sent yet (zarr sends ``concurrency`` at a time and goes on
    after the first error) would each wait as long again while the failed call's requests
    are waited for (:func:`storegate.settle.settle_requests`). Inside the block they fail at
    once with :class:`~storegate.errors.NoReplyError` instead, as do the requests of other
    calls of this process to the same server.
    """
    if endpoint is None:
        yield
        return
    with _unsent_lock:
        _unsent[endpoint] += 1
    try:
        yield
    finally:
        with _unsent_lock:
            _unsent[endpoint] -= 1
            if not _unsent[endpoint]:
                del _unsent[endpoint]


def no_reply_endpoint(exc: BaseException) -> str | None:
    """The endpoint of the :class:`~storegate.errors.NoReplyError` ``exc`` is or came from, else ``None``."""
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        if isinstance(found, NoReplyError) and found.endpoint is not None:
            return found.endpoint
        seen.add(id(found))
        found = found.__cause__ or found.__context__
    return None


def _max_attempts(request: Any) -> int | None:
    """botocore's attempts per request, from its ``amz-sdk-request`` header (``attempt=2; max=3``);
    ``None`` when it does not say (the first attempt may lack ``max``)."""
    raw = request.headers.get("amz-sdk-request") or b""
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    fields = dict(part.strip().partition("=")[::2] for part in text.split(";") if "=" in part)
    return int(fields["max"]) if fields.get("max", "").isdigit() else None


def _url_of(request: Any) -> str:
    return str(request.url).split("?")[0]


def _endpoint_of(request: Any) -> str:
    return "/".join(_url_of(request).split("/")[:3])


def _no_reply(request: Any, connect: bool, waited: float | None, setting: float | None, attempts: int) -> NoReplyError:
    """The error of a request whose every attempt timed out (``connect``: while connecting)."""
    url, endpoint = _url_of(request), _endpoint_of(request)
    what = "opened no connection" if connect else "sent no reply"
    key = "connect_timeout" if connect else "read_timeout"
    tries = "on its only attempt" if attempts == 1 else f"on each of {attempts} attempts"
    return NoReplyError(
        f"the S3 server at {endpoint} {what} within {float(waited or 0):.3g} s to {request.method} {url}, "
        f"{tries}: it is stopped, hung, overloaded or unreachable. Check that the server runs "
        f"and answers at {endpoint}, then retry the call; for a server that is only slow, give a larger "
        f"storage_options['config_kwargs']['{key}'] (now {float(setting or 0):g} s) or "
        f"['retries']['total_max_attempts'] (now {attempts}).",
        endpoint,
    )


# --- what lies at a location -----------------------------------------------------------

#: zarr's metadata documents: v3's, then v2's (a group, an array, attributes, consolidated metadata).
ZARR_JSON, ZGROUP, ZARRAY, ZATTRS, ZMETADATA = "zarr.json", ".zgroup", ".zarray", ".zattrs", ".zmetadata"
METADATA_KEYS = frozenset({ZARR_JSON, ZGROUP, ZARRAY, ZATTRS, ZMETADATA})


@dataclass(frozen=True)
class RootInfo:
    """The zarr metadata at the root of a store, as :func:`inspect_root` found it.

    Attributes
    ----------
    formats
        The zarr formats whose root metadata is there: ``()`` (no zarr store), ``(2,)``,
        ``(3,)`` or ``(2, 3)`` (a mixed store).
    node_type
        ``'group'`` or ``'array'``; ``None`` when there is no zarr store.
    consolidated
        True when the root holds consolidated metadata (v2 ``.zmetadata``, or a
        ``consolidated_metadata`` entry in a v3 ``zarr.json``).
    document
        The root ``zarr.json`` as read, when it is a JSON object (opening the root group
        from it saves reading it again).
    """

    formats: tuple[int, ...]
    node_type: str | None
    consolidated: bool
    document: dict[str, Any] | None = field(default=None, repr=False, compare=False)


def inspect_root(store: Store) -> RootInfo:
    """The zarr metadata at the root of ``store``: four small reads, never a listing.

    A root ``zarr.json`` that is not a JSON object counts as a v3 group: zarr reports the
    broken document when it opens the store.
    """
    return sync(_inspect_root(store))


async def _inspect_root(store: Store) -> RootInfo:
    # One GET each (an exists() costs two requests on S3 for a missing key); the documents are small.
    prototype = default_buffer_prototype()
    v3, zgroup, zarray, zmetadata = await asyncio.gather(
        *(store.get(key, prototype) for key in (ZARR_JSON, ZGROUP, ZARRAY, ZMETADATA))
    )
    has_zgroup, has_zarray = zgroup is not None, zarray is not None
    formats = tuple(f for f, found in ((2, has_zgroup or has_zarray), (3, v3 is not None)) if found)
    meta = _json_object(v3.to_bytes()) if v3 is not None else {}
    node_type: str | None = "array" if has_zarray else "group" if has_zgroup else None
    if v3 is not None:
        node_type = "array" if meta.get("node_type") == "array" else "group"
    consolidated = zmetadata is not None or meta.get("consolidated_metadata") is not None
    return RootInfo(formats, node_type, consolidated, meta or None)


def _root_group(store: Store, root: RootInfo) -> zarr.Group | None:
    """The v3 root group from the ``zarr.json`` :func:`inspect_root` read, without reading it again.

    ``None`` for a v2 root, or a document zarr must judge itself (``zarr.open_group`` reads it
    again and reports what is wrong). Consolidated metadata is dropped, as
    ``use_consolidated=False`` does.
    """
    document = root.document
    if root.formats != (3,) or document is None or document.get("node_type") != "group":
        return None
    data = {k: v for k, v in document.items() if k != "consolidated_metadata"}
    try:
        return zarr.Group(zarr.AsyncGroup.from_dict(StorePath(store, ""), data))
    except Exception:  # zarr raises many kinds for a document it cannot take
        return None


def _existing_root(store: Store, root: RootInfo) -> zarr.Group | None:
    """The root group of a store of one format that mode 'w' replaces (``None``: no such store)."""
    if len(root.formats) != 1 or root.node_type != "group":
        return None
    found = _root_group(store, root)
    if found is not None:
        return found
    try:
        return zarr.open_group(store=store, mode="r+", zarr_format=root.formats[0], use_consolidated=False)  # type: ignore[arg-type]
    except Exception:  # a root zarr cannot open holds no data_ids it could list
        return None


def new_group(store: Store, path: str, zarr_format: Literal[2, 3]) -> zarr.Group:
    """Write the metadata of an empty group at ``path`` (``''``: the root) and return the group.

    zarr's ``create_group`` / ``require_group`` first read the node and each parent group, and
    check each parent again before writing (5 to 8 requests on S3 for one group); the caller
    knows that nothing is at ``path`` and that its parents are groups, so this writes each
    metadata document once (``zarr.json``; v2: ``.zgroup`` and ``.zattrs``) and reads nothing.
    """
    metadata = GroupMetadata(zarr_format=zarr_format)
    sync(put_documents(store, path, metadata.to_buffer_dict(default_buffer_prototype())))
    return zarr.Group(zarr.AsyncGroup(metadata=metadata, store_path=StorePath(store, path)))


async def put_documents(store: Store, path: str, documents: Mapping[str, Buffer]) -> None:
    """Write metadata documents (``{'zarr.json': buffer}``) of the node at ``path``, at once."""
    prefix = f"{path.rstrip('/')}/" if path else ""
    await asyncio.gather(*(store.set(prefix + name, value) for name, value in documents.items()))


async def keys_under(store: Store, prefix: str) -> list[str]:
    """Every key stored under ``prefix`` (``'a/b'``: the keys ``a/b/...``), relative to it.

    One listing request on S3, where zarr's ``list_prefix`` sends three for an empty prefix
    (s3fs then asks whether the prefix is an object itself: a HEAD and another listing).
    """
    prefix = prefix.rstrip("/")
    fs = getattr(store, "fs", None)
    if isinstance(store, FsspecStore) and fs is not None and "s3" in _protocols(fs):
        parent, _, name = f"{store.path.rstrip('/')}/{prefix}".rpartition("/")
        # s3fs's find(path, prefix=...) lists the keys starting with '<path>/<prefix>' and nothing else.
        found = await fs._find(parent, prefix=f"{name}/")
        start = f"{parent}/{name}/"
        return [key.removeprefix(start) for key in found if key.startswith(start)]
    return [key.removeprefix(prefix + "/") async for key in store.list_prefix(prefix + "/")]


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return protocol if isinstance(protocol, tuple) else (protocol,)


def _json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object, or ``{}`` for anything else (zarr itself reports a broken document when it opens it)."""
    try:
        found = json.loads(raw)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


async def _first_entries(store: Store, limit: int) -> list[str]:
    """The sorted names of up to ``limit`` entries (files and folders) at the root of ``store``."""
    entries: list[str] = []
    async for entry in store.list_dir(""):
        if entry:
            entries.append(entry)
        if len(entries) >= limit:
            break
    return sorted(entries)


def _check_directory(path: str) -> None:
    """A local output_dir must be a directory, or a path where one can be created."""
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "a file" if str(existing) == path else f"inside the file {existing}"
        raise InvalidArgumentError(
            f"output_dir must be a directory (or a path where one can be created). Got {path}, which is {what}. "
            "Choose another output_dir."
        )


# --- resolving what the user gave ------------------------------------------------------


def resolve_location(
    output_dir: str | os.PathLike[str] | Store,
    storage_options: Mapping[str, Any] | None = None,
    *,
    endpoint: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    secure: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Location:
    """Turn the zarr backend's location arguments into a :class:`Location`.

    Parameters
    ----------
    output_dir
        A local or NAS directory (``~`` is expanded, relative paths become absolute), a
        ``file://`` URL, an fsspec URL such as ``s3://bucket/prefix``, or a zarr Store. A
        ``LocalStore`` is taken as its folder (so that other processes can open it too).
    storage_options
        Options for fsspec (for S3: s3fs options such as ``key``, ``secret``, ``anon``,
        ``client_kwargs={'endpoint_url': ...}``, ``config_kwargs``), used unchanged.
    endpoint, access_key, secret_key, secure
        matorage's names, for ``s3://`` URLs only; see :data:`MATORAGE_NAMES`.
    cache_dir
        A local directory caching whole files read from a remote URL (fsspec's
        ``simplecache``), for read-only stores.

    Raises
    ------
    InvalidArgumentError
        If an argument has the wrong type or does not fit the kind of location.
    """
    opts = _check_options(storage_options)
    if isinstance(output_dir, LocalStore):
        # A folder, whatever form it was given in: reopenable in DataLoader workers by its path.
        output_dir = str(output_dir.root)
    if isinstance(output_dir, Store):
        _refuse_extras("a zarr Store object", opts, endpoint, access_key, secret_key, secure, cache_dir)
        return Location("store", None, store=output_dir)
    if isinstance(output_dir, os.PathLike):
        output_dir = os.fspath(output_dir)
    if not isinstance(output_dir, str) or not output_dir:
        raise InvalidArgumentError(
            "output_dir must be a path, a URL such as 's3://bucket/prefix' or a zarr Store. "
            f"Got {output_dir!r} instead."
        )
    if not _is_url(output_dir) or output_dir.startswith("file://"):
        _refuse_extras("a local path", opts, endpoint, access_key, secret_key, secure, cache_dir)
        return Location("local", _local_path(output_dir))
    opts = _map_matorage(output_dir, opts, endpoint, access_key, secret_key, secure)
    location = Location("fsspec", output_dir.rstrip("/"), opts, _cache_dir(cache_dir))
    if location.cache_dir is not None and ("::" in output_dir or not location.remote):
        raise InvalidArgumentError(
            f"cache_dir needs an unchained remote URL such as 's3://bucket/prefix'. Got output_dir={output_dir!r}."
        )
    return location


def copied_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of fsspec options, but for an s3fs ``session``, which is used as given (a
    copy of an aiobotocore session would parse botocore's data files again)."""
    return {k: v if k == "session" else copy.deepcopy(v) for k, v in options.items()}


def _is_url(text: str) -> bool:
    return "://" in text or "::" in text


def _local_path(text: str) -> str:
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    return os.path.abspath(os.path.expanduser(text))


def _check_options(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    if storage_options is None:
        return {}
    if not isinstance(storage_options, Mapping):
        raise InvalidArgumentError(
            f"storage_options must be a dict of fsspec options or None. Got {type(storage_options).__name__} instead."
        )
    return copied_options(storage_options)


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> str | None:
    if cache_dir is None:
        return None
    if not isinstance(cache_dir, (str, os.PathLike)) or _is_url(os.fspath(cache_dir)):
        raise InvalidArgumentError(f"cache_dir must be a local directory or None. Got {cache_dir!r} instead.")
    return os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))


def _refuse_extras(what: str, opts: dict[str, Any], *extras: object) -> None:
    names = ("storage_options", "endpoint", "access_key", "secret_key", "secure", "cache_dir")
    given = [name for name, value in zip(names, (opts or None, *extras), strict=True) if value is not None]
    if given:
        raise InvalidArgumentError(
            f"{', '.join(given)} only apply when output_dir is a URL such as 's3://bucket/prefix'. "
            f"Got output_dir as {what}."
        )


def _map_matorage(
    url: str,
    opts: dict[str, Any],
    endpoint: str | None,
    access_key: str | None,
    secret_key: str | None,
    secure: bool | None,
) -> dict[str, Any]:
    """Fold matorage's S3 names into s3fs options, refusing contradictions."""
    given = {"endpoint": endpoint, "access_key": access_key, "secret_key": secret_key, "secure": secure}
    if all(value is None for value in given.values()):
        return opts
    protocol = url.split("::")[-1].partition("://")[0]
    if protocol not in S3_PROTOCOLS:
        names = ", ".join(name for name, value in given.items() if value is not None)
        raise InvalidArgumentError(f"{names} need an output_dir such as 's3://bucket/prefix'. Got {url!r}.")
    if access_key is not None:
        _set_once(opts, "key", access_key, "access_key")
    if secret_key is not None:
        _set_once(opts, "secret", secret_key, "secret_key")
    if endpoint is not None or secure is not None:
        client = dict(opts.get("client_kwargs") or {})
        _set_once(client, "endpoint_url", _endpoint_url(endpoint, secure), "endpoint")
        opts["client_kwargs"] = client
    return opts


def _endpoint_url(endpoint: str | None, secure: bool | None) -> str:
    if not isinstance(endpoint, str) or not endpoint:
        raise InvalidArgumentError(f"endpoint must be a 'host:port' str when secure is given. Got {endpoint!r}.")
    if secure is not None and not isinstance(secure, bool):
        raise InvalidArgumentError(f"secure must be True, False or None. Got {secure!r} instead.")
    if "://" not in endpoint:
        return f"{'https' if secure else 'http'}://{endpoint}"
    scheme = endpoint.partition("://")[0]
    if secure is not None and scheme != ("https" if secure else "http"):
        raise InvalidArgumentError(f"secure={secure} contradicts endpoint={endpoint!r}. Drop one of them.")
    return endpoint


def _set_once(target: dict[str, Any], key: str, value: object, arg: str) -> None:
    if key in target and target[key] != value:
        raise InvalidArgumentError(
            f"{arg} and storage_options give two different values for the s3fs option {key!r}. Give only one."
        )
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{arg} must be a str. Got {type(value).__name__} instead.")
    target[key] = value


# --- clearing (mode 'w') ---------------------------------------------------------------


def _clear_directory(root: Path, keep: str | None = None) -> None:
    """Delete what ``root`` holds, but the path ``keep`` below it (``'a/b'``: ``a/b``, and ``a`` itself)."""
    if not root.is_dir():
        return
    first, _, rest = (keep or "").partition("/")
    for child in root.iterdir():
        if keep and child.name == first:
            if rest and child.is_dir() and not child.is_symlink():
                _clear_directory(child, rest)
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


async def _clear_prefix(store: FsspecStore, keep: str | None = None) -> None:
    try:
        files = await store.fs._find(store.path)
    except FileNotFoundError:
        return
    kept = f"{store.path.rstrip('/')}/{keep}/" if keep else None
    files = [f for f in files if kept is None or not f.startswith(kept)]
    if files:
        await store.fs._rm(files)  # one bulk request per 1000 objects on S3


# --- zarr's request concurrency, scoped to a call ------------------------------------

_scope_lock = threading.Lock()
_scope_state: dict[str, Any] = {"depth": 0, "saved": None}


def _after_fork_in_child() -> None:
    """A forked child (a DataLoader worker) has none of its parent's threads: the locks they may
    have held at the fork, the endpoints they kept requests from and the concurrency they
    raised are theirs, not the child's."""
    global _unsent_lock, _scope_lock
    _unsent_lock, _scope_lock = threading.Lock(), threading.Lock()
    _unsent.clear()
    if _scope_state["depth"]:
        zarr.config.set({"async.concurrency": _scope_state["saved"]})
    _scope_state.update(depth=0, saved=None)


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def concurrency_scope(concurrency: int | None) -> Iterator[None]:
    """Set zarr's ``async.concurrency`` to ``concurrency`` inside the block.

    zarr keeps this setting in its process-wide config; storegate sets it only while a
    read or write runs and restores the previous value when the last such call in the
    process ends (threads overlapping in the block keep the largest of their values).
    ``None`` leaves zarr's config alone.
    """
    if concurrency is None:
        yield
        return
    with _scope_lock:
        if _scope_state["depth"] == 0:
            _scope_state["saved"] = zarr.config.get("async.concurrency")
            current = concurrency
        else:
            current = max(concurrency, zarr.config.get("async.concurrency"))
        _scope_state["depth"] += 1
        zarr.config.set({"async.concurrency": current})
    try:
        yield
    finally:
        with _scope_lock:
            _scope_state["depth"] -= 1
            if _scope_state["depth"] == 0:
                zarr.config.set({"async.concurrency": _scope_state["saved"]})
