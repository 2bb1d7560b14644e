"""S3 faults mid-call, through a fault-injecting TCP proxy in front of the moto server.

The proxy (:mod:`tests.fault_proxy`) drops connections part-way through a request, loses
the replies of requests the server carried out, or stops forwarding anything (a server
that stops answering), after a number of request bytes of the call: the fault lands inside
the call, its undo included. The server keeps its data. Each case checks that

- the call raises storegate's StorageError (never botocore's, aiohttp's or an OSError),
  within a bound computed from the configured timeouts;
- a second handle, straight on the server, sees the store exactly at its last commit;
- the same call, retried from the same handle once the proxy forwards again, leaves
  exactly the rows of one successful call (and is not held up by the lease the failed
  call could not release).

The calls: add_data of a new variable, add_data appending to x and y, update_data,
delete_data and a streaming writer. Also: a commit whose reply was lost while the server
then went away (the retry must not count the call twice), an upload to a silent server
(it used to wait for ever), and a lease whose release failed. The configured timeouts are
0.5 s with botocore's ``max_attempts`` 1 (2 attempts); ``benchmarks/measure_s3_stall.py`` measures the defaults.
"""

from __future__ import annotations

import gc
import logging
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pytest
from zarr.storage import FsspecStore

from storegate import ConflictError, NoReplyError, StorageError, StoreGate, StoreGateWarning
from storegate.locations import S3FS_RETRIES, bounded_http_session, resolve_location
from storegate.locks import Lease
from tests.conftest import S3Server
from tests.fault_proxy import Fault, FaultProxy

pytestmark = [
    pytest.mark.s3,
    pytest.mark.timeout(120),
    # zarr makes the coroutines of a new array's parent groups before it checks them; when
    # that check fails (the store gone) it never awaits them, and Python warns.
    pytest.mark.filterwarnings(
        "ignore:coroutine '(StorePath.set_if_not_exists|set_or_delete)' was never awaited:RuntimeWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <coroutine object (StorePath.set_if_not_exists|set_or_delete) "
        ":pytest.PytestUnraisableExceptionWarning"
    ),
]

#: Small timeouts, so that a stalled server fails a call in seconds.
CONNECT, READ, ATTEMPTS = 0.5, 0.5, 1
CONFIG = {"connect_timeout": CONNECT, "read_timeout": READ, "retries": {"max_attempts": ATTEMPTS, "mode": "standard"}}
#: One request to a silent server, generously: s3fs's tries x botocore's retries x (timeouts +
#: backoff); a silent server fails it sooner (no_reply_bound(CONFIG), 3 s: s3fs does not repeat it).
REQUEST_BOUND = S3FS_RETRIES * ATTEMPTS * (CONNECT + READ + 1.0)
#: A failed call: its failing requests, the undo's, the release of the lease, and slack.
CALL_BOUND = 4 * REQUEST_BOUND + 5.0

ROWS = 40
CHUNK = 10  # rows per chunk: an append writes several objects


@pytest.fixture(scope="module")
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.CRITICAL)  # moto reports the cut-off requests
    host, port = s3_server.endpoint_url.removeprefix("http://").split(":")
    found = FaultProxy((host, int(port)))
    yield found
    found.close()
    werkzeug.setLevel(level)
    with warnings.catch_warnings():  # the coroutines zarr left (see pytestmark) go now, not in a later test
        warnings.simplefilter("ignore", RuntimeWarning)
        gc.collect()


def open_store(endpoint: str, bucket: str, **extra: Any) -> StoreGate:
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}, **extra}
    sg = StoreGate("zarr", {"output_dir": f"s3://{bucket}/store", "storage_options": options, "chunk": CHUNK})
    sg.set_data_id("d")
    return sg


def snapshot(s3_server: S3Server, bucket: str) -> dict[str, dict[str, np.ndarray]]:
    """Every variable of data_id 'd' as a fresh handle straight on the server reads it."""
    sg = open_store(s3_server.endpoint_url, bucket)
    found: dict[str, dict[str, np.ndarray]] = {}
    for phase in ("train", "valid", "test"):
        names = sg.get_var_names(phase)
        if names:
            found[phase] = {name: np.asarray(sg.get_data(name, phase)) for name in names}
    return found


def assert_same(found: dict[str, dict[str, np.ndarray]], expected: dict[str, dict[str, np.ndarray]]) -> None:
    assert {p: sorted(vs) for p, vs in found.items()} == {p: sorted(vs) for p, vs in expected.items()}
    for phase, variables in expected.items():
        for name, data in variables.items():
            np.testing.assert_array_equal(found[phase][name], data, err_msg=f"{phase}/{name}")


