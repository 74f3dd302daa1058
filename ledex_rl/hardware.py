"""What this node has."""

from __future__ import annotations

import os


def cpu_threads(requested: int = 0) -> int:
    """`requested` threads, or (0) one per core of the node this process runs on. Where a driver sets an
    actor's OMP_NUM_THREADS with it, that is the driver's node: right on one machine and where the
    cluster's CPU nodes are alike; set the config's thread count otherwise."""
    return requested or os.cpu_count() or 1


def thread_env(requested: int = 0) -> dict[str, str]:
    """An actor's environment variables for `cpu_threads(requested)` OpenMP and MKL threads (Ray would
    otherwise give it one per CPU it asks for)."""
    threads = str(cpu_threads(requested))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
