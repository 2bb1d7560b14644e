"""Reads inside rows (issue 10, part 3): numpy-style index tuples and random windows (lardon's randslice).

Every backend gives numpy's answer for a tuple of ints / slices / Ellipsis (a hypothesis
property, phase 'all' and views of rows included); zarr reads only the chunks that hold the
selection; writes inside rows are refused and change nothing; random windows are
reproducible by seed, one per row, and pickle.
"""

from __future__ import annotations

import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.storage import MemoryStore

from storegate import IndexOutOfRangeError, InvalidArgumentError, StoreGate, randslice
from storegate.backends.zarr_backend import ZarrBackend
from storegate.testing import BACKEND_KINDS, make_gate
from tests.conftest import S3Server
from tests.counting_store import CountingStore, chunk_keys

TRAIN = np.arange(6 * 4 * 5, dtype=np.int32).reshape(6, 4, 5)
VALID = -np.arange(3 * 4 * 5, dtype=np.int32).reshape(3, 4, 5)
Y_TRAIN, Y_VALID = np.arange(6) * 10, np.arange(3) * -10
ALL = np.concatenate([TRAIN, VALID])


def _fill(sg: StoreGate) -> StoreGate:
    sg.add_data(["x", "y"], [TRAIN, Y_TRAIN], "train")
    sg.add_data(["x", "y"], [VALID, Y_VALID], "valid")
    return sg


