"""Failure agreement under MPI: a stage that may fail on some ranks only ends with every rank
knowing, so that no rank waits for ever in the next collective call.

:func:`everywhere` runs a stage on every rank, :func:`on_rank0` on rank 0 only (serial work such
as file writing); both finish with one ``allreduce`` of a failure flag and, if any rank failed,
raise the same :class:`RunError` (the first failing rank's one-line message) on every rank.
"""

from __future__ import annotations

import re

from mpi4py import MPI

__all__ = ["RunError", "describe", "petsc_failure", "everywhere", "on_rank0", "peak_memory_mib"]


class RunError(Exception):
    """A failure that every rank of the communicator knows about; the message is one line."""


def describe(exc: BaseException) -> str:
    """One line saying what went wrong: the message of an input error, else type and message."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename is not None else ""
        text = f"{where}{exc.strerror}"
    elif isinstance(exc, (ValueError, RunError, OSError)) and str(exc):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())


def petsc_failure(exc: Exception) -> str:
    """One line from a PETSc error: its code and the messages of its stack, without file locations."""
    lines = [re.sub(r"^\[\d+\]\s*", "", line).strip() for line in str(exc).replace(" [", "\n[").splitlines()]
    messages = [line for line in lines if line and not re.search(r"\(\) at \S+:\d+$", line)]
    return "; ".join(messages)


def _agree(comm: MPI.Comm, error: Exception | None) -> None:
    """Collective: raise one RunError on every rank if ``error`` is set on any rank."""
    first = comm.allreduce(comm.rank if error is not None else comm.size, op=MPI.MIN)
    if first == comm.size:
        return
    message = comm.bcast(describe(error) if comm.rank == first else None, root=first)
    raise RunError(message) from error


def everywhere(comm: MPI.Comm, work):
    """``work()`` on every rank (collective); any rank's failure is raised on all as RunError."""
    result = error = None
    try:
        result = work()
    except Exception as exc:  # noqa: BLE001  (agreed on below, then raised on every rank)
        error = exc
    _agree(comm, error)
    return result


def on_rank0(comm: MPI.Comm, work):
    """Serial ``work()`` on rank 0 only, its result returned there (None elsewhere); a failure is
    raised on every rank as RunError, so none waits."""
    return everywhere(comm, work if comm.rank == 0 else (lambda: None))


def peak_memory_mib(comm: MPI.Comm) -> list[float]:
    """Peak resident memory [MiB] of each rank of ``comm`` so far (getrusage), on every rank (collective)."""
    import resource

    return comm.allgather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux: KiB
