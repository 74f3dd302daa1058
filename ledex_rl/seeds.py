"""Per-request seeds: every sampled answer is reproducible, which is what makes resumed stages equal
uninterrupted ones."""

from __future__ import annotations

import hashlib
import json


def request_seed(seed: int, *parts) -> int:
    """A stable 31-bit seed per (run seed, task, role, index)."""
    digest = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
