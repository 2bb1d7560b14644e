"""storegate.tensorflow: tf.data batches of a phase or view, on every backend, S3 and Keras.

TensorFlow is part of the dev set-up, so this module fails (it is not skipped) without it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from storegate import InvalidArgumentError, NotFoundError, StoreGate, StoreGateError
from storegate.tensorflow import StoreGateDataset, to_tf_dataset
from storegate.testing import BACKEND_KINDS, make_gate
from storegate.torch import ChunkShuffleSampler
from storegate.torch import StoreGateDataset as TorchDataset
from tests.conftest import S3Server

pytestmark = pytest.mark.timeout(300)

N = 100
CHUNK = 8
X = np.arange(N, dtype=np.float32)[:, None] * np.ones(3, dtype=np.float32)
Y = np.arange(N) % 5
TRAIN = 80  # phase=(0.8, 0.2, 0.0)


def _fill(sg: StoreGate) -> StoreGate:
    sg.add_data(["x", "y"], [X, Y], phase=(0.8, 0.2, 0.0))
    sg.add_data("id", np.arange(N), phase=(0.8, 0.2, 0.0))
    return sg


def _zarr(tmp_path: Path) -> StoreGate:
    return _fill(StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "chunk": CHUNK}, data_id="d"))


def _epoch(dataset: Any) -> list[Any]:
    """One pass over a tf.data.Dataset, as numpy."""
    return [tf.nest.map_structure(lambda t: t.numpy(), batch) for batch in dataset]


@pytest.mark.parametrize("kind", BACKEND_KINDS)
@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_are_numpy_indexing_and_each_row_comes_once(kind: str, shuffle: bool, tmp_path: Path) -> None:
    sg = _fill(make_gate(kind, tmp_path))
    ds = StoreGateDataset(sg, "train", "x", "id", batch_size=16, shuffle=shuffle, seed=3)
    batches = _epoch(ds.dataloader)
    assert [x.shape for x, _ in batches] == [(16, 3)] * 5
    ids = np.concatenate([i for _, i in batches])
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), X[ids])
    assert sorted(ids.tolist()) == list(range(TRAIN))  # every row exactly once
    np.testing.assert_array_equal(ids, ds.epoch_order(0))
    assert (ids.tolist() != list(range(TRAIN))) is shuffle


def test_the_order_is_the_torch_samplers_reproducible_and_new_each_epoch(tmp_path: Path) -> None:
    sg = _zarr(tmp_path)
    ds = StoreGateDataset(sg, "train", "x", "id", batch_size=16, seed=5, window=2)
    loader = ds.dataloader
    first, second = (np.concatenate([i for _, i in _epoch(loader)]) for _ in range(2))
    assert first.tolist() != second.tolist()  # each iteration is the next epoch
    np.testing.assert_array_equal(first, ds.epoch_order(0))
    np.testing.assert_array_equal(second, ds.epoch_order(1))
    again = StoreGateDataset(sg, "train", "x", "id", batch_size=16, seed=5, window=2)
    np.testing.assert_array_equal(np.concatenate([i for _, i in _epoch(again.dataloader)]), first)  # same seed
    assert StoreGateDataset(sg, "train", "x", seed=6, window=2).epoch_order(0).tolist() != first.tolist()
    sampler = ChunkShuffleSampler(TorchDataset(sg, "train", "x", "id"), seed=5, window=2)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        assert list(sampler) == ds.epoch_order(epoch).tolist()


def test_a_batch_reads_about_window_chunks(tmp_path: Path) -> None:
    sg = _zarr(tmp_path)
    ds = StoreGateDataset(sg, "train", "x", batch_size=16, seed=0, window=2)
    chunks = [np.unique(b // CHUNK).size for b in np.split(ds.epoch_order(0), 5)]
    assert max(chunks) <= 2 + 2  # a window's two chunks, plus one at each edge


def test_a_view_of_rows_in_the_samplers_order(tmp_path: Path) -> None:
    sg = _zarr(tmp_path)
    view = sg["train"].filter("y", keep=[1, 3]).shuffled(7).repeat(2)
    ds = StoreGateDataset(sg, view, "x", "id", batch_size=10, seed=1, window=2)
    expected = view["id"][:]
    assert len(ds) == expected.shape[0] == 64
    ids = np.concatenate([i for _, i in _epoch(ds.dataloader)])
    np.testing.assert_array_equal(ids, expected[ds.epoch_order(0)])
    sampler = ChunkShuffleSampler(TorchDataset(sg, view, "x", "id"), seed=1, window=2)
    assert list(sampler) == ds.epoch_order(0).tolist()
    in_order = StoreGateDataset(sg, view, "x", "id", batch_size=64, shuffle=False)
    np.testing.assert_array_equal(_epoch(in_order.dataloader)[0][1], expected)


def test_var_names_forms_element_spec_and_drop_remainder(tmp_path: Path) -> None:
    sg = _zarr(tmp_path)
    sg.add_data("w", X[:, :1].astype(np.float64), phase=(0.8, 0.2, 0.0))
    stacked = StoreGateDataset(sg, "train", ("id", "y"), batch_size=32, shuffle=False)
    assert stacked.element_spec == tf.TensorSpec((None, 2), tf.int64)  # no targets: the inputs alone
    first = _epoch(stacked.dataloader)[0]
    np.testing.assert_array_equal(first, np.stack([np.arange(32), Y[:32]], axis=1))
    listed = StoreGateDataset(sg, "train", ["x", "w"], ["y"], batch_size=32, shuffle=False, drop_remainder=True)
    spec = ((tf.TensorSpec((32, 3), tf.float32), tf.TensorSpec((32, 1), tf.float64)), (tf.TensorSpec((32,), tf.int64),))
    assert listed.element_spec == spec
    batches = _epoch(listed.dataloader)
    assert len(batches) == listed.num_batches == 2  # 80 rows: the last 16 are dropped
    (x, w), (y,) = batches[1]
    np.testing.assert_array_equal(y, Y[32:64])
    np.testing.assert_array_equal(x, X[32:64])
    np.testing.assert_array_equal(w[:, 0], X[32:64, 0])
    assert listed.dataloader.cardinality().numpy() == 2
    assert StoreGateDataset(sg, "train", "x", batch_size=32).dataloader.cardinality().numpy() == 3


def test_index_mode_gives_numpy_rows(tmp_path: Path) -> None:
    ds = StoreGateDataset(_zarr(tmp_path), "valid", "x", "id")
    x, i = ds[3]
    assert int(i) == TRAIN + 3
    np.testing.assert_array_equal(x, X[TRAIN + 3])
    x, i = ds[[5, -1, 5]]
    np.testing.assert_array_equal(i, TRAIN + np.array([5, 19, 5]))
    np.testing.assert_array_equal(ds[::7][1], TRAIN + np.arange(0, 20, 7))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40),
    chunk=st.integers(1, 9),
    batch_size=st.integers(1, 12),
    shuffle=st.booleans(),
    drop_remainder=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    epoch=st.integers(0, 3),
)
def test_an_epoch_is_its_order_cut_into_batches(
    n: int, chunk: int, batch_size: int, shuffle: bool, drop_remainder: bool, seed: int, epoch: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        sg = StoreGate("zarr", {"output_dir": str(Path(folder) / "s.zarr"), "chunk": chunk}, data_id="d")
        sg.add_data("id", np.arange(n) * 10, phase="train")
        options = {"batch_size": batch_size, "shuffle": shuffle, "seed": seed, "drop_remainder": drop_remainder}
        ds = StoreGateDataset(sg, "train", "id", **options)
        order = ds.epoch_order(epoch)
        assert sorted(order.tolist()) == list(range(n))  # a permutation of the rows
        batches = list(ds.batches(epoch))
    assert len(batches) == ds.num_batches == (n // batch_size if drop_remainder else -(-n // batch_size))
    assert all(b.shape[0] == batch_size for b in batches[: n // batch_size])
    got = np.concatenate(batches) if batches else np.empty(0, dtype=np.int64)
    np.testing.assert_array_equal(got, order[: got.shape[0]] * 10)  # the order, cut into batches


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be an int"),
        ({"batch_size": 2.5}, "batch_size must be an int"),
        ({"shuffle": "yes"}, "shuffle must be True or False"),
        ({"seed": -1}, "seed must be an int"),
        ({"drop_remainder": 1}, "drop_remainder must be True or False"),
        ({"window": 0}, "window must be an int"),
        ({"chunk_cache_bytes": -1}, "chunk_cache_bytes must be an int"),
        ({"preload": None}, "preload must be True or False"),
        ({"phase": "trian"}, "phase must be one of .* Did you mean 'train'"),
        ({"input_var_names": None}, "input_var_names must be"),
        ({"input_var_names": 3}, "var_names"),
        ({"input_var_names": ("x", "id")}, "must share one shape"),
    ],
)
def test_bad_arguments_are_storegate_errors_naming_them(kwargs: dict[str, Any], match: str, tmp_path: Path) -> None:
    sg = _zarr(tmp_path)
    args = {"phase": "train", "input_var_names": "x", **kwargs}
    with pytest.raises(InvalidArgumentError, match=match):
        StoreGateDataset(sg, **args)


def test_bad_sources_and_variables_are_refused(tmp_path: Path) -> None:
    sg = _zarr(tmp_path)
    with pytest.raises(InvalidArgumentError, match="storegate must be a StoreGate"):
        StoreGateDataset("sg", "train", "x")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="data_id set"):
        StoreGateDataset(StoreGate("numpy"), "train", "x")
    other = _fill(StoreGate("numpy", data_id="d"))
    with pytest.raises(InvalidArgumentError, match="view of the StoreGate given"):
        StoreGateDataset(sg, other["train"], "x")
    with pytest.raises(InvalidArgumentError, match=r"tf\.data\.Dataset\.concatenate"):
        StoreGateDataset(sg, sg["train"] + other["train"], "x")
    with pytest.raises(NotFoundError, match="nope"):
        StoreGateDataset(sg, "train", "x", "nope")
    sg.add_data("name", np.array(["a"] * N), phase=(0.8, 0.2, 0.0))
    with pytest.raises(InvalidArgumentError, match="var_name 'name' has dtype <U1"):
        StoreGateDataset(sg, "train", "x", "name")
    with pytest.raises(InvalidArgumentError, match=r"to_tf_dataset takes the options .* Got \['batchsize'\]"):
        to_tf_dataset(sg, "train", "x", batchsize=4)
    with pytest.raises(InvalidArgumentError, match="epoch must be an int"):
        StoreGateDataset(sg, "train", "x").epoch_order(-1)


def test_writes_after_the_dataset_is_made(tmp_path: Path) -> None:
    sg = _zarr(tmp_path)
    ds = StoreGateDataset(sg, "train", "x", batch_size=80, shuffle=False)
    assert _epoch(ds.dataloader)[0][0, 0] == 0
    sg.update_data("x", X[:TRAIN] + 1000, phase="train")
    assert _epoch(ds.dataloader)[0][0, 0] == 1000  # this process's write: the new values
    sg.add_data("x", X[:4], phase="train")  # rows added: the layout changed
    with pytest.raises(StoreGateError, match="changed its rows"):
        next(ds.batches())
    # tf.data runs the generator: the error reaches the caller as TF's, with storegate's message.
    with pytest.raises(tf.errors.UnknownError, match="changed its rows"):
        _epoch(ds.dataloader)


def test_a_tiny_keras_model_trains_two_epochs(tmp_path: Path) -> None:
    sg = _zarr(tmp_path)
    ds = StoreGateDataset(sg, "train", "x", "y", batch_size=16, seed=0)
    seen: list[int] = []
    read = ds.batches
    ds.batches = lambda epoch=0: (seen.append(epoch), read(epoch))[1]  # type: ignore[method-assign]
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(8, "relu"), tf.keras.layers.Dense(5)])
    model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(ds.dataloader.prefetch(tf.data.AUTOTUNE), epochs=2, shuffle=False, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert seen == [0, 1]  # Keras iterates once per epoch: a new order each


@pytest.mark.s3
def test_on_s3(s3_server: S3Server, s3_bucket: str) -> None:
    args = {"output_dir": f"s3://{s3_bucket}/tf", "storage_options": s3_server.storage_options, "chunk": CHUNK}
    sg = _fill(StoreGate("zarr", args, data_id="d"))
    view = sg["train"].filter("y", drop=[0])
    ds = StoreGateDataset(sg, view, "x", "id", batch_size=16, seed=2)
    assert ds.chunk_bounds[-1] == len(ds) == 64
    batches = _epoch(ds.dataloader)
    ids = np.concatenate([i for _, i in batches])
    np.testing.assert_array_equal(ids, view["id"][:][ds.epoch_order(0)])
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), X[ids])


def test_storegate_imports_without_tensorflow_and_the_module_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "import storegate\n"
        "try:\n    import storegate.tensorflow\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "pip install 'storegate[tensorflow]'" in out.stdout
