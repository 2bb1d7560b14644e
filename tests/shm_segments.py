"""Shared-memory segments of storegate's shared chunk cache, and a fixture that none leaks."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from storegate.shared_cache import NAME_PREFIX, SHM_DIR


def segments() -> set[str]:
    """The names of the cache's segments in /dev/shm now."""
    return {p.name for p in SHM_DIR.glob(f"{NAME_PREFIX}*")}


@pytest.fixture(autouse=True)
def no_leak() -> Iterator[None]:
    """Every segment a test made is gone once it ends (imported by the modules that use it)."""
    before = segments()
    yield
    gc.collect()
    assert segments() == before
