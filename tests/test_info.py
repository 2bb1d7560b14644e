"""show_info() and _repr_html_: one table, as text for terminals and HTML for notebooks."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import zarr

from storegate import StoreGate
from storegate.info import OTHERS_TITLE, human_bytes

pytestmark = pytest.mark.timeout(120)

COLUMNS = [
    "phase",
    "backend",
    "var_name",
    "dtype",
    "row shape",
    "rows",
    "chunk rows",
    "stored bytes",
    "codec",
    "lengths",
]
SPLIT = (30, 12, 8)
CHUNK = 16
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


# --- helpers ---------------------------------------------------------------------------


def _data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    # Random values compress badly, so every chunk is really written and has a size.
    return {"x": rng.random((sum(SPLIT), 2, 3)).astype(np.float32), "y": rng.integers(0, 1000, sum(SPLIT))}


def _fill(sg: StoreGate, data: dict[str, np.ndarray]) -> None:
    for var, array in data.items():
        sg.add_data(var, array, phase=SPLIT)


def _phase_slices() -> dict[str, slice]:
    bounds = np.cumsum([0, *SPLIT])
    return {p: slice(int(bounds[i]), int(bounds[i + 1])) for i, p in enumerate(("train", "valid", "test"))}


def _parse_text(text: str) -> tuple[str, list[str], list[dict[str, str]]]:
    """Title, headers and rows of a rendered table, using the dashed rule for the column spans."""
    title, header, rule, *body = text.splitlines()
    spans = [m.span() for m in re.finditer(r"-+", rule)]

    def cells(line: str) -> list[str]:
        return [line[a:b].strip() for a, b in spans]

    headers = cells(header)
    return title, headers, [dict(zip(headers, cells(line), strict=True)) for line in body]


def _show(sg: StoreGate, capsys: pytest.CaptureFixture[str]) -> str:
    sg.show_info()
    return capsys.readouterr().out


class _TableParser(HTMLParser):
    """Collects the text of <th> and <td> cells, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.title = ""
        self._cell: str | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "p":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(self._cell)
            self._cell = None
        elif tag == "p":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell += data
        elif self._in_title:
            self.title += data


def _parse_html(markup: str) -> tuple[str, list[str], list[dict[str, str]]]:
    parser = _TableParser()
    parser.feed(markup)
    headers, *body = parser.rows
    return parser.title, headers, [dict(zip(headers, row, strict=True)) for row in body]


def _to_bytes(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


def _disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.fixture
def zarr_gate(tmp_path: Path) -> StoreGate:
    sg = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "mode": "w", "chunk": CHUNK}, data_id="info")
    _fill(sg, _data())
    return sg


# --- the text table --------------------------------------------------------------------


def test_text_table_has_the_columns_and_one_row_per_phase_and_variable(
    zarr_gate: StoreGate, capsys: pytest.CaptureFixture[str]
) -> None:
    _, headers, rows = _parse_text(_show(zarr_gate, capsys))
    assert headers == COLUMNS
    data = _data()
    expected = [
        {
            "phase": phase,
            "backend": "zarr",
            "var_name": var,
            "dtype": str(array.dtype),
            "row shape": str(array.shape[1:]),
            "rows": str(sl.stop - sl.start),
            "chunk rows": str(CHUNK),
        }
        for phase, sl in _phase_slices().items()
        for var, array in sorted(data.items())
    ]
    assert [{k: r[k] for k in expected[0]} for r in rows] == expected


