"""The cluster files in configs/cluster/ against the training configs: schema and resource consistency."""

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ledex_rl.cli import main
from ledex_rl.cluster_plan import Cluster, ClusterSpecError, NodeType, check, fits_worker_cap, load_cluster, stage_demands
from ledex_rl.config import ConfigError, load_config

CLUSTER = Path(__file__).resolve().parents[1] / "configs" / "cluster"
PAPER = Path(__file__).resolve().parents[1] / "configs" / "codellama-7b.yaml"


@pytest.mark.parametrize("name", ["ray-cluster.yaml", "rayjob.yaml"])
def test_the_shipped_cluster_files_fit_the_paper_config(name):
    cfg = load_config(PAPER)
    cluster = load_cluster(CLUSTER / name)
    assert check(cfg, cluster) == []
    assert any(t.gpu >= 8 for t in cluster.types) and any(t.cpu >= 32 and t.gpu == 0 for t in cluster.types)


def test_launcher_and_rayjob_describe_the_same_cluster():
    launcher = {(t.cpu, t.gpu, t.max_workers, t.roles) for t in load_cluster(CLUSTER / "ray-cluster.yaml").types}
    rayjob = {(t.cpu, t.gpu, t.max_workers, t.roles) for t in load_cluster(CLUSTER / "rayjob.yaml").types}
    assert launcher == rayjob
    assert {frozenset({"ledex_cpu"}), frozenset({"ledex_gpu"})} <= {roles for *_, roles in launcher}
    entry = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())["spec"]["entrypoint"]
    config = entry.split("--config")[1].split()[0]
    assert (PAPER.parent.parent / config).resolve() == PAPER.resolve()


def test_the_local_autoscaling_file_fits_the_tiny_run_by_role():
    # What tests/test_many_nodes.py submits to it (slow): every role on a worker type, none on the head.
    roles = ["ray.roles.rollout=ledex_gpu", "ray.roles.trainer=ledex_gpu", "ray.roles.sandbox=ledex_cpu"]
    cluster = load_cluster(CLUSTER / "local-autoscaling.yaml")
    assert check(load_config(CLUSTER.parent / "tiny.yaml", roles), cluster) == []
    head = next(t for t in cluster.types if t.head)
    assert head.cpu == 0 and {frozenset({"ledex_cpu"}), frozenset({"ledex_gpu"})} <= {t.roles for t in cluster.types}


def test_demands_follow_the_config():
    cfg = load_config(PAPER, ["trainer.num_ranks=2", "rl.reference.colocate=false"])
    rl = {d.group: d for d in stage_demands(cfg)["rl"]}
    assert (rl["trainer rank"].count, rl["trainer rank"].gpu) == (2, 1.0)
    assert rl["reference model"].gpu == 1.0
    assert (rl["rollout engine"].count, rl["rollout engine"].gpu) == (cfg.rollout.num_engines, 1.0)
    assert rl["sandbox executor"].cpu == cfg.sandbox.executor_num_cpus


def test_a_config_too_large_for_the_cluster_is_named():
    cfg = load_config(PAPER, ["rollout.tensor_parallel_size=16", "trainer.num_ranks=20"])
    problems = check(cfg, load_cluster(CLUSTER / "rayjob.yaml"))
    assert "rl: a rollout engine needs 4 CPU and 16 GPU on a node with resource 'ledex_gpu' (ray.roles); no node type has that" in problems
    assert any(p.startswith("sft: its actors need 80 CPU and 20 GPU together") for p in problems)
    result = CliRunner().invoke(main, ["cluster-check", str(CLUSTER / "rayjob.yaml"), "--config", str(PAPER), "trainer.num_ranks=20"])
    assert result.exit_code == 1 and "does not fit: sft" in result.output


def test_a_cuda_reference_model_needs_a_gpu():
    with pytest.raises(ConfigError, match="rl.reference.num_gpus"):
        load_config(PAPER, ["rl.reference.num_gpus=0"])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("head_node_type"), "missing 'head_node_type'"),
        (lambda d: d["available_node_types"]["cpu_worker"].pop("resources"), "missing 'resources' in node type 'cpu_worker'"),
        (lambda d: d["available_node_types"]["gpu_worker"].update(min_workers=9), "min_workers > max_workers"),
        (lambda d: d.update(max_workers=-1), "top-level max_workers must be a whole number"),
    ],
)
def test_broken_launcher_files_are_one_line_errors(tmp_path, mutate, message):
    doc = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    mutate(doc)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ClusterSpecError, match=message):
        load_cluster(tmp_path / "c.yaml")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(apiVersion="v1"), "apiVersion must be ray.io/v1"),
        (lambda d: d["spec"].update(entrypoint="python train.py"), "should run `python -m ledex_rl.train"),
        (lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][1]["rayStartParams"].update({"num-gpus": "16"}), "gets 8"),
    ],
)
def test_broken_rayjobs_are_one_line_errors(tmp_path, mutate, message):
    doc = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())
    mutate(doc)
    (tmp_path / "j.yaml").write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(main, ["cluster-check", str(tmp_path / "j.yaml"), "--config", str(PAPER)])
    assert result.exit_code == 2 and message in result.output


