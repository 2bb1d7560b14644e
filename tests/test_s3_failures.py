"""An S3 location that cannot be used fails fast with a StorageError naming endpoint and bucket.

Each case runs against a real server (the session's moto server, a moto server in its own
process that checks credentials, or a socket that never answers) and must return within
``BOUND`` seconds: the point is that nothing hangs.
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from moto.server import ThreadedMotoServer

from storegate import StorageError, StoreGate
from storegate.locations import PROBE_TIMEOUT
from tests.conftest import S3Server
from tests.moto_process import MotoProcess, free_port, start_moto_with_auth

pytestmark = [pytest.mark.s3, pytest.mark.timeout(120)]

#: Generous: a failing open takes a few seconds; a hang would take minutes.
BOUND = 30.0


def open_store(endpoint: str, bucket: str, **extra: Any) -> StoreGate:
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}}
    return StoreGate("zarr", {"output_dir": f"s3://{bucket}/store", "storage_options": options, **extra})


def expect_storage_error(call: Any, endpoint: str, bucket: str, match: str) -> StorageError:
    start = time.monotonic()
    with pytest.raises(StorageError) as info:
        call()
    assert time.monotonic() - start < BOUND
    message = str(info.value)
    assert endpoint in message
    assert repr(bucket) in message
    assert re.search(match, message), message
    return info.value


def test_missing_bucket(s3_server: S3Server) -> None:
    bucket = f"missing-{uuid.uuid4().hex[:8]}"
    for mode in ("a", "w", "r"):
        expect_storage_error(
            lambda mode=mode: open_store(s3_server.endpoint_url, bucket, mode=mode),
            s3_server.endpoint_url,
            bucket,
            "does not exist",
        )


def test_a_port_where_nothing_listens() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    expect_storage_error(lambda: open_store(endpoint, "some-bucket"), endpoint, "some-bucket", "cannot be reached")


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A socket that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_an_endpoint_that_never_answers(silent_endpoint: str) -> None:
    assert PROBE_TIMEOUT < BOUND
    expect_storage_error(
        lambda: open_store(silent_endpoint, "some-bucket"), silent_endpoint, "some-bucket", "did not answer"
    )


@pytest.fixture
def stopped_server() -> tuple[str, str, StoreGate]:
    """A moto server that served a store, then stopped; with a reader opened before the stop."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        bucket = S3Server(endpoint).create_bucket()
        writer = open_store(endpoint, bucket)
        writer.set_data_id("d")
        writer.add_data("x", np.arange(20), phase="train")
        reader = open_store(endpoint, bucket, mode="r")
        reader.set_data_id("d")
    finally:
        server.stop()
    return endpoint, bucket, reader


def test_a_stopped_server(stopped_server: tuple[str, str, StoreGate]) -> None:
    endpoint, bucket, reader = stopped_server
    expect_storage_error(lambda: open_store(endpoint, bucket, mode="r"), endpoint, bucket, "cannot be reached")
    # A store opened before the stop: the read fails in bounded time, as a StorageError naming where.
    expect_storage_error(lambda: reader.get_data("x", "train"), endpoint, bucket, "failed during a read or write")


# --- credentials: a moto server in its own process that checks them ------------------------


@pytest.fixture(scope="module")
def auth_server() -> Iterator[tuple[MotoProcess, str, dict[str, str]]]:
    bucket = "checked-bucket"
    server, credentials = start_moto_with_auth(bucket)
    try:
        yield server, bucket, credentials
    finally:
        server.stop()


def auth_store(server: MotoProcess, bucket: str, key: str, secret: str, **extra: Any) -> StoreGate:
    options = {"key": key, "secret": secret, "client_kwargs": {"endpoint_url": server.endpoint_url}}
    return StoreGate("zarr", {"output_dir": f"s3://{bucket}/store", "storage_options": options, **extra})


def test_the_auth_server_accepts_the_right_keys(auth_server: tuple[MotoProcess, str, dict[str, str]]) -> None:
    server, bucket, cred = auth_server
    sg = auth_store(server, bucket, cred["key"], cred["secret"])
    sg.set_data_id("d")
    sg.add_data("x", np.arange(6), phase="train")
    reader = auth_store(server, bucket, cred["key"], cred["secret"], mode="r")
    reader.set_data_id("d")
    np.testing.assert_array_equal(reader.get_data("x", "train"), np.arange(6))


@pytest.mark.parametrize("which", ["wrong-secret", "unknown-key"])
def test_wrong_credentials(auth_server: tuple[MotoProcess, str, dict[str, str]], which: str) -> None:
    server, bucket, cred = auth_server
    key, secret = (cred["key"], "not-the-secret") if which == "wrong-secret" else ("AKIAUNKNOWN000000000", "x")
    error = expect_storage_error(
        lambda: auth_store(server, bucket, key, secret), server.endpoint_url, bucket, "refused the credentials"
    )
    assert "not-the-secret" not in str(error)
