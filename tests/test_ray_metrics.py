"""Custom metrics reach the local head's metrics endpoint (what the dashboard's Metrics view and
Prometheus read): training values logged by a stage, and live figures from the executor pool."""

import re
import time
import urllib.request

from ledex_rl.ray_metrics import metric_name


def _scrape_until(port: int, wanted: list[str], timeout: float = 60.0) -> str:
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        if all(re.search(w, text) for w in wanted):
            return text
        time.sleep(2)
    missing = [w for w in wanted if not re.search(w, text)]
    raise AssertionError(f"metrics never appeared: {missing}")


def test_stage_and_pool_metrics_are_exported(ray_cluster, tmp_path):
    from actors.executor_pool import ExecutorPool
    from ledex_rl.config import SandboxConfig
    from ledex_rl.metrics import MetricsLogger
    from ledex_rl.problems.base import TestCase
    from sandbox import Job

    assert metric_name("kl/mean_per_response") == "ledex_kl_mean_per_response"
    logger = MetricsLogger(tmp_path, "rl")
    logger.log(3, {"reward/code": 1.25, "time/sync_s": 0.5})
    logger.close()
    pool = ExecutorPool(SandboxConfig(num_executors=1, slots_per_executor=1, executor_num_cpus=0.1), name_prefix="metrics-executor")
    try:
        jobs = [Job("def f():\n    return 1", (TestCase(kind="assert", source="assert f() == 1"),), entry_point="f")] * 6
        assert all(r.passed for r in pool.run(jobs))
    finally:
        pool.shutdown()
    port = ray_cluster._private.worker.global_worker.node.metrics_export_port
    text = _scrape_until(
        port,
        [
            r'ray_ledex_reward_code\{[^}]*stage="rl"[^}]*\} 1\.25',
            r'ray_ledex_time_sync_s\{[^}]*stage="rl"[^}]*\} 0\.5',
            r'ray_ledex_step\{[^}]*stage="rl"[^}]*\} 3',
            r'ray_ledex_sandbox_executions_per_second\{[^}]*stage="metrics-executor"[^}]*\} [0-9.e+]+',
            r'ray_ledex_sandbox_queue_depth\{[^}]*stage="metrics-executor"[^}]*\} 0',
        ],
    )
    rate = float(re.search(r"ray_ledex_sandbox_executions_per_second\{[^}]*\} ([0-9.e+]+)", text).group(1))
    assert rate > 0
