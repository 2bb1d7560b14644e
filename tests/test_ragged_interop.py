"""Ragged variables beside the other features: a folder of .npy files imported as one, export,
concatenation of stores, xarray / dask, the TensorFlow path and the command line."""

from __future__ import annotations

import functools
import hashlib
import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from storegate import IndexOutOfRangeError, InvalidArgumentError, NotFoundError, StoreGate, ValidationError
from storegate.testing import BACKEND_KINDS, assert_same_snapshot, make_gate, snapshot

pytestmark = pytest.mark.timeout(300)

LENGTHS = [3, 7, 2, 5, 4]
ROWS = [np.arange(n * 2, dtype=np.float32).reshape(n, 2) + i for i, n in enumerate(LENGTHS)]


def _manifest_sha(folder: Path) -> str:
    lines = "".join(f"{f.name}\t{hashlib.sha256(f.read_bytes()).hexdigest()}\n" for f in sorted(folder.glob("*.npy")))
    return hashlib.sha256(lines.encode()).hexdigest()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("files")
    (root / "clips").mkdir()
    for i, row in enumerate(ROWS):
        np.save(root / "clips" / f"{i:03d}.npy", row)
    (root / "clips" / "README.txt").write_text("not a row")
    (root / "empty").mkdir()
    return root


