"""Actors steered to node types by `ray.roles`, on a real multi-node Ray cluster (raylets on this host)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.ray_heads import free_port, running_head

HERE = Path(__file__).resolve().parent
LOCAL_AUTOSCALING = HERE.parent / "configs" / "cluster" / "local-autoscaling.yaml"


def run_on_nodes(mode: str, run_dir: Path, tiny_model: Path) -> dict:
    out = subprocess.run(
        [sys.executable, str(HERE / "three_nodes.py"), mode, str(run_dir), str(tiny_model)], capture_output=True, text=True, timeout=1800
    )
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


def _worker_nodes_alive(address: str) -> int:
    from ray.util.state import list_nodes

    # Ray counts the dead nodes a filter left out as "missing output": they are not missing.
    alive = list_nodes(address=address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
    return sum(not node.is_head_node for node in alive)


def _autoscaling_config(tmp_path: Path, gcs_port: int) -> Path:
    """The shipped file, its workers pointed at this test's head (a port of its own)."""
    from ray._private.services import get_node_ip_address

    spec = yaml.safe_load(LOCAL_AUTOSCALING.read_text())
    spec["provider"]["gcs_address"] = f"{get_node_ip_address()}:{gcs_port}"
    path = tmp_path / "local-autoscaling.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_the_autoscaler_starts_the_nodes_a_run_asks_for_and_releases_them_when_idle(tmp_path, tiny_model):
    from ray.job_submission import JobStatus, JobSubmissionClient

    gcs = free_port()
    # As configs/cluster/local-autoscaling.yaml says to start it: Ray's autoscaler, fake multi-node provider.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    env.pop("RAY_ADDRESS", None)
    with running_head(env, "--num-cpus=0", f"--autoscaling-config={_autoscaling_config(tmp_path, gcs)}", gcs_port=gcs) as address:
        counts = [_worker_nodes_alive(address)]
        client = JobSubmissionClient(address)
        run_dir = tmp_path / "run"
        roles = ["ray.roles.rollout=ledex_gpu", "ray.roles.trainer=ledex_gpu", "ray.roles.sandbox=ledex_cpu"]
        # As the file's header submits it: no --working-dir, absolute paths.
        job = client.submit_job(
            entrypoint=" ".join(
                [
                    sys.executable,
                    "-m",
                    "ledex_rl.train",
                    "--config",
                    str(HERE.parent / "configs" / "tiny.yaml"),
                    f"run_dir={run_dir}",
                    f"model.name_or_path={tiny_model}",
                    "rl.ppo.steps=2",
                    *roles,
                ]
            )
        )
        while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            counts.append(_worker_nodes_alive(address))
            time.sleep(2)
        assert client.get_job_status(job) == JobStatus.SUCCEEDED, client.get_job_logs(job)[-4000:]
        busiest = max(counts)
        deadline = time.time() + 240  # idle_timeout_minutes is 0.5
        while counts[-1] and time.time() < deadline:
            time.sleep(2)
            counts.append(_worker_nodes_alive(address))
    print(f"autoscaling: worker nodes alive over the run {counts[0]} -> {busiest} -> {counts[-1]}")
    assert counts[0] == 0, "the worker types start at 0 nodes"
    # A model node and a sandbox node at least: the head offers no CPU, so every actor needed a new node.
    assert busiest >= 2, counts
    assert counts[-1] == 0, f"the idle workers were not released: {counts[-20:]}"
    assert (run_dir / "eval" / "report.md").is_file()
