"""The S3 fixture really serves HTTP on 127.0.0.1."""

from __future__ import annotations

import s3fs

from tests.conftest import S3Server


def test_s3_server_round_trip(s3_server: S3Server, s3_bucket: str) -> None:
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    fs.pipe(f"{s3_bucket}/probe.bin", b"hello")
    assert fs.cat(f"{s3_bucket}/probe.bin") == b"hello"
    assert fs.ls(s3_bucket) == [f"{s3_bucket}/probe.bin"]