def test_the_global_worker_cap_counts_nodes_of_all_types():
    head = NodeType("head", 4, 0, 1, head=True)
    cpu, gpu = NodeType("cpu", 32, 0, 6), NodeType("gpu", 8, 8, 4)
    uncapped = Cluster([head, cpu, gpu])
    assert fits_worker_cap(uncapped, 4 + 6 * 32 + 4 * 8, 32)
    capped = Cluster([head, cpu, gpu], max_workers=3)
    assert fits_worker_cap(capped, 4 + 32 + 16, 16)  # one CPU node and two GPU nodes
    assert not fits_worker_cap(capped, 4 + 64 + 16, 16)  # would need two CPU nodes besides the two GPU ones
    assert not fits_worker_cap(capped, 4, 32)  # four GPU nodes
    assert fits_worker_cap(Cluster([head, cpu, gpu], max_workers=0), 4, 0)  # the head alone


def test_a_launcher_files_global_max_workers_is_enforced(tmp_path):
    doc = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    cfg = load_config(PAPER)
    rl_gpus = sum(d.count * d.gpu for d in stage_demands(cfg)["rl"])
    gpu_node = next(t for t in load_cluster(CLUSTER / "ray-cluster.yaml").types if t.gpu)
    needed = int(-(-rl_gpus // gpu_node.gpu))  # GPU nodes the RL stage needs
    doc["max_workers"] = needed - 1
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    assert any("no mix of at most" in p and p.startswith("rl:") for p in check(cfg, load_cluster(tmp_path / "c.yaml")))
    result = CliRunner().invoke(main, ["cluster-check", str(tmp_path / "c.yaml"), "--config", str(PAPER)])
    assert result.exit_code == 1 and f"at most {needed - 1} workers in all" in result.output


def test_actors_are_placed_node_by_node_not_only_added_up():
    """Three 5-CPU executors and two 8-CPU nodes: 15 of 16 CPUs, yet only two fit."""
    from ledex_rl.cluster_plan import Demand, place

    nodes = Cluster([NodeType("head", 8, 0, 1, head=True), NodeType("cpu", 8, 0, 1)])
    assert place(nodes, [Demand("sandbox executor", 2, 5, 0)]) is None
    why = place(nodes, [Demand("sandbox executor", 3, 5, 0)])
    assert why.startswith("a sandbox executor (5 CPU, 0 GPU) has no node left to go on after placing 2 of 3 actors (cpu 1 of 1 started")
    # GPU actors first: a reference model and an engine share one 8-GPU node; small CPU actors fill the room left.
    mixed = Cluster([NodeType("head", 2, 0, 1, head=True), NodeType("gpu", 16, 8, 1), NodeType("cpu", 4, 0, 2)])
    demands = [Demand("rollout engine", 1, 4, 4), Demand("reference model", 1, 4, 4), Demand("reward actor", 4, 2, 0)]
    assert place(mixed, demands) is None
    assert place(mixed, [*demands[:2], Demand("reward actor", 9, 2, 0)]) is None  # 1 on the head, 4 beside the GPUs, 4 on CPU nodes
    assert "a reward actor" in place(mixed, [*demands[:2], Demand("reward actor", 10, 2, 0)])


def test_cluster_check_reports_what_does_not_fit_piece_by_piece(tmp_path):
    launcher = {
        "cluster_name": "small",
        "provider": {"type": "aws"},
        "head_node_type": "head",
        "max_workers": 1,
        "available_node_types": {"head": {"resources": {"CPU": 8}}, "cpu": {"resources": {"CPU": 8}, "max_workers": 1}},
    }
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(launcher))
    sizes = ["stages=[collect]", "sandbox.executor_num_cpus=5", "rollout.num_cpus_per_engine=0.5"]
    assert check(load_config(None, [*sizes, "sandbox.num_executors=2"]), load_cluster(tmp_path / "small.yaml")) == []
    result = CliRunner().invoke(main, ["cluster-check", str(tmp_path / "small.yaml"), *sizes, "sandbox.num_executors=3"])
    assert result.exit_code == 1 and "collect: a sandbox executor (5 CPU, 0 GPU) has no node left to go on" in result.output


def test_the_shipped_clusters_are_for_their_owner_only():
    """Token authentication on every node, the launcher's dashboard on loopback, and the code synced from
    this checkout (not cloned from an address that does not exist)."""
    launcher = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    starts = launcher["head_start_ray_commands"][-1], launcher["worker_start_ray_commands"][-1]
    assert all("export RAY_AUTH_MODE=token" in command for command in starts)
    assert "--dashboard-host=127.0.0.1" in starts[0] and "0.0.0.0" not in starts[0]
    assert launcher["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token" and launcher["file_mounts"]["~/ledex_rl"] == "."
    assert not any("git clone" in command for command in launcher["setup_commands"])
    job = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())
    spec = job["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"], *spec["workerGroupSpecs"], job["spec"]["submitterPodTemplate"]]
    for pod in pods:
        template = pod.get("template", pod)
        env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]


