"""The notebooks run top to bottom in a kernel of this virtualenv.

Each notebook is stored without outputs; these tests execute a copy with nbclient and check
that no cell failed; for quickstart.ipynb that the store showed itself as the HTML info
table, for explore.ipynb that every plot cell drew a picture.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.timeout(300)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOK = NOTEBOOKS / "quickstart.ipynb"
EXPLORE = NOTEBOOKS / "explore.ipynb"
# Appended to the executed copy: where the kernel's Python lives.
_PROBE = "import sys\nprint(sys.prefix)"


def _read(path: Path = NOTEBOOK) -> Any:
    return nbformat.read(path, as_version=4)


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _execute(NOTEBOOK, tmp_path_factory)


@pytest.fixture(scope="module")
def explored(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _execute(EXPLORE, tmp_path_factory)


def _execute(path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    nb = _read(path)
    nb.cells.append(nbformat.v4.new_code_cell(_PROBE))
    workdir = tmp_path_factory.mktemp("notebook")
    # kernel_name 'python3' is ipykernel's spec, whose argv starts with "python": jupyter_client
    # replaces that with sys.executable, so the kernel runs in this virtualenv. JUPYTER_PATH
    # puts the virtualenv's kernel specs before any 'python3' spec in the user's home.
    client = NotebookClient(
        nb, kernel_name="python3", timeout=120, allow_errors=False, resources={"metadata": {"path": str(workdir)}}
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))
        client.execute()
    return nb


def _outputs(nb: Any) -> list[Any]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


@pytest.mark.parametrize("path", [NOTEBOOK, EXPLORE], ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = _read(path)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "the notebook has no code cells"
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)


def test_notebook_runs_without_errors(executed: Any) -> None:
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)
    errors = [out for out in _outputs(executed) if out.output_type == "error"]
    assert errors == []


def test_kernel_ran_in_this_virtualenv(executed: Any) -> None:
    probe = executed.cells[-1]
    printed = "".join(out.get("text", "") for out in probe.outputs if out.output_type == "stream")
    assert printed.strip() == sys.prefix


def test_store_displays_the_html_info_table(executed: Any) -> None:
    tables = [
        out.data["text/html"]
        for out in _outputs(executed)
        if out.output_type in ("execute_result", "display_data") and "text/html" in out.data
    ]
    assert tables, "no cell displayed HTML"
    first = tables[0]
    assert '<div class="storegate-info">' in first
    for header in ("phase", "backend", "var_name", "dtype", "row shape", "rows", "chunk rows", "stored bytes"):
        assert f"<th>{header}</th>" in first
    # 500 rows split (0.8, 0.1, 0.1) in the notebook's first cells.
    for cell in ("<td>images</td>", "<td>labels</td>", "<td>(8, 8)</td>", ">400</td>", ">50</td>"):
        assert cell in first
    # The hybrid cells show the numpy store holding the moved variable.
    assert any("<td>numpy</td><td>images_f32</td>" in t for t in tables)


def test_printed_table_and_read_back_values(executed: Any) -> None:
    streams = "".join(out.get("text", "") for out in _outputs(executed) if out.output_type == "stream")
    assert "phase  backend  var_name" in streams  # show_info()
    assert "refused:" in streams  # the read-only store refused a write


def test_explore_notebook_runs_and_draws_every_plot(explored: Any) -> None:
    code = [cell for cell in explored.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)
    assert [out for out in _outputs(explored) if out.output_type == "error"] == []
    plotting = [cell for cell in code if "plt.show()" in cell.source]
    assert len(plotting) == 5
    for cell in plotting:  # each plot cell drew a picture (a PNG), not just text
        assert any(out.output_type == "display_data" and "image/png" in out.data for out in cell.outputs), cell.source
    streams = "".join(out.get("text", "") for out in _outputs(explored) if out.output_type == "stream")
    assert "{'train': " in streams  # rows per phase, printed beside the bars
    assert "rows: " in streams  # the oversampled view grew train
