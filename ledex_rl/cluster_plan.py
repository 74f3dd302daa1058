"""Does a training config fit a cluster? The resources every actor group asks Ray for, checked against
the node types of a Ray cluster launcher file or a KubeRay RayJob / RayCluster manifest.

Three rules, all about what the autoscaler can do: every single actor (or placement-group bundle) must
fit on one node of some type, or Ray waits forever for it; each stage's actors together must fit the
cluster at its maximum size (each type's own maximum, and a launcher file's global `max_workers`); and
they must also fit piece by piece, placed on nodes as Ray would place them (`place`), or the stage waits
forever for the last of them.

    ledex-rl cluster-check configs/cluster/ray-cluster.yaml --config configs/codellama-7b.yaml
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from ledex_rl.errors import UserError
from ledex_rl.config import ActorResources, LedexConfig


class ClusterSpecError(UserError, ValueError):
    """A cluster file that cannot be read, or a config that does not fit it; one line says which."""


@dataclass(frozen=True)
class Demand:
    group: str  # what asks: "rollout engine", "trainer rank", ...
    count: int
    cpu: float
    gpu: float
    role: str = ""  # the custom resource its node must declare (ray.roles), "" for any node

    @classmethod
    def of(cls, group: str, count: int, resources: ActorResources, role: str) -> "Demand":
        return cls(group, count, resources.cpu, resources.gpu, role)


@dataclass(frozen=True)
class NodeType:
    name: str
    cpu: float
    gpu: float
    max_workers: int
    head: bool = False
    roles: frozenset[str] = frozenset()  # custom resources it declares (what ray.roles can name)

    def hosts(self, demand: Demand) -> bool:
        """Has this node type what one actor of `demand` needs, its role included?"""
        return demand.cpu <= self.cpu and demand.gpu <= self.gpu and (not demand.role or demand.role in self.roles)


@dataclass(frozen=True)
class Cluster:
    types: list[NodeType]
    max_workers: int | None = None  # a launcher file's cap on worker nodes of all types together


def stage_demands(cfg: LedexConfig) -> dict[str, list[Demand]]:
    """What each stage asks Ray for at once: each role's resources as its actor group asks for them
    (the config sections' `*_resources`), times how many it starts."""
    r, t, s, roles, ref = cfg.rollout, cfg.trainer, cfg.sandbox, cfg.ray.roles, cfg.rl.reference
    engines = Demand.of("rollout engine", r.num_engines, r.engine_resources(), roles.rollout)
    executors = Demand.of("sandbox executor", s.num_executors, s.executor_resources(), roles.sandbox)
    rank = Demand.of("trainer rank", t.num_ranks, t.rank_resources(), roles.trainer)
    rewards = Demand.of("reward actor", cfg.rl.rewards.num_reward_actors, cfg.rl.rewards.actor_resources(), roles.sandbox)
    if ref.colocate:  # rank 0's bundle also holds the reference model
        rl_trainer = [Demand.of("trainer rank 0 + reference model", 1, t.rank_resources() + ref.resources(), roles.trainer)]
        if t.num_ranks > 1:
            rl_trainer.append(Demand.of("trainer rank", t.num_ranks - 1, t.rank_resources(), roles.trainer))
    else:
        rl_trainer = [rank, Demand.of("reference model", 1, ref.resources(), roles.trainer)]
    teacher = (
        [Demand.of("teacher engine", r.num_engines, r.engine_resources(), roles.rollout)] if cfg.collect.teacher.kind == "vllm" else []
    )
    return {
        "collect": [executors, engines, *teacher],
        "sft": [rank],
        "rl": [executors, engines, rewards, *rl_trainer],
        "eval": [executors, engines],
    }


def load_cluster(path: str | Path) -> Cluster:
    """Node types (the head too: it can host actors when it has logical CPUs) and the global worker
    cap, from a Ray cluster launcher YAML or a KubeRay RayJob / RayCluster manifest."""
    file = Path(path)
    try:
        doc = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ClusterSpecError(f"cannot read cluster file {file}: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise ClusterSpecError(f"cluster file {file} is not a YAML mapping")
    if "available_node_types" in doc:
        return _launcher_types(doc, file)
    if doc.get("kind") in ("RayJob", "RayCluster"):
        return _kuberay_types(doc, file)
    raise ClusterSpecError(f"{file}: neither a Ray cluster launcher file (available_node_types) nor a KubeRay RayJob/RayCluster")


def _require(mapping: dict, key: str, where: str, file: Path):
    if not isinstance(mapping, dict) or key not in mapping:
        raise ClusterSpecError(f"{file}: missing '{key}' in {where}")
    return mapping[key]


def _launcher_types(doc: dict, file: Path) -> Cluster:
    for key in ("cluster_name", "provider", "head_node_type"):
        _require(doc, key, "the top level", file)
    types = doc["available_node_types"]
    if doc["head_node_type"] not in types:
        raise ClusterSpecError(f"{file}: head_node_type '{doc['head_node_type']}' is not in available_node_types")
    out = []
    for name, spec in types.items():
        resources = _require(spec, "resources", f"node type '{name}'", file)
        is_head = name == doc["head_node_type"]
        max_workers = 1 if is_head else int(_require(spec, "max_workers", f"node type '{name}'", file))
        if not is_head and int(spec.get("min_workers", 0)) > max_workers:
            raise ClusterSpecError(f"{file}: node type '{name}' has min_workers > max_workers")
        out.append(
            NodeType(
                name, float(resources.get("CPU", 0)), float(resources.get("GPU", 0)), max_workers, is_head, _custom_resources(resources)
            )
        )
    cap = doc.get("max_workers")
    if cap is not None and (not isinstance(cap, int) or cap < 0):
        raise ClusterSpecError(f"{file}: the top-level max_workers must be a whole number >= 0 (it is {cap!r})")
    return Cluster(out, cap)


BUILTIN_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


def _custom_resources(resources: dict) -> frozenset[str]:
    return frozenset(k for k, v in resources.items() if k not in BUILTIN_RESOURCES and float(v) > 0)


def _quantity(value) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _group_type(name: str, group: dict, max_workers: int, file: Path, head: bool = False) -> NodeType:
    params = group.get("rayStartParams") or {}
    containers = _require(
        _require(_require(group, "template", name, file), "spec", f"{name}.template", file), "containers", f"{name}.template.spec", file
    )
    limits = (containers[0].get("resources") or {}).get("limits") or {}
    cpu = _quantity(params["num-cpus"]) if "num-cpus" in params else _quantity(limits.get("cpu", 0))
    gpu = _quantity(params["num-gpus"]) if "num-gpus" in params else _quantity(limits.get("nvidia.com/gpu", 0))
    if "nvidia.com/gpu" in limits and gpu > _quantity(limits["nvidia.com/gpu"]):
        raise ClusterSpecError(f"{file}: {name} tells Ray it has {gpu:g} GPUs but its container gets {limits['nvidia.com/gpu']}")
    custom = params.get("resources") or "{}"
    try:  # rayStartParams.resources: a JSON object in a string, sometimes quoted once more for the shell
        custom = json.loads(custom.strip("'") if isinstance(custom, str) else json.dumps(custom))
        custom = json.loads(custom) if isinstance(custom, str) else custom
    except ValueError:
        raise ClusterSpecError(f"{file}: {name}.rayStartParams.resources is not a JSON object ({custom!r})") from None
    return NodeType(name, cpu, gpu, max_workers, head, _custom_resources(custom))


def _kuberay_types(doc: dict, file: Path) -> Cluster:
    if not str(doc.get("apiVersion", "")).startswith("ray.io/"):
        raise ClusterSpecError(f"{file}: apiVersion must be ray.io/v1 for a KubeRay {doc.get('kind')}")
    spec = _require(doc, "spec", "the top level", file)
    if doc["kind"] == "RayJob":
        entry = str(_require(spec, "entrypoint", "spec", file))
        if "ledex_rl.train" not in entry:
            raise ClusterSpecError(f"{file}: spec.entrypoint should run `python -m ledex_rl.train --config ...` (it is '{entry}')")
        spec = _require(spec, "rayClusterSpec", "spec", file)
    head = _group_type("headGroupSpec", _require(spec, "headGroupSpec", "the cluster spec", file), 1, file, head=True)
    out = [head]
    for group in spec.get("workerGroupSpecs") or []:
        name = _require(group, "groupName", "a workerGroupSpec", file)
        max_replicas = int(group.get("maxReplicas", group.get("replicas", 0)))
        if int(group.get("minReplicas", 0)) > max_replicas:
            raise ClusterSpecError(f"{file}: worker group '{name}' has minReplicas > maxReplicas")
        out.append(_group_type(name, group, max_replicas, file))
    return Cluster(out)


def fits_worker_cap(cluster: Cluster, cpu: float, gpu: float) -> bool:
    """Can the head plus at most `cluster.max_workers` workers (each type within its own maximum)
    provide `cpu` and `gpu` together? A search over how many nodes of each type, pruned by what the
    remaining types could still add; cluster files have a handful of types."""
    heads = [t for t in cluster.types if t.head]
    need_cpu = cpu - sum(t.cpu for t in heads)
    need_gpu = gpu - sum(t.gpu for t in heads)
    workers = [t for t in cluster.types if not t.head and t.max_workers]
    cap = sum(t.max_workers for t in workers) if cluster.max_workers is None else cluster.max_workers

    def search(i: int, nodes_left: int, have_cpu: float, have_gpu: float) -> bool:
        if have_cpu >= need_cpu and have_gpu >= need_gpu:
            return True
        rest = workers[i:]
        if (
            have_cpu + sum(t.cpu * t.max_workers for t in rest) < need_cpu
            or have_gpu + sum(t.gpu * t.max_workers for t in rest) < need_gpu
            or not rest
            or not nodes_left
        ):
            return False
        t = rest[0]
        return any(
            search(i + 1, nodes_left - n, have_cpu + n * t.cpu, have_gpu + n * t.gpu) for n in range(min(t.max_workers, nodes_left), -1, -1)
        )

    return search(0, cap, 0.0, 0.0)


def check(cfg: LedexConfig, cluster: Cluster) -> list[str]:
    """Every way `cfg` does not fit `cluster`, as one line each (empty: it fits)."""
    problems = []
    types = cluster.types
    for stage, demands in stage_demands(cfg).items():
        if stage not in cfg.stages:
            continue
        for d in demands:
            if d.count and not any(t.hosts(d) for t in types if t.max_workers):
                on = f" on a node with resource '{d.role}' (ray.roles)" if d.role else " on one node"
                problems.append(f"{stage}: a {d.group} needs {d.cpu:g} CPU and {d.gpu:g} GPU{on}; no node type has that")
        cpu = sum(d.count * d.cpu for d in demands)
        gpu = sum(d.count * d.gpu for d in demands)
        max_cpu = sum(t.cpu * t.max_workers for t in types)
        max_gpu = sum(t.gpu * t.max_workers for t in types)
        if cpu > max_cpu or gpu > max_gpu:
            problems.append(
                f"{stage}: its actors need {cpu:g} CPU and {gpu:g} GPU together; the cluster has at most "
                f"{max_cpu:g} CPU and {max_gpu:g} GPU (raise max_workers or lower the actor counts)"
            )
        elif cluster.max_workers is not None and not fits_worker_cap(cluster, cpu, gpu):
            problems.append(
                f"{stage}: its actors need {cpu:g} CPU and {gpu:g} GPU together; no mix of at most "
                f"{cluster.max_workers} workers (the file's top-level max_workers) provides that "
                "(raise it or lower the actor counts)"
            )
        elif (unplaced := place(cluster, demands)) is not None:
            problems.append(f"{stage}: {unplaced}")
    return problems


@dataclass
class _OpenNode:
    type: NodeType
    cpu: float  # still free
    gpu: float


def place(cluster: Cluster, demands: list[Demand]) -> str | None:
    """Put one stage's actors on nodes as Ray and its autoscaler would: largest first (GPUs, then CPUs),
    each on the first started node with room for it, else on a new node of the smallest type that holds
    it, within each type's maximum and the file's global cap. -> None when every actor has a place, else
    which actor has none, and why (the totals can fit while the pieces do not)."""
    nodes = [_OpenNode(t, t.cpu, t.gpu) for t in cluster.types if t.head]
    started: dict[str, int] = {}
    cap = cluster.max_workers if cluster.max_workers is not None else sum(t.max_workers for t in cluster.types if not t.head)
    actors = sorted((d for d in demands for _ in range(d.count)), key=lambda d: (d.gpu, d.cpu), reverse=True)
    for placed, d in enumerate(actors):
        gpu, cpu, group = d.gpu, d.cpu, d.group
        node = next((n for n in nodes if n.cpu >= cpu - 1e-9 and n.gpu >= gpu - 1e-9 and (not d.role or d.role in n.type.roles)), None)
        if node is None:
            types = sorted(
                (t for t in cluster.types if not t.head and t.hosts(d) and started.get(t.name, 0) < t.max_workers),
                key=lambda t: (t.gpu, t.cpu),
            )
            if not types or sum(started.values()) >= cap:
                used = (
                    ", ".join(
                        f"{name} {n} of {next(t.max_workers for t in cluster.types if t.name == name)}" for name, n in started.items()
                    )
                    or "no workers"
                )
                return (
                    f"a {group} ({cpu:g} CPU, {gpu:g} GPU) has no node left to go on after placing {placed} of "
                    f"{len(actors)} actors ({used} started; the rest of the room is in pieces too small for it)"
                )
            node = _OpenNode(types[0], types[0].cpu, types[0].gpu)
            nodes.append(node)
            started[node.type.name] = started.get(node.type.name, 0) + 1
        node.cpu, node.gpu = node.cpu - cpu, node.gpu - gpu
    return None


def describe(cfg: LedexConfig, cluster: Cluster) -> str:
    types = ", ".join(
        f"{t.name} ({t.cpu:g} CPU, {t.gpu:g} GPU{''.join(', ' + r for r in sorted(t.roles))}, up to {t.max_workers})" for t in cluster.types
    )
    cap = f"; at most {cluster.max_workers} workers in all" if cluster.max_workers is not None else ""
    lines = [f"node types: {types}{cap}"]
    for stage, demands in stage_demands(cfg).items():
        if stage in cfg.stages:
            asks = ", ".join(
                f"{d.count} x {d.group} ({d.cpu:g} CPU, {d.gpu:g} GPU{', on ' + d.role if d.role else ''})" for d in demands if d.count
            )
            lines.append(f"{stage}: {asks}")
    return "\n".join(lines)
