"""A silent S3 server (connections open, nothing answers) fails a call within the configured bound.

The server is a moto server in its own process, stopped with SIGSTOP (the kernel still
completes connections; nothing is read or answered), as a hung or frozen server is. s3fs
retries botocore's timeouts in two nested loops, each around all of botocore's attempts:
one read used to wait 16 timeouts (338 s with the former defaults). Each case checks that

- the call raises :class:`~storegate.NoReplyError` (a StorageError) naming the store, the
  wait and the setting to change, within 3x the bound the configured timeouts give
  (:func:`storegate.locations.no_reply_bound`; slack for a loaded machine, not a speed goal);
- once the server runs again, the store holds exactly what it held before, and the same
  call then succeeds.

The configured timeouts are 0.5 s with 2 attempts; ``benchmarks/measure_s3_silent.py``
measures the defaults (README, 'Failures, timeouts and retries').
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import fsspec
import numpy as np
import pytest
from torch.utils.data import DataLoader

from storegate import InvalidArgumentError, NoReplyError, StorageError, StoreGate
from storegate.locations import (
    DEFAULT_S3_CONFIG,
    S3FS_RETRIES,
    bounded_http_session,
    no_reply_bound,
    request_attempts,
    resolve_location,
)
from storegate.torch import StoreGateDataset
from tests.moto_process import MotoProcess, start_moto

pytestmark = [pytest.mark.s3, pytest.mark.timeout(180)]

CONFIG: dict[str, Any] = {
    "connect_timeout": 0.5,
    "read_timeout": 0.5,
    "retries": {"total_max_attempts": 2, "mode": "standard"},
}
#: One request to a silent server: 2 attempts of at most 1 s, and up to 1 s of backoff.
REQUEST = no_reply_bound(CONFIG)
#: A read fails at its first silent request; the requests in flight with it end as soon.
READ_BOUND = 3 * REQUEST
#: A write: its silent request, one more for the undo, and the release of the lease (one
#: more request), 3x for slack.
WRITE_BOUND = 3 * (3 * REQUEST)
ROWS, CHUNK = 60, 10


# --- what sets the bound -----------------------------------------------------------------------


def test_attempts_count_the_first_one() -> None:
    assert request_attempts({"retries": {"max_attempts": 3}}) == 4  # botocore: retries
    assert request_attempts({"retries": {"total_max_attempts": 2, "max_attempts": 9}}) == 2  # total wins
    assert request_attempts({"retries": {"mode": "standard"}}) is None  # botocore's default
    assert request_attempts(DEFAULT_S3_CONFIG) == 3


def test_the_bound_follows_the_settings() -> None:
    assert REQUEST == 2 * (0.5 + 0.5) + 1.0
    assert no_reply_bound() == 3 * (5 + 10) + 1.0 + 2.0  # the defaults: 48 s
    assert no_reply_bound({"read_timeout": 60}) == 3 * (5 + 60) + 3.0
    assert no_reply_bound(CONFIG, body_bytes=64 * 1024) == REQUEST + 2 * 1.0  # 1 s more per attempt to send it
    with pytest.raises(InvalidArgumentError, match=r"total_max_attempts.*Got \{'mode': 'standard'\}"):
        no_reply_bound({"retries": {"mode": "standard"}})


def test_every_s3_store_gets_the_session_of_its_attempts() -> None:
    options = resolve_location("s3://b/p").fsspec_options()
    assert options["config_kwargs"]["http_session_cls"] is bounded_http_session(3)
    mine = resolve_location("s3://b/p", {"config_kwargs": CONFIG}).fsspec_options()
    assert mine["config_kwargs"]["http_session_cls"] is bounded_http_session(2)
    assert mine["config_kwargs"]["retries"] == CONFIG["retries"]  # the user's, unchanged


# --- one request: botocore's attempts, never s3fs's retries on top -------------------------------


@contextmanager
def silent_socket() -> Iterator[tuple[str, list[socket.socket]]]:
    """An endpoint that accepts connections and never answers; the list holds those accepted."""
    accepted: list[socket.socket] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:  # the timeout of the poll
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    finally:
        done.set()
        thread.join()
        for sock in accepted:
            sock.close()
        server.close()


@pytest.mark.parametrize("attempts", [1, 2])
@pytest.mark.parametrize("call", ["read", "write"])
def test_a_request_to_a_silent_server_is_tried_its_attempts_only(call: str, attempts: int) -> None:
    config = {**CONFIG, "retries": {"total_max_attempts": attempts, "mode": "standard"}}
    with silent_socket() as (endpoint, accepted):
        options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": endpoint}, "config_kwargs": config}
        fs = fsspec.filesystem("s3", **resolve_location("s3://bucket/p", options).fsspec_options())
        fs.retries = S3FS_RETRIES
        began = time.monotonic()
        with pytest.raises(NoReplyError) as info:
            fs.cat_file("bucket/p/key") if call == "read" else fs.pipe_file("bucket/p/key", b"x" * 1000)
        assert time.monotonic() - began < 3 * no_reply_bound(config, body_bytes=1000)
        assert len(accepted) == attempts  # one connection per attempt; s3fs's loops added 3x as many
    method = "GET" if call == "read" else "PUT"
    tries = "on its only attempt" if attempts == 1 else f"on each of {attempts} attempts"
    assert f"sent no reply within 0.5 s to {method} {endpoint}/bucket/p/key, {tries}" in str(info.value)
    assert "['read_timeout'] (now 0.5 s)" in str(info.value)


@contextmanager
def pausing_server(silent: set[int]) -> Iterator[str]:
    """An endpoint that answers nothing on the connections numbered in ``silent`` (from 0) and
    answers the request of every other one with ``b'hello'`` (a server back after a pause)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)
    done = threading.Event()
    held: list[socket.socket] = []
    count = 0

    def answer(conn: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        conn.close()

    def serve() -> None:
        nonlocal count
        while not done.is_set():
            try:
                conn = server.accept()[0]
            except OSError:  # the timeout of the poll
                continue
            if count in silent:
                held.append(conn)
            else:
                answer(conn)
            count += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        done.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_a_pause_shorter_than_the_attempts_is_retried() -> None:
    """Two silent attempts of three, a reply, two more silent attempts, a reply: both reads
    succeed, one after the other in one asyncio task (the count starts again at each reply)."""
    config = {**CONFIG, "retries": {"total_max_attempts": 3, "mode": "standard"}}
    with pausing_server(silent={0, 1, 3, 4}) as endpoint:
        options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": endpoint}, "config_kwargs": config}
        opts = resolve_location("s3://bucket/p", options).fsspec_options()

        async def two_reads() -> list[bytes]:
            fs = fsspec.filesystem("s3", asynchronous=True, **opts)
            fs.retries = S3FS_RETRIES
            await fs.set_session()
            return [await fs._cat_file("bucket/p/key"), await fs._cat_file("bucket/p/other")]

        assert asyncio.run(two_reads()) == [b"hello", b"hello"]


# --- calls against a stopped moto server --------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[MotoProcess]:
    found = start_moto()
    yield found
    os.kill(found.process.pid, signal.SIGCONT)  # a failed test may have left it stopped
    found.stop()


@contextmanager
def stopped(server: MotoProcess) -> Iterator[None]:
    """The server frozen (SIGSTOP) inside the block: connections open, nothing is answered."""
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def open_store(server: MotoProcess, bucket: str, **extra: Any) -> StoreGate:
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": server.endpoint_url},
        "config_kwargs": CONFIG,
    }
    where = {"output_dir": f"s3://{bucket}/store", "storage_options": options, "chunk": CHUNK, **extra}
    return StoreGate("zarr", where, data_id="d")