# --- the calls -------------------------------------------------------------------------------


def base() -> dict[str, dict[str, np.ndarray]]:
    """What every case starts from (committed): x and y in train, w in valid."""
    x = np.arange(ROWS * 3, dtype="f8").reshape(ROWS, 3)
    return {"train": {"x": x, "y": np.arange(ROWS, dtype="i8")}, "valid": {"w": np.arange(5, dtype="f4")}}


NEW_X = np.full((25, 3), -1.0)
NEW_Y = np.arange(100, 125, dtype="i8")


def add_new_variable(sg: StoreGate) -> None:
    sg.add_data("z", np.arange(ROWS * 2, dtype="f4").reshape(ROWS, 2), phase="train")


def append_x_y(sg: StoreGate) -> None:
    sg.add_data(["x", "y"], [NEW_X, NEW_Y], phase="train")


def update_rows(sg: StoreGate) -> None:
    sg.update_data("x", np.full((20, 3), 7.0), phase="train", index=slice(5, 25), do_compile=False)


def delete_y(sg: StoreGate) -> None:
    sg.delete_data("y", phase="train", do_compile=False)


def stream(sg: StoreGate) -> None:
    with sg.writer("train") as writer:
        for start in range(0, 25, 5):
            writer.add({"x": NEW_X[start : start + 5], "y": NEW_Y[start : start + 5]})


def after(call: Callable[[StoreGate], None]) -> dict[str, dict[str, np.ndarray]]:
    """The data after one successful ``call``."""
    data = base()
    train = data["train"]
    if call is add_new_variable:
        train["z"] = np.arange(ROWS * 2, dtype="f4").reshape(ROWS, 2)
    elif call in (append_x_y, stream):
        train["x"], train["y"] = np.concatenate([train["x"], NEW_X]), np.concatenate([train["y"], NEW_Y])
    elif call is update_rows:
        train["x"][5:25] = 7.0
    elif call is delete_y:
        del train["y"]
    return data


CALLS = [add_new_variable, append_x_y, update_rows, delete_y, stream]


@dataclass
class Case:
    """A bucket with the base data, and a handle on it through the proxy."""

    bucket: str
    sg: StoreGate


def prepared(s3_server: S3Server, proxy: FaultProxy) -> Case:
    bucket = s3_server.create_bucket(f"faults-{uuid.uuid4().hex[:12]}")
    sg = open_store(proxy.url, bucket, config_kwargs=CONFIG)
    for phase, variables in base().items():
        sg.add_data(list(variables), list(variables.values()), phase=phase)
    return Case(bucket, sg)


_bytes_of: dict[str, int] = {}


def request_bytes(s3_server: S3Server, proxy: FaultProxy, call: Callable[[StoreGate], None]) -> int:
    """Request bytes of one successful ``call`` through the proxy (measured once per call)."""
    if call.__name__ not in _bytes_of:
        case = prepared(s3_server, proxy)
        case.sg.get_var_names("train")  # what every case reads before its faulty call
        proxy.reset_counts()
        call(case.sg)
        _bytes_of[call.__name__] = proxy.request_bytes
        assert_same(snapshot(s3_server, case.bucket), after(call))
    return _bytes_of[call.__name__]


def fail_then_retry(
    s3_server: S3Server, proxy: FaultProxy, call: Callable[[StoreGate], None], fault: Fault, share: float
) -> None:
    """Run ``call`` with ``fault`` after ``share`` of its request bytes; check error, store and retry.

    A fault that lands after the commit (the release of the lease, the purge of a deleted
    variable's chunks) leaves a call that succeeded: the store then holds its result.
    """
    total = request_bytes(s3_server, proxy, call)
    case = prepared(s3_server, proxy)
    case.sg.get_var_names("train")
    proxy.fault(fault, after_bytes=max(1, int(total * share)))
    failed: BaseException | None = None
    began = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StoreGateWarning)  # a cleanup after the commit failed
            call(case.sg)
    except Exception as exc:
        failed = exc
    finally:
        took = time.monotonic() - began
        proxy.heal()
    assert took < CALL_BOUND, f"{call.__name__} ended after {took:.1f} s (bound {CALL_BOUND:.1f} s)"
    if failed is None:
        assert_same(snapshot(s3_server, case.bucket), after(call))
        return
    assert isinstance(failed, StorageError), repr(failed)
    assert "s3://" in str(failed)
    assert_same(snapshot(s3_server, case.bucket), base())
    began = time.monotonic()
    call(case.sg)  # the retry, through the healed proxy, from the same handle
    assert time.monotonic() - began < 10.0  # not held up by the lease the failed call may have left
    assert_same(snapshot(s3_server, case.bucket), after(call))
    assert_same({p: {v: np.asarray(case.sg.get_data(v, p)) for v in vs} for p, vs in after(call).items()}, after(call))


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.__name__)
def test_a_dropped_connection(s3_server: S3Server, proxy: FaultProxy, call: Callable[[StoreGate], None]) -> None:
    fail_then_retry(s3_server, proxy, call, "drop", 0.4)


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.__name__)
def test_lost_replies(s3_server: S3Server, proxy: FaultProxy, call: Callable[[StoreGate], None]) -> None:
    fail_then_retry(s3_server, proxy, call, "drop_replies", 0.6)


