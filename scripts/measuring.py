"""What the comparison scripts of scripts/ measure the same way: CPU time of the kit commands they start.

Imported by its siblings (`python scripts/compare_stop.py` puts scripts/ on sys.path).
"""

from __future__ import annotations

import resource


def child_cpu_seconds() -> float:
    """CPU seconds (user + system) of every finished child process so far: unlike the wall time, not
    inflated by other work on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