@pytest.fixture
def store(server: MotoProcess) -> tuple[str, StoreGate]:
    """A bucket holding x (60 rows, 6 chunks) and y in train; a writer handle on it."""
    bucket = f"silent-{uuid.uuid4().hex[:8]}"
    server.client("s3").create_bucket(Bucket=bucket)
    sg = open_store(server, bucket)
    sg.add_data(["x", "y"], [np.arange(ROWS * 2, dtype="f8").reshape(ROWS, 2), np.arange(ROWS)], phase="train")
    return bucket, sg


def contents(server: MotoProcess, bucket: str) -> dict[str, Any]:
    """What a fresh handle sees (each variable's rows), and the commit records as stored.

    The commit record says which rows each variable holds. A failed call's requests that
    were still in the stopped server's socket buffers are carried out when it resumes (a
    grown shape in an array's zarr.json, chunk objects): past the last commit, unseen, and
    cut off by the next writer (README, 'Failures, timeouts and retries').
    """
    sg = open_store(server, bucket, mode="r")
    found: dict[str, Any] = {name: sg.get_data(name, "train").tolist() for name in sg.get_var_names("train")}
    client = server.client("s3")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="store/").get("Contents", [])]
    records = {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys if "/.storegate/commits/" in k}
    return {"data": found, "commits": records}


