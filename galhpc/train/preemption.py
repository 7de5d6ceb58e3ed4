"""The "stopped on a signal, checkpoint saved" marker file for job scripts.

galhpc-train exits with status 75 after a stop signal, but a launcher does not always pass
its ranks' status on: torchrun reports any failed rank as its own failure (status 1), and
may terminate the other ranks as soon as the first one exits.  So `jobs/train.sh` names a
file in the environment variable GALHPC_STOP_MARKER, and rank 0 writes it once the
checkpoint is saved (before the ranks leave); the script then treats the launcher's
non-zero status as 75 and requeues.  Without the variable nothing is written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from galhpc.runtime.files import write_text_atomic

log = logging.getLogger("galhpc.train.preemption")

STOP_MARKER_ENV = "GALHPC_STOP_MARKER"


def mark_stopped(checkpoint: Path, step: int) -> Path | None:
    """Write $GALHPC_STOP_MARKER (checkpoint path and step), atomically; None when unset.

    A marker that cannot be written is logged, never raised: the checkpoint is saved, and
    the job script then sees the launcher's own status.

    Parameters
    ----------
    checkpoint : Path
        The checkpoint just saved.
    step : int
        Optimizer steps taken.

    Returns
    -------
    Path or None
        The marker written, or None (variable unset, or the write failed).
    """
    target = os.environ.get(STOP_MARKER_ENV)
    if not target:
        return None
    path = Path(target)
    try:
        write_text_atomic(path, f"checkpoint={checkpoint}\nstep={step}\n")
    except OSError as err:
        log.warning("could not write the stop marker %s=%s: %s", STOP_MARKER_ENV, target, err)
        return None
    return path
