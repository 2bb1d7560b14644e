"""storegate.testing: a backend written outside storegate runs the whole conformance suite.

:class:`tests.row_list_backend.RowListBackend` implements only the abstract methods of the
Backend contract, so the suite also checks every default the base class builds on them
(``tests/test_transaction.py`` runs its failure injection on it too).
"""

from __future__ import annotations

from typing import Any

import pytest

from storegate import InvalidArgumentError, StoreGate, available_backends, register_backend
from storegate.testing import BackendConformance
from tests.row_list_backend import RowListBackend


class TestRowListBackend(BackendConformance):
    """The one line a third-party backend needs."""

    backend = "row-list"


def test_the_custom_backend_is_registered() -> None:
    assert "row-list" in available_backends()
    assert type(StoreGate("row-list").backend_object) is RowListBackend


def test_a_subclass_without_backend_says_what_to_set(tmp_path: Any) -> None:
    class TestNothing(BackendConformance):
        pass

    with pytest.raises(TypeError, match="must set backend"):
        TestNothing.sg.__wrapped__(TestNothing(), tmp_path)  # type: ignore[attr-defined]


def test_registering_a_taken_name_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_backend("row-list", "tests.row_list_backend:RowListBackend")
