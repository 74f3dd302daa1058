"""Actors steered to node types by `ray.roles`, on a real multi-node Ray cluster (raylets on this host)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def run_on_nodes(mode: str, run_dir: Path, tiny_model: Path) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "three_nodes.py"), mode, str(run_dir), str(tiny_model)],
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((run_dir.parent / f"{mode}-report.json").read_text())
    assert report["runs"][-1]["returncode"] == 0, report["runs"][-1]["output"]
    print(f"{mode}: peak memory of the machine {report['peak_memory_mb']:.0f} MB (before: {report['baseline_memory_mb']:.0f} MB)")
    return report


@pytest.mark.slow
def test_each_role_runs_on_its_own_node_through_a_whole_run(tmp_path, tiny_model):
    report = run_on_nodes("roles", tmp_path / "run", tiny_model)
    assert (tmp_path / "run" / "eval" / "report.md").is_file(), report["runs"][0]["output"]
    nodes, actors = dict(report["nodes"]), report["actors"]
    assert len(set(nodes.values())) == 3
    by_role = {
        "rollout": ["policy-rollout-0", "rl-rollout-0"],
        "trainer": ["sft-trainer-rank0", "rl-trainer-rank0", "rl-reference"],
        "sandbox": ["executor-0", "rl-executor-0", "rl-reward-0", "eval-executor-0"],
    }
    # The engines, the trainer and the executors on three nodes: weights and scoring requests crossed object stores.
    for role, names in by_role.items():
        for name in names:
            assert actors[name][0] == nodes[role], f"{name} ran on {actors[name][0]}, not on the {role} node {nodes[role]}"


@pytest.mark.slow
def test_a_run_carries_on_when_the_node_of_its_executors_and_reward_actors_dies(tmp_path, tiny_model):
    report = run_on_nodes("lose", tmp_path / "run", tiny_model)
    sandbox_nodes = [node for role, node in report["nodes"] if role == "sandbox"]
    killed, actors = report["killed"], report["actors"]
    assert killed in sandbox_nodes, "the run ended before RL logged a step"
    # Ray restarted them on the sandbox node left, and every RL step scored its whole batch.
    survivor = next(node for node in sandbox_nodes if node != killed)
    assert actors["rl-reward-0"][0] == survivor and actors["rl-executor-0"][0] == survivor, actors
    steps = report["rl_steps"]
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5, 6]
    assert all(s["response/count"] == steps[0]["response/count"] for s in steps), [s["response/count"] for s in steps]
    assert (tmp_path / "run" / "rl" / "DONE").is_file()


@pytest.mark.slow
def test_losing_the_trainers_node_stops_the_run_in_one_line_and_the_same_command_resumes(tmp_path, tiny_model):
    report = run_on_nodes("lose-trainer", tmp_path / "run", tiny_model)
    trainer_nodes = [node for role, node in report["nodes"] if role == "trainer"]
    assert report["killed"] in trainer_nodes, "the run ended before RL logged two steps"
    stopped, resumed = report["runs"]
    assert stopped["returncode"] != 0
    said = stopped["errors"]  # Ray's own lines about the dead raylet follow it on the console
    assert len(said) == 1 and "the run stopped. Rerun the same command to resume after step" in said[0], stopped["output"]
    assert stopped["tracebacks"] == 0, stopped["output"]
    # The rerun went on from the checkpoint on the trainer node left, to the last step.
    survivor = next(node for node in trainer_nodes if node != report["killed"])
    assert report["actors"]["rl-trainer-rank0"][0] == survivor
    steps = [s["step"] for s in report["rl_steps"] if "reward/total" in s]
    assert steps[-1] == 6 and sorted(set(steps)) == [1, 2, 3, 4, 5, 6], steps
    assert (tmp_path / "run" / "rl" / "DONE").is_file()