def test_stored_bytes_match_the_bytes_on_disk(
    zarr_gate: StoreGate, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, rows = _parse_text(_show(zarr_gate, capsys))
    for row in rows:
        on_disk = _disk_bytes(tmp_path / "s.zarr" / "info" / row["phase"] / row["var_name"])
        # The table rounds to 0.1 of its unit.
        assert abs(_to_bytes(row["stored bytes"]) - on_disk) <= 0.05 * 1024, row
        assert row["codec"] == "Zstd"


def test_codec_column_names_the_codec_of_each_variable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = {"output_dir": str(tmp_path / "c.zarr"), "mode": "w", "compressor": "gzip"}
    sg = StoreGate("zarr", args, data_id="c")
    sg.add_data("x", np.arange(10))
    _, _, rows = _parse_text(_show(sg, capsys))
    assert [r["codec"] for r in rows] == ["Gzip"]


def test_numbers_are_right_aligned_under_their_header(zarr_gate: StoreGate, capsys: pytest.CaptureFixture[str]) -> None:
    _, header, _, *body = _show(zarr_gate, capsys).splitlines()
    for column in ("rows", "chunk rows", "stored bytes"):
        end = header.index(column) + len(column)
        for line in body:
            assert line[end - 1] != " ", (column, line)
            assert line[end : end + 1] in ("", " "), (column, line)


def test_title_names_data_id_backend_location_and_compile_state(
    zarr_gate: StoreGate, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    title, _, _ = _parse_text(_show(zarr_gate, capsys))
    assert "data_id='info'" in title
    assert "backend='zarr'" in title
    assert str(tmp_path / "s.zarr") in title
    assert "compiled=False" in title
    zarr_gate.compile()
    title, _, _ = _parse_text(_show(zarr_gate, capsys))
    assert "compiled=True" in title


def test_compile_with_show_info_prints_the_table(zarr_gate: StoreGate, capsys: pytest.CaptureFixture[str]) -> None:
    zarr_gate.compile(show_info=True)
    title, headers, rows = _parse_text(capsys.readouterr().out)
    assert "compiled=True" in title
    assert headers == COLUMNS
    assert len(rows) == 3 * len(_data())


def test_read_only_store_shows_the_same_rows(
    zarr_gate: StoreGate, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zarr_gate.compile()
    _, _, before = _parse_text(_show(zarr_gate, capsys))
    reader = StoreGate("zarr", {"output_dir": str(tmp_path / "s.zarr"), "mode": "r"}, data_id="info")
    title, _, after = _parse_text(_show(reader, capsys))
    assert after == before
    assert "compiled=True" in title


def test_numpy_backend_shows_the_bytes_held_in_memory(capsys: pytest.CaptureFixture[str]) -> None:
    sg = StoreGate("numpy", data_id="mem")
    _fill(sg, _data())
    _, _, rows = _parse_text(_show(sg, capsys))
    assert {r["backend"] for r in rows} == {"numpy"}
    assert {(r["chunk rows"], r["codec"]) for r in rows} == {("-", "none")}  # no chunks, nothing encoded
    for row in rows:
        held = sg.get_data(row["var_name"], row["phase"]).nbytes
        assert row["stored bytes"] == human_bytes(held), row
    assert [r["rows"] for r in rows] == [str(n) for n in SPLIT for _ in _data()]


def test_hybrid_lists_the_rows_of_both_stores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sg = StoreGate("hybrid", {"output_dir": str(tmp_path / "h.zarr"), "mode": "w", "chunk": CHUNK}, data_id="h")
    data = _data()
    sg.add_data("x", data["x"], phase=SPLIT)  # mode starts as 'zarr'
    sg.set_mode("numpy")
    sg.add_data("y", data["y"], phase=SPLIT)
    title, _, rows = _parse_text(_show(sg, capsys))
    assert "mode='numpy'" in title
    by_store = {(r["phase"], r["var_name"]): (r["backend"], r["chunk rows"]) for r in rows}
    for phase in ("train", "valid", "test"):
        assert by_store[(phase, "x")] == ("zarr", str(CHUNK))
        assert by_store[(phase, "y")] == ("numpy", "-")
    assert len(rows) == 6


def test_empty_data_id_says_no_data(capsys: pytest.CaptureFixture[str]) -> None:
    out = _show(StoreGate("numpy", data_id="empty"), capsys)
    assert out.splitlines()[3:] == ["(no data)"]


def test_gate_without_data_id_explains_instead_of_raising(capsys: pytest.CaptureFixture[str]) -> None:
    sg = StoreGate("numpy", data_id="one")
    sg.add_data("x", np.arange(3))
    fresh = StoreGate("numpy")
    out = _show(fresh, capsys)
    assert "no data_id set" in out
    assert "set_data_id" in out
    assert "no data_id set" in fresh._repr_html_()


# --- the HTML table --------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "zarr", "hybrid"])
def test_html_table_has_the_same_title_and_rows_as_the_text(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = None if backend == "numpy" else {"output_dir": str(tmp_path / "t.zarr"), "mode": "w", "chunk": CHUNK}
    sg = StoreGate(backend, args, data_id="html")
    _fill(sg, _data())
    sg.compile()
    text = _parse_text(_show(sg, capsys))
    markup = sg._repr_html_()
    assert markup.count("<table>") == 1
    assert _parse_html(markup) == text
    assert len(text[2]) == 3 * len(_data())


def test_html_escapes_names(capsys: pytest.CaptureFixture[str]) -> None:
    sg = StoreGate("numpy", data_id="a&b")
    sg.add_data("<b>&x", np.arange(4))
    markup = sg._repr_html_()
    assert "<b>" not in markup
    assert "&lt;b&gt;&amp;x" in markup
    assert "a&amp;b" in markup
    _, _, rows = _parse_html(markup)
    assert [r["var_name"] for r in rows] == ["<b>&x"]


def test_html_of_an_empty_data_id_says_no_data() -> None:
    parser = _TableParser()
    parser.feed(StoreGate("numpy", data_id="e")._repr_html_())
    assert parser.rows == [COLUMNS, ["(no data)"]]


# --- other objects ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["zarr", "hybrid"])
def test_other_objects_are_listed_below_the_table_in_text_and_html(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "o.zarr"
    sg = StoreGate(backend, {"output_dir": str(path), "mode": "w"}, data_id="o")
    sg.add_data("x", np.arange(4))
    zarr.open_group(str(path))["o/train"].create_array("<mean>", shape=(), dtype="f8")  # another tool's 0-d array
    text = _show(sg, capsys)
    table, others = text.split(OTHERS_TITLE)
    assert [r["var_name"] for r in _parse_text(table)[2]] == ["x"]
    assert others == ":\n  train/<mean>: 0-d array\n"
    markup = sg._repr_html_()
    assert f"<p>{OTHERS_TITLE}:</p><ul><li>train/&lt;mean&gt;: 0-d array</li></ul>" in markup
    assert _parse_html(markup)[2] == _parse_text(table)[2]


# --- helpers of the module -------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 * 1024**2, "5.0 MiB"),
        (3 * 1024**3, "3.0 GiB"),
    ],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


def test_stored_bytes_do_not_count_a_sibling_with_a_longer_name() -> None:
    # zarr's nbytes_stored() lists by plain prefix, so on a MemoryStore 'a' also counted 'ab'.
    import zarr

    gate = StoreGate("zarr", {"output_dir": zarr.storage.MemoryStore()}, data_id="d")
    gate.add_data("a", np.zeros(1000))
    before = gate.backend_object.info("d", "train", "a").stored_bytes
    gate.add_data("ab", np.random.default_rng(0).random(100_000))
    after = gate.backend_object.info("d", "train", "a").stored_bytes
    assert before == after
    assert after is not None
    assert after < 10_000
