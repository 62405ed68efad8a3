"""Issue 7: every output set is complete or absent. Runs write into a staging folder that is
renamed into the output directory only on success, ``summary.json`` last; a non-empty output
directory is refused without ``--overwrite``; a failed rerun leaves the previous set untouched.

Before the fix: a failed rerun left a new ``ifp.xdmf`` beside the previous run's summary.json,
SIGTERM during the write left a 96-byte ``ifp.h5`` beside the old summary, a Patlak run followed
by an extended-Tofts run left the stale ``PS.nii.gz``, and a full disk left fields without summary."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import (assert_one_error, disc_config, error_lines, run_hybrid, run_hybrid_with_file_size_limit,
                         small_phantom)
from hybrid.io.outputs import STAGING_PREFIX, OutputTransaction

RANKS = [1, 2]


def snapshot(directory: Path) -> dict[str, bytes]:
    """The output set in ``directory``; a hidden staging folder left by a rank that MPI_Abort
    killed is not part of it (the next run ignores and clears it)."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if not p.name.startswith(STAGING_PREFIX)}


# ---- the transaction itself (no subprocess) ----------------------------------------------------

def test_commit_moves_the_staged_set_in_with_the_summary_last(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("old")
    (out / "PS.nii.gz").write_text("stale map of an earlier model")
    transaction = OutputTransaction(out, overwrite=True)
    staging = transaction.open()
    for name in ("summary.json", "Ktrans.nii.gz", "maps.png"):
        (staging / name).write_text(name)
    assert (out / "summary.json").read_text() == "old"   # nothing replaced before the commit
    moved = []
    rename = Path.rename
    monkeypatch.setattr(Path, "rename", lambda self, target: (moved.append(self.name), rename(self, target))[1])
    transaction.commit()
    assert moved[-1] == "summary.json"
    assert sorted(p.name for p in out.iterdir()) == ["Ktrans.nii.gz", "maps.png", "summary.json"]
    assert (out / "summary.json").read_text() == "summary.json"


def test_discard_leaves_nothing_behind(tmp_path):
    transaction = OutputTransaction(tmp_path / "new" / "out")
    (transaction.open() / "ifp.h5").write_bytes(b"x" * 96)
    transaction.discard()
    assert not (tmp_path / "new" / "out").exists()


def test_one_process_of_a_run_discards_the_staging_folder(tmp_path):
    """Rank 0 opens, another rank follows; after an interrupt either may discard, the first one
    does (True) and the other finds nothing (False); after a commit, nobody discards."""
    opened = OutputTransaction(tmp_path / "out")
    (opened.open() / "ifp.h5").write_bytes(b"x")
    follower = OutputTransaction(tmp_path / "out")
    follower.follow(opened.staging, opened.created_directory)
    assert follower.discard() is True
    assert opened.discard() is False
    assert not (tmp_path / "out").exists()

    committed = OutputTransaction(tmp_path / "out")
    (committed.open() / "summary.json").write_text("{}")
    committed.commit()
    assert committed.discard() is False
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["summary.json"]


@pytest.mark.parametrize("setup, kwargs, message", [
    (lambda out: (out.mkdir(), (out / "summary.json").write_text("{}")), {}, "is not empty (1 entries: summary.json)"),
    (lambda out: out.write_text("a file"), {"overwrite": True}, "is an existing file, not a directory"),
    (lambda out: (out.mkdir(), (out / "run.toml").write_text("")), {"overwrite": True, "inputs": ["run.toml"]},
     "contains the input"),
])
def test_refused_output_directories(tmp_path, setup, kwargs, message):
    out = tmp_path / "out"
    setup(out)
    inputs = [out / name for name in kwargs.pop("inputs", [])]
    with pytest.raises(ValueError, match=re.escape(message)):
        OutputTransaction(out, inputs=inputs, **kwargs).open()


def test_staging_folder_of_a_killed_run_is_ignored_and_cleared(tmp_path):
    out = tmp_path / "out"
    (out / f"{STAGING_PREFIX}12345").mkdir(parents=True)
    transaction = OutputTransaction(out)
    (transaction.open() / "summary.json").write_text("{}")
    transaction.commit()
    assert [p.name for p in out.iterdir()] == ["summary.json"]


# ---- the command line ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def previous_run(tmp_path_factory):
    """A successful serial run whose output set the tests below try to damage."""
    root = tmp_path_factory.mktemp("previous")
    result = run_hybrid("forward", disc_config(root, root / "out"))
    assert result.returncode == 0, result.stderr
    return root / "out"


@pytest.fixture
def previous(previous_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name, data in snapshot(previous_run).items():
        (out / name).write_bytes(data)
    return out


@pytest.mark.parametrize("ranks", RANKS)
def test_non_empty_output_directory_is_refused_without_overwrite(tmp_path, previous, ranks):
    before = snapshot(previous)
    result = run_hybrid("forward", disc_config(tmp_path, previous), ranks=ranks, timeout=90)
    assert_one_error(result, "is not empty (3 entries: ifp.h5, ifp.xdmf, summary.json)")
    assert "--overwrite" in result.stderr
    assert snapshot(previous) == before


@pytest.mark.parametrize("ranks", RANKS)
def test_failed_rerun_with_overwrite_keeps_the_previous_set(tmp_path, previous, ranks):
    before = snapshot(previous)
    config = disc_config(tmp_path, previous, solver='petsc_options = {ksp_type = "nonsense"}')
    result = run_hybrid("forward", config, "--overwrite", ranks=ranks, timeout=90)
    assert_one_error(result, "KSP type nonsense")
    assert snapshot(previous) == before


def test_overwrite_replaces_the_whole_previous_set(tmp_path, previous):
    (previous / "PS.nii.gz").write_text("stale output of an earlier run")
    old = json.loads((previous / "summary.json").read_text())
    result = run_hybrid("forward", disc_config(tmp_path, previous, solver="degree = 2"), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in previous.iterdir()) == ["ifp.h5", "ifp.xdmf", "summary.json"]
    new = json.loads((previous / "summary.json").read_text())
    assert new["degree"] == 2 and old["degree"] == 1
    assert new["outputs"]["fields"] == "ifp.xdmf"   # relative to the output directory


@pytest.mark.parametrize("ranks", RANKS)
def test_disk_full_while_writing_fields_keeps_the_previous_set(tmp_path, previous, ranks):
    """A file-size limit makes the HDF5 write fail as on a full disk."""
    before = snapshot(previous)
    result = run_hybrid_with_file_size_limit("forward", disc_config(tmp_path, previous), "--overwrite",
                                             limit_bytes=50_000, ranks=ranks)
    assert result.returncode == 2, result.stderr
    lines = error_lines(result)
    # the HDF5 write is collective: each rank that sees it fail says so (one line each)
    assert 1 <= len(lines) <= ranks and all("could not write" in line and "free space" in line for line in lines), \
        result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(previous) == before


WAITS_FOR_STDERR = ("import os, time; from hybrid.cli import _wait_until_stderr_is_read; "
                    "os.write(2, b'e' * 4000); print('written', flush=True); started = time.monotonic(); "
                    "_wait_until_stderr_is_read(); print(time.monotonic() - started)")


def test_a_rank_about_to_abort_waits_until_its_error_line_is_read():
    """MPICH's launcher drops what is still in a rank's stderr pipe when MPI_Abort ends the job:
    the disk-full error line above was lost after rank 1's long HDF5 diagnostic (7 runs in 60 with
    two runs at once). The aborting rank now waits until the pipe has been read."""
    child = subprocess.Popen([sys.executable, "-c", WAITS_FOR_STDERR], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout.readline() == b"written\n"
    time.sleep(1.0)   # the reader (here: the test, in MPI: the launcher) is slow
    assert child.stderr.read(4000) == b"e" * 4000
    out, _ = child.communicate(timeout=30)
    assert 0.95 < float(out) < 1.9   # it waited for the read, not for the 2 s time limit


def test_waiting_for_the_stderr_reader_skips_a_file(tmp_path):
    """On a file FIONREAD counts the bytes after the position: 4000 here, which a wait would take
    for unread output."""
    (tmp_path / "stderr").write_bytes(b"x" * 8000)
    with open(tmp_path / "stderr", "r+b") as stderr:
        out = subprocess.run([sys.executable, "-c", WAITS_FOR_STDERR], stdout=subprocess.PIPE, stderr=stderr,
                             check=True).stdout
    assert float(out.split()[-1]) < 0.1


@pytest.mark.parametrize("ranks", RANKS)
def test_disk_full_while_writing_maps_names_the_file_and_leaves_nothing(tmp_path, ranks):
    """Before: disk full left valid-looking maps with an empty summary.json."""
    toml = small_phantom(tmp_path / "ph")
    result = run_hybrid_with_file_size_limit("maps", toml, limit_bytes=20_000, ranks=ranks)
    line = assert_one_error(result, "maps.png: File too large")
    assert str(tmp_path / "ph" / "maps") in line
    assert not (tmp_path / "ph" / "maps").exists()
