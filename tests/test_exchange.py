"""Import and export of external files (storegate.exchange): from a real HTTP server on
127.0.0.1, the S3 server and local paths; on every backend; through the CLI too."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from storegate import InvalidArgumentError, NotFoundError, StorageError, StoreGate, ValidationError
from storegate.testing import BACKEND_KINDS, assert_same_snapshot, make_gate, snapshot
from tests.conftest import S3Server

pytestmark = pytest.mark.timeout(300)

X = np.arange(40, dtype=np.float32).reshape(10, 4)
Y = np.arange(10) % 3
CSV = "width,height,label\n1.5,2,cat\n3,4,dog\n5.25,6,cat\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file of each format, holding X and Y."""
    root = tmp_path_factory.mktemp("files")
    np.save(root / "x.npy", X)
    np.savez(root / "xy.npz", x=X, y=Y)
    with h5py.File(root / "xy.h5", "w") as f:
        f.create_dataset("inputs/x", data=X)
        f.create_dataset("y", data=Y)
    (root / "table.csv").write_text(CSV)
    (root / "table.tsv").write_text(CSV.replace(",", "\t"))
    (root / "broken.npz").write_bytes(b"not a zip file")
    return root


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def http_url(files: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the files, started for these tests."""
    handler = functools.partial(_QuietHandler, directory=str(files))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_format_from_the_http_server_with_its_hash_checked(files: Path, http_url: str, tmp_path: Path) -> None:
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr")}, data_id="d")
    records = sg.import_file(f"{http_url}/xy.npz", phase=(0.6, 0.2, 0.2), sha256=_sha(files / "xy.npz"))
    np.testing.assert_array_equal(sg.get_data("x", "all"), X)
    np.testing.assert_array_equal(sg.get_data("y", "valid"), Y[6:8])
    assert sorted(records) == ["test/x", "test/y", "train/x", "train/y", "valid/x", "valid/y"]
    record = records["train/x"][0]
    assert record["source"] == f"{http_url}/xy.npz"
    assert record["bytes"] == (files / "xy.npz").stat().st_size
    assert record["sha256"] == _sha(files / "xy.npz")
    assert (record["format"], record["key"], record["rows"]) == ("npz", "x", 6)
    assert sg.get_sources() == records
    sg.import_file(f"{http_url}/xy.h5", {"inputs/x": "hx", "y": "hy"}, "test", sha256=_sha(files / "xy.h5").upper())
    np.testing.assert_array_equal(sg.get_data("hx", "test"), X)
    sg.set_data_id("table")
    sg.import_file(f"{http_url}/table.csv", ["w", "h"], keys=["width", "height"])
    sg.import_file(f"{http_url}/table.tsv", keys=["label"])
    np.testing.assert_array_equal(sg.get_data("w"), [1.5, 3, 5.25])
    np.testing.assert_array_equal(sg.get_data("h"), [2, 4, 6])
    assert sg.get_data("label").tolist() == ["cat", "dog", "cat"]
    sg.set_data_id("npy")
    sg.import_file(f"{http_url}/x.npy")  # a .npy file's stem names its variable
    np.testing.assert_array_equal(sg.get_data("x"), X)


def test_a_wrong_hash_is_refused_and_the_store_is_unchanged(files: Path, http_url: str, tmp_path: Path) -> None:
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr")}, data_id="d")
    sg.import_file(files / "xy.npz")
    before, sources = snapshot(sg), sg.get_sources()
    wrong = "0" * 64
    with pytest.raises(ValidationError, match=f"must have the SHA-256 given, {wrong}.*Nothing was written"):
        sg.import_file(f"{http_url}/xy.npz", sha256=wrong)
    assert_same_snapshot(before, snapshot(sg))
    assert sg.get_sources() == sources
    with pytest.raises(InvalidArgumentError, match="sha256 must be 64 hexadecimal digits"):
        sg.import_file(f"{http_url}/xy.npz", sha256="abc")
    with pytest.raises(NotFoundError, match="keys \\['z'\\] must be in source"):
        sg.import_file(f"{http_url}/xy.npz", keys=["z"])
    with pytest.raises((NotFoundError, StorageError), match=r"nothing\.npz"):
        sg.import_file(f"{http_url}/nothing.npz")
    with pytest.raises(ValidationError, match="must be a valid npz file"):
        sg.import_file(f"{http_url}/broken.npz")
    with pytest.raises(InvalidArgumentError, match="must end in one of"):
        sg.import_file(f"{http_url}/table.txt")
    with pytest.raises(InvalidArgumentError, match="var_names must be None, a str"):
        sg.import_file(files / "xy.npz", "one_name_for_two")
    with pytest.raises(InvalidArgumentError, match="row shape"):  # appending rows of another shape to 'x'
        sg.import_file(files / "xy.h5", {"inputs/x": "y", "y": "x"})
    assert_same_snapshot(before, snapshot(sg))
    assert sg.get_sources() == sources


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_import_is_add_data_plus_its_sources_on_every_backend(kind: str, files: Path, tmp_path: Path) -> None:
    imported = make_gate(kind, tmp_path / "a")
    imported.import_file(files / "xy.npz", phase=(0.5, 0.3, 0.2))
    imported.import_file(files / "xy.npz", phase="test")  # appends, as add_data does
    added = make_gate(kind, tmp_path / "b")
    added.add_data(["x", "y"], [X, Y], phase=(0.5, 0.3, 0.2))
    added.add_data(["x", "y"], [X, Y], phase="test")
    assert_same_snapshot(snapshot(added), snapshot(imported))
    sources = imported.get_sources()
    assert [r["rows"] for r in sources["test/x"]] == [2, 10]
    imported.compile()
    assert imported.get_sources() == sources  # compile keeps them
    imported.delete_data("x", "test")
    assert "test/x" not in imported.get_sources()  # a deleted variable's sources go with it
    assert "test/y" in imported.get_sources()


def test_export_then_import_round_trips(tmp_path: Path) -> None:
    sg = StoreGate("numpy", data_id="d")
    sg.add_data(["x", "y"], [X, Y], phase=(0.6, 0.2, 0.2))
    assert sg.export_file(tmp_path / "all.npz") == ["train/x", "train/y", "valid/x", "valid/y", "test/x", "test/y"]
    with np.load(tmp_path / "all.npz") as npz:
        np.testing.assert_array_equal(npz["valid/x"], X[6:8])
    assert sg.export_file(tmp_path / "test.h5", ["y"], "test") == ["y"]
    with h5py.File(tmp_path / "test.h5", "r") as f:
        np.testing.assert_array_equal(f["y"][()], Y[8:])
    back = StoreGate("numpy", data_id="back")
    back.import_file(tmp_path / "all.npz", {f"{p}/{v}": f"{p}_{v}" for p in ("train", "valid", "test") for v in "xy"})
    np.testing.assert_array_equal(back.get_data("test_y", "test"), Y[8:])  # keys with a phase go to it
    with pytest.raises(InvalidArgumentError, match=r"must end in \.npz, \.h5 or \.hdf5"):
        sg.export_file(tmp_path / "x.csv")
    with pytest.raises(NotFoundError, match="'nope'"):
        sg.export_file(tmp_path / "nope.npz", ["nope"])
    assert not (tmp_path / "nope.npz").exists()  # checked before anything is written


@pytest.mark.s3
def test_import_from_and_export_to_s3(files: Path, s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="in/xy.npz", Body=(files / "xy.npz").read_bytes())
    sg = StoreGate("zarr", {"output_dir": f"s3://{s3_bucket}/store", "storage_options": s3_server.storage_options})
    sg.set_data_id("d")
    options = s3_server.storage_options
    sg.import_file(f"s3://{s3_bucket}/in/xy.npz", storage_options=options, sha256=_sha(files / "xy.npz"))
    np.testing.assert_array_equal(sg.get_data("y"), Y)
    sg.export_file(f"s3://{s3_bucket}/out/train.npz", phase="train", storage_options=options)
    body = s3_server.client().get_object(Bucket=s3_bucket, Key="out/train.npz")["Body"].read()
    with np.load(io.BytesIO(body)) as npz:
        np.testing.assert_array_equal(npz["x"], X)


def test_the_cli_imports_from_http_and_refuses_a_wrong_hash(files: Path, http_url: str, tmp_path: Path) -> None:
    cli = str(Path(sys.executable).with_name("storegate"))
    store = str(tmp_path / "s.zarr")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cli, *args], capture_output=True, text=True, timeout=120, check=False)

    done = run("import", store, "d", f"{http_url}/xy.npz", "--phase", "0.8,0.1,0.1", "--sha256", _sha(files / "xy.npz"))
    assert done.returncode == 0, done.stderr
    assert "imported" in done.stdout
    refused = run("import", store, "d", f"{http_url}/xy.h5", "--sha256", "f" * 64)
    assert refused.returncode == 1
    assert "must have the SHA-256 given" in refused.stderr
    sg = StoreGate("zarr", {"output_dir": store, "mode": "r"}, data_id="d")
    assert sg.get_var_names("all") == ["x", "y"]  # the refused import wrote nothing
    np.testing.assert_array_equal(sg.get_data("x", "all"), X)
    exported = run("export", store, "d", str(tmp_path / "out.h5"), "--phase", "train", "--var", "y")
    assert exported.returncode == 0, exported.stderr
    with h5py.File(tmp_path / "out.h5", "r") as f:
        np.testing.assert_array_equal(f["y"][()], Y[:8])
    bad_phase = run("import", store, "d", f"{http_url}/xy.npz", "--phase", "0.8,x")
    assert bad_phase.returncode == 2


@pytest.mark.parametrize("kind", BACKEND_KINDS)
def test_an_export_of_every_phase_imports_back_as_it_was(kind: str, tmp_path: Path) -> None:
    sg = make_gate(kind, tmp_path / "a")
    sg.add_data(["x", "y"], [X, Y], phase=(0.6, 0.2, 0.2))
    sg.add_data("clip", [np.arange(n, dtype=np.float32) for n in (1, 4, 2, 3, 5, 2)], phase="train")
    sg.add_data("clip", [np.arange(n, dtype=np.float32) for n in (6, 1)], phase="valid")
    sg.add_data("clip", [np.arange(n, dtype=np.float32) for n in (2, 3)], phase="test")
    for suffix in ("npz", "h5"):
        sg.export_file(tmp_path / f"all.{suffix}")
        back = make_gate(kind, tmp_path / f"b-{suffix}", data_id="back")
        records = back.import_file(tmp_path / f"all.{suffix}")  # each key to its phase, ragged pairs folded
        assert sorted(records) == sorted(f"{p}/{v}" for p in ("train", "valid", "test") for v in ("clip", "x", "y"))
        assert_same_snapshot(snapshot(sg), snapshot(back))
        with pytest.raises(InvalidArgumentError, match="phase must be left out"):
            back.import_file(tmp_path / f"all.{suffix}", phase="train")
    sg.export_file(tmp_path / "train.npz", phase="train")
    one = make_gate(kind, tmp_path / "c", data_id="one")
    one.import_file(tmp_path / "train.npz", {"clip": "audio"}, phase="valid")  # rename one key, keep the others
    assert one.get_var_names("valid") == ["audio", "x", "y"]
    assert [len(r) for r in one.get_data("audio", "valid")] == [1, 4, 2, 3, 5, 2]


def test_files_that_do_not_say_what_they_hold_are_refused(tmp_path: Path) -> None:
    sg = StoreGate("numpy", data_id="d")
    (tmp_path / "noheader.csv").write_text("1,2\n3,4\n5,6\n")
    with pytest.raises(ValidationError, match="first row must name the columns"):
        sg.import_file(tmp_path / "noheader.csv")
    (tmp_path / "header-only.csv").write_text("a,b\n")
    with pytest.raises(ValidationError, match="at least one row of data"):
        sg.import_file(tmp_path / "header-only.csv")
    np.savez(tmp_path / "rate.npz", audio=np.zeros((3, 4)), rate=np.array(16000))
    with pytest.raises(InvalidArgumentError, match=r"0-d arrays \['rate'\].*keys=\[\.\.\.\]"):
        sg.import_file(tmp_path / "rate.npz")
    with h5py.File(tmp_path / "rate.h5", "w") as f:
        f.create_dataset("audio", data=np.zeros((3, 4)))
        f.create_dataset("rate", data=16000)
    with pytest.raises(InvalidArgumentError, match=r"0-d arrays \['rate'\]"):
        sg.import_file(tmp_path / "rate.h5")
    sg.import_file(tmp_path / "rate.h5", keys=["audio"])  # left out: fine
    assert sg.get_var_shapes("audio") == (4,)
    assert sg.get_sources()["train/audio"][0]["source"] == str(tmp_path / "rate.h5")  # an absolute path
    (tmp_path / "clips").mkdir()
    np.save(tmp_path / "clips" / "a.npy", np.arange(3))
    with pytest.raises(InvalidArgumentError, match="keys must be left out for a folder"):
        sg.import_file(tmp_path / "clips", keys=["a"])


def test_csv_values_are_never_changed_silently(tmp_path: Path) -> None:
    sg = StoreGate("numpy", data_id="d")
    cases = {
        "empty-field.csv": ("a,b\n1,\n,4\n", ValidationError, "must have a value in every row"),
        "quoted.csv": ('name,n\n"Smith, J",2\n', ValidationError, "no quoted fields"),
        "empty.csv": ("", ValidationError, "it is empty"),
    }
    for name, (text, error, words) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(error, match=words):
            sg.import_file(tmp_path / name)
    (tmp_path / "hash.csv").write_text("\ufefftag,n\n#2,3\nx,4\n")  # a BOM, and '#' as data
    sg.import_file(tmp_path / "hash.csv")
    assert sg.get_var_names() == ["n", "tag"]
    assert sg.get_data("tag").tolist() == ["#2", "x"]


def test_broken_files_and_bad_arguments_are_storegate_errors(tmp_path: Path) -> None:
    sg = StoreGate("numpy", data_id="d")
    np.savez(tmp_path / "ok.npz", x=X)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:100])
    (tmp_path / "empty.npy").write_bytes(b"")
    np.savez(tmp_path / "none.npz")
    for name, words in (
        ("cut.npz", "must be a valid npz"),
        ("empty.npy", "must be a valid npy"),
        ("none.npz", "at least one array"),
    ):
        with pytest.raises(ValidationError, match=words):
            sg.import_file(tmp_path / name)
    with pytest.raises(InvalidArgumentError, match="keys must be a list of distinct"):
        sg.import_file(tmp_path / "ok.npz", keys="x")
    with pytest.raises(InvalidArgumentError, match="keys must be a list of distinct"):
        sg.import_file(tmp_path / "ok.npz", keys=["x", "x"])
    (tmp_path / "mixed").mkdir()
    np.save(tmp_path / "mixed" / "a.npy", np.array([2**60 + 1]))
    np.save(tmp_path / "mixed" / "b.npy", np.arange(4, dtype=np.float16))
    with pytest.raises(InvalidArgumentError, match=r"would lose values.*Convert the rows"):
        sg.import_file(tmp_path / "mixed")  # int64 and float16 meet in float64: 2**60 + 1 would round
    assert sg.get_var_names() == []
    sg.add_data("x", X)
    with pytest.raises(InvalidArgumentError, match="fsspec URL"):
        sg.export_file("nosuchproto://a/b.npz")


def test_a_failed_export_leaves_an_earlier_file_as_it_was(tmp_path: Path) -> None:
    sg = StoreGate("numpy", data_id="d")
    sg.add_data(["x", "when"], [X, np.array(["a"] * 10)])  # HDF5 cannot hold numpy's unicode strings
    (tmp_path / "out.h5").write_bytes(b"an earlier file")
    with pytest.raises(StorageError, match="an earlier file there was left as it was"):
        sg.export_file(tmp_path / "out.h5")
    assert (tmp_path / "out.h5").read_bytes() == b"an earlier file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]  # no scratch file left
    sg.export_file(tmp_path / "out.h5", ["x"])  # replaced whole once it succeeds
    with h5py.File(tmp_path / "out.h5", "r") as f:
        np.testing.assert_array_equal(f["train/x"][()], X)
