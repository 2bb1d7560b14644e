"""The aiobotocore sessions storegate gives s3fs (storegate/s3_sessions.py): botocore's data
files are parsed once per process tree, and a forked DataLoader worker reads S3 with its
parent's parsed files, through a session of its own."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from storegate import InvalidArgumentError, StoreGate
from storegate.locations import resolve_location
from storegate.s3_sessions import session_for
from storegate.torch import StoreGateDataLoader, StoreGateDataset
from tests.conftest import S3Server

pytestmark = pytest.mark.timeout(120)


def test_one_session_per_thread_and_options_with_the_shared_data_loader() -> None:
    first = session_for({"key": "a", "secret": "b"})
    assert first is session_for({"key": "a", "secret": "b"})  # as fsspec's cached filesystem
    again = session_for({"key": "c", "max_concurrency": 1, "use_listings_cache": False})
    assert again is not first  # another filesystem: its own credentials
    assert again.get_component("data_loader") is first.get_component("data_loader")
    other: list[Any] = []
    thread = threading.Thread(target=lambda: other.append(session_for({"key": "a"})))
    thread.start()
    thread.join()
    assert other[0] is not first  # botocore's sessions are not thread-safe
    assert other[0].get_component("data_loader") is first.get_component("data_loader")


def test_options_of_another_filesystem_resolve_credentials_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One session per thread kept the credentials it first resolved for the thread's life.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))

    def key(options: dict[str, Any]) -> str:
        async def resolve() -> str:
            credentials = await session_for(options).get_credentials()
            return str((await credentials.get_frozen_credentials()).access_key)

        return asyncio.run(resolve())

    (tmp_path / "credentials").write_text("[default]\naws_access_key_id = OLD\naws_secret_access_key = s\n")
    assert key({"endpoint_url": "http://a.invalid"}) == "OLD"
    (tmp_path / "credentials").write_text("[default]\naws_access_key_id = NEW\naws_secret_access_key = s\n")
    assert key({"endpoint_url": "http://a.invalid"}) == "OLD"  # the same filesystem, as fsspec caches it
    assert key({"endpoint_url": "http://b.invalid"}) == "NEW"


def test_sessions_s3fs_would_configure_differently_are_left_to_s3fs() -> None:
    assert session_for({"session": object()}) is None
    assert session_for({"profile": "research"}) is None  # s3fs hands it to the session it makes


def test_aws_data_path_keeps_its_own_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = session_for({}).get_component("data_loader")
    monkeypatch.setenv("AWS_DATA_PATH", "/nonexistent/botocore-data")
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(session_for({})))  # a new thread: a new session
    thread.start()
    thread.join()
    assert result[0].get_component("data_loader") is not shared


def test_s3_options_carry_the_session_and_the_users_own_stays(s3_server: S3Server, s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/store"
    options = resolve_location(url, s3_server.storage_options).fsspec_options()
    assert options["session"] is resolve_location(url, s3_server.storage_options).fsspec_options()["session"]
    assert options["session"].get_component("data_loader") is session_for({}).get_component("data_loader")
    mine = session_for({})  # any object the user passes is theirs to keep
    theirs = resolve_location(url, {**s3_server.storage_options, "session": mine}).fsspec_options()
    assert theirs["session"] is mine


def _child_loader_id(queue: Any, options: dict[str, Any]) -> None:
    session = session_for(options)
    loader = session.get_component("data_loader")
    queue.put((os.getpid(), id(session), id(loader), len(getattr(loader, "_cache", {}))))


def test_a_forked_process_gets_its_own_session_with_the_parents_parsed_files(
    s3_server: S3Server, s3_bucket: str
) -> None:
    sg = StoreGate("zarr", {"output_dir": f"s3://{s3_bucket}/s", "storage_options": s3_server.storage_options}, "d")
    sg.add_data("x", np.arange(10), phase="train")  # the parent parses botocore's files
    parent = session_for({})
    loader = parent.get_component("data_loader")
    queue = multiprocessing.get_context("fork").Queue()
    process = multiprocessing.get_context("fork").Process(target=_child_loader_id, args=(queue, {}))
    process.start()
    pid, session_id, loader_id, cached = queue.get(timeout=60)
    process.join(60)
    assert pid != os.getpid()
    assert session_id != id(parent)
    assert loader_id == id(loader)  # the parent's loader, with what it parsed
    assert cached > 0


def test_dataloader_workers_read_s3_through_the_shared_sessions(s3_server: S3Server, s3_bucket: str) -> None:
    args = {"output_dir": f"s3://{s3_bucket}/s", "storage_options": s3_server.storage_options}
    sg = StoreGate("zarr", args, "d")
    sg.add_data("x", np.arange(600, dtype=np.float32).reshape(300, 2), phase="train")
    sg.add_data("y", np.arange(300), phase="train")
    dataset = StoreGateDataset(sg, "train", "x", "y")
    loader = StoreGateDataLoader(dataset, batch_size=64, shuffle=True, num_workers=2, multiprocessing_context="fork")
    seen = np.concatenate([y.numpy() for _, y in loader])
    assert np.array_equal(np.sort(seen), np.arange(300))


def test_a_dataset_over_a_store_opened_with_the_users_own_session(s3_server: S3Server, s3_bucket: str) -> None:
    # The session s3fs has used is kept as given, and handing the store to a dataset (its
    # reopen arguments) must not deep-copy it either: a used session recursed without end.
    from aiobotocore.session import AioSession

    options = {**s3_server.storage_options, "session": AioSession()}
    sg = StoreGate("zarr", {"output_dir": f"s3://{s3_bucket}/s", "storage_options": options}, "d")
    sg.add_data("x", np.arange(40, dtype=np.float32).reshape(20, 2), phase="train")
    dataset = StoreGateDataset(sg, "train", "x")
    loader = StoreGateDataLoader(dataset, batch_size=8, num_workers=2, multiprocessing_context="fork")
    got = np.concatenate([x.numpy() for x in loader])
    assert np.array_equal(got[np.argsort(got[:, 0])], np.arange(40).reshape(20, 2))  # workers deal runs of batches
    # A session cannot cross into a spawned worker: a storegate error that says so, not pickle's.
    with pytest.raises(InvalidArgumentError, match=r"storage_options\['session'\] must stay in the process"):
        pickle.dumps(dataset)
    spawned = StoreGateDataLoader(dataset, batch_size=8, num_workers=1, multiprocessing_context="spawn")
    with pytest.raises(InvalidArgumentError, match="multiprocessing_context='fork'"):
        next(iter(spawned))
