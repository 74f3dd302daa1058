"""Local multi-node Ray clusters (one raylet per node, on this host) and the tiny pipeline on them, for
the slow tests in tests/test_many_nodes.py, which run this in a process of its own (Ray allows one
cluster connection per driver process).

    python tests/three_nodes.py roles RUN_DIR TINY_MODEL   one worker node per role; the whole run
    python tests/three_nodes.py lose RUN_DIR TINY_MODEL    two sandbox nodes; the one hosting the
                                                           reward actor is killed mid-RL
    python tests/three_nodes.py lose-trainer RUN_DIR TINY  two trainer nodes; the one hosting the
                                                           trainer is killed mid-RL, then the same
                                                           command runs again

Writes RUN_DIR/../MODE-report.json: the nodes, the one killed, each actor's last node, each run's exit
code and output, the RL steps logged, and the machine's used memory before and at its peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # before Ray is imported: see ledex_rl/cluster.py

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

ROLES = ("rollout", "trainer", "sandbox")
REPO = Path(__file__).resolve().parents[1]
# A dead node is noticed within ~2 s instead of Ray's default ~15 s (health checks every 3 s, 5 misses).
FAST_HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}


def used_memory_mb() -> float:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) / 1024


def actor_nodes() -> dict[str, tuple[str, str]]:
    """name -> (node id, state) of every named actor the GCS knows, dead ones included; of actors that
    shared a name (a rerun's), the one started last."""
    named = sorted((a for a in ray._private.state.actors().values() if a.get("Name")), key=lambda a: a["StartTime"])
    return {a["Name"]: (a["Address"]["NodeID"], a["State"]) for a in named}


WORKERS = {"roles": ROLES, "lose": (*ROLES, "sandbox"), "lose-trainer": (*ROLES, "trainer")}
VICTIM = {"lose": ("rl-reward-0", 1), "lose-trainer": ("rl-trainer-rank0", 2)}  # whose node dies, after how many RL steps


class Run:
    """`python -m ledex_rl.train` on the cluster, its output gathered."""

    def __init__(self, command: list[str]):
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()

    def result(self) -> dict:
        self.process.wait()
        time.sleep(0.5)  # the reader thread's last lines
        text = "".join(self.lines)
        return {
            "returncode": self.process.returncode,
            "output": text[-4000:],
            "errors": [line for line in text.splitlines() if line.startswith("error: ")],  # the CLI's one-line stops
            "tracebacks": text.count("Traceback (most recent call last)"),
        }


def main(mode: str, run_dir: str, tiny_model: str) -> None:
    # Small, explicit nodes: a head that hosts nothing, one logical CPU and 256 MB of object store per worker.
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": 256 << 20, "include_dashboard": False, "_system_config": FAST_HEALTH_CHECKS},
    )
    nodes = [(role, cluster.add_node(num_cpus=1, resources={f"ledex_{role}": 1}, object_store_memory=256 << 20)) for role in WORKERS[mode]]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="ledex_rl", log_to_driver=False)
    peak = [used_memory_mb()]
    overrides = [f"ray.roles.{role}=ledex_{role}" for role in ROLES]
    if mode in VICTIM:  # RL alone, long enough to lose a node in the middle
        overrides += ["rl.ppo.steps=6", "stages=[collect,sft,rl]"]
    settings = [f"run_dir={run_dir}", f"model.name_or_path={tiny_model}", f"ray.address={cluster.address}", *overrides]
    command = [sys.executable, "-m", "ledex_rl.train", "--config", "configs/tiny.yaml", *settings]
    run, killed = Run(command), ""
    metrics = Path(run_dir) / "rl" / "metrics.jsonl"
    while run.process.poll() is None:
        peak.append(used_memory_mb())
        logged = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
        if mode in VICTIM and not killed and logged >= VICTIM[mode][1]:
            # Kill the node the victim runs on, raylet and all.
            host = actor_nodes()[VICTIM[mode][0]][0]
            cluster.remove_node(next(node for _, node in nodes if node.node_id == host), allow_graceful=False)
            killed = host
        time.sleep(0.5)
    runs = [run.result()]
    if mode == "lose-trainer":  # the same command again, on the nodes left
        runs.append(Run(command).result())
    steps = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    report = Path(run_dir).parent / f"{mode}-report.json"  # a file: Ray prints its own lines on stdout at exit
    report.write_text(
        json.dumps(
            {
                "nodes": [[role, node.node_id] for role, node in nodes],
                "killed": killed,
                "actors": actor_nodes(),
                "runs": runs,
                "rl_steps": steps,
                "peak_memory_mb": max(peak),
                "baseline_memory_mb": peak[0],
            }
        )
    )
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
