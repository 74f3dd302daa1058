"""Actors steered to node types by `ray.roles`, on a real multi-node Ray cluster (three raylets on this host)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_each_role_runs_on_its_own_node_through_a_whole_run(tmp_path, tiny_model):
    run_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, str(HERE / "three_nodes.py"), str(run_dir), str(tiny_model)],
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["returncode"] == 0, report["output"]
    assert (run_dir / "eval" / "report.md").is_file(), report["output"]
    nodes, actors = report["nodes"], report["actors"]
    assert len(set(nodes.values())) == 3
    by_role = {
        "rollout": ["policy-rollout-0", "rl-rollout-0"],
        "trainer": ["sft-trainer-rank0", "rl-trainer-rank0", "rl-reference"],
        "sandbox": ["executor-0", "rl-executor-0", "rl-reward-0", "eval-executor-0"],
    }
    for role, names in by_role.items():
        for name in names:
            assert actors.get(name) == nodes[role], f"{name} ran on {actors.get(name)}, not on the {role} node {nodes[role]}"
    # Weights and scoring requests crossed object stores: the engines, the trainer and the executors
    # were on three different nodes.
    print(f"peak memory of the machine during the 3-node run: {report['peak_memory_mb']:.0f} MB "
          f"(before it: {report['baseline_memory_mb']:.0f} MB)")
