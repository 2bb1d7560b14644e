"""A moto S3 server in its own process (``python -m moto.server``), for tests that need
settings the shared in-process server of ``conftest.py`` must not get (moto keeps them
process-wide), such as checking credentials.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import boto3


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of the call)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoProcess:
    """A running ``moto.server`` process; stop it with :meth:`stop`."""

    endpoint_url: str
    process: subprocess.Popen[bytes] = field(repr=False)

    def client(self, service: str, key: str = "testing", secret: str = "testing") -> Any:
        """A boto3 client for this server."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
        )

    def stop(self) -> None:
        """Terminate the server process and wait for it."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def start_moto(env: dict[str, str] | None = None, timeout: float = 60.0) -> MotoProcess:
    """Start ``python -m moto.server`` on 127.0.0.1 at a free port and wait until it answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = MotoProcess(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{server.endpoint_url}/moto-api/data.json", timeout=2):
                return server
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"moto.server did not start on port {port} within {timeout} s")


def start_moto_with_auth(bucket: str) -> tuple[MotoProcess, dict[str, str]]:
    """A moto server that checks credentials, one IAM user allowed ``s3:*`` and ``bucket``.

    moto checks keys only after ``INITIAL_NO_AUTH_ACTION_COUNT`` requests; the first three
    create the user, its access key and its policy. Returns the server and
    ``{'key': ..., 'secret': ...}`` of that user.
    """
    server = start_moto(env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    iam = server.client("iam")
    iam.create_user(UserName="storegate")
    key = iam.create_access_key(UserName="storegate")["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="storegate", PolicyName="s3", PolicyDocument=json.dumps(policy))
    credentials = {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    server.client("s3", credentials["key"], credentials["secret"]).create_bucket(Bucket=bucket)
    return server, credentials