@pytest.fixture(scope="module")
def http_url(clips: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(clips))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _same_rows(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_a_folder_of_npy_files_is_one_ragged_variable(kind: str, clips: Path, tmp_path: Path) -> None:
    sg = make_gate(kind, tmp_path)
    records = sg.import_file(clips / "clips", phase=(0.6, 0.2, 0.2), sha256=_manifest_sha(clips / "clips"))
    _same_rows(sg.get_data("clips", "all"), ROWS)  # files in name order, one row each
    assert sg.get_var_shapes("clips") == (None, 2)
    record = records["train/clips"][0]
    assert (record["format"], record["rows"], record["sha256"]) == ("npy-folder", 3, _manifest_sha(clips / "clips"))
    assert record["bytes"] == sum(f.stat().st_size for f in (clips / "clips").glob("*.npy"))


def test_a_folder_over_http_with_a_wrong_hash_changes_nothing(clips: Path, http_url: str) -> None:
    sg = StoreGate("numpy", data_id="d")
    sg.import_file(f"{http_url}/clips/", "audio", sha256=_manifest_sha(clips / "clips"))
    _same_rows(sg.get_data("audio"), ROWS)
    before = snapshot(sg)
    with pytest.raises(ValidationError, match=r"must have the SHA-256 given.*manifest"):
        sg.import_file(f"{http_url}/clips/", "audio", sha256="1" * 64)
    with pytest.raises(NotFoundError, match="holds none"):
        sg.import_file(clips / "empty", "audio")
    assert_same_snapshot(before, snapshot(sg))


def test_export_writes_a_ragged_variable_as_its_two_arrays(tmp_path: Path) -> None:
    sg = StoreGate("numpy", data_id="d")
    sg.add_data(["audio", "y"], [ROWS, np.arange(5)])
    assert sg.export_file(tmp_path / "out.npz", ["audio"], "train") == ["audio@values", "audio@offsets"]
    with np.load(tmp_path / "out.npz") as npz:
        np.testing.assert_array_equal(npz["audio@offsets"], np.cumsum(LENGTHS))
        np.testing.assert_array_equal(npz["audio@values"], np.concatenate(ROWS))


def test_a_concatenation_of_stores_reads_ragged_rows(tmp_path: Path) -> None:
    a = StoreGate("zarr", {"output_dir": str(tmp_path / "a.zarr")}, data_id="d")
    a.add_data(["audio", "y"], [ROWS[:3], np.arange(3)])
    b = StoreGate("numpy", data_id="d")
    b.add_data(["audio", "y"], [ROWS[3:], np.arange(2)])
    both = a["train"] + b["train"]
    _same_rows(both["audio"][:], ROWS)
    _same_rows(both["audio"][[4, 0]], [ROWS[4], ROWS[0]])
    np.testing.assert_array_equal(both["audio"][3], ROWS[3])
    _same_rows(both.shuffled(2)["audio"][:], [ROWS[i] for i in np.random.default_rng(2).permutation(5)])
    with pytest.raises(InvalidArgumentError, match="tuple are stacked"):
        both[("audio", "y")][:]
    c = StoreGate("numpy", data_id="d")
    c.add_data(["audio", "y"], [np.zeros((2, 3, 2), dtype=np.float32), np.arange(2)])  # fixed rows
    with pytest.raises(ValidationError, match="ragged in every part"):
        (a["train"] + c["train"])["audio"][:]


def test_xarray_and_dask_see_a_ragged_variable_as_its_stored_arrays(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    sg = StoreGate("zarr", {"output_dir": str(path)}, data_id="d")
    sg.add_data(["audio", "y"], [ROWS, np.arange(5)])
    ds = xr.open_zarr(path, group="d/train", consolidated=False)  # values have their own first axis
    assert ds["audio@values"].dims == ("audio_value", "audio_dim_1")
    assert ds["audio@offsets"].dims == ("row",)
    np.testing.assert_array_equal(ds["y"].values, np.arange(5))
    lazy = sg.to_xarray()
    np.testing.assert_array_equal(lazy["audio@offsets"].values, np.cumsum(LENGTHS))
    with pytest.raises(InvalidArgumentError, match=r"ragged variable 'audio'.*to_dask\('audio@values'\)"):
        sg.to_dask("audio")
    np.testing.assert_array_equal(sg.to_dask("audio@values").compute(), np.concatenate(ROWS))


def test_the_tensorflow_path_refuses_a_ragged_variable_naming_the_way_out(tmp_path: Path) -> None:
    from storegate.tensorflow import to_tf_dataset

    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr")}, data_id="d")
    sg.add_data(["audio", "y"], [ROWS, np.arange(5)])
    with pytest.raises(InvalidArgumentError, match=r"ragged variable\(s\) \['audio'\].*collate_fn"):
        to_tf_dataset(sg, "train", "audio", "y")


def test_the_command_line_lists_a_ragged_variable(tmp_path: Path) -> None:
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr")}, data_id="d")
    sg.add_data(["audio", "y"], [ROWS, np.arange(5)])
    cli = str(Path(sys.executable).with_name("storegate"))
    listed = subprocess.run([cli, "ls", str(tmp_path / "s.zarr"), "d", "train"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "audio\tdtype=float32  rows=5  row shape=(None, 2)" in listed.stdout


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_reads_inside_ragged_rows_and_random_windows_on_them(kind: str, tmp_path: Path) -> None:
    from storegate import randslice

    sg = make_gate(kind, tmp_path)
    sg.add_data(["audio", "y"], [ROWS, np.arange(5)], phase=(3, 1, 1))
    np.testing.assert_array_equal(sg["train"]["audio"][1, 2:5], ROWS[1][2:5])  # inside one row
    _same_rows(sg.get_data("audio", "all", index=(slice(None), slice(1, 3), 1)), [r[1:3, 1] for r in ROWS])
    _same_rows(sg["all"]["audio"][[4, 0], ::-1], [ROWS[4][::-1], ROWS[0][::-1]])
    windows = sg.get_data("audio", "all", index=(slice(None), randslice(2, seed=3)))
    for row, window in zip(ROWS, windows, strict=True):  # one window per row, inside that row
        start = int(window[0, 0] - row[0, 0]) // 2
        np.testing.assert_array_equal(window, row[start : start + 2])
    again = sg.get_data("audio", "all", index=(slice(None), randslice(2, seed=3)))
    _same_rows(again, list(windows))  # reproducible by seed
    padded, lengths = sg.get_data("audio", "all", index=(slice(None), slice(0, 4)), batch_mode="pad")
    assert padded.shape == (5, 4, 2)
    assert lengths.tolist() == [min(n, 4) for n in LENGTHS]
    with pytest.raises(InvalidArgumentError, match=r"must fit its axis: it needs 3 positions"):
        sg.get_data("audio", "all", index=(slice(None), randslice(3)))  # a row of 2 cannot hold a window of 3


def test_the_dataset_draws_windows_on_ragged_rows_in_two_workers(tmp_path: Path) -> None:
    import torch
    from torch.utils.data import DataLoader

    from storegate import randslice
    from storegate.torch import StoreGateDataset

    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr")}, data_id="d")
    sg.add_data(["audio", "y"], [ROWS, np.arange(5)])
    dataset = StoreGateDataset(sg, "train", "audio", "y", inner={"audio": (randslice(2, seed=1), 0)})
    crop, label = dataset[1]
    assert crop.shape == (2,)
    torch.manual_seed(0)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, multiprocessing_context="spawn", timeout=90)
    seen = []
    for crops, labels in loader:
        assert crops.shape[1:] == (2,)  # equal windows: the default collate stacks them
        for crop, label in zip(crops, labels, strict=True):
            row = ROWS[int(label)][:, 0]
            start = int(np.flatnonzero(row == float(crop[0]))[0])
            np.testing.assert_array_equal(crop.numpy(), row[start : start + 2])
            seen.append(int(label))
    assert sorted(seen) == list(range(5))
    with pytest.raises(IndexOutOfRangeError, match="Got 5 instead"):
        StoreGateDataset(sg, "train", "audio", "y", inner={"audio": (slice(None), 5)})  # no position 5 on axis 2


def test_a_concat_view_gets_padded_batches_and_answers_in(tmp_path: Path) -> None:
    from storegate.torch import ConcatDataset, StoreGateDataset

    a = StoreGate("numpy", data_id="a")
    a.add_data(["audio", "y"], [ROWS[:3], np.arange(3)])
    b = StoreGate("zarr", {"output_dir": str(tmp_path / "b.zarr")}, data_id="b")
    b.add_data(["audio", "y"], [ROWS[3:], np.arange(2)])
    both = a["train"] + b["train"]
    padded, lengths = both["audio"].get(None, "pad")
    assert padded.shape == (5, 7, 2)
    assert lengths.tolist() == LENGTHS
    assert "audio" in both
    assert "nope" not in both
    dataset = ConcatDataset([StoreGateDataset(a, "train", "audio", "y"), StoreGateDataset(b, "train", "audio", "y")])
    collate = dataset.collate_fn("crop")
    crops, ys = collate([dataset[i] for i in range(5)])
    assert tuple(crops.shape) == (5, 2, 2)
    assert ys.tolist() == [0, 1, 2, 0, 1]


def test_writes_inside_a_ragged_row_are_refused_naming_whole_rows() -> None:
    sg = StoreGate("numpy", data_id="d")
    sg.add_data("r", [np.arange(n, dtype=np.float32) for n in (3, 5, 2)])
    for index in ((slice(None), 0), (1, slice(0, 2))):
        with pytest.raises(InvalidArgumentError, match=r"writes inside a ragged row are not supported.*whole rows"):
            sg["train"]["r"][index] = 9
    sg["train"]["r"][1] = np.ones(4, dtype=np.float32)  # a whole row, of another length
    assert [len(r) for r in sg.get_data("r")] == [3, 4, 2]
