"""A multi-rank `World` between threads of one process, for tests of collectives without MPI.

`ThreadComm` speaks the part of mpi4py's communicator that `galhpc.runtime.world.MpiComm`
uses (``Ibarrier``, ``bcast``, ``allgather``); `on_ranks` runs a body on each thread-rank.
"""

from __future__ import annotations

import threading

from galhpc.runtime.world import MpiComm, World


class ThreadComm:
    """An mpi4py-like communicator between `size` threads; `view(rank)` is one rank's handle."""

    class _Done:
        def Test(self):
            return True

    def __init__(self, size, timeout=60):
        self.barrier = threading.Barrier(size, timeout=timeout)
        self.slots = [None] * size

    def view(self, rank):
        comm = self

        class Rank:
            def Ibarrier(self):
                comm.barrier.wait()
                return comm._Done()

            def bcast(self, value, root=0):
                return self.allgather(value)[root]

            def allgather(self, value):
                comm.slots[rank] = value
                comm.barrier.wait()
                got = list(comm.slots)
                comm.barrier.wait()
                return got

        return Rank()


def on_ranks(size, body, ranks_per_node=None, timeout=60):
    """`body(world)` on `size` thread-ranks of one World each; their results (or errors) in rank order.

    `ranks_per_node` (default: all on one node) sets each World's local rank.
    """
    comm, out = ThreadComm(size, timeout), [None] * size
    per_node = ranks_per_node or size

    def run(rank):
        try:
            out[rank] = body(World(rank, size, rank % per_node, "fake", comm=MpiComm(comm.view(rank)), mpi=True))
        except BaseException as err:  # returned in its rank's place
            out[rank] = err

    threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(2 * timeout)
    return out
