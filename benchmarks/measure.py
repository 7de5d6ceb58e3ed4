"""Time and peak memory of one call, for the benchmark scripts beside this file (Linux).

The peak-RSS growth is the high-water mark (VmHWM) after the call minus the resident set
(VmRSS) before it, the mark first reset to the current RSS through /proc/self/clear_refs.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(seconds, peak RSS growth in MB, result) of one call."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return seconds, (_status_kib("VmHWM") - before) / 1024, result