@pytest.fixture(scope="module", params=BACKEND_KINDS)
def gate(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> StoreGate:
    return _fill(make_gate(request.param, tmp_path_factory.mktemp(request.param)))


def _numpy(array: np.ndarray, index: Any) -> Any:
    """numpy's answer, with multiml's (start, stop) pair read as rows start:stop."""
    if isinstance(index, tuple) and len(index) == 2 and all(isinstance(i, int) for i in index):
        return array[index[0] : index[1]]
    return array[index]


def _slices(n: int) -> st.SearchStrategy[slice]:
    bound = st.none() | st.integers(-n - 2, n + 2)
    return st.builds(slice, bound, bound, st.none() | st.integers(-3, 3).filter(bool))


@st.composite
def _tuples(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """A tuple of up to one item per axis: ints, slices, a list of rows first, and maybe one Ellipsis."""
    n = draw(st.integers(0, len(shape)))
    ellipsis = draw(st.none() | st.integers(0, n))  # where an Ellipsis goes, if any
    axes = list(range(n)) if ellipsis is None else [*range(ellipsis), *range(len(shape) - n + ellipsis, len(shape))]
    items: list[Any] = []
    for axis in axes:
        size = shape[axis]
        forms = st.integers(-size, size - 1) | _slices(size)
        if axis == 0:
            forms = forms | st.lists(st.integers(-size, size - 1), max_size=4)
        items.append(draw(forms))
    if ellipsis is not None:
        items.insert(ellipsis, Ellipsis)
    return tuple(items)


@st.composite
def _list_tuples(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """Rows by a slice, a list (or a mask) of positions on one axis of a row, slices elsewhere."""
    if len(shape) < 2:
        return (draw(_slices(shape[0])),)
    axis = draw(st.integers(1, len(shape) - 1))
    size = shape[axis]
    listed = draw(
        st.lists(st.integers(-size, size - 1), max_size=4) | st.lists(st.booleans(), min_size=size, max_size=size)
    )
    items = [draw(_slices(n)) for n in shape]
    items[axis] = np.array(listed, dtype=bool) if listed and isinstance(listed[0], bool) else listed
    return tuple(items)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_selection_is_numpy_indexing_of_the_whole_array(gate: StoreGate, data: st.DataObject) -> None:
    phase = data.draw(st.sampled_from(["train", "valid", "all"]), "phase")
    x = {"train": TRAIN, "valid": VALID, "all": ALL}[phase]
    y = {"train": Y_TRAIN, "valid": Y_VALID, "all": np.concatenate([Y_TRAIN, Y_VALID])}[phase]
    index = data.draw(_tuples(x.shape) | _list_tuples(x.shape), "index x")
    np.testing.assert_array_equal(gate[phase]["x"][index], _numpy(x, index))
    np.testing.assert_array_equal(gate.get_data("x", phase, index=index), _numpy(x, index))
    one_d = data.draw(_tuples(y.shape), "index y")
    np.testing.assert_array_equal(gate[phase]["y"][one_d], _numpy(y, one_d))
    # A view of rows (shuffled train, then valid from its row 1): numpy's indexing of its rows.
    view = gate["train"].shuffled(5) + gate["valid"].subset(1)
    rows = np.concatenate([TRAIN[np.random.default_rng(5).permutation(6)], VALID[1:]])
    in_view = data.draw(_tuples(rows.shape) | _list_tuples(rows.shape), "index view")
    np.testing.assert_array_equal(view["x"][in_view], _numpy(rows, in_view))


def test_forms_of_var_names_and_views(gate: StoreGate) -> None:
    got = gate.get_data(["x", "y"], "train", index=(slice(1, 4), ...))
    np.testing.assert_array_equal(got[0], TRAIN[1:4])
    np.testing.assert_array_equal(got[1], Y_TRAIN[1:4])
    x, y = gate["train"][["x", "y"]][2, ...]
    np.testing.assert_array_equal(x, TRAIN[2])
    assert y == Y_TRAIN[2]
    view = gate["train"].shuffled(3)["x"]
    order = np.random.default_rng(3).permutation(6)
    np.testing.assert_array_equal(view[1:5, 2, ::-2], TRAIN[order][1:5, 2, ::-2])
    np.testing.assert_array_equal(view[4, :, 3], TRAIN[order][4, :, 3])
    both = gate["train"].subset(0, 2) + gate["valid"].subset(1, 3)
    np.testing.assert_array_equal(both["x"][:, 1, 1:3], np.concatenate([TRAIN[:2], VALID[1:3]])[:, 1, 1:3])


def test_start_stop_pair_keeps_multiml_meaning(gate: StoreGate) -> None:
    np.testing.assert_array_equal(gate["train"]["x"][3, 5], TRAIN[3:5])  # rows 3..5, not an element
    np.testing.assert_array_equal(gate["train"]["x"][3, 2:3], TRAIN[3, 2:3])
    np.testing.assert_array_equal(gate["train"]["x"][3, 2, 1], TRAIN[3, 2, 1])


@pytest.mark.parametrize(
    ("index", "error", "words"),
    [
        ((0, 1, 2, 3), InvalidArgumentError, "at most one item per axis"),
        ((0, ..., 1, ...), InvalidArgumentError, "one Ellipsis"),
        ((0, 4, 0), IndexOutOfRangeError, "index item 1 must be in [-4, 4)"),
        ((0, slice(None), -6), IndexOutOfRangeError, "index item 2 must be in [-5, 5)"),
        ((0, 1.0), InvalidArgumentError, "index item 1"),
        ((0, True, 1), InvalidArgumentError, "index item 1"),
        ((0, [0, 1]), InvalidArgumentError, "on one axis only, with the rows chosen by a slice and no int"),
        (([0, 1], [0, 1]), InvalidArgumentError, "numpy would pair the lists up"),
        ((slice(None), [0], 1), InvalidArgumentError, "no int item"),
        ((slice(None), [0], [1]), InvalidArgumentError, "on one axis only"),
        ((slice(None), [0, 4]), IndexOutOfRangeError, "index item 1 (positions along axis 1 of 4)"),
        ((slice(None), np.ones(3, bool)), InvalidArgumentError, "one entry per row (4)"),
        ((0, slice(None), None), InvalidArgumentError, "index item 2"),
        ((0, slice(0, 2, 0)), InvalidArgumentError, "non-zero step"),
        ((0, slice(0.5, 2)), InvalidArgumentError, "int (or None) start"),
        (((0, 1), 2), InvalidArgumentError, "row item"),
        ((9, 0, 0), IndexOutOfRangeError, "index must be in [-6, 6) for 6 rows"),
    ],
)
def test_bad_items_name_what_was_given(gate: StoreGate, index: Any, error: type[Exception], words: str) -> None:
    with pytest.raises(error) as info:
        gate["train"]["x"][index]
    assert words in str(info.value)
    assert "Got" in str(info.value)


@pytest.fixture(scope="module", params=BACKEND_KINDS)
def written(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[StoreGate, dict[str, Any]]:
    """A store that the write property changes, and its numpy model."""
    sg = _fill(make_gate(request.param, tmp_path_factory.mktemp(request.param)))
    return sg, {"train": TRAIN.copy(), "valid": VALID.copy()}


def _model_index(index: tuple[Any, ...]) -> Any:
    if len(index) == 2 and all(isinstance(i, int) for i in index):
        return slice(index[0], index[1])
    return index


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_a_write_inside_rows_is_numpy_assignment(
    written: tuple[StoreGate, dict[str, Any]], data: st.DataObject
) -> None:
    sg, model = written
    phase = data.draw(st.sampled_from(["train", "valid", "all"]), "phase")
    whole = np.concatenate([model["train"], model["valid"]]) if phase == "all" else model[phase].copy()
    index = data.draw(_tuples(whole.shape) | _list_tuples(whole.shape), "index")
    target = whole[_model_index(index)]
    values = data.draw(
        st.integers(-1000, 1000) | st.just(np.arange(target.size, dtype=np.int32).reshape(target.shape) * 7), "data"
    )
    sg[phase]["x"][index] = values
    whole[_model_index(index)] = values
    if phase == "all":
        model["train"], model["valid"] = whole[:6], whole[6:]
    else:
        model[phase] = whole
    np.testing.assert_array_equal(sg.get_data("x", "train"), model["train"])
    np.testing.assert_array_equal(sg.get_data("x", "valid"), model["valid"])


def test_a_failed_write_inside_rows_changes_nothing(gate: StoreGate) -> None:
    before = gate.get_data("x", "all")
    with pytest.raises(InvalidArgumentError, match="must broadcast to the part") as info:
        gate["train"]["x"][3, :, 1:3] = np.zeros((4, 3), dtype=np.int32)
    assert "shape (4, 2)" in str(info.value)
    assert "Got shape (4, 3)" in str(info.value)
    with pytest.raises(InvalidArgumentError, match="castable"):
        gate.update_data("x", 0.5, "all", index=(slice(4, 8), 0, 0))
    with pytest.raises(InvalidArgumentError, match="a random window"):
        gate.update_data("x", 0, "train", index=randslice(2))
    with pytest.raises(InvalidArgumentError, match="a random window"):
        gate["train"]["x"][0, randslice(2)] = 0
    with pytest.raises(IndexOutOfRangeError, match="index item 2"):
        gate["valid"]["x"][0, 0, 7] = 1
    np.testing.assert_array_equal(gate.get_data("x", "all"), before)


def test_writes_inside_rows_forms(tmp_path: Path) -> None:
    sg = _fill(make_gate("zarr-dir", tmp_path))
    sg.add_data("w", TRAIN * 0, "train")
    sg.update_data(["x", "w"], [np.full(4, -1), 99], "train", index=(2, slice(None), 0))
    expected = TRAIN.copy()
    expected[2, :, 0] = -1
    np.testing.assert_array_equal(sg.get_data("x", "train"), expected)
    assert sg.get_data("w", "train", index=(2, slice(None), 0)).tolist() == [99] * 4
    sg.update_data(("x", "w"), np.stack([np.full(3, 5), np.full(3, 6)]), "train", index=(0, 1, slice(2, None)))
    expected[0, 1, 2:] = 5
    assert sg.get_data("w", "train", index=(0, 1, slice(None))).tolist() == [0, 0, 6, 6, 6]
    np.testing.assert_array_equal(sg.get_data("x", "train"), expected)
    with pytest.raises(InvalidArgumentError, match="at most one item per axis"):  # y has no axis inside its rows
        sg.update_data(["x", "y"], [0, 0], "train", index=(2, slice(None), 0))
    sg["train"]["x"][[5, 1], ..., ::-2] = [[[1, 2, 3]], [[4, 5, 6]]]
    expected[[5, 1], ..., ::-2] = [[[1, 2, 3]], [[4, 5, 6]]]
    np.testing.assert_array_equal(sg.get_data("x", "train"), expected)


def _chunk_keys(keys: list[str]) -> list[str]:
    return sorted(set(chunk_keys(keys)))


def test_zarr_reads_only_the_chunks_that_hold_the_selection() -> None:
    """Rows of 8 x 10 in chunks of 2 rows x 4 x 5, written by zarr itself (e.g. another tool)."""
    memory = MemoryStore()
    data = np.arange(6 * 8 * 10, dtype=np.int32).reshape(6, 8, 10)
    zarr.open_group(memory, mode="w").create_array("d/train/x", shape=data.shape, chunks=(2, 4, 5), dtype="i4")[:] = (
        data
    )
    store = CountingStore(memory)
    sg = StoreGate("zarr", {"output_dir": store}, data_id="d")
    sg.get_var_names("train")  # metadata read first
    cases = [
        ((3, slice(1, 3), slice(6, 8)), ["d/train/x/c/1/0/1"]),
        ((slice(0, 4), 5, slice(None, 4)), ["d/train/x/c/0/1/0", "d/train/x/c/1/1/0"]),
        (([5, 0], slice(4, 8), -1), ["d/train/x/c/0/1/1", "d/train/x/c/2/1/1"]),
        ((slice(None), 0, 0), ["d/train/x/c/0/0/0", "d/train/x/c/1/0/0", "d/train/x/c/2/0/0"]),
        ((slice(0, 2), [6, 0, 6], slice(0, 2)), ["d/train/x/c/0/0/0", "d/train/x/c/0/1/0"]),
    ]
    for index, chunks in cases:
        store.keys.clear()
        np.testing.assert_array_equal(sg["train"]["x"][index], data[index])
        assert _chunk_keys(store.keys) == chunks, index
    store.keys.clear()
    sg["train"]["x"][4]  # a whole row: its chunks along the row, no other row's
    assert _chunk_keys(store.keys) == [f"d/train/x/c/2/{i}/{j}" for i in (0, 1) for j in (0, 1)]


def test_row_chunks_store_chunks_inside_rows_and_reads_fetch_only_those_that_hold_the_selection() -> None:
    memory = MemoryStore()
    store = CountingStore(memory)
    args = {"output_dir": store, "chunk": 2, "row_chunks": {"x": (None, 2)}}
    sg = _fill(StoreGate("zarr", args, data_id="d"))  # x: rows of (4, 5) in chunks of 2 rows x 4 x 2
    assert zarr.open_array(memory, path="d/train/x").chunks == (2, 4, 2)
    assert zarr.open_array(memory, path="d/train/y").chunks == (2,)  # other variables: whole rows
    store.keys.clear()
    np.testing.assert_array_equal(sg["train"]["x"][3, 1:3, 4], TRAIN[3, 1:3, 4])
    assert _chunk_keys(store.keys) == ["d/train/x/c/1/0/2"]
    sg.add_data(["x", "y"], [TRAIN[:3], Y_TRAIN[:3]], "train")  # appends, updates and rewrites keep the layout
    sg.update_data("x", TRAIN[:2] * 2, "train", index=slice(7, 9))
    sg.astype("x", "i8", "train")
    expected = np.concatenate([TRAIN, TRAIN[:1], TRAIN[:2] * 2])
    np.testing.assert_array_equal(sg.get_data("x", "train"), expected)
    assert zarr.open_array(memory, path="d/train/x").chunks == (2, 4, 2)
    store.keys.clear()
    np.testing.assert_array_equal(sg["train"]["x"][[8, 0], :, 0:2], expected[[8, 0], :, 0:2])
    assert _chunk_keys(store.keys) == ["d/train/x/c/0/0/0", "d/train/x/c/4/0/0"]


@pytest.mark.parametrize(
    ("row_chunks", "words"),
    [({"x": (None, 0)}, "each an int >= 1 or None"), (["x"], "must be a dict"), ({"x": (2,)}, "one length")],
)
def test_bad_row_chunks_are_refused(row_chunks: Any, words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        _fill(StoreGate("zarr", {"output_dir": MemoryStore(), "row_chunks": row_chunks}, data_id="d"))


def test_a_read_inside_rows_during_a_rewrite_sees_the_last_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committed-view path (another handle rewrites in place, held mid-call) selects inside rows too."""
    args = {"output_dir": str(tmp_path / "s.zarr"), "chunk": 2}
    writer = _fill(StoreGate("zarr", args, data_id="d"))
    reader = StoreGate("zarr", args, data_id="d")
    wrote, release = threading.Event(), threading.Event()
    original = ZarrBackend.write

    def held(self: ZarrBackend, *a: Any, **k: Any) -> Any:
        out = original(self, *a, **k)
        if self is writer.backend_object and threading.current_thread() is not threading.main_thread():
            wrote.set()
            release.wait(30)
        return out

    monkeypatch.setattr(ZarrBackend, "write", held)
    thread = threading.Thread(target=lambda: writer.update_data("x", TRAIN + 1, "train"))
    thread.start()
    try:
        assert wrote.wait(30), "the rewrite never wrote in place"
        np.testing.assert_array_equal(reader["train"]["x"][1:5, 2, ::-2], TRAIN[1:5, 2, ::-2])
        np.testing.assert_array_equal(reader.get_data("x", "all", index=(slice(4, 8), 1, 1)), ALL[4:8, 1, 1])
    finally:
        release.set()
        thread.join(30)
    np.testing.assert_array_equal(reader["train"]["x"][1:5, 2, ::-2], (TRAIN + 1)[1:5, 2, ::-2])


def test_icechunk_reads_inside_rows(tmp_path: Path) -> None:
    pytest.importorskip("icechunk")
    sg = _fill(StoreGate("icechunk", {"output_dir": str(tmp_path / "repo")}, data_id="d"))
    np.testing.assert_array_equal(sg["train"]["x"][[4, 0], ..., 1:4], TRAIN[[4, 0], ..., 1:4])
    np.testing.assert_array_equal(sg.get_data("x", "all", index=(7, 3)), ALL[7:3])


# --- random windows ----------------------------------------------------------------------


def test_randslice_windows_are_reproducible_per_row_and_new_at_each_read(gate: StoreGate) -> None:
    window = randslice(2, start=1, seed=4)
    first = gate["train"]["x"][:, 1:3, window]
    assert first.shape == (6, 2, 2)
    again = gate["train"]["x"][:, 1:3, randslice(2, start=1, seed=4)]
    np.testing.assert_array_equal(first, again)  # same seed, same windows
    starts = [int(TRAIN[i, 1].tolist().index(int(first[i, 0, 0]))) for i in range(6)]
    assert all(1 <= s <= 3 for s in starts)  # inside [start, stop - length]
    for i, s in enumerate(starts):
        np.testing.assert_array_equal(first[i], TRAIN[i, 1:3, s : s + 2])
    assert len(set(starts)) > 1  # one window per row
    rng = np.random.default_rng(4)
    assert starts == [window.window(5, rng).start for _ in range(6)]  # the pure window(), row by row
    later = gate["train"]["x"][:, 1:3, window]
    assert not np.array_equal(later, first)  # the same object draws new windows at each read
    one = gate.get_data("x", "valid", index=(2, randslice(3, seed=1), 0))
    s = int(np.random.default_rng(1).integers(2))
    np.testing.assert_array_equal(one, VALID[2, s : s + 3, 0])


def test_randslice_beside_a_list_inside_rows(gate: StoreGate) -> None:
    got = gate["train"]["x"][1:4, randslice(2, seed=6), [4, 0, 1]]
    rng = np.random.default_rng(6)
    starts = [int(rng.integers(3)) for _ in range(3)]
    expected = np.stack([TRAIN[1 + i, s : s + 2][:, [4, 0, 1]] for i, s in enumerate(starts)])
    np.testing.assert_array_equal(got, expected)


def test_randslice_on_the_row_axis_is_a_random_run_of_rows(gate: StoreGate) -> None:
    rows = gate["train"]["y"][randslice(3, seed=2)]
    s = int(np.random.default_rng(2).integers(4))
    np.testing.assert_array_equal(rows, Y_TRAIN[s : s + 3])


def test_randslice_that_does_not_fit_raises(gate: StoreGate) -> None:
    with pytest.raises(InvalidArgumentError, match="must fit its axis") as info:
        gate["train"]["x"][0, randslice(3, start=2)]
    assert "Got an axis of 4 positions, 2 of them in [start, stop)" in str(info.value)
    with pytest.raises(InvalidArgumentError, match="length must be an int >= 1"):
        randslice(0)
    with pytest.raises(InvalidArgumentError, match="start must be an int or None"):
        randslice(2, start=1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="seed must be"):
        randslice(2, seed=-1)


def test_randslice_pickles_with_its_generator() -> None:
    window = randslice(3, 1, 9, seed=5)
    window.draw(20)
    copy = pickle.loads(pickle.dumps(window))
    assert copy == window
    assert [copy.draw(20) for _ in range(5)] == [window.draw(20) for _ in range(5)]
    assert repr(window) == "RandomWindow(length=3, start=1, stop=9, seed=5)"


@pytest.mark.s3
def test_on_s3_reads_inside_rows_and_windows(s3_server: S3Server, s3_bucket: str) -> None:
    args = {"output_dir": f"s3://{s3_bucket}/inner", "storage_options": s3_server.storage_options, "chunk": 2}
    sg = _fill(StoreGate("zarr", args, data_id="d"))
    np.testing.assert_array_equal(sg["train"]["x"][[5, 1], 1:3, ::-2], TRAIN[[5, 1], 1:3, ::-2])
    np.testing.assert_array_equal(sg.get_data("x", "all", index=(slice(4, 8), ..., 2)), ALL[4:8, ..., 2])
    got = sg["valid"]["x"][:, 0, randslice(2, seed=3)]
    rng = np.random.default_rng(3)
    expected = [VALID[i, 0, s.start : s.stop] for i, s in enumerate(randslice(2).window(5, rng) for _ in range(3))]
    np.testing.assert_array_equal(got, np.stack(expected))