def fails_within(bound: float, call: Callable[[], object]) -> StorageError:
    began = time.monotonic()
    with pytest.raises(StorageError) as info:
        call()
    assert time.monotonic() - began < bound
    return info.value


def test_a_read_fails_within_the_bound(server: MotoProcess, store: tuple[str, StoreGate]) -> None:
    bucket, _ = store
    reader = open_store(server, bucket, mode="r")
    with stopped(server):
        error = fails_within(READ_BOUND, lambda: reader.get_data("x", "train"))
    message = str(error)
    assert isinstance(error, NoReplyError)
    assert message.startswith(f"the zarr store at s3://{bucket}/store (bucket {bucket!r}, endpoint ")
    assert "sent no reply within 0.5 s" in message
    assert "storage_options['config_kwargs']['read_timeout'] (now 0.5 s)" in message
    assert reader.get_data("x", "train").shape == (ROWS, 2)  # the same handle reads again once it answers


def test_a_read_of_many_chunks_fails_within_the_bound(server: MotoProcess, store: tuple[str, StoreGate]) -> None:
    """zarr sends ``concurrency`` chunk requests at a time and goes on after the first error;
    the requests not sent yet when the call failed fail at once (10 rounds of 4 took 17 s)."""
    bucket, sg = store
    sg.add_data("z", np.arange(400.0), phase="valid")  # 40 chunks
    reader = open_store(server, bucket, mode="r", concurrency=4)
    reader.get_data("z", "valid", index=0)  # its metadata is read: the stop hits the chunk reads
    with stopped(server):
        error = fails_within(READ_BOUND, lambda: reader.get_data("z", "valid"))
    assert isinstance(error, NoReplyError)


def append(sg: StoreGate) -> None:
    sg.add_data(["x", "y"], [np.full((25, 2), -1.0), np.arange(100, 125)], phase="train")


def stream(sg: StoreGate) -> None:
    with sg.writer("train") as writer:
        for start in range(0, 25, 5):
            writer.add({"x": np.full((5, 2), -1.0), "y": np.arange(100 + start, 105 + start)})


@pytest.mark.parametrize("call", [append, stream], ids=lambda c: c.__name__)
def test_a_write_fails_within_the_bound_and_changes_nothing(
    server: MotoProcess, store: tuple[str, StoreGate], call: Callable[[StoreGate], None]
) -> None:
    bucket, sg = store
    before = contents(server, bucket)
    with stopped(server):
        error = fails_within(WRITE_BOUND, lambda: call(sg))
    assert isinstance(error, NoReplyError), error
    assert contents(server, bucket) == before
    call(sg)  # the same call from the same handle, once the server answers: one call's rows
    assert sg.get_data("y", "train").tolist() == [*range(ROWS), *range(100, 125)]


def test_a_write_stopped_part_way_changes_nothing(server: MotoProcess, store: tuple[str, StoreGate]) -> None:
    """The server stops after the writer took the lease and wrote its first chunks."""
    bucket, sg = store
    before = contents(server, bucket)

    def stopped_part_way() -> None:
        with sg.writer("train") as writer:
            writer.add({"x": np.full((30, 2), -1.0), "y": np.arange(100, 130)})  # 3 whole chunks: written now
            with stopped(server):
                writer.add({"x": np.full((30, 2), -2.0), "y": np.arange(200, 230)})

    assert isinstance(fails_within(WRITE_BOUND, stopped_part_way), NoReplyError)
    assert contents(server, bucket) == before
    stream(sg)  # once the server answers: exactly one call's rows, past what the failed call left
    assert sg.get_data("y", "train").tolist() == [*range(ROWS), *range(100, 125)]
    assert open_store(server, bucket, mode="r").get_data("x", "train").shape == (ROWS + 25, 2)


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_a_dataloader_worker_fails_within_the_bound(
    server: MotoProcess, store: tuple[str, StoreGate], context: str
) -> None:
    bucket, _ = store
    dataset = StoreGateDataset(open_store(server, bucket, mode="r"), "train", "x")
    loader = DataLoader(dataset, batch_size=CHUNK, num_workers=2, multiprocessing_context=context, prefetch_factor=1)
    batches = iter(loader)
    assert next(batches).shape == (CHUNK, 2)  # both workers run and have the store open
    with stopped(server):
        # Each worker's next read hits the stopped server; batches read before the stop come first.
        error = fails_within(READ_BOUND, lambda: list(batches))
    assert isinstance(error, NoReplyError)
    assert "sent no reply within 0.5 s" in str(error)
