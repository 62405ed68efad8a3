"""hybrid.collective: a failure on any one rank is raised on every rank, with that rank's message
(run serially and, by ``make test``, under ``mpirun -n 2``)."""

import pytest
from mpi4py import MPI

from hybrid.collective import RunError, everywhere, on_rank0

COMM = MPI.COMM_WORLD
pytestmark = pytest.mark.mpi


def fail_on(rank: int):
    def work():
        if COMM.rank == rank:
            raise ValueError(f"bad input seen by rank {rank}")
        return COMM.rank
    return work


@pytest.mark.parametrize("rank", sorted({0, COMM.size - 1}))
def test_failure_on_one_rank_is_raised_on_every_rank(rank):
    with pytest.raises(RunError, match=f"^bad input seen by rank {rank}$"):
        everywhere(COMM, fail_on(rank))
    assert COMM.allreduce(1) == COMM.size   # every rank is still in step


def test_first_failing_rank_speaks_for_all():
    def work():
        raise OSError(28, "No space left on device", f"/out/rank{COMM.rank}.h5")
    with pytest.raises(RunError, match="^/out/rank0.h5: No space left on device$"):
        everywhere(COMM, work)


def test_on_rank0_returns_there_and_none_elsewhere():
    assert on_rank0(COMM, lambda: "result") == ("result" if COMM.rank == 0 else None)
    with pytest.raises(RunError, match="bad input seen by rank 0"):
        on_rank0(COMM, fail_on(0))
