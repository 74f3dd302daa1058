"""Custom metrics in Ray's metrics system, so the Ray dashboard's Metrics view (and any Prometheus
that scrapes the nodes) shows the run: every training metric a stage logs, plus live figures from
the actor pools (rollout tokens per second, sandbox executions per second and queue depth).

Names are `ledex_<key>` with non-alphanumerics as `_` (`reward/code` -> `ledex_reward_code`), tagged
with the stage. Outside a Ray driver or worker nothing is recorded.
"""

from __future__ import annotations

import re

_gauges: dict[str, object] = {}


def metric_name(key: str) -> str:
    return "ledex_" + re.sub(r"[^A-Za-z0-9_]+", "_", key).strip("_")


def record(values: dict[str, float], stage: str) -> None:
    """Set one gauge per value (created on first use)."""
    import ray

    if not ray.is_initialized():
        return
    from ray.util.metrics import Gauge

    for key, value in values.items():
        name = metric_name(key)
        gauge = _gauges.get(name)
        if gauge is None:
            gauge = _gauges[name] = Gauge(name, description=f"ledex_rl {key}", tag_keys=("stage",))
        gauge.set(float(value), tags={"stage": stage})
