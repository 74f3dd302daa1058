"""A local cluster of three worker nodes, one per role, and the tiny pipeline on it (the slow test in
tests/test_many_nodes.py runs this in its own process: Ray allows one driver connection per process).

    python tests/three_nodes.py RUN_DIR TINY_MODEL -> prints one JSON object: the nodes by role, each
    actor's node, the run's exit code and the peak memory of the machine during the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # before Ray is imported: see ledex_rl/cluster.py

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

ROLES = ("rollout", "trainer", "sandbox")
REPO = Path(__file__).resolve().parents[1]


def used_memory_mb() -> float:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) / 1024


def main(run_dir: str, tiny_model: str) -> None:
    # Small, explicit nodes: a head that hosts nothing, one logical CPU and 256 MB of object store per worker.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 256 << 20, "include_dashboard": False})
    nodes = {role: cluster.add_node(num_cpus=1, resources={f"ledex_{role}": 1}, object_store_memory=256 << 20) for role in ROLES}
    cluster.wait_for_nodes()
    peak, done = [used_memory_mb()], threading.Event()

    def watch() -> None:
        while not done.wait(1.0):
            peak.append(used_memory_mb())

    threading.Thread(target=watch, daemon=True).start()
    roles = [f"ray.roles.{role}=ledex_{role}" for role in ROLES]
    run = subprocess.run([sys.executable, "-m", "ledex_rl.train", "--config", "configs/tiny.yaml", f"run_dir={run_dir}",
                          f"model.name_or_path={tiny_model}", f"ray.address={cluster.address}", *roles],
                         cwd=REPO, capture_output=True, text=True, timeout=1500)
    done.set()
    ray.init(address=cluster.address, namespace="ledex_rl", log_to_driver=False)
    # Dead actors keep their record in the GCS, with the node they ran on.
    actors = {a["Name"]: a["Address"]["NodeID"] for a in ray._private.state.actors().values() if a.get("Name")}
    print(json.dumps({"nodes": {role: node.node_id for role, node in nodes.items()}, "actors": actors,
                      "returncode": run.returncode, "output": (run.stdout + run.stderr)[-3000:],
                      "peak_memory_mb": max(peak), "baseline_memory_mb": peak[0]}))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:3])
