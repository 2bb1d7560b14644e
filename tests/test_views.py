"""Views behind the item syntax ``sg[phase][var_names][index]`` (storegate.views).

The item syntax itself runs on every backend in the conformance suite (ItemSyntaxTests);
here what is the views' own: a view never changes once made.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from storegate import StoreGate
from storegate.testing import BACKEND_KINDS, make_gate


@pytest.fixture(params=BACKEND_KINDS)
def sg(request: pytest.FixtureRequest, tmp_path: Path) -> StoreGate:
    return make_gate(request.param, tmp_path)


def test_views_are_immutable(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(10), phase=(0.7, 0.2, 0.1))
    sg.add_data("y", np.arange(10) + 100, phase=(0.7, 0.2, 0.1))
    a = sg["train"]
    b = sg["test"]
    np.testing.assert_array_equal(a["x"][:], np.arange(7))
    np.testing.assert_array_equal(b["x"][:], [9])
    ax = a["x"]
    ay = a["y"]
    np.testing.assert_array_equal(ay[:], np.arange(7) + 100)
    np.testing.assert_array_equal(ax[:], np.arange(7))
    with pytest.raises(AttributeError):
        a.phase = "test"  # type: ignore[misc]


def test_view_keeps_its_data_id(sg: StoreGate) -> None:
    sg.add_data("x", np.arange(3))
    view = sg["train"]["x"]
    sg.set_data_id("other")
    sg.add_data("x", np.arange(5))
    np.testing.assert_array_equal(view[:], np.arange(3))
