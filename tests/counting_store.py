"""A zarr store that records the key of every get: which chunks a read touched."""

from __future__ import annotations

from typing import Any

from zarr.storage import WrapperStore


class CountingStore(WrapperStore[Any]):
    """A zarr store that records the key of every get (in :attr:`keys`)."""

    def __init__(self, store: Any, keys: list[str] | None = None) -> None:
        super().__init__(store)
        self.keys: list[str] = [] if keys is None else keys

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        self.keys.append(key)
        return await super().get(key, prototype, byte_range)

    def _with_store(self, store: Any) -> CountingStore:
        return CountingStore(store, self.keys)


def chunk_keys(keys: list[str]) -> list[str]:
    """The chunk keys among ``keys`` (zarr v3's ``.../c/...``), in the order read, repeats kept."""
    return [k for k in keys if "/c/" in k]
