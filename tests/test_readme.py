"""The README's python blocks run, in order, in one namespace: the README cannot go stale.

Every fenced block opened with exactly ```python is executed (other languages, e.g. bash,
are not). Blocks share one namespace, like a reader pasting them into one session, and run
in a temporary working directory. A failure names the block, its first line in README.md
and its source, and the traceback points at README.md lines.
"""

from __future__ import annotations

import re
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(300)

README = Path(__file__).resolve().parent.parent / "README.md"
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
# Headings other changes fill in; they must stay, in this order, before Development.
_HEADINGS = ("## Quick start", "## Object storage and NAS", "## Training loops with PyTorch", "## Development")


@dataclass(frozen=True)
class Block:
    """One ```python block: its number (from 1), first code line in README.md and source."""

    number: int
    line: int
    source: str

    @property
    def name(self) -> str:
        return f"README.md python block {self.number} (line {self.line})"


def python_blocks(text: str) -> list[Block]:
    """Every ```python block of ``text``, in order."""
    return [
        Block(i, text.count("\n", 0, m.start(1)) + 1, m.group(1)) for i, m in enumerate(_FENCE.finditer(text), start=1)
    ]


def run_blocks(blocks: list[Block], namespace: dict[str, Any]) -> None:
    """Execute ``blocks`` in order in ``namespace``; fail naming the first block that raises."""
    for block in blocks:
        # Padding with newlines makes traceback line numbers those of README.md.
        code = compile("\n" * (block.line - 1) + block.source, str(README), "exec")
        try:
            exec(code, namespace)
        except Exception:
            pytest.fail(
                f"{block.name} failed:\n{traceback.format_exc()}\n--- source of the block ---\n{block.source}",
                pytrace=False,
            )


def test_readme_python_blocks_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 10, "the README's tour lost its python blocks"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    try:
        run_blocks(blocks, namespace)
    finally:
        _cleanup(namespace)


def _cleanup(namespace: dict[str, Any]) -> None:
    # The README keeps its stores in TemporaryDirectory objects; removing them here avoids
    # the ResourceWarning of an implicit clean-up at exit (an error under filterwarnings).
    for value in namespace.values():
        if isinstance(value, tempfile.TemporaryDirectory):
            value.cleanup()


def test_quick_start_comes_first_and_headings_are_in_place() -> None:
    text = README.read_text(encoding="utf-8")
    first_fence = re.search(r"^```(\w*)\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert first_fence is not None
    assert first_fence.group(1) == "bash"
    commands = [line.split("#")[0].strip() for line in first_fence.group(2).splitlines()]
    assert commands == ["make demo", "make test"]
    headings = [line.strip() for line in text.splitlines() if line.startswith("## ")]
    positions = [headings.index(h) for h in _HEADINGS]
    assert positions == sorted(positions), headings
    assert headings[0] == "## Quick start"
    assert headings[-1] == "## Development"


# --- the runner itself ------------------------------------------------------------------

_SAMPLE = """# t

```bash
echo not python
```

```python
a = 1
```

text

```python
b = a + 1
```

```pycon
>>> not run
```
"""


def test_python_blocks_finds_only_python_fences_with_their_lines() -> None:
    blocks = python_blocks(_SAMPLE)
    assert [(b.number, b.line, b.source) for b in blocks] == [(1, 8, "a = 1\n"), (2, 14, "b = a + 1\n")]


def test_blocks_share_one_namespace() -> None:
    namespace: dict[str, Any] = {}
    run_blocks(python_blocks(_SAMPLE), namespace)
    assert namespace["b"] == 2


def test_a_failing_block_is_named_with_its_readme_line() -> None:
    text = _SAMPLE + "\n```python\nc = b\nraise RuntimeError('boom')\n```\n"
    with pytest.raises(pytest.fail.Exception) as info:
        run_blocks(python_blocks(text), {})
    message = str(info.value)
    assert "README.md python block 3 (line 22) failed" in message
    assert "RuntimeError: boom" in message
    # The traceback points at the README line of the raise.
    assert f'File "{README}", line 23' in message
