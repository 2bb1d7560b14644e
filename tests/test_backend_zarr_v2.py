"""The zarr backend on zarr v2 stores (as multiml wrote them): they open, read and grow in
their own format, never as a mixed v2 / v3 store, and refuse what v2 cannot hold.

Stores are built two ways (``tests/v2_stores.py``): file by file as zarr-python 2 wrote
them, and with zarr-python 3's v2 writer. The conversion to v3 is tested in test_migrate.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import GzipCodec, ZstdCodec

from storegate import InvalidArgumentError, StoreGate
from storegate.testing import MIXINS, GetDataIndexTests
from tests.v2_stores import DATA_ID, ROWS, Contents, files, metadata_names, write_with_zarr3, write_zarr2_files

pytestmark = pytest.mark.timeout(120)

BUILDERS: dict[str, Callable[[Path], Contents]] = {
    "zarr-python-2-files": write_zarr2_files,
    "zarr3-v2-writer": lambda path: write_with_zarr3(str(path)),
}


@pytest.fixture(params=list(BUILDERS))
def v2_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Contents]:
    """A multiml store on disk and what it holds."""
    path = tmp_path / "multiml.zarr"
    return path, BUILDERS[request.param](path)


def _open(path: Path, mode: str, **args: object) -> StoreGate:
    return StoreGate("zarr", {"output_dir": str(path), "mode": mode, **args}, data_id=DATA_ID)


def _zarray(path: Path, phase: str, var: str) -> dict[str, object]:
    return json.loads((path / DATA_ID / phase / var / ".zarray").read_text())  # type: ignore[no-any-return]


# --- reading -----------------------------------------------------------------------------


def test_mode_r_reads_a_v2_store_as_it_is(v2_store: tuple[Path, Contents]) -> None:
    path, data = v2_store
    before = files(path)
    sg = _open(path, "r")
    assert sg.get_data_ids() == [DATA_ID]
    assert sg.backend_object.zarr_format == 2
    assert sg.backend_object.location.endswith("(zarr v2)")
    for phase in ROWS:
        assert sg.get_var_names(phase) == ["x", "y"]
        np.testing.assert_array_equal(sg.get_data("x", phase), data[(phase, "x")])
        np.testing.assert_array_equal(sg[phase]["y"][-3:], data[(phase, "y")][-3:])
    np.testing.assert_array_equal(sg.get_data("y", "all"), np.concatenate([data[(p, "y")] for p in ROWS]))
    meta = sg.get_metadata()
    assert meta["sizes"] == {**ROWS, "all": sum(ROWS.values())}
    assert not meta["compiled"]  # multiml kept no compile state in the store
    assert sg.backend_object.info(DATA_ID, "train", "x").codec == "Blosc"
    assert files(path) == before


# --- writing in v2 ------------------------------------------------------------------------


def test_mode_a_grows_the_store_in_v2_only(v2_store: tuple[Path, Contents]) -> None:
    path, data = v2_store
    sg = _open(path, "a")
    more = np.full((600, 3), 7, dtype=np.float32)  # across the chunk edge at 3000 rows
    sg.add_data(["x", "y"], [more, np.arange(600)], phase="train")
    sg.add_data("z", np.arange(200.0), phase="test", compressor="lz4")
    sg.create_empty("e", (300, 2), phase="valid", dtype="u1")
    sg.compile()
    sg.set_data_id("new")
    sg.add_data("w", np.ones(4), phase="train")

    assert metadata_names(files(path)) <= {".zgroup", ".zarray", ".zattrs"}  # no zarr.json anywhere
    assert _zarray(path, "test", "z")["compressor"] == {
        "id": "blosc",
        "cname": "lz4",
        "clevel": 5,
        "shuffle": 0,
        "blocksize": 0,
    }
    assert _zarray(path, "train", "x")["shape"] == [3100, 3]
    assert (path / DATA_ID / "train" / "x" / "3.0").is_file()  # v2 chunk keys
    # Plain zarr reads it as v2, with everything storegate added.
    plain = zarr.open_group(str(path), mode="r")
    assert plain.metadata.zarr_format == 2
    np.testing.assert_array_equal(plain[f"{DATA_ID}/train/x"][2500:], more)
    np.testing.assert_array_equal(plain[f"{DATA_ID}/train/x"][:2500], data[("train", "x")])
    reader = _open(path, "r")
    assert reader.get_metadata()["compiled"]  # the state lives in the v2 group's .zattrs
    np.testing.assert_array_equal(reader.get_data("z", "test"), np.arange(200.0))
    assert sorted(reader.get_data_ids()) == [DATA_ID, "new"]


@pytest.mark.parametrize(
    ("spec", "config"),
    [
        ("default", {"id": "zstd", "level": 3}),
        ("gzip", {"id": "gzip", "level": 5}),
        ({"complevel": 4, "complib": "blosc:zstd"}, {"id": "blosc", "cname": "zstd", "clevel": 4, "shuffle": 1}),
        (None, None),
    ],
)
def test_new_arrays_get_the_equivalent_numcodecs_compressor(
    tmp_path: Path, spec: object, config: dict[str, object] | None
) -> None:
    write_with_zarr3(str(tmp_path))
    sg = _open(tmp_path, "a", compressor=spec)
    sg.add_data("n", np.arange(100, dtype="i4"), phase="valid")
    found = _zarray(tmp_path, "valid", "n")["compressor"]
    if config is None:
        assert found is None
    else:
        assert isinstance(found, dict)
        assert {k: found.get(k) for k in config} == config
    np.testing.assert_array_equal(sg.get_data("n", "valid"), np.arange(100))


# --- what v2 cannot hold -----------------------------------------------------------------


def test_shard_bytes_is_refused_before_anything_is_written(v2_store: tuple[Path, Contents]) -> None:
    path, _ = v2_store
    before = files(path)
    with pytest.raises(InvalidArgumentError, match=r"shard_bytes must be None for the zarr v2 store .*convert_to_v3"):
        _open(path, "a", shard_bytes=1 << 20)
    assert files(path) == before


def test_a_codec_zarr_v2_cannot_hold_is_refused(v2_store: tuple[Path, Contents]) -> None:
    path, _ = v2_store
    before = files(path)
    two = [ZstdCodec(), GzipCodec()]  # a v2 array has one compressor
    with pytest.raises(InvalidArgumentError, match="compressor must be one codec for a zarr v2 store"):
        _open(path, "a", compressor=two)
    sg = _open(path, "a")
    with pytest.raises(InvalidArgumentError, match=r"one codec for a zarr v2 store .*Got 2 codecs"):
        sg.add_data("new", np.arange(3), phase="train", compressor=two)
    assert files(path) == before
    assert sg.get_var_names("train") == ["x", "y"]


# --- never a mixed store -----------------------------------------------------------------


def test_a_mixed_store_is_refused_and_mode_w_replaces_it(v2_store: tuple[Path, Contents]) -> None:
    path, _ = v2_store
    zarr.open_group(str(path), mode="a", zarr_format=3)  # what storegate before this fix did: zarr.json beside .zgroup
    before = files(path)
    for mode in ("r", "a"):
        with pytest.raises(InvalidArgumentError, match=r"holds both zarr v2 \(.zgroup\) and zarr v3 \(zarr.json\)"):
            _open(path, mode)
    assert files(path) == before
    fresh = _open(path, "w")
    assert fresh.backend_object.zarr_format == 3
    assert fresh.get_var_names("train") == []
    assert metadata_names(files(path)) == {"zarr.json"}


def test_a_consolidated_v2_store_reads_what_is_there_and_refuses_mode_a(tmp_path: Path) -> None:
    write_with_zarr3(str(tmp_path))
    zarr.consolidate_metadata(str(tmp_path))
    # Another tool adds an array without consolidating again: .zmetadata is stale now.
    zarr.open_group(str(tmp_path), mode="a", use_consolidated=False)[f"{DATA_ID}/test"].create_array(
        "late", shape=(200,), dtype="i8"
    )
    assert _open(tmp_path, "r").get_var_names("test") == ["late", "x", "y"]
    before = files(tmp_path)
    with pytest.raises(
        InvalidArgumentError, match=r"mode must be 'r' for a store with consolidated metadata.*\.zmetadata"
    ):
        _open(tmp_path, "a")
    assert files(tmp_path) == before


# --- the conformance suite on a v2 store ---------------------------------------------------


class TestZarrV2Store(*(m for m in MIXINS if m is not GetDataIndexTests)):
    """Every operation (writes, undo, transforms...) on a v2 store, which must stay v2 throughout.

    GetDataIndexTests is left out: it checks the facade's index forms, the same code for every
    zarr store (test_backend_zarr.py runs it).
    """

    @pytest.fixture
    def sg(self, tmp_path: Path) -> Iterator[StoreGate]:
        path = tmp_path / "v2.zarr"
        zarr.open_group(str(path), mode="w", zarr_format=2)
        yield StoreGate("zarr", {"output_dir": str(path)}, data_id="conf")
        assert "zarr.json" not in metadata_names(files(path))
