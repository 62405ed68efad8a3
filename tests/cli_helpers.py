"""Run the ``hybrid`` command line as a user does (a subprocess, serially or under ``mpirun -n 2``)
and check its error contract: exit status, one ``hybrid: error:`` line, no traceback."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
MPIRUN = shutil.which("mpirun", path=str(BIN)) or shutil.which("mpirun")

DISC_CONFIG = """\
[geometry]
shape = "disc"
tumour_radius = 2.0e-3
host_thickness = 0.0
mesh_size = 4.0e-4
{geometry}
[solver]
{solver}
[output]
directory = "{out}"
"""
"""A tiny 2-D forward run (a few hundred cells); ``geometry``/``solver`` add keys."""


def hybrid_command(*args, ranks: int = 1) -> list[str]:
    launcher = [MPIRUN, "-n", str(ranks)] if ranks > 1 else []
    return [*launcher, sys.executable, "-m", "hybrid", *map(str, args)]


def run_hybrid(*args, ranks: int = 1, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``hybrid *args`` on ``ranks`` ranks; a hang fails the test through ``timeout`` [s]."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(hybrid_command(*args, ranks=ranks), capture_output=True, text=True, timeout=timeout,
                          env=env, **kwargs)


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("hybrid:")]


def assert_one_error(result, message: str, status: int = 2) -> str:
    """Exit ``status``, exactly one ``hybrid: error:`` line containing ``message``, no traceback."""
    lines = error_lines(result)
    assert result.returncode == status, result.stderr
    assert len(lines) == 1 and lines[0].startswith("hybrid: error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return lines[0]


def disc_config(directory: Path, out: Path | str, geometry: str = "", solver: str = "") -> Path:
    """Write the tiny disc configuration into ``directory``/disc.toml, output ``out``."""
    path = Path(directory) / "disc.toml"
    path.write_text(DISC_CONFIG.format(geometry=geometry, solver=solver, out=out))
    return path


def run_hybrid_with_file_size_limit(*args, limit_bytes: int, ranks: int = 1, timeout: float = 90):
    """``hybrid *args`` with RLIMIT_FSIZE set once MPI has started (MPI's own shared-memory files
    need more): a write beyond ``limit_bytes`` fails with EFBIG, as on a full disk."""
    code = ("from mpi4py import MPI; import resource, sys; "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes})); "
            "from hybrid.cli import main; sys.exit(main(sys.argv[1:]))")
    launcher = [MPIRUN, "-n", str(ranks)] if ranks > 1 else []
    return subprocess.run([*launcher, sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def small_phantom(directory: Path) -> Path:
    """A 16x16x1 digital phantom in ``directory``; its maps.toml (returned) fits DCE and VFA only."""
    from hybrid.commands.phantom import run_phantom

    toml = run_phantom(directory, shape=(16, 16, 1), voxel_mm=(0.875, 0.875, 1.0))
    text = toml.read_text()
    toml.write_text(text[:text.index("[cest]")] + text[text.index("[mask]"):])
    return toml


RANK0_FAILURE = """\
import importlib, sys
module, function = sys.argv[1].rsplit(".", 1)
def failing(*args, **kwargs):
    raise OSError(f"injected failure on rank 0 in {function}")
setattr(importlib.import_module(module), function, failing)
from hybrid.cli import main
sys.exit(main(sys.argv[2:]))
"""
"""Rank 0's program of :func:`run_hybrid_failing_on_rank0`: ``module.function`` raises, then the CLI."""


def run_hybrid_failing_on_rank0(target: str, *args, directory: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """``hybrid *args`` on 2 ranks where ``target`` ("module.function", looked up where it is called)
    fails on rank 0 only (an MPMD launch); a hang fails the test through ``timeout`` [s]."""
    script = directory / "rank0_failure.py"
    script.write_text(RANK0_FAILURE)
    command = [MPIRUN, "-n", "1", sys.executable, str(script), target, *map(str, args),
               ":", "-n", "1", sys.executable, "-m", "hybrid", *map(str, args)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
