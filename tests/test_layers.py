"""What the import-linter contract in pyproject.toml cannot say about storegate's layers.

- No module imports a private name (``_x``) of another storegate module: what a module
  shares, it names publicly.
- Imports sit at module level, except those of optional dependencies, which are imported
  where they are needed so that ``import storegate`` works without them.
- The contract itself is kept (``lint-imports``, run by ``make lint`` too).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "storegate"
#: Dependencies that an extra provides: imported inside the functions that need them.
OPTIONAL = {"zarrs", "aiobotocore", "botocore", "h5py", "tensorflow", "xarray", "dask"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _module_name(p))
def test_no_private_name_crosses_modules(path: Path) -> None:
    here = _module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("storegate"):
            private = [a.name for a in node.names if a.name.startswith("_")]
            assert node.module == here or not private, f"{here} imports {private} from {node.module}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _module_name(p))
def test_imports_sit_at_module_level(path: Path) -> None:
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    guarded = {id(n) for node in tree.body if isinstance(node, (ast.Try, ast.If)) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in top_level | guarded:
            continue
        roots = {a.name.split(".")[0] for a in node.names} if isinstance(node, ast.Import) else {node.module or ""}
        roots = {r.split(".")[0] for r in roots}
        assert roots <= OPTIONAL, f"{_module_name(path)} line {node.lineno} imports {roots} inside a function"


def test_the_layer_contract_is_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout
