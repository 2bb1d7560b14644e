"""Compressors (every accepted form, per store and per variable) and the zarrs codec pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec

from storegate import InvalidArgumentError, StoreGate
from storegate.codecs import CODEC_NAMES, DEFAULT_COMPRESSOR, resolve_compressor, v2_compressor, zarrs_available

ROWS = np.arange(600, dtype="f4").reshape(200, 3) % 7  # compressible, so every codec shrinks it


def _stored_codecs(root: Path, var: str = "x", phase: str = "train") -> list[dict[str, Any]]:
    """The bytes-to-bytes codecs as written in the array's zarr.json (not through storegate)."""
    meta = json.loads((root / "d" / phase / var / "zarr.json").read_text())
    codecs = meta["codecs"]
    if codecs[0]["name"] == "sharding_indexed":
        codecs = codecs[0]["configuration"]["codecs"]
    assert codecs[0]["name"] == "bytes"
    return [{"name": c["name"], **c.get("configuration", {})} for c in codecs[1:]]


def _gate(tmp_path: Path, **args: Any) -> StoreGate:
    return StoreGate("zarr", {"output_dir": str(tmp_path), **args}, data_id="d")


def _roundtrip(tmp_path: Path, compressor: object) -> list[dict[str, Any]]:
    sg = _gate(tmp_path, compressor=compressor)
    sg.add_data("x", ROWS)
    reopened = StoreGate("zarr", {"output_dir": str(tmp_path), "mode": "r"}, "d")
    np.testing.assert_array_equal(reopened["train"]["x"][:], ROWS)
    return _stored_codecs(tmp_path)


BLOSC = {"typesize": 4, "blocksize": 0}

NAMED = {
    "none": [],
    "zstd": [{"name": "zstd", "level": 3, "checksum": False}],
    "gzip": [{"name": "gzip", "level": 5}],
    "lz4": [{"name": "blosc", "cname": "lz4", "clevel": 5, "shuffle": "noshuffle", **BLOSC}],
    "blosc-lz4": [{"name": "blosc", "cname": "lz4", "clevel": 5, "shuffle": "shuffle", **BLOSC}],
    "blosc-zstd": [{"name": "blosc", "cname": "zstd", "clevel": 3, "shuffle": "shuffle", **BLOSC}],
}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_codec_is_stored_in_the_array_metadata(tmp_path: Path, name: str) -> None:
    assert _roundtrip(tmp_path, name) == NAMED[name]


def test_every_codec_name_is_covered() -> None:
    assert set(CODEC_NAMES) == {*NAMED, "default"}


def test_default_is_storegates_default_codec_not_zarrs_global(tmp_path: Path) -> None:
    with zarr.config.set({"array.v3_default_compressors.numeric": [{"name": "gzip", "configuration": {"level": 1}}]}):
        assert _roundtrip(tmp_path, "default") == NAMED[DEFAULT_COMPRESSOR]


