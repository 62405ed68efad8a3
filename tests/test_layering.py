"""Design rule (README, Layout): FEM code never imports torch; imaging and the PINN never import
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
    code = "import sys, hybrid.forward, hybrid.commands.forward, hybrid.commands.demo; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_problems_import_torch_and_ufl_only_lazily_in_the_namespace_adapter():
    """hybrid/problems is shared by FEM and PINN: only namespace.py may name torch or ufl, and only
    inside functions; no problems module imports the FEM stack."""
    heavy = {"torch", "ufl", "dolfinx", "petsc4py", "dolfinx_solver", "basix"}
    offending = {}
    for path in (PACKAGE / "problems").rglob("*.py"):
        body = ast.parse(path.read_text()).body
        module_level = {alias.name.split(".")[0] for node in body if isinstance(node, ast.Import)
                        for alias in node.names}
        module_level |= {node.module.split(".")[0] for node in body
                         if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
        anywhere = imported_modules(path)
        bad = module_level & heavy if path.name == "namespace.py" else anywhere & heavy
        if bad:
            offending[str(path.relative_to(PACKAGE))] = sorted(bad)
    assert not offending


def test_problems_import_loads_no_torch_and_no_fem_stack():
    code = ("import sys, pkgutil, importlib, hybrid.problems as p; "
            "[importlib.import_module('hybrid.problems.' + m.name) for m in pkgutil.iter_modules(p.__path__)]; "
            "bad = [m for m in ('torch', 'ufl', 'dolfinx', 'petsc4py') if m in sys.modules]; print(bad); "
            "sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_torch_is_imported_only_by_the_inverse_package():
    """Outside hybrid/inverse no module names torch (hybrid/problems/namespace.py imports it lazily,
    checked above), so the FEM, imaging, records and CLI paths never need it."""
    offending = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                       if "torch" in imported_modules(path)
                       and path.parent.name != "inverse" and path != PACKAGE / "problems" / "namespace.py")
    assert not offending


def test_inverse_import_loads_no_fem_stack():
    code = ("import sys, pkgutil, importlib, hybrid.inverse as p; "
            "[importlib.import_module('hybrid.inverse.' + m.name) for m in pkgutil.iter_modules(p.__path__)]; "
            "import hybrid.records; "
            "bad = [m for m in ('dolfinx', 'ufl', 'petsc4py', 'dolfinx_solver', 'basix') if m in sys.modules]; "
            "print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_records_import_loads_no_torch_and_no_fem_stack():
    code = ("import sys, hybrid.records; "
            "bad = [m for m in ('torch', 'dolfinx', 'ufl', 'petsc4py') if m in sys.modules]; print(bad); "
            "sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
