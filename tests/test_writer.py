"""The streaming writer (matorage's DataSaver): StoreGate.writer()."""

from __future__ import annotations

import gc
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr
from zarr.core.buffer import Buffer

from storegate import ConflictError, InvalidArgumentError, ReadOnlyError, StoreGate, StoreGateError, StoreGateWarning
from storegate.backends import TieredBackend


class CountingStore(zarr.storage.MemoryStore):
    """A memory store that counts writes per chunk key and can fail the n-th chunk write."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.writes: Counter[str] = Counter()
        self.fail_at = fail_at

    async def set(self, key: str, value: Buffer) -> None:
        if "/c/" in key:
            self.writes[key] += 1
            if self.fail_at is not None and sum(self.writes.values()) == self.fail_at:
                raise OSError("disk full (simulated)")
        await super().set(key, value)


class Boom(Exception):
    pass


def _batches(k: int, b: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(b, 3)).astype("f4"), "y": rng.integers(0, 9, size=b)} for _ in range(k)]


def _write(sg: StoreGate, batches: list[dict[str, np.ndarray]], raise_at: int | None = None) -> None:
    """Add the batches in one writer block; raise Boom in the block before batch ``raise_at``."""
    with sg.writer() as w:
        for i, batch in enumerate(batches):
            if i == raise_at:
                raise Boom
            w.add(batch)


def _joined(batches: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
    return np.concatenate([b[key] for b in batches])


@pytest.fixture(params=["numpy", "zarr", "hybrid-zarr", "hybrid-numpy", "zarr-sharded"])
def sg(request: pytest.FixtureRequest, tmp_path: Path) -> StoreGate:
    name = request.param
    if name == "numpy":
        return StoreGate("numpy", data_id="w")
    args: dict[str, Any] = {"output_dir": str(tmp_path / "s"), "chunk": 16}
    if name == "zarr-sharded":
        args["shard_bytes"] = 16 * 3 * 4 * 3
    gate = StoreGate("hybrid" if name.startswith("hybrid") else "zarr", args, data_id="w")
    if name == "hybrid-numpy":
        gate.set_mode("numpy")
    return gate


def test_k_small_appends_equal_one_big_one(sg: StoreGate) -> None:
    batches = _batches(23, 7)
    with sg.writer(phase="train") as w:
        for batch in batches:
            w.add(batch)
        assert w.rows_added == 23 * 7
    np.testing.assert_array_equal(sg.get_data("x"), _joined(batches, "x"))
    np.testing.assert_array_equal(sg.get_data("y"), _joined(batches, "y"))
    assert sg.get_data("x").dtype == np.float32
    assert len(sg["train"]) == 23 * 7


def test_appends_to_existing_variables(sg: StoreGate) -> None:
    first = _batches(1, 21, seed=1)[0]
    sg.add_data(["x", "y"], [first["x"], first["y"]], phase="valid")
    batches = _batches(9, 5, seed=2)
    with sg.writer(phase="valid") as w:
        for batch in batches:
            w(batch)  # matorage's call form
    np.testing.assert_array_equal(sg.get_data("x", "valid"), np.concatenate([first["x"], _joined(batches, "x")]))
    np.testing.assert_array_equal(sg.get_data("y", "valid"), np.concatenate([first["y"], _joined(batches, "y")]))


def test_torch_tensors(sg: StoreGate) -> None:
    with sg.writer("test") as w:
        for i in range(5):
            w.add({"x": torch.full((4, 3), float(i)), "y": torch.arange(4)})
    assert sg.get_data("x", "test").dtype == np.float32
    np.testing.assert_array_equal(sg.get_data("x", "test")[:, 0], np.repeat(np.arange(5.0), 4))
    np.testing.assert_array_equal(sg.get_data("y", "test"), np.tile(np.arange(4), 5))


def test_the_callers_arrays_may_be_reused(sg: StoreGate) -> None:
    buffer = np.zeros((4, 3), "f4")
    with sg.writer() as w:
        for i in range(6):
            buffer[:] = i  # DataSaver users refill one buffer
            w.add({"x": buffer, "y": np.full(4, i)})
    np.testing.assert_array_equal(sg.get_data("x")[:, 0], np.repeat(np.arange(6.0), 4))


def test_block_that_raises_leaves_the_store_as_before(sg: StoreGate, monkeypatch: pytest.MonkeyPatch) -> None:
    # The writer is one transaction: rows it flushed before the error are taken back too.
    first = _batches(1, 5, seed=9)[0]
    sg.add_data(["x", "y"], [first["x"], first["y"]])
    before = (sg.get_data("x"), sg.get_data("y"))
    appended: list[int] = []
    backend = sg.backend_object
    if isinstance(backend, TieredBackend):  # a writer writes to the tier it opened in
        backend = backend.tiers()[backend.tier]
    original = backend.append
    monkeypatch.setattr(backend, "append", lambda *a: appended.append(len(a[3])) or original(*a))
    batches = _batches(40, 3, seed=3)
    with pytest.raises(Boom):
        _write(sg, batches, raise_at=31)
    if sg.mode == "zarr":
        assert sum(appended) >= 32  # whole chunks of 16 rows reached the store before the error
    assert _kept_rows(sg) == 5
    np.testing.assert_array_equal(sg.get_data("x"), before[0])
    np.testing.assert_array_equal(sg.get_data("y"), before[1])


def _kept_rows(sg: StoreGate) -> int:
    """Rows of x and y after a failure: equal, or both variables absent."""
    names = sg.get_var_names()
    if not names:
        return 0
    assert names == ["x", "y"]
    n = len(sg["train"]["x"])
    assert len(sg["train"]["y"]) == n
    return int(n)


def test_block_that_raises_before_any_flush_leaves_no_new_variables(tmp_path: Path) -> None:
    sg = StoreGate("zarr", {"output_dir": str(tmp_path), "chunk": 1000}, data_id="w")
    with pytest.raises(Boom):
        _write(sg, _batches(2, 5), raise_at=1)
    assert sg.get_var_names() == []


def test_zarr_writes_each_chunk_once() -> None:
    store = CountingStore()
    sg = StoreGate("zarr", {"output_dir": store, "chunk": 10}, data_id="w")
    batches = _batches(30, 3)  # 90 rows: 9 chunks per variable
    with sg.writer() as w:
        for batch in batches:
            w.add(batch)
    assert set(store.writes.values()) == {1}
    assert len(store.writes) == 18
    store.writes.clear()
    for batch in batches:  # plain appends rewrite the last, partial chunk every time
        sg.add_data(["x", "y"], [batch["x"], batch["y"]])
    assert max(store.writes.values()) > 1
    np.testing.assert_array_equal(sg.get_data("y"), np.tile(_joined(batches, "y"), 2))


def test_zarr_shards_are_written_once() -> None:
    store = CountingStore()
    sg = StoreGate("zarr", {"output_dir": store, "chunk": 5, "shard_bytes": 5 * 3 * 4 * 4}, data_id="w")
    batches = _batches(20, 4)  # 80 rows
    with sg.writer() as w:
        for batch in batches:
            w.add({"x": batch["x"]})
    assert len(store.writes) == 4  # 80 rows / 20 rows per shard
    assert set(store.writes.values()) == {1}
    np.testing.assert_array_equal(sg.get_data("x"), _joined(batches, "x"))


def test_a_failing_write_takes_back_every_row_of_the_writer() -> None:
    store = CountingStore(fail_at=5)
    sg = StoreGate("zarr", {"output_dir": store, "chunk": 4}, data_id="w")
    sg.add_data(["x", "y"], [np.ones((2, 3), "f4"), np.ones(2, "i8")])  # a partial chunk, rewritten by appends
    batches = _batches(20, 3)
    with pytest.raises(OSError, match="disk full"):
        _write(sg, batches)
    assert sum(store.writes.values()) >= 5  # chunk writes happened, the 5th failed
    assert _kept_rows(sg) == 2
    np.testing.assert_array_equal(sg.get_data("x"), np.ones((2, 3), "f4"))
    np.testing.assert_array_equal(sg.get_data("y"), np.ones(2, "i8"))


def test_exit_marks_the_compile_state_stale(sg: StoreGate) -> None:
    sg.add_data("x", np.zeros((2, 3), "f4"))
    sg.add_data("y", np.zeros(2, "i8"))
    sg.compile()
    assert sg.get_metadata()["compiled"]
    with sg.writer() as w:
        w.add(_batches(1, 4)[0])
    assert not sg.get_metadata()["compiled"]
    sg.compile()
    assert sg.get_metadata()["sizes"]["train"] == 6


def test_new_variables_keep_the_first_batch_dtype_and_cast_later_ones(sg: StoreGate) -> None:
    with sg.writer() as w:
        w.add({"x": np.zeros((2, 3), "f4"), "y": np.zeros(2, "i4")})
        w.add({"x": np.ones((2, 3), "f8"), "y": np.ones(2, "i8")})  # same_kind casts
    assert sg.get_data("x").dtype == np.float32
    assert sg.get_data("y").dtype == np.int32


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({"x": np.zeros((2, 3), "f4")}, "must hold the var_names of the first batch, ['x', 'y']. Got ['x']"),
        (
            {"x": np.zeros((2, 3), "f4"), "y": np.zeros(2, "i8"), "z": np.zeros(2)},
            "Got ['x', 'y', 'z']",
        ),
        ({"x": np.zeros((2, 3), "f4"), "y": np.zeros(3, "i8")}, "same number of rows. Got {'x': 2, 'y': 3}"),
        ({"x": np.zeros((2, 4), "f4"), "y": np.zeros(2, "i8")}, "row shape (3,)"),
        ({"x": np.zeros((2, 3), "f4"), "y": np.zeros(2, "f8")}, "'same_kind' rule. Got dtype float64"),
        ({"x": np.zeros((2, 3), "f4"), "y": np.int64(3)}, "batch['y'] must have a leading row axis"),
        ([np.zeros((2, 3))], "batch must be a non-empty dict"),
        ({}, "batch must be a non-empty dict"),
    ],
)
def test_a_bad_batch_is_refused_whole(sg: StoreGate, batch: Any, message: str) -> None:
    w = sg.writer()
    good = _batches(1, 2)[0]
    w.add(good)
    with pytest.raises(InvalidArgumentError) as info:
        w.add(batch)
    assert message in str(info.value)
    w.add(good)  # the writer is still usable and kept nothing of the bad batch
    w.close()
    np.testing.assert_array_equal(sg.get_data("y"), np.tile(good["y"], 2))


def test_existing_variables_of_different_lengths_are_refused(sg: StoreGate) -> None:
    sg.add_data("x", np.zeros((3, 3), "f4"))
    with pytest.raises(InvalidArgumentError, match=r"same number of rows in phase 'train' before writing"):
        sg.writer().add(_batches(1, 2)[0])
    assert sg.get_var_names() == ["x"]


def test_first_batch_that_breaks_a_stored_layout_creates_nothing(sg: StoreGate) -> None:
    sg.add_data("x", np.zeros((2, 5), "f4"))
    sg.add_data("y", np.zeros(2, "i8"))
    with pytest.raises(InvalidArgumentError, match=r"row shape \(5,\)"):
        sg.writer().add(_batches(1, 2)[0])
    assert sg.get_var_names() == ["x", "y"]
    assert len(sg["train"]) == 2


@pytest.mark.parametrize("phase", ["all", (0.5, 0.3, 0.2), "training"])
def test_writer_needs_one_phase(sg: StoreGate, phase: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="phase"):
        sg.writer(phase=phase)


def test_closed_writer_refuses_more_rows(sg: StoreGate) -> None:
    with sg.writer() as w:
        w.add(_batches(1, 2)[0])
    w.close()  # idempotent
    with pytest.raises(StoreGateError, match="writer for phase 'train' is closed"):
        w.add(_batches(1, 2)[0])


def test_read_only_store_refuses_a_writer(tmp_path: Path) -> None:
    StoreGate("zarr", {"output_dir": str(tmp_path)}, data_id="w").add_data("x", np.zeros(3))
    ro = StoreGate("zarr", {"output_dir": str(tmp_path), "mode": "r"}, data_id="w")
    with pytest.raises(ReadOnlyError):
        ro.writer()


def test_writer_compressor(tmp_path: Path) -> None:
    sg = StoreGate("zarr", {"output_dir": str(tmp_path)}, data_id="w")
    with sg.writer(compressor="gzip") as w:
        w.add(_batches(1, 3)[0])
    assert sg.backend_object.info("w", "train", "x").codec == "Gzip"
    with pytest.raises(InvalidArgumentError, match="Got 'lzo'"):
        sg.writer(compressor={"complevel": 1, "complib": "lzo"})


def test_no_progress_bar_by_default(sg: StoreGate, capsys: pytest.CaptureFixture[str]) -> None:
    with sg.writer() as w:
        w.add(_batches(1, 4)[0])
    assert capsys.readouterr().err == ""


def test_empty_batches_are_accepted(sg: StoreGate) -> None:
    with sg.writer() as w:
        w.add({"x": np.zeros((0, 3), "f4"), "y": np.zeros(0, "i8")})
        w.add({"x": np.ones((2, 3), "f4"), "y": np.ones(2, "i8")})
    assert sg.get_var_shapes(["x", "y"]) == [(3,), ()]
    assert len(sg["train"]) == 2


# --- S3 -------------------------------------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.timeout(120)
def test_writer_on_s3_writes_each_object_once(s3_server: Any, s3_bucket: str) -> None:
    client = s3_server.client()
    # With versioning on, the server keeps one version per PUT: it counts the writes.
    client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    args = {
        "output_dir": f"s3://{s3_bucket}/w",
        "storage_options": s3_server.storage_options,
        "chunk": 8,
        "shard_bytes": 8 * 3 * 4 * 2,  # shards of 16 rows
    }
    sg = StoreGate("zarr", args, data_id="w")
    batches = _batches(12, 5)  # 60 rows
    with sg.writer() as w:
        for batch in batches:
            w.add({"x": torch.from_numpy(batch["x"]), "y": batch["y"]})
    reader = StoreGate("zarr", {**args, "mode": "r"}, data_id="w")
    np.testing.assert_array_equal(reader.get_data("x"), _joined(batches, "x"))
    np.testing.assert_array_equal(reader.get_data("y"), _joined(batches, "y"))
    versions = client.list_object_versions(Bucket=s3_bucket, Prefix="w/w/train/x/c/")["Versions"]
    keys = Counter(v["Key"] for v in versions)
    assert sorted(keys) == [f"w/w/train/x/c/{i}/0" for i in range(4)]  # ceil(60 / 16) shards
    assert set(keys.values()) == {1}


@pytest.mark.s3
@pytest.mark.timeout(120)
def test_writer_on_s3_rolls_back_on_error(s3_server: Any, s3_bucket: str) -> None:
    args = {"output_dir": f"s3://{s3_bucket}/r", "storage_options": s3_server.storage_options, "chunk": 4}
    sg = StoreGate("zarr", args, data_id="w")
    batches = _batches(10, 3)
    flushed: list[int] = []
    backend = sg.backend_object
    original = backend.append
    backend.append = lambda *a: flushed.append(len(a[3])) or original(*a)  # type: ignore[method-assign]
    with pytest.raises(Boom):
        _write(sg, batches, raise_at=7)
    assert sum(flushed) >= 16  # whole chunks reached the server before the error
    assert _kept_rows(StoreGate("zarr", {**args, "mode": "r"}, data_id="w")) == 0  # the writer made x and y
    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix="r/w/train/")
    assert [o["Key"] for o in listed["Contents"]] == ["r/w/train/zarr.json"]  # the phase group, no x or y left


def test_a_writer_stays_in_the_tier_it_opened_in(tmp_path: Path) -> None:
    # set_mode inside the block once sent the undo to the other tier.
    sg = StoreGate("hybrid", {"output_dir": str(tmp_path / "h.zarr"), "chunk": 4}, data_id="w")
    sg.add_data(["x", "y"], [np.zeros((3, 3), "f4"), np.zeros(3, "i8")])

    def block() -> None:
        with sg.writer() as w:
            w.add(_batches(1, 8)[0])
            sg.set_mode("numpy")
            raise Boom

    with pytest.raises(Boom):
        block()
    sg.set_mode("zarr")
    assert _kept_rows(sg) == 3
    sg.set_mode("numpy")
    assert sg.get_var_names() == []


@pytest.mark.parametrize("call", ["delete", "add"])
def test_a_write_through_the_same_storegate_inside_the_block_is_refused(sg: StoreGate, call: str) -> None:
    # It would land or vanish with the block: an abort once took away rows add_data had committed.
    sg.add_data(["x", "y"], [np.ones((7, 3), "f4"), np.ones(7, "i8")])
    refused = (lambda: sg.delete_data("x", do_compile=False)) if call == "delete" else lambda: sg.add_data("y", [0])
    with sg.writer() as w:
        w.add(_batches(1, 8)[0])
        with pytest.raises(ConflictError, match=r"sg\.writer\(\) block of this thread"):
            refused()
        w.abort()
    assert sg.get_var_names() == ["x", "y"]  # neither the block nor the refused call wrote anything
    np.testing.assert_array_equal(sg.get_data("y"), np.ones(7, "i8"))
    with sg.writer() as w:  # the handle writes again afterwards
        w.add(_batches(1, 8)[0])
    assert len(sg.get_data("y")) == 15


def test_a_writer_that_gets_no_row_creates_no_variable(sg: StoreGate) -> None:
    # multiml's rule for empty phases, as add_data and create_empty keep it: no row, no variable.
    with sg.writer() as w:
        w.add({"x": np.zeros((0, 3), "f4"), "y": np.zeros(0, "i8")})
    assert sg.get_var_names("all") == []
    sg.add_data("x", np.ones((2, 3), "f4"))
    with sg.writer() as w:
        w.add({"x": np.zeros((0, 3), "f4")})  # an existing variable keeps its rows
    np.testing.assert_array_equal(sg.get_data("x"), np.ones((2, 3), "f4"))
    sg.create_empty("z", (0, 4))
    assert sg.get_var_names() == ["x"]


def test_a_writer_dropped_open_is_closed_with_a_resource_warning(sg: StoreGate) -> None:
    # As a file object flushes: the rows added are written, not lost or left half written.
    held = [sg.writer()]
    held[0].add({"z": np.arange(3)})
    held[0].add({"z": np.arange(3, 5)})
    with pytest.warns(StoreGateWarning, match="never closed"):
        _drop(held)
    np.testing.assert_array_equal(sg.get_data("z"), np.arange(5))
    refused = sg.writer()
    with pytest.raises(InvalidArgumentError):
        refused.add({"z": np.zeros((1, 2))})  # refused first batch: nothing to write, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del refused


def _drop(held: list[Any]) -> None:
    """Drop the last reference, and collect it even if a reference cycle holds it."""
    held.clear()
    gc.collect()


def test_a_writer_left_open_at_exit_is_closed_before_zarr_stops(tmp_path: Path) -> None:
    # A script (or notebook kernel) that ends with a writer still open: its rows land and
    # the interpreter exits, instead of waiting forever on zarr's stopped event loop.
    script = (
        "import numpy as np\n"
        "from storegate import StoreGate\n"
        f"sg = StoreGate('zarr', {{'output_dir': {str(tmp_path / 's')!r}}}, data_id='d')\n"
        "w = sg.writer('train')\n"
        "w.add({'x': np.arange(5.0)})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "was never closed; it was closed now and its rows are written" in done.stderr
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "s"), "mode": "r"}, data_id="d")
    np.testing.assert_array_equal(sg.get_data("x", "train"), np.arange(5.0))