def test_none_means_no_compression(tmp_path: Path) -> None:
    assert _roundtrip(tmp_path, None) == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"complevel": 4, "complib": "zlib"}, [{"name": "gzip", "level": 4}]),
        (
            {"complevel": 7, "complib": "blosc"},
            [{"name": "blosc", "cname": "blosclz", "clevel": 7, "shuffle": "shuffle", **BLOSC}],
        ),
        (
            {"complevel": 2, "complib": "blosc:lz4"},
            [{"name": "blosc", "cname": "lz4", "clevel": 2, "shuffle": "shuffle", **BLOSC}],
        ),
        (
            {"complevel": 9, "complib": "blosc:zstd"},
            [{"name": "blosc", "cname": "zstd", "clevel": 9, "shuffle": "shuffle", **BLOSC}],
        ),
        ({"complevel": 0, "complib": "zlib"}, []),  # PyTables: level 0 is no compression
        ({"complevel": 0, "complib": "blosc"}, []),
        ({}, []),  # matorage's defaults: complevel 0, complib zlib
        ({"complevel": 3}, [{"name": "gzip", "level": 3}]),
    ],
)
def test_matorage_compressor_dict(tmp_path: Path, spec: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    assert _roundtrip(tmp_path, spec) == expected


def test_codec_objects(tmp_path: Path) -> None:
    assert _roundtrip(tmp_path, ZstdCodec(level=7)) == [{"name": "zstd", "level": 7, "checksum": False}]


def test_list_of_codec_objects(tmp_path: Path) -> None:
    codecs = [BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"), GzipCodec(level=1)]
    assert _roundtrip(tmp_path, codecs) == [
        {"name": "blosc", "cname": "zstd", "clevel": 1, "shuffle": "bitshuffle", **BLOSC},
        {"name": "gzip", "level": 1},
    ]


@pytest.mark.parametrize("complib", ["lzo", "bzip2"])
def test_complib_without_zarr_v3_codec_lists_the_choices(complib: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        resolve_compressor({"complevel": 5, "complib": complib})
    message = str(info.value)
    assert "compressor['complib']" in message
    assert f"Got {complib!r}" in message
    for choice in ("'zlib'", "'blosc'", "'blosc:lz4'", "'blosc:zstd'"):
        assert choice in message
    assert "no zarr v3 codec" in message


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"complevel": 10, "complib": "zlib"}, "compressor['complevel'] must be an int from 0 to 9. Got 10"),
        ({"complevel": -1}, "Got -1"),
        ({"complevel": "5"}, "Got '5'"),
        ({"complevel": True}, "Got True"),
        ({"complevel": 1, "shuffle": True}, "takes the keys 'complevel' and 'complib'"),
        ({"complevel": 1, "complib": "snappy"}, "Got 'snappy'"),
        ("lz5", "Got 'lz5'"),
        ("ZSTD", "Got 'ZSTD'"),
        (5, "Got 5 of type int"),
        (object(), "bytes-to-bytes codec"),
    ],
)
def test_bad_compressor_names_the_argument_and_the_value(spec: object, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError, match="compressor") as info:
        resolve_compressor(spec)
    assert fragment in str(info.value)


def test_numcodecs_compressors_as_multiml_gave_them() -> None:
    import numcodecs
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    assert resolve_compressor(numcodecs.Zstd(level=5)) == (ZstdCodec(level=5),)
    assert resolve_compressor(numcodecs.GZip(level=4)) == (GzipCodec(level=4),)
    (blosc,) = resolve_compressor(numcodecs.Blosc(cname="lz4", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE))
    assert isinstance(blosc, BloscCodec)
    assert (blosc.cname.value, blosc.clevel, blosc.shuffle.value) == ("lz4", 3, "bitshuffle")
    with pytest.raises(InvalidArgumentError, match="numcodecs Zstd, Blosc or GZip"):
        resolve_compressor(numcodecs.LZ4())


# --- zarr v2 equivalents (stores kept in zarr v2) ---------------------------------------------

V2_CONFIGS = {
    "none": None,
    "zstd": {"id": "zstd", "level": 3, "checksum": False},
    "gzip": {"id": "gzip", "level": 5},
    "lz4": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 0, "blocksize": 0},
    "blosc-lz4": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0},
    "blosc-zstd": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 1, "blocksize": 0},
}


@pytest.mark.parametrize("name", list(V2_CONFIGS))
def test_every_codec_name_has_a_numcodecs_equivalent(name: str) -> None:
    codec = v2_compressor(resolve_compressor(name))
    assert (None if codec is None else codec.get_config()) == V2_CONFIGS[name]


def test_v2_equivalents_keep_levels_and_bitshuffle() -> None:
    codec = v2_compressor((BloscCodec(cname="zstd", clevel=7, shuffle="bitshuffle"),))
    assert codec is not None
    assert codec.get_config() == {"id": "blosc", "cname": "zstd", "clevel": 7, "shuffle": 2, "blocksize": 0}
    data = np.arange(1000, dtype="f8")
    assert np.frombuffer(codec.decode(codec.encode(data)), dtype="f8").tolist() == data.tolist()


def test_codecs_without_a_v2_equivalent_are_named() -> None:
    with pytest.raises(InvalidArgumentError, match=r"compressor must have a zarr v2 equivalent .* Got Crc32cCodec"):
        v2_compressor((Crc32cCodec(),))
    with pytest.raises(InvalidArgumentError, match="must be one codec for a zarr v2 store"):
        v2_compressor((ZstdCodec(), GzipCodec()))


def test_bad_store_compressor_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="Got 'lzo'"):
        _gate(tmp_path, compressor={"complevel": 1, "complib": "lzo"})


# --- per variable ----------------------------------------------------------------------------