def test_actors_go_only_on_node_types_that_declare_their_role():
    cfg = load_config(PAPER)
    rl = {d.group: d for d in stage_demands(cfg)["rl"]}
    assert (rl["rollout engine"].role, rl["sandbox executor"].role, rl["reward actor"].role) == ("ledex_gpu", "ledex_cpu", "ledex_cpu")
    assert (
        cfg.ray.roles.resources("sandbox") == {"ledex_cpu": 0.001}
        and load_config(PAPER, ["ray.roles.sandbox="]).ray.roles.resources("sandbox") == {}
    )
    cluster = load_cluster(CLUSTER / "ray-cluster.yaml")
    # Executors would fit on the GPU workers' spare CPUs, but their role sends them to CPU workers only.
    problems = check(load_config(PAPER, ["ray.roles.sandbox=ledex_fpga"]), cluster)
    assert (
        "rl: a sandbox executor needs 8 CPU and 0 GPU on a node with resource 'ledex_fpga' (ray.roles); no node type has that" in problems
    )
    # Placement piece by piece: 12 executors of 8 CPU fill 3 CPU workers (and no GPU worker) each; 6 is the cap.
    cpu_only = Cluster(
        [
            NodeType("head", 0, 0, 1, True),
            NodeType("cpu", 32, 0, 6, roles=frozenset({"ledex_cpu"})),
            NodeType("gpu", 96, 8, 2, roles=frozenset({"ledex_gpu"})),
        ]
    )
    assert check(load_config(PAPER, ["sandbox.num_executors=24", "stages=[collect]"]), cpu_only) == []
    over = check(load_config(PAPER, ["sandbox.num_executors=25", "stages=[collect]"]), cpu_only)
    assert len(over) == 1 and "a sandbox executor (8 CPU, 0 GPU) has no node left" in over[0], over
    with pytest.raises(ConfigError, match="ray.roles"):
        load_config(PAPER, ["ray.roles.rollout=GPU"])


def test_the_rayjob_runs_the_image_the_shipped_dockerfile_builds():
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    tag = dockerfile.split("docker build -f configs/cluster/Dockerfile -t ")[1].split()[0]
    images = re.findall(r"image: (\S+)", (CLUSTER / "rayjob.yaml").read_text())
    assert len(images) == 4 and set(images) == {tag}
    copied = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert all((CLUSTER.parents[1] / path).exists() for paths in copied for path in paths)
    assert "LEDEX_VLLM=gpu bash scripts/setup.sh" in dockerfile


def test_the_executors_ask_ray_for_what_cluster_check_counts(ray_cluster):
    """One place for each role's resources: the actors Ray starts hold what `stage_demands` plans."""
    from actors.executor_pool import ExecutorPool

    cfg = load_config("configs/tiny.yaml", ["sandbox.executor_num_cpus=0.15", "sandbox.num_executors=2"])
    (planned,) = [d for d in stage_demands(cfg)["collect"] if d.group == "sandbox executor"]
    pool = ExecutorPool(cfg.sandbox, name_prefix="test-demand-executor")
    try:
        given = [info["resources"] for info in pool.info()]
    finally:
        pool.shutdown()
    assert len(given) == planned.count == 2
    assert all(r.get("CPU") == planned.cpu == 0.15 and "GPU" not in r for r in given), given
