"""The StoreGate facade (storegate.gate): what it owns beyond parsing and delegating.

The whole API runs on every backend in the conformance suite (storegate.testing).
"""

from __future__ import annotations

import re

import pytest

from storegate import InvalidArgumentError, StoreGate
from storegate.backends import Backend


def test_backend_object_and_the_deprecated_store_alias() -> None:
    sg = StoreGate("numpy", data_id="d")
    assert isinstance(sg.backend_object, Backend)
    with pytest.warns(DeprecationWarning, match=re.escape("use StoreGate.backend_object")):
        assert sg.store is sg.backend_object


def test_mode_is_the_backend_name_without_tiers() -> None:
    sg = StoreGate("numpy", data_id="d")
    assert sg.mode == "numpy"
    with pytest.raises(InvalidArgumentError, match=re.escape("set_mode needs backend 'hybrid'. Got backend 'numpy'")):
        sg.set_mode("zarr")
    with pytest.raises(InvalidArgumentError, match="to_memory / to_storage needs backend 'hybrid'"):
        sg.to_memory("x")


def test_every_call_needs_a_data_id() -> None:
    sg = StoreGate("numpy")
    with pytest.raises(InvalidArgumentError, match="data_id must be set before this call"):
        sg.get_var_names()
    assert "data_id=None" in repr(sg)


def test_backend_must_be_a_name() -> None:
    with pytest.raises(InvalidArgumentError, match=re.escape("backend must be a str. Got int")):
        StoreGate(3)  # type: ignore[arg-type]