def test_add_data_compressor_overrides_the_store_for_new_variables(tmp_path: Path) -> None:
    sg = _gate(tmp_path, compressor="gzip")
    sg.add_data("x", ROWS, compressor="blosc-lz4")
    sg.add_data("y", ROWS)
    sg.add_data("z", ROWS, compressor="none")
    assert _stored_codecs(tmp_path, "x") == NAMED["blosc-lz4"]
    assert _stored_codecs(tmp_path, "y") == NAMED["gzip"]
    assert _stored_codecs(tmp_path, "z") == []


def test_appending_keeps_the_codec_of_the_existing_variable(tmp_path: Path) -> None:
    sg = _gate(tmp_path)
    sg.add_data("x", ROWS, compressor="gzip")
    sg.add_data("x", ROWS, compressor="zstd")
    assert _stored_codecs(tmp_path) == NAMED["gzip"]
    np.testing.assert_array_equal(sg.get_data("x"), np.concatenate([ROWS, ROWS]))


def test_add_data_compressor_with_a_phase_split(tmp_path: Path) -> None:
    sg = _gate(tmp_path)
    sg.add_data("x", ROWS, phase=(0.5, 0.25, 0.25), compressor={"complevel": 6, "complib": "zlib"})
    for phase in ("train", "valid", "test"):
        assert _stored_codecs(tmp_path, "x", phase) == [{"name": "gzip", "level": 6}]


def test_create_empty_compressor(tmp_path: Path) -> None:
    sg = _gate(tmp_path)
    sg.create_empty(["a", "b"], (10, 4), compressor="blosc-zstd")
    assert _stored_codecs(tmp_path, "a") == _stored_codecs(tmp_path, "b") == NAMED["blosc-zstd"]
    np.testing.assert_array_equal(sg.get_data("a"), np.zeros((10, 4), "f4"))


def test_bad_per_variable_compressor_changes_nothing(tmp_path: Path) -> None:
    sg = _gate(tmp_path)
    with pytest.raises(InvalidArgumentError, match="Got 'bzip2'"):
        sg.add_data("x", ROWS, phase=(0.5, 0.25, 0.25), compressor={"complevel": 1, "complib": "bzip2"})
    with pytest.raises(InvalidArgumentError, match="Got 'nope'"):
        sg.create_empty("y", (3,), compressor="nope")
    assert sg.get_var_names("all") == []


@pytest.mark.parametrize("backend", ["numpy", "hybrid"])
def test_other_backends_accept_and_check_the_keyword(tmp_path: Path, backend: str) -> None:
    args = {"output_dir": str(tmp_path)} if backend == "hybrid" else None
    sg = StoreGate(backend, args, data_id="d")
    if backend == "hybrid":
        sg.set_mode("numpy")
    sg.add_data("x", ROWS, compressor="gzip")
    sg.create_empty("y", (4, 2), compressor={"complevel": 3, "complib": "blosc"})
    np.testing.assert_array_equal(sg.get_data("x"), ROWS)
    with pytest.raises(InvalidArgumentError, match="Got 'lzo'"):
        sg.add_data("z", ROWS, compressor={"complevel": 1, "complib": "lzo"})


def test_hybrid_zarr_mode_uses_the_compressor(tmp_path: Path) -> None:
    sg = StoreGate("hybrid", {"output_dir": str(tmp_path)}, data_id="d")
    sg.add_data("x", ROWS, compressor="gzip")
    assert _stored_codecs(tmp_path) == NAMED["gzip"]


def test_show_info_names_the_codec(tmp_path: Path) -> None:
    sg = _gate(tmp_path)
    sg.add_data("x", ROWS, compressor="gzip")
    assert sg.backend_object.info("d", "train", "x").codec == "Gzip"


def test_zarr_global_defaults_are_never_changed(tmp_path: Path) -> None:
    before = zarr.config.get("array")
    pipeline = zarr.config.get("codec_pipeline.path")
    for spec in ("gzip", "lz4", None, {"complevel": 3, "complib": "blosc"}):
        _gate(tmp_path / str(spec)[:8], compressor=spec).add_data("x", ROWS)
    assert zarr.config.get("array") == before
    assert zarr.config.get("codec_pipeline.path") == pipeline


# --- the zarrs codec pipeline ---------------------------------------------------------------

needs_zarrs = pytest.mark.skipif(not zarrs_available(), reason="the zarrs extra is not installed")


def _pipeline_of(sg: StoreGate, var: str = "x", phase: str = "train") -> str:
    # Open through a fresh handle: the pipeline is chosen when an array is opened.
    pipeline = sg.backend_object._array(sg.data_id or "", phase, var).async_array.codec_pipeline
    return type(getattr(pipeline, "wrapped", pipeline)).__name__  # inside storegate's chunk check


