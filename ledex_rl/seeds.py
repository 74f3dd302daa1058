"""Per-request seeds: every sampled answer is reproducible, which is what makes resumed stages equal
uninterrupted ones."""

from __future__ import annotations

import hashlib
import json


def request_seed(seed: int, *parts) -> int:
    """A stable 31-bit seed per (run seed, task, role, index)."""
    digest = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def held_out_tasks(task_ids, fraction: float, seed: int = 0) -> set[str]:
    """A stable `fraction` of the distinct tasks (at least one left for training): chosen by a hash
    of the seed and the task id, so reruns and resumes hold out the same ones."""
    tasks = sorted(set(task_ids))
    if fraction <= 0 or len(tasks) < 2:
        return set()
    ranked = sorted(tasks, key=lambda t: hashlib.sha256(f"{seed}:{t}".encode()).hexdigest())
    return set(ranked[: min(len(tasks) - 1, round(len(tasks) * fraction))])
