"""The ``storegate`` command, run for real in a subprocess: against a folder and the S3 server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from storegate import StoreGate
from storegate.transfer import copy_store
from tests.conftest import S3Server
from tests.v2_stores import DATA_ID, write_zarr2_files

pytestmark = pytest.mark.timeout(300)

CLI = str(Path(sys.executable).with_name("storegate"))
X = np.arange(60, dtype=np.float32).reshape(20, 3)
Y = np.arange(20) % 4


def run(*args: str, console_script: bool = True) -> subprocess.CompletedProcess[str]:
    command = [CLI, *args] if console_script else [sys.executable, "-m", "storegate", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _store(path: Path | str, storage_options: dict[str, object] | None = None) -> StoreGate:
    sg = StoreGate("zarr", {"output_dir": str(path), "storage_options": storage_options, "chunk": 8}, data_id="d1")
    sg.add_data(["x", "y"], [X, Y], phase=(0.5, 0.25, 0.25))
    sg.compile()
    sg.set_data_id("d2")
    sg.add_data("z", np.ones((5, 2, 2)), phase="test")
    return sg


def _s3_args(s3_server: S3Server) -> list[str]:
    return ["-o", f"key={s3_server.key}", "-o", f"secret={s3_server.secret}",
            "-o", f"client_kwargs.endpoint_url={s3_server.endpoint_url}"]  # fmt: skip


def test_help_and_version_and_python_dash_m() -> None:
    shown = run("--help")
    assert shown.returncode == 0
    for word in ("ls", "info", "verify", "migrate", "cp", "Examples:"):
        assert word in shown.stdout
    assert run("--version").stdout.strip().endswith("0.1.0")
    assert run("verify", "--help", console_script=False).returncode == 0


def test_ls_and_info_of_a_folder(tmp_path: Path) -> None:
    _store(tmp_path / "s.zarr")
    store = str(tmp_path / "s.zarr")
    assert run("ls", store).stdout.split() == ["d1", "d2"]
    assert json.loads(run("ls", store, "--json").stdout) == ["d1", "d2"]
    phases = json.loads(run("ls", store, "d1", "--json").stdout)
    assert phases == {
        "train": {"rows": 10, "var_names": ["x", "y"]},
        "valid": {"rows": 5, "var_names": ["x", "y"]},
        "test": {"rows": 5, "var_names": ["x", "y"]},
    }
    variables = json.loads(run("ls", store, "d1", "train", "--json").stdout)
    assert variables == {
        "x": {"dtype": "float32", "rows": 10, "row shape": [3]},
        "y": {"dtype": "int64", "rows": 10, "row shape": []},
    }
    info = json.loads(run("info", store, "--json").stdout)
    assert info["d1"]["metadata"]["compiled"] is True
    assert info["d1"]["metadata"]["sizes"]["train"] == 10
    rows = {(r["phase"], r["var_name"]): r for r in info["d1"]["variables"]}
    assert rows[("train", "x")]["rows"] == 10
    assert rows[("train", "x")]["chunk rows"] == 8
    assert rows[("train", "x")]["row shape"] == [3]
    assert [r["var_name"] for r in info["d2"]["variables"]] == ["z"]
    text = run("info", store, "d2").stdout
    assert "data_id='d2'" in text
    assert "(2, 2)" in text


def test_errors_are_one_line_and_exit_1_or_2(tmp_path: Path) -> None:
    missing = run("ls", str(tmp_path / "nothing"))
    assert missing.returncode == 1
    assert missing.stderr.startswith("storegate: error: ")
    assert "Traceback" not in missing.stderr
    assert not (tmp_path / "nothing").exists()  # a read never creates a store
    _store(tmp_path / "s.zarr")
    unknown = run("ls", str(tmp_path / "s.zarr"), "nope")
    assert unknown.returncode == 1
    assert "data_id 'nope' does not exist" in unknown.stderr
    assert "['d1', 'd2']" in unknown.stderr
    bad_phase = run("ls", str(tmp_path / "s.zarr"), "d1", "training")
    assert bad_phase.returncode == 2  # a bad command line
    bad_option = run("ls", str(tmp_path / "s.zarr"), "-o", "novalue")
    assert bad_option.returncode == 2
    assert "KEY=VALUE" in bad_option.stderr
    bad_json = run("ls", str(tmp_path / "s.zarr"), "--storage-options", "[1]")
    assert bad_json.returncode == 2
    assert "JSON object" in bad_json.stderr


def test_verify_exits_1_on_a_damaged_chunk_and_names_it(tmp_path: Path) -> None:
    _store(tmp_path / "s.zarr")
    store = str(tmp_path / "s.zarr")
    ok = run("verify", store, "--json")
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["d1"] == {"ok": True, "compiled": True, "findings": []}
    (tmp_path / "s.zarr" / "d1" / "train" / "x" / "c" / "0" / "0").write_bytes(b"not zstd")
    bad = run("verify", store)
    assert bad.returncode == 1
    assert "d1/train/x" in bad.stdout
    assert run("verify", store, "d2").returncode == 0  # only the data_ids asked for
    assert run("verify", store, "--no-read-data").returncode == 0  # metadata alone are fine


def test_migrate_converts_a_multiml_v2_store(tmp_path: Path) -> None:
    contents = write_zarr2_files(tmp_path / "old")
    done = run("migrate", str(tmp_path / "old"))
    assert done.returncode == 0, done.stderr
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "old"), "mode": "r"}, data_id=DATA_ID)
    assert sg.backend_object.zarr_format == 3  # type: ignore[attr-defined]
    for (phase, var), array in contents.items():
        np.testing.assert_array_equal(sg.get_data(var, phase), array)
    root = zarr.open_group(str(tmp_path / "old"), mode="r")
    assert root[f"{DATA_ID}/train/x"].metadata.dimension_names == ("row", "x_dim_1")  # for xarray
    again = run("migrate", str(tmp_path / "old"))
    assert again.returncode == 0  # already up to date: nothing written
    assert "is up to date" in again.stdout


@pytest.mark.s3
def test_cp_a_folder_to_s3_and_back_keeps_data_and_metadata(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    _store(tmp_path / "s.zarr")
    url = f"s3://{s3_bucket}/copy"
    options = json.dumps(s3_server.storage_options)
    up = run("cp", str(tmp_path / "s.zarr"), url, "--dst-options", options)
    assert up.returncode == 0, up.stderr
    assert "copied 2 data_id(s)" in up.stdout
    assert json.loads(run("verify", url, *_s3_args(s3_server), "--json").stdout)["d1"]["ok"]
    down = run("cp", url, str(tmp_path / "back.zarr"), "--src-options", options, "--data-id", "d1")
    assert down.returncode == 0, down.stderr
    back = StoreGate("zarr", {"output_dir": str(tmp_path / "back.zarr"), "mode": "r"}, data_id="d1")
    assert back.get_data_ids() == ["d1"]
    np.testing.assert_array_equal(back.get_data("x", "all"), X)
    np.testing.assert_array_equal(back.get_data("y", "valid"), Y[10:15])
    assert back.get_metadata()["compiled"] is True  # the compile state came along
    assert back.backend_object.info("d1", "train", "x").chunk_rows == 8  # and the chunk layout
    assert not list((tmp_path / "back.zarr").glob(".storegate/locks/*"))  # locks are not copied


def test_cp_refuses_a_destination_that_holds_anything_and_leaves_it(tmp_path: Path) -> None:
    _store(tmp_path / "s.zarr")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "notes.txt").write_text("mine")
    refused = run("cp", str(tmp_path / "s.zarr"), str(tmp_path / "dst"))
    assert refused.returncode == 1
    assert "must be an empty location" in refused.stderr
    assert [p.name for p in (tmp_path / "dst").iterdir()] == ["notes.txt"]
    unknown = run("cp", str(tmp_path / "s.zarr"), str(tmp_path / "new"), "--data-id", "nope")
    assert unknown.returncode == 1
    assert "['nope'] do not exist" in unknown.stderr
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


@pytest.mark.s3
def test_cp_to_a_missing_bucket_fails_with_one_line(tmp_path: Path, s3_server: S3Server) -> None:
    _store(tmp_path / "s.zarr")
    options = json.dumps(s3_server.storage_options)
    failed = run("cp", str(tmp_path / "s.zarr"), "s3://no-such-bucket-for-cp/copy", "--dst-options", options)
    assert failed.returncode == 1
    assert failed.stderr.startswith("storegate: error: ")
    assert "no-such-bucket-for-cp" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_a_cp_that_fails_midway_removes_what_it_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _store(tmp_path / "s.zarr")
    original, calls = LocalStore.set, []

    async def failing_set(self: LocalStore, key: str, value: Any) -> None:
        calls.append(key)
        if len(calls) == 9 and str(self.root).endswith("dst"):
            raise OSError(28, "No space left on device")
        await original(self, key, value)

    monkeypatch.setattr(LocalStore, "set", failing_set)
    with pytest.raises(OSError, match="No space left"):
        copy_store(tmp_path / "s.zarr", tmp_path / "dst", progress=False)
    assert len(calls) >= 9
    assert [p for p in (tmp_path / "dst").rglob("*") if p.is_file()] == []  # every object written was removed
    monkeypatch.undo()
    copy_store(tmp_path / "s.zarr", tmp_path / "dst", progress=False)  # the empty destination takes a copy later
    again = StoreGate("zarr", {"output_dir": str(tmp_path / "dst"), "mode": "r"}, data_id="d1")
    np.testing.assert_array_equal(again.get_data("x", "all"), X)


def test_cp_refuses_a_destination_inside_the_source(tmp_path: Path) -> None:
    _store(tmp_path / "s.zarr")
    for destination in (tmp_path / "s.zarr", tmp_path / "s.zarr" / "inner"):
        refused = run("cp", str(tmp_path / "s.zarr"), str(destination))
        assert refused.returncode == 1
        assert "must lie outside the source store" in refused.stderr
    assert run("ls", str(tmp_path / "s.zarr")).stdout.split() == ["d1", "d2"]  # no stray data_id


def test_a_failed_import_leaves_no_store_and_no_data_id_behind(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", X)
    new_store = tmp_path / "new.zarr"
    failed = run("import", str(new_store), "d", str(tmp_path / "x.npy"), "--sha256", "0" * 64)
    assert failed.returncode == 1
    assert not new_store.exists()  # the store it would have created is not there
    _store(tmp_path / "s.zarr")
    failed = run("import", str(tmp_path / "s.zarr"), "fresh", str(tmp_path / "missing.npy"))
    assert failed.returncode == 1
    assert run("ls", str(tmp_path / "s.zarr")).stdout.split() == ["d1", "d2"]  # no empty data_id 'fresh'


def test_ls_of_a_data_id_whose_phase_disagrees_in_length_still_lists(tmp_path: Path) -> None:
    sg = _store(tmp_path / "s.zarr")
    sg.set_data_id("d1")
    sg.add_data("z", np.zeros(3), phase="train")  # train: x, y have 10 rows, z 3
    listed = run("ls", str(tmp_path / "s.zarr"), "d1", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["train"] == {"rows": None, "var_names": ["x", "y", "z"]}


def test_verify_names_an_unfinished_copy(tmp_path: Path) -> None:
    _store(tmp_path / "s.zarr")
    assert run("cp", str(tmp_path / "s.zarr"), str(tmp_path / "copy.zarr")).returncode == 0
    assert not (tmp_path / "copy.zarr" / ".storegate" / "unfinished-copy.json").exists()  # removed once done
    assert run("verify", str(tmp_path / "copy.zarr")).returncode == 0
    # What a copy killed midway leaves: its note, written first and removed last.
    (tmp_path / "copy.zarr" / ".storegate" / "unfinished-copy.json").write_text('{"copy_of": "s.zarr"}')
    found = run("verify", str(tmp_path / "copy.zarr"))
    assert found.returncode == 1
    assert "an unfinished copy" in found.stdout
