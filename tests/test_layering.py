"""Design rule (shared/DESIGN.md): FEM code never imports torch; imaging and the PINN never import
DOLFINx. Checked on the source (imports at any depth) and by importing in a clean interpreter."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hybrid"
FORBIDDEN = {
    "forward": {"torch"},
    "mesh": {"torch"},
    "imaging": {"torch", "dolfinx", "petsc4py", "ufl", "dolfinx_solver", "basix"},
    "inverse": {"dolfinx", "petsc4py", "ufl", "dolfinx_solver", "basix"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("subpackage", sorted(FORBIDDEN))
def test_source_imports_respect_layering(subpackage):
    folder = PACKAGE / subpackage
    offending = {
        str(path.relative_to(PACKAGE)): sorted(imported_modules(path) & FORBIDDEN[subpackage])
        for path in folder.rglob("*.py")
    }
    assert not {k: v for k, v in offending.items() if v}


def test_imaging_import_loads_no_fem_stack_or_torch():
    code = ("import sys, hybrid.imaging.dce, hybrid.imaging.cest; "
            "bad = [m for m in ('dolfinx', 'torch', 'petsc4py') if m in sys.modules]; print(bad); "
            "sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_forward_import_loads_no_torch():
    code = "import sys, hybrid.forward, hybrid.pipeline; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
