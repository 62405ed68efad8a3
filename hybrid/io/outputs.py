"""The output transaction of one command: its files are complete or absent.

A run writes into a staging folder ``<output>/.hybrid-partial-<pid>``; only when the whole run has
succeeded does :meth:`OutputTransaction.commit` move the staged entries into ``<output>``, with
``summary.json`` last. A ``summary.json`` in an output directory therefore always belongs to the
complete set of files beside it. A failed or interrupted run removes its staging folder (and the
output directory, if the run created it and it is still empty), leaving any earlier outputs as
they were.

An output directory that already holds files is refused unless ``overwrite`` is set; then the
previous contents are deleted at commit time (``summary.json`` first), never before the new run
has succeeded. A directory that contains an input of the run is refused even with ``overwrite``.

These functions touch the file system and are meant for one process (rank 0 under MPI); the
other ranks of a run :meth:`~OutputTransaction.follow` rank 0's transaction, so that whichever rank
is still able to after an interrupt removes the staging folder (:func:`discard_active`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

__all__ = ["OutputTransaction", "STAGING_PREFIX", "discard_active", "naming"]

STAGING_PREFIX = ".hybrid-partial-"
SUMMARY = "summary.json"

_active: list["OutputTransaction"] = []   # open transactions of this process (for interrupts)


class OutputTransaction:
    """Stage a run's outputs in ``directory`` and commit or discard them (see the module docstring)."""

    def __init__(self, directory: str | Path, *, overwrite: bool = False, inputs=()):
        self.directory = Path(directory)
        self.overwrite = overwrite
        self.inputs = [Path(p) for p in inputs if p is not None]
        self.staging = self.directory / f"{STAGING_PREFIX}{os.getpid()}"
        self.created_directory = False  # set by open(): this run created the directory

    def open(self) -> Path:
        """Check the output directory, create it and the staging folder; returns the staging folder."""
        out = self.directory
        if str(out).strip() == "":
            raise ValueError("the output directory is an empty string; give a directory path")
        if out.exists() and not out.is_dir():
            raise ValueError(f"output directory {out} is an existing file, not a directory; "
                             "choose another --output")
        resolved = out.resolve()
        for path in self.inputs:
            if resolved == path.resolve() or resolved in path.resolve().parents:
                raise ValueError(f"output directory {out} contains the input {path}; "
                                 "choose an output directory that holds no inputs")
        if out.is_dir():
            previous = self.previous_entries()
            if previous and not self.overwrite:
                names = ", ".join(sorted(p.name for p in previous)[:3])
                raise ValueError(f"output directory {out} is not empty ({len(previous)} entries: {names}"
                                 f"{', ...' if len(previous) > 3 else ''}); choose an empty or new "
                                 "directory, or pass --overwrite to replace its contents after a successful run")
        else:
            try:
                out.mkdir(parents=True)
            except OSError as exc:
                raise ValueError(f"cannot create output directory {out}: {exc.strerror}") from None
            self.created_directory = True
        if not os.access(out, os.W_OK | os.X_OK):
            raise ValueError(f"output directory {out} is not writable")
        try:
            self.staging.mkdir()
        except OSError as exc:
            raise ValueError(f"cannot write into output directory {out}: {exc.strerror}") from None
        _active.append(self)
        return self.staging

    def follow(self, staging: Path, created_directory: bool) -> None:
        """Take on the staging folder (and whether the run created the output directory) that
        another process of the same run opened, so that this process can discard it too."""
        self.staging = Path(staging)
        self.created_directory = created_directory
        _active.append(self)

    def forget(self) -> None:
        """No longer discard this transaction after an interrupt (it was committed elsewhere)."""
        if self in _active:
            _active.remove(self)

    def previous_entries(self) -> list[Path]:
        """What ``directory`` holds besides staging folders (of this or of an earlier, killed run)."""
        return [p for p in self.directory.iterdir() if not p.name.startswith(STAGING_PREFIX)]

    def commit(self) -> None:
        """Replace the previous contents by the staged files, ``summary.json`` last. The staging
        folder is first taken by an atomic rename, so that no :meth:`discard` of another process
        can remove files half-way through (it finds nothing; a commit after a discard raises)."""
        committing = self.staging.with_name(f"{self.staging.name}.committing")
        self.staging.rename(committing)
        self.forget()
        old_summary = self.directory / SUMMARY
        if old_summary.exists():
            old_summary.unlink()  # from here on the old set no longer claims to be complete
        for entry in self.directory.iterdir():
            if entry != committing:
                _remove(entry)
        staged = sorted(committing.iterdir(), key=lambda p: p.name == SUMMARY)
        for entry in staged:
            entry.rename(self.directory / entry.name)
        committing.rmdir()

    def discard(self) -> bool:
        """Remove the staged files (and the output directory if this run created it and it is empty).

        Several processes of a run may call this at once: the one whose atomic rename takes the
        staging folder removes it and returns True; the others, and a call after a commit, return False."""
        self.forget()
        doomed = self.staging.with_name(f"{self.staging.name}.removing-{os.getpid()}")
        try:
            self.staging.rename(doomed)
        except FileNotFoundError:
            return False
        except OSError:  # cannot rename (permissions): remove it where it is
            doomed = self.staging
        shutil.rmtree(doomed, ignore_errors=True)
        if self.created_directory:
            try:
                self.directory.rmdir()
            except OSError:
                pass
        return True


@contextlib.contextmanager
def naming(path: str | Path):
    """Re-raise an OSError that names no file (gzip or PIL writing to a full disk) with ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def discard_active() -> bool:
    """Discard every open transaction of this process (after an interrupt); True if this process
    removed a staging folder (no other process of the run had)."""
    return any([transaction.discard() for transaction in list(_active)])