def test_zarrs_is_installed_here() -> None:
    # The dev extra installs it; the tests below must not silently skip on this machine.
    assert zarrs_available()


@needs_zarrs
@pytest.mark.parametrize("shard_bytes", [None, 4096])
@pytest.mark.parametrize("compressor", ["none", "zstd"])
def test_zarrs_pipeline_per_store(tmp_path: Path, shard_bytes: int | None, compressor: str) -> None:
    fast = _gate(tmp_path / "a", codec_pipeline="zarrs", chunk=16, compressor=compressor, shard_bytes=shard_bytes)
    plain = _gate(tmp_path / "b", chunk=16, compressor=compressor, shard_bytes=shard_bytes)
    for sg in (fast, plain):
        for start in range(0, 200, 37):  # appends of odd sizes across chunk and shard edges
            sg.add_data("x", ROWS[start : start + 37])
    assert _pipeline_of(fast) == "ZarrsCodecPipeline"
    assert _pipeline_of(plain) == "BatchedCodecPipeline"
    assert zarr.config.get("codec_pipeline.path") != "zarrs.ZarrsCodecPipeline"
    reopened = StoreGate("zarr", {"output_dir": str(tmp_path / "a"), "codec_pipeline": "zarrs", "mode": "r"}, "d")
    assert _pipeline_of(reopened) == "ZarrsCodecPipeline"
    for sg in (fast, plain, reopened):
        np.testing.assert_array_equal(sg.get_data("x"), ROWS)
        np.testing.assert_array_equal(sg.get_data("x", index=[199, 3, 100, 3]), ROWS[[199, 3, 100, 3]])
    fast.update_data("x", np.ones((2, 3)), index=[5, 150])
    assert fast.get_data("x", index=150).tolist() == [1, 1, 1]


def test_bad_codec_pipeline(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"codec_pipeline must be one of \('default', 'zarrs'\). Got 'rust'"):
        _gate(tmp_path, codec_pipeline="rust")


_FORK_SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp, sys
    import numpy as np
    from storegate import StoreGate
    from storegate.codecs import force_default_pipeline, zarrs_in_use

    path = sys.argv[1]
    assert not zarrs_in_use()
    sg = StoreGate("zarr", {"output_dir": path, "codec_pipeline": "zarrs", "chunk": 8}, data_id="d")
    sg.add_data("x", np.arange(64.0).reshape(32, 2))
    assert sg.get_data("x").sum() == np.arange(64.0).sum()  # the parent decodes with zarrs
    assert zarrs_in_use()

    def child(queue):
        force_default_pipeline()
        assert not zarrs_in_use()
        reader = StoreGate("zarr", {"output_dir": path, "codec_pipeline": "zarrs", "mode": "r"}, data_id="d")
        pipe = reader.backend_object._array("d", "train", "x").async_array.codec_pipeline.wrapped
        pipe = type(pipe).__name__
        queue.put((pipe, float(reader.get_data("x").sum())))

    queue = mp.get_context("fork").Queue()
    proc = mp.get_context("fork").Process(target=child, args=(queue,))
    proc.start()
    proc.join(60)
    if proc.is_alive():
        proc.kill()
        sys.exit("child hung")
    print(queue.get(timeout=5))
    """
)


@needs_zarrs
@pytest.mark.timeout(120)
def test_force_default_pipeline_makes_a_forked_worker_safe(tmp_path: Path) -> None:
    # In a subprocess: the switch is process-wide and a hang must not take pytest down.
    result = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT, str(tmp_path / "s")], capture_output=True, text=True, timeout=100
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"('BatchedCodecPipeline', {float(np.arange(64.0).sum())})"


_GLOBAL_SCRIPT = textwrap.dedent(
    """
    import zarr
    from storegate.codecs import force_default_pipeline, zarrs_in_use

    zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})  # a user's global choice
    print(zarrs_in_use())
    force_default_pipeline()
    print(zarrs_in_use(), zarr.config.get("codec_pipeline.path"))
    """
)


@needs_zarrs
@pytest.mark.timeout(60)
def test_force_default_pipeline_resets_a_global_zarrs_setting() -> None:
    result = subprocess.run([sys.executable, "-c", _GLOBAL_SCRIPT], capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False", "zarr.core.codec_pipeline.BatchedCodecPipeline"]
