"""Ragged variables (storegate.ragged, storegate.ragged_store): rows of different lengths.

Every backend gives the same answers as a Python list of numpy arrays: add, append, get
(one row, a list, padded, cropped, phase 'all'), update of whole rows, delete, shuffle,
compile, show_info; plain zarr reads the stored layout; torch datasets and the collate
function (2 workers, fork and spawn; the S3 server).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from storegate import InvalidArgumentError, NotFoundError, StoreGate
from storegate.testing import BACKEND_KINDS, assert_same_snapshot, make_gate, snapshot
from storegate.torch import StoreGateDataset
from tests.conftest import S3Server

pytestmark = [
    pytest.mark.timeout(300),
    # Python >= 3.12 warns when a process with threads forks; tests/test_torch_workers.py says why it is safe.
    pytest.mark.filterwarnings(r"ignore:.*use of fork\(\) may lead to deadlocks:DeprecationWarning"),
]

LENGTHS = [3, 5, 0, 2, 4, 1, 6, 2]
ROWS = [np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 100 * i for i, n in enumerate(LENGTHS)]


@pytest.fixture(params=BACKEND_KINDS)
def sg(request: pytest.FixtureRequest, tmp_path: Path) -> StoreGate:
    return make_gate(request.param, tmp_path)


def _same_rows(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert isinstance(got, list)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def _filled(sg: StoreGate) -> StoreGate:
    sg.add_data(["audio", "y"], [ROWS, np.arange(len(ROWS))], phase=(5, 2, 1))
    return sg


def test_round_trip_on_every_backend(sg: StoreGate) -> None:
    _filled(sg)
    assert sg.get_var_names("train") == ["audio", "y"]
    assert len(sg["train"]) == 5
    assert sg.get_var_shapes("audio") == (None, 2)
    np.testing.assert_array_equal(sg.get_data("audio", "train", 1), ROWS[1])
    np.testing.assert_array_equal(sg["valid"]["audio"][0], ROWS[5])  # the item syntax
    _same_rows(sg.get_data("audio", "train"), ROWS[:5])
    _same_rows(sg.get_data("audio", "train", [4, 0, 4]), [ROWS[4], ROWS[0], ROWS[4]])
    _same_rows(sg.get_data("audio", "all"), ROWS)  # the phases in order
    np.testing.assert_array_equal(sg.get_data("audio", "all", 7), ROWS[7])
    audio, y = sg.get_data(["audio", "y"], "valid")
    _same_rows(audio, ROWS[5:7])
    np.testing.assert_array_equal(y, [5, 6])
    assert sg.get_metadata()["sizes"] == {"train": 5, "valid": 2, "test": 1, "all": 8}


def test_pad_and_crop_are_chosen_per_read(sg: StoreGate) -> None:
    _filled(sg)
    padded, lengths = sg.get_data("audio", "train", None, batch_mode="pad", batch_args={"constant_values": -1})
    assert padded.shape == (5, 5, 2)
    assert padded.dtype == np.float32
    np.testing.assert_array_equal(lengths, LENGTHS[:5])
    for row, n, expected in zip(padded, lengths, ROWS[:5], strict=True):
        np.testing.assert_array_equal(row[:n], expected)
        assert (row[n:] == -1).all()
    mask = np.arange(padded.shape[1]) < lengths[:, None]  # the mask, from the lengths
    assert mask.sum() == sum(LENGTHS[:5])
    edge, _ = sg.get_data("audio", "train", [3], batch_mode="pad", batch_args={"mode": "edge", "length": 4})
    np.testing.assert_array_equal(edge[0], np.concatenate([ROWS[3], ROWS[3][-1:], ROWS[3][-1:]]))
    cropped = sg.get_data("audio", "train", [0, 1, 3], batch_mode="crop")  # the shortest row: 2
    np.testing.assert_array_equal(cropped, np.stack([ROWS[0][:2], ROWS[1][:2], ROWS[3][:2]]))
    assert sg.get_data("audio", "train", [1, 4], batch_mode="crop", batch_args={"length": 3}).shape == (2, 3, 2)
    np.testing.assert_array_equal(sg.get_data("audio", "train", 1, batch_mode="pad"), ROWS[1])  # one row: itself
    np.testing.assert_array_equal(sg.get_data("y", "train", batch_mode="pad"), np.arange(5))  # fixed: unchanged
    none, no_lengths = sg.get_data("audio", "train", [], batch_mode="pad", batch_args={"length": 3})
    assert (none.shape, none.dtype, no_lengths.shape) == ((0, 3, 2), np.float32, (0,))  # no row: still its form


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_mode": "stack"}, "batch_mode must be one of"),
        ({"batch_mode": "pad", "batch_args": [0]}, "batch_args must be a dict"),
        ({"batch_mode": "pad", "batch_args": {"length": 2}}, "must fit every row"),
        ({"batch_mode": "crop", "batch_args": {"length": 4}}, "must fit every row"),
        ({"batch_mode": "crop", "batch_args": {"constant_values": 1}}, "may only hold 'length'"),
        ({"batch_mode": "pad", "batch_args": {"mode": "nope"}}, "np.pad refuses"),
    ],
)
def test_bad_batch_arguments_are_refused(kwargs: dict[str, Any], match: str) -> None:
    sg = _filled(StoreGate("numpy", data_id="d"))
    with pytest.raises(InvalidArgumentError, match=match):
        sg.get_data("audio", "train", [0, 1], **kwargs)


def test_append_rows_of_any_length_and_fixed_rows(sg: StoreGate) -> None:
    sg.add_data("audio", ROWS[:2], phase="train")
    sg.add_data("audio", [ROWS[2]], phase="train")  # one row: ragged because the variable is
    sg.add_data("audio", np.ones((2, 4, 2), dtype=np.float32), phase="train")  # each row a row
    _same_rows(sg.get_data("audio", "train"), [*ROWS[:3], np.ones((4, 2), "f4"), np.ones((4, 2), "f4")])
    sg.add_data("same", [np.zeros((2, 3)), np.ones((2, 3))], phase="valid", ragged=True)  # one length, ragged
    assert sg.get_var_shapes("same", "valid") == (None, 3)


def test_bad_input_is_refused_and_changes_nothing(sg: StoreGate) -> None:
    _filled(sg)
    sg.add_data("fixed", np.zeros((5, 3, 2)), phase="train")
    sg.add_data("solo", [np.zeros((i, 2)) for i in range(5)], phase="train")
    before = snapshot(sg)
    cases: list[tuple[Any, str]] = [
        (lambda: sg.add_data("bad", [np.zeros((2, 3)), np.zeros((3, 4))]), "one inner shape"),
        (lambda: sg.add_data("bad", [np.zeros(2), np.array(["a", "b", "c"])]), "mixes text with numbers"),
        (lambda: sg.add_data("audio", [np.zeros((2, 3))]), "row shape"),
        (lambda: sg.add_data("audio", [np.array([["a", "b"]])]), "cast"),
        (lambda: sg.add_data("fixed", [np.zeros((2, 2)), np.zeros((5, 2))]), "Got ragged rows"),
        (lambda: sg.add_data("x@values", [np.zeros(2), np.zeros(3)]), "must not end in"),
        (lambda: sg.update_data("audio", [np.zeros((1, 2))], "train", [0, 1]), "one row per selected row"),
        (lambda: sg.get_data(("audio", "y"), "train"), "tuple are stacked"),
        (lambda: sg.astype("audio", "f8"), "ragged variable"),
        (lambda: sg.add_data(("a", "b"), np.zeros((2, 2)), ragged=True), "ragged=True needs var_names"),
        (lambda: sg.add_data("solo", np.zeros((2, 3, 2)), phase="valid"), "Pass ragged=True"),
        (lambda: sg.add_data("fixed", [np.zeros((2, 2)), np.zeros((1, 2))], phase="valid"), "Pad or crop"),
        (lambda: sg.update_data("audio", 5.0, "train", 0), "0-d value"),
        (lambda: len(sg["train"].filter("audio", keep=[1])), "one value per row"),
    ]
    for call, match in cases:
        with pytest.raises(InvalidArgumentError, match=match):
            call()
    assert_same_snapshot(before, snapshot(sg))


def test_update_whole_rows_of_same_and_other_lengths(sg: StoreGate) -> None:
    _filled(sg)
    expected = list(ROWS[:5])
    sg.update_data("audio", ROWS[1] * 2, "train", 1)  # the same length: in place
    expected[1] = ROWS[1] * 2
    _same_rows(sg.get_data("audio", "train"), expected)
    longer = [np.full((7, 2), 9, np.float32), np.full((1, 2), 8, np.float32)]
    sg.update_data("audio", longer, "train", [3, 0])  # other lengths: what follows is rewritten
    expected[3], expected[0] = longer
    _same_rows(sg.get_data("audio", "train"), expected)
    sg.update_data("audio", [np.zeros((2, 2), np.float32)] * 3, "all", slice(4, 7))  # across phases
    _same_rows(sg.get_data("audio", "all"), [*expected[:4], *[np.zeros((2, 2), "f4")] * 3, ROWS[7]])
    assert sg.get_metadata()["sizes"]["all"] == 8


def test_delete_shuffle_compile_and_show_info(sg: StoreGate, capsys: pytest.CaptureFixture[str]) -> None:
    _filled(sg)
    sg.compile()
    assert sg.get_metadata()["compiled"]
    sg.shuffle("train", seed=3)
    y = sg.get_data("y", "train")
    assert sorted(y.tolist()) == [0, 1, 2, 3, 4]
    assert y.tolist() != [0, 1, 2, 3, 4]
    _same_rows(sg.get_data("audio", "train"), [ROWS[i] for i in y])  # rows follow their labels
    capsys.readouterr()
    sg.show_info()
    out = capsys.readouterr().out
    assert "(None, 2)" in out
    assert "0 / 2.8 / 5" in out
    assert "@values" not in out
    sg.delete_data("audio", "all")
    assert sg.get_var_names("all") == ["y"]
    sg.compile()  # nothing left behind that breaks the checks


def test_views_of_rows_over_a_ragged_variable(sg: StoreGate) -> None:
    _filled(sg)
    view = sg["train"].subset(1, 4).shuffled(2)
    rows = view.row_numbers()
    assert sorted(rows.tolist()) == [1, 2, 3]
    _same_rows(view["audio"][:], [ROWS[i] for i in rows])
    odd = sg["all"].filter("y", keep=[1, 3, 5, 7])  # a label variable beside the ragged one
    _same_rows(odd["audio"][:], [ROWS[1], ROWS[3], ROWS[5], ROWS[7]])
    both = view + sg["valid"].subset(0, 1)
    _same_rows(both["audio"][:], [*(ROWS[i] for i in rows), ROWS[5]])
    padded, lengths = both["audio"].get(None, batch_mode="pad")  # a view reads padded too
    assert lengths.tolist() == [LENGTHS[i] for i in (*rows, 5)]
    np.testing.assert_array_equal(padded[-1][: LENGTHS[5]], ROWS[5])


def test_hybrid_moves_keep_a_ragged_variable(tmp_path: Path) -> None:
    sg = make_gate("hybrid-zarr", tmp_path)
    sg.add_data("audio", [np.zeros((2, 1)), np.ones((2, 1))], phase="train", ragged=True)  # one length, still ragged
    sg.to_memory("audio", "train")
    sg.set_mode("numpy")
    assert sg.get_var_shapes("audio") == (None, 1)
    sg.update_data("audio", np.ones((3, 1)), "train", 1)  # another length
    sg.to_storage("audio", "train")
    sg.set_mode("zarr")
    _same_rows(sg.get_data("audio", "train"), [np.zeros((2, 1)), np.ones((3, 1))])


def test_plain_zarr_reads_the_layout(tmp_path: Path) -> None:
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr")}, data_id="d")
    sg.add_data("audio", ROWS, phase="train")
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    values, ends = group["d/train/audio@values"][:], group["d/train/audio@offsets"][:]
    starts = np.concatenate([[0], ends[:-1]])
    _same_rows([values[a:b] for a, b in zip(starts, ends, strict=True)], ROWS)
    assert ends.dtype == np.int64
    assert ends.shape == (len(ROWS),)
    assert sg.backend_object.other_objects("d") == []  # both arrays are storegate's


# --- a property: every backend is a list of arrays ------------------------------------------

rows_strategy = st.lists(st.integers(0, 5), min_size=1, max_size=8).map(
    lambda lengths: [np.arange(n * 2, dtype=np.int32).reshape(n, 2) + 7 * i for i, n in enumerate(lengths)]
)


@pytest.mark.parametrize("kind", BACKEND_KINDS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=rows_strategy, second=rows_strategy, data=st.data())
def test_round_trips_match_a_list(
    kind: str, tmp_path_factory: pytest.TempPathFactory, first: list[np.ndarray], second: list[np.ndarray], data: Any
) -> None:
    sg = make_gate(kind, tmp_path_factory.mktemp("p"))
    sg.add_data("r", first, phase="train", ragged=True)
    sg.add_data("r", second, phase="train")
    expected = [*first, *second]
    _same_rows(sg.get_data("r", "train"), expected)
    index = data.draw(st.lists(st.integers(0, len(expected) - 1), max_size=6))
    _same_rows(sg.get_data("r", "train", index), [expected[i] for i in index])
    i = data.draw(st.integers(0, len(expected) - 1))
    new = np.full((data.draw(st.integers(0, 4)), 2), -1, dtype=np.int32)
    sg.update_data("r", new, "train", i)
    expected[i] = new
    _same_rows(sg.get_data("r", "train"), expected)
    padded, lengths = sg.get_data("r", "train", None, batch_mode="pad")
    assert lengths.tolist() == [len(r) for r in expected]
    for row, n, want in zip(padded, lengths, expected, strict=True):
        np.testing.assert_array_equal(row[:n], want)


@pytest.mark.parametrize("kind", BACKEND_KINDS)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy.filter(lambda r: len(r) >= 3), data=st.data())
def test_phase_all_matches_a_list(
    kind: str, tmp_path_factory: pytest.TempPathFactory, rows: list[np.ndarray], data: Any
) -> None:
    sg = make_gate(kind, tmp_path_factory.mktemp("p"))
    n = len(rows)
    # ragged=True: drawn rows may all have one length, which would make a fixed-shape variable.
    sg.add_data("r", rows, phase=(n - 2, 1, 1), ragged=True)  # every phase holds rows
    sg.add_data("i", np.arange(n), phase=(n - 2, 1, 1))
    expected = list(rows)
    picked = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=4, unique=True))
    new = [np.full((data.draw(st.integers(0, 3)), 2), -k, dtype=np.int32) for k in range(len(picked))]
    sg.update_data("r", new, "all", picked)  # rows of any phase, of other lengths
    for k, i in enumerate(picked):
        expected[i] = new[k]
    _same_rows(sg.get_data("r", "all"), expected)
    sg.shuffle("all", seed=data.draw(st.integers(1, 9)))  # each phase's rows keep their labels
    order = sg.get_data("i", "all")
    _same_rows(sg.get_data("r", "all"), [expected[i] for i in order])


# --- torch -------------------------------------------------------------------------------------


def test_dataset_and_collate_on_every_backend(sg: StoreGate) -> None:
    _filled(sg)
    dataset = StoreGateDataset(sg, "all", ["audio", "y"])
    (x, _y) = dataset[6]
    np.testing.assert_array_equal(x.numpy(), ROWS[6])
    batch_audio, _batch_y = dataset[[2, 6]]  # a batch: a list of tensors for the ragged variable
    assert [t.shape[0] for t in batch_audio] == [0, 6]
    loader = DataLoader(dataset, batch_size=3, collate_fn=dataset.collate_fn("pad", constant_values=-1))
    seen = []
    for (padded, lengths), ids in loader:
        for row, n, i in zip(padded.numpy(), lengths.tolist(), ids.tolist(), strict=True):
            np.testing.assert_array_equal(row[:n], ROWS[i])
            assert (row[n:] == -1).all()
            seen.append(i)
    assert seen == list(range(8))
    crop = DataLoader(dataset, batch_size=4, collate_fn=dataset.collate_fn("crop", length=0))
    assert [tuple(a.shape) for a, _ in crop] == [(4, 0, 2), (4, 0, 2)]
    with pytest.raises(InvalidArgumentError, match="tuple are stacked"):
        StoreGateDataset(sg, "train", ("audio", "y"))


def _check_two_workers(sg: StoreGate, context: str) -> None:
    dataset = StoreGateDataset(sg, "all", "audio", "y")
    collate = dataset.collate_fn("pad")
    loader = DataLoader(
        dataset, batch_size=3, num_workers=2, multiprocessing_context=context, collate_fn=collate, timeout=90
    )
    seen = []
    for (padded, lengths), ids in loader:
        for row, n, i in zip(padded.numpy(), lengths.tolist(), ids.tolist(), strict=True):
            np.testing.assert_array_equal(row[:n], ROWS[i])
            seen.append(i)
    assert seen == list(range(len(ROWS)))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_two_workers_read_ragged_rows(context: str, tmp_path: Path) -> None:
    sg = _filled(StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "chunk": 2}, data_id="d"))
    _check_two_workers(sg, context)


@pytest.mark.s3
def test_on_s3_ragged_rows_through_two_workers(s3_server: S3Server, s3_bucket: str) -> None:
    args = {"output_dir": f"s3://{s3_bucket}/ragged", "storage_options": s3_server.storage_options, "chunk": 2}
    sg = _filled(StoreGate("zarr", args, data_id="d"))
    sg.update_data("audio", ROWS[0], "train", 0)  # an update on S3 too
    _same_rows(sg.get_data("audio", "all"), ROWS)
    _check_two_workers(sg, "fork")


def test_verify_reads_both_arrays_and_checks_the_offsets(tmp_path: Path) -> None:
    sg = _filled(StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr")}, data_id="d"))
    assert sg.verify().ok
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="a")
    group["d/train/audio@offsets"][-1] = 99  # another tool broke the offsets
    sg.refresh()
    assert any("ragged offsets must rise" in f.what for f in sg.verify().findings)


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, backend: Any, method: str, n: int) -> None:
    """Make ``backend.method`` raise OSError on its n-th call."""
    calls: list[Any] = []
    original = getattr(backend, method)

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[:3])
        if len(calls) == n:
            raise OSError(f"simulated I/O error in {method}")
        return original(*args, **kwargs)

    monkeypatch.setattr(backend, method, flaky)


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("append", lambda sg: sg.add_data("audio", [np.ones((3, 2))], phase="test")),  # offsets after values
        ("write", lambda sg: sg.update_data("audio", [np.ones((9, 2))], "train", [1])),  # offsets after new values
        ("detach", lambda sg: sg.delete_data("audio", "train")),  # the second array of two
    ],
)
def test_a_failed_write_leaves_both_arrays_as_they_were(
    sg: StoreGate, monkeypatch: pytest.MonkeyPatch, method: str, call: Any
) -> None:
    _filled(sg)
    sg.compile()
    before = snapshot(sg)
    _fail_on_call(monkeypatch, sg.backend_object, method, 2 if method != "write" else 1)
    with pytest.raises(OSError, match="simulated"):
        call(sg)
    monkeypatch.undo()
    assert_same_snapshot(before, snapshot(sg))


def test_phase_all_needs_the_variable_in_every_phase_that_holds_rows() -> None:
    sg = StoreGate("numpy", data_id="d")
    sg.add_data(["audio", "y"], [ROWS[:3], [0, 1, 2]], phase="train")
    sg.add_data("y", [3, 4], phase="valid")
    with pytest.raises(NotFoundError, match=r"var_name 'audio' .* missing from phase\(s\) \['valid'\]"):
        sg.get_data("audio", "all")
    _same_rows(sg.get_data("audio", "train"), ROWS[:3])


def test_the_streaming_writer_refuses_a_ragged_variable() -> None:
    sg = _filled(StoreGate("numpy", data_id="d"))
    with pytest.raises(InvalidArgumentError, match="writer appends rows of one shape"), sg.writer("test") as w:
        w.add({"audio": np.zeros((2, 3, 2)), "y": [0, 1]})
    _same_rows(sg.get_data("audio", "all"), ROWS)