@pytest.mark.parametrize("call", [append_x_y, stream], ids=lambda c: c.__name__)
def test_a_server_that_stops_answering(
    s3_server: S3Server, proxy: FaultProxy, call: Callable[[StoreGate], None]
) -> None:
    fail_then_retry(s3_server, proxy, call, "stall", 0.5)


def test_an_upload_to_a_silent_server_times_out() -> None:
    """botocore's ``Expect: 100-continue`` made aiohttp wait for ever, whatever read_timeout said."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": endpoint}, "config_kwargs": CONFIG}
        location = resolve_location("s3://bucket/store", options)
        fs = fsspec.filesystem("s3", **location.fsspec_options())
        fs.retries = S3FS_RETRIES
        began = time.monotonic()
        with pytest.raises(NoReplyError, match=r"sent no reply within 0\.5 s to PUT"):
            fs.pipe_file("bucket/store/key", b"x" * 1000)
        assert time.monotonic() - began < 2 * REQUEST_BOUND  # it waited for ever


def test_default_s3_options_bound_every_request(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    location = resolve_location(f"s3://{bucket}/store", {**s3_server.storage_options})
    assert location.fsspec_options()["config_kwargs"]["http_session_cls"] is bounded_http_session(3)
    store = location.make_store(read_only=False)
    assert isinstance(store, FsspecStore)
    assert store.fs.retries == S3FS_RETRIES


@pytest.mark.parametrize("call", [add_new_variable, stream], ids=lambda c: c.__name__)
def test_a_commit_whose_reply_was_lost(
    s3_server: S3Server, proxy: FaultProxy, call: Callable[[StoreGate], None]
) -> None:
    """The commit record reached the server, its reply was lost, and the server is gone for the undo.

    The server holds the failed call's commit (nothing can take it back while the server
    cannot be reached); the retry from the same handle puts the previous commit back
    before it writes, so it gives the rows of one call, not two.
    """
    case = prepared(s3_server, proxy)
    case.sg.get_var_names("train")
    proxy.fault_after(f"PUT /{case.bucket}/store/.storegate/commits/".encode(), "drop")
    began = time.monotonic()
    try:
        with pytest.raises(StorageError):
            call(case.sg)
    finally:
        proxy.heal()
    assert time.monotonic() - began < CALL_BOUND
    call(case.sg)
    assert_same(snapshot(s3_server, case.bucket), after(call))


def test_a_lease_left_behind_by_a_failed_release_is_taken_back_by_its_process(
    s3_server: S3Server, proxy: FaultProxy
) -> None:
    """The release of a lease fails (the server cannot be reached): the lease object stays for
    its time-to-live, another process waits for it, and the process that left it takes it
    back at once."""
    bucket = s3_server.create_bucket()
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": proxy.url}}
    fs = FsspecStore.from_url(f"s3://{bucket}/store", storage_options={**options, "config_kwargs": CONFIG}).fs
    path = f"{bucket}/store/.storegate/locks/d.lock"
    mine = Lease("data_id 'd'", fs, path)
    other = Lease("data_id 'd'", fs, path)
    mine.acquire(5.0)
    proxy.fault("drop")
    try:
        began = time.monotonic()
        mine.release()  # the DELETE fails: nothing raised, the lease stays on the server
        assert time.monotonic() - began < CALL_BOUND
    finally:
        proxy.heal()
    assert s3_server.client().head_object(Bucket=bucket, Key="store/.storegate/locks/d.lock")
    with pytest.raises(ConflictError):
        other.acquire(0.5)
    began = time.monotonic()
    mine.acquire(5.0)
    assert time.monotonic() - began < 2.0
    mine.release()
    other.acquire(2.0)
    other.release()
