"""Stop signals of batch schedulers: SIGTERM and SIGUSR1 set a flag the job checks between batches.

Slurm sends SIGUSR1 (``--signal=USR1@SECONDS``) or SIGTERM before it ends or preempts a
job.  A job that catches them finishes the unit of work in flight, saves what it needs to
go on, and exits with `EXIT_PREEMPTED` (75, EX_TEMPFAIL), which `jobs/common.sh` reads as
"stopped early, state saved: requeue me".
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("galhpc.runtime.signals")

EXIT_PREEMPTED = 75  # EX_TEMPFAIL
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(SystemExit):
    """Leave the process with status 75 after a stop signal, once the work done is saved.

    Parameters
    ----------
    message : str
        What was saved and how to go on (logged by the raiser, kept as `message`).
    """

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_PREEMPTED)
        self.message = message


class StopFlag:
    """Set by a stop signal; `requested` is checked between units of work."""

    def __init__(self, what: str = "the current batch") -> None:
        self.requested = False
        self.signal_name = ""
        self.what = what

    def __call__(self, signum: int, frame: Any) -> None:
        """Signal handler: set `requested`, remember the signal's name and log a warning.

        Parameters
        ----------
        signum : int
            The signal number (SIGTERM or SIGUSR1).
        frame : frame or None
            The interrupted stack frame (unused).
        """
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        log.warning("%s received: finishing %s, then stopping (exit status %d)", self.signal_name, self.what,
                    EXIT_PREEMPTED)


@contextlib.contextmanager
def stop_signals(what: str = "the current batch") -> Iterator[StopFlag]:
    """Catch SIGTERM/SIGUSR1 into a `StopFlag` for the duration of the block, then restore.

    Parameters
    ----------
    what : str
        The unit of work finished after a signal, for the log line.

    Yields
    ------
    StopFlag
        Its `requested` turns True on a signal.  Outside the main thread no handler can
        be installed and the flag never turns.
    """
    flag = StopFlag(what)
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {sig: signal.signal(sig, flag) for sig in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
