"""Issue 7: SIGINT (Ctrl-C) and SIGTERM (a batch system) stop every rank within seconds, print
one line, exit 130 / 143 and leave no partial output, also while gmsh meshes on rank 0 and the
other ranks wait in MPI.

Before the fix: one Ctrl-C to mpirun during meshing did not stop the job (gmsh reset SIGTERM and
PETSc caught it with MPI_Abort 59), SIGINT during ``maps`` printed a traceback, and an
interrupted run exited 2."""

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from cli_helpers import MPIRUN, hybrid_command

SLOW_DISC = """\
[geometry]
shape = "disc"
tumour_radius = 4e-3
mesh_size = 1.5e-5
surface_mesh_size = 1.5e-5
[output]
directory = "{out}"
"""
"""About a million triangles: gmsh is still meshing when the signal comes."""


def interrupt(args, signum, wait_for: str, ranks: int = 1, timeout: float = 60):
    """Start ``hybrid *args``, send ``signum`` once ``wait_for`` is printed; (status, stdout, stderr)."""
    process = subprocess.Popen(hybrid_command(*args, ranks=ranks), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while not any(wait_for in line for line in lines):
        assert process.poll() is None and time.monotonic() < deadline, f"no {wait_for!r} line: {lines}"
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signum)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"still running 30 s after {signal.Signals(signum).name}")
    reader.join(5)
    return process.returncode, "".join(lines), process.stderr.read()


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_during_meshing_stops_every_rank(tmp_path, ranks, signum):
    config = tmp_path / "slow.toml"
    config.write_text(SLOW_DISC.format(out=tmp_path / "out"))
    status, _, stderr = interrupt(["forward", config], signum, "meshing", ranks=ranks)
    assert status == 128 + signum, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("hybrid:")]
    assert lines == [f"hybrid: interrupted by {signal.Signals(signum).name}; partial outputs removed"], stderr
    assert "Traceback" not in stderr and "PETSC ERROR" not in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("ranks", [1, 2])
def test_interrupt_during_maps_fit(tmp_path, ranks):
    from hybrid.commands.phantom import run_phantom

    toml = run_phantom(tmp_path / "ph", shape=(24, 24, 1), voxel_mm=(0.625, 0.625, 1.0))
    status, _, stderr = interrupt(["maps", toml], signal.SIGINT, "voxels (", ranks=ranks)
    assert status == 130, stderr
    assert stderr.strip() == "hybrid: interrupted by SIGINT; partial outputs removed"
    assert not (tmp_path / "ph" / "maps").exists()


MEDIUM_DISC = """\
[geometry]
shape = "disc"
tumour_radius = 4e-3
mesh_size = {h}
surface_mesh_size = {h}
[output]
directory = "{out}"
"""
"""A disc whose field file takes long enough to write that a signal can land during the write."""


@pytest.mark.parametrize("ranks", [1, 2])
def test_sigterm_while_fields_are_written_leaves_a_complete_set(tmp_path, ranks):
    """SIGTERM sent as soon as the staged ``ifp.h5`` appears (during the write, or between the
    write and the commit): the output directory holds either the previous set, byte for byte, or
    the new complete one; never a mixture and never a staging folder."""
    out = tmp_path / "out"
    config = tmp_path / "disc.toml"
    config.write_text(MEDIUM_DISC.format(h=4e-4, out=out))
    assert subprocess.run(hybrid_command("forward", config), capture_output=True, timeout=120).returncode == 0
    previous = {path.name: path.read_bytes() for path in out.iterdir()}

    config.write_text(MEDIUM_DISC.format(h=5e-5, out=out))
    process = subprocess.Popen(hybrid_command("forward", config, "--overwrite", ranks=ranks),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob(".hybrid-partial-*/ifp.h5")):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("still running 30 s after SIGTERM")
    stderr = process.stderr.read()
    assert "Traceback" not in stderr, stderr
    assert not list(out.glob(".hybrid-partial-*")), "staging folder left behind"
    now = {path.name: path.read_bytes() for path in out.iterdir()}
    if process.returncode == 143:
        assert stderr.strip().splitlines()[-1] == "hybrid: interrupted by SIGTERM; partial outputs removed", stderr
        assert now == previous, "the previous output set was changed by the interrupted run"
    else:  # the signal came after the commit: the new set must be complete
        assert process.returncode == 0, stderr
        summary = json.loads(now["summary.json"])
        assert {summary["outputs"]["fields"], "ifp.h5", "summary.json"} <= set(now)
        assert summary["mesh"]["cells"] > 10 * json.loads(previous["summary.json"])["mesh"]["cells"]


