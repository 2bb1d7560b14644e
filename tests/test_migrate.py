"""convert_to_v3: a zarr v2 store (multiml's) becomes zarr v3 in place, checked, or stays as it was."""

from __future__ import annotations

import dataclasses
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.metadata.migrate_v3 as zarr_migrate

import storegate.migrate
from storegate import InvalidArgumentError, NotFoundError, StorageError, StoreGate, ValidationError, convert_to_v3
from tests.v2_stores import DATA_ID, ROWS, Contents, files, metadata_names, write_with_zarr3, write_zarr2_files

pytestmark = pytest.mark.timeout(120)

BUILDERS: dict[str, Callable[[Path], Contents]] = {
    "zarr-python-2-files": write_zarr2_files,
    "zarr3-v2-writer": lambda path: write_with_zarr3(str(path)),
}


@pytest.fixture(params=list(BUILDERS))
def v2_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Contents]:
    path = tmp_path / "multiml.zarr"
    return path, BUILDERS[request.param](path)


def _chunks(found: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in found.items() if not metadata_names([k])}


def test_convert_to_v3_keeps_every_value_and_every_chunk(v2_store: tuple[Path, Contents]) -> None:
    path, data = v2_store
    before = files(path)
    convert_to_v3(str(path), progress=False)
    after = files(path)
    assert metadata_names(after) == {"zarr.json"}  # no v2 metadata left
    assert _chunks(after) == _chunks(before)  # metadata only: no chunk copied or rewritten
    sg = StoreGate("zarr", {"output_dir": str(path)}, data_id=DATA_ID)
    assert sg.backend_object.zarr_format == 3
    for (phase, var), array in data.items():
        np.testing.assert_array_equal(sg.get_data(var, phase), array)
    sg.add_data("x", np.ones((1, 3), dtype=np.float32), phase="test")  # appends work on the converted arrays
    assert len(sg["test"]["x"]) == ROWS["test"] + 1
    assert zarr.open_group(str(path), mode="r").metadata.zarr_format == 3


def test_a_failed_check_leaves_the_store_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_zarr2_files(tmp_path)
    # A missing chunk reads as the fill value: a conversion that got the fill value wrong
    # changes values without any error. The check must catch it.
    (tmp_path / DATA_ID / "train" / "y" / "1").unlink()
    before = files(tmp_path)
    convert = zarr_migrate._convert_array_metadata

    def wrong_fill_value(metadata: Any) -> Any:
        return dataclasses.replace(convert(metadata), fill_value=7)

    monkeypatch.setattr(zarr_migrate, "_convert_array_metadata", wrong_fill_value)
    with pytest.raises(ValidationError, match=r"array 'd/train/y' must read the same .* rows 1000:2000"):
        convert_to_v3(str(tmp_path), progress=False)
    assert files(tmp_path) == before


def test_a_failure_while_removing_v2_metadata_puts_it_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_zarr2_files(tmp_path)
    before = files(tmp_path)

    async def remove_some_then_fail(store: Any, zarr_format: int) -> None:
        await store.delete(".zgroup")
        await store.delete(f"{DATA_ID}/train/x/.zarray")
        raise OSError("the disk went away")

    monkeypatch.setattr(storegate.migrate, "remove_metadata", remove_some_then_fail)
    with pytest.raises(StorageError, match=r"failed \(OSError: the disk went away\). It was left as it was"):
        convert_to_v3(str(tmp_path), progress=False)
    assert files(tmp_path) == before


def test_an_array_zarr_cannot_convert_is_named_before_anything_is_written(tmp_path: Path) -> None:
    write_with_zarr3(str(tmp_path))
    names = zarr.open_group(str(tmp_path), mode="a")[f"{DATA_ID}/train"].create_array("names", shape=(3,), dtype=str)
    names[:] = ["a", "b", "c"]
    before = files(tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"Got array 'd/train/names', which zarr cannot convert"):
        convert_to_v3(str(tmp_path), progress=False)
    assert files(tmp_path) == before


def test_only_a_v2_store_converts(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="must hold a zarr v2 store to convert"):
        convert_to_v3(str(tmp_path / "nothing"), progress=False)
    assert not (tmp_path / "nothing").exists()
    StoreGate("zarr", {"output_dir": str(tmp_path / "v3")}, data_id="d")
    with pytest.raises(InvalidArgumentError, match="holds zarr v3 already"):
        convert_to_v3(str(tmp_path / "v3"), progress=False)
    write_zarr2_files(tmp_path / "mixed")
    zarr.open_group(str(tmp_path / "mixed"), mode="a", zarr_format=3)
    with pytest.raises(InvalidArgumentError, match="holds both zarr v2 and v3 metadata"):
        convert_to_v3(str(tmp_path / "mixed"), progress=False)


def test_v3_metadata_deeper_in_a_v2_store_is_refused(tmp_path: Path) -> None:
    write_zarr2_files(tmp_path)
    (tmp_path / DATA_ID / "train" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    before = files(tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"also holds zarr v3 metadata: \['d/train/zarr.json'\]"):
        convert_to_v3(str(tmp_path), progress=False)
    assert files(tmp_path) == before


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("progress", "terminal", "shown"), [(True, True, True), (True, False, False), (False, True, False)]
)
def test_the_progress_bar_shows_only_when_asked_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, progress: bool, terminal: bool, shown: bool
) -> None:
    write_with_zarr3(str(tmp_path))
    err = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    convert_to_v3(str(tmp_path), progress=progress)
    assert ("checking zarr v3" in err.getvalue()) is shown