SIGNAL_RANK1_AFTER_MESH = """\
import os, signal, sys
from mpi4py import MPI
import hybrid._fem_stack
import dolfinx.io

write_mesh = dolfinx.io.XDMFFile.write_mesh

def write_mesh_then_signal_rank1(self, *args, **kwargs):
    write_mesh(self, *args, **kwargs)
    if MPI.COMM_WORLD.rank == 1:
        os.kill(os.getpid(), signal.SIGTERM)

dolfinx.io.XDMFFile.write_mesh = write_mesh_then_signal_rank1
from hybrid.cli import main
sys.exit(main(sys.argv[1:]))
"""
"""``hybrid`` whose rank 1 alone gets SIGTERM between writing the mesh and the first field, while
rank 0 is already inside the next collective HDF5 write (holding the GIL, so no handler runs there)."""


def test_sigterm_to_one_rank_between_collective_writes(tmp_path):
    """Before the fix, rank 1 unwound through the ``with XDMFFile`` exit, a collective close that
    rank 0 never joined: both ranks waited for ever. Now rank 1 exits where it stands; as rank 0
    cannot clean up, rank 1 removes the staging folder (and the output directory it created),
    prints the one line, and mpirun ends rank 0."""
    out = tmp_path / "out"
    config = tmp_path / "disc.toml"
    config.write_text(MEDIUM_DISC.format(h=1e-4, out=out))
    result = subprocess.run([MPIRUN, "-n", "2", sys.executable, "-c", SIGNAL_RANK1_AFTER_MESH, "forward", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 143, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("hybrid:")]
    assert lines == ["hybrid: interrupted by SIGTERM; partial outputs removed"], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists(), list(out.iterdir())


SIGNAL_RANK0_DURING_COMMIT = """\
import os, signal, sys
from mpi4py import MPI
from hybrid.io.outputs import OutputTransaction

commit = OutputTransaction.commit

def signal_then_commit(self):
    os.kill(os.getpid(), signal.SIGTERM)   # handled at the next line of Python: inside the commit
    commit(self)

OutputTransaction.commit = signal_then_commit
from hybrid.cli import main
sys.exit(main(sys.argv[1:]))
"""
"""``hybrid`` whose rank 0 gets SIGTERM as it starts moving the staged files into place."""


@pytest.mark.parametrize("ranks", [1, 2])
def test_sigterm_during_the_commit_is_held_and_the_run_completes(tmp_path, ranks):
    """A signal during the commit must not cut it (a half-moved set, the old one already deleted):
    the commit finishes, the signal is then too late to matter, and the run exits 0 with the new set."""
    out = tmp_path / "out"
    config = tmp_path / "disc.toml"
    config.write_text(MEDIUM_DISC.format(h=4e-4, out=out))
    assert subprocess.run(hybrid_command("forward", config), capture_output=True, timeout=120).returncode == 0
    config.write_text(MEDIUM_DISC.format(h=2e-4, out=out))
    launcher = [MPIRUN, "-n", str(ranks)] if ranks > 1 else []
    result = subprocess.run([*launcher, sys.executable, "-c", SIGNAL_RANK0_DURING_COMMIT, "forward", str(config),
                             "--overwrite"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "interrupted" not in result.stderr
    names = sorted(path.name for path in out.iterdir())
    assert names == ["ifp.h5", "ifp.xdmf", "summary.json"], names
    assert json.loads((out / "summary.json").read_text())["mesh"]["cells"] > 0
