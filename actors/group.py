"""One shape for every role's actors: executors, reward actors, rollout engines, trainer ranks and the
reference model are each an `ActorGroup`, started, fanned out to, asked for info, restarted or replaced,
and shut down the same way.

    spec = ActorSpec(cfg.executor_resources(), node_role=roles.resources("sandbox"), max_restarts=-1)
    group = ActorGroup(ExecutorActor, "rl-executor", spec, [(cfg,)] * cfg.num_executors)
    group.call("info")                      # every actor, same arguments, answers in order
    group.actors[i].run.remote(jobs)        # one actor
    group.replace(i)                        # a new actor (a new name) in place of a dead one
    group.shutdown()

Resources come from the role's config section (`ActorResources`, which `cluster-check` reads too), the
node type from `ray.roles`; with a placement group, actor i goes in bundle i, which carries both.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from ledex_rl.config import ActorResources

ALIVE_ERRORS = (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError)


@dataclass(frozen=True)
class ActorSpec:
    """How each actor of a group is started."""

    resources: ActorResources
    node_role: dict[str, float] = field(default_factory=dict)  # NodeRolesConfig.resources(role)
    env: dict[str, str] = field(default_factory=dict)  # the actor's environment variables (thread counts)
    max_restarts: int = 0  # -1: Ray restarts a dead actor in place (`restart`); 0: the group `replace`s it
    max_task_retries: int | None = None  # None: Ray's default
    placement_group: Any = None  # actor i goes in bundle i, whose resources already hold its node role
    naming: str = "{prefix}-{i}"  # actor names, as the dashboard shows them

    def options(self, name: str, index: int) -> dict:
        options: dict = {"name": name, "max_restarts": self.max_restarts}
        if self.env:
            options["runtime_env"] = {"env_vars": dict(self.env)}
        if self.max_task_retries is not None:
            options["max_task_retries"] = self.max_task_retries
        if self.placement_group is None:
            return options | self.resources.ray_options(self.node_role)
        strategy = PlacementGroupSchedulingStrategy(self.placement_group, placement_group_bundle_index=index)
        return options | {"num_cpus": self.resources.cpu, "num_gpus": self.resources.gpu, "scheduling_strategy": strategy}


class ActorGroup:
    """`len(args)` actors of `cls`, actor i built with `cls(*args[i])`. Waits until all answer `info`
    unless `wait=False` (a pool larger than the cluster then waits for the autoscaler at its first call)."""

    def __init__(self, cls: type, name_prefix: str, spec: ActorSpec, args: Sequence[tuple], wait: bool = True):
        self.cls, self.name_prefix, self.spec, self.args = cls, name_prefix, spec, list(args)
        self.replacements = 0
        self.names = [spec.naming.format(prefix=name_prefix, i=i) for i in range(len(self.args))]  # the dashboard's
        self.actors = [self._start(i, name) for i, name in enumerate(self.names)]
        if wait:
            self.call("info")

    def __len__(self) -> int:
        return len(self.actors)

    def _start(self, index: int, name: str):
        return remote_class(self.cls).options(**self.spec.options(name, index)).remote(*self.args[index])

    def call(self, method: str, *args) -> list:
        """`method(*args)` on every actor; the answers in actor order."""
        return ray.get([getattr(actor, method).remote(*args) for actor in self.actors])

    def info(self) -> list[dict]:
        return self.call("info")

    def unresponsive(self, timeout_s: float = 60.0) -> list[int]:
        """The indices of actors that are dead or do not answer `info` within `timeout_s`."""
        refs = [actor.info.remote() for actor in self.actors]
        dead = []
        for i, ref in enumerate(refs):
            try:
                ray.get(ref, timeout=timeout_s)
            except ALIVE_ERRORS:
                dead.append(i)
        return dead

    def replace(self, index: int):
        """A new actor, with a name of its own, in place of actor `index` (killed if it still runs);
        returns it once it answers."""
        self.replacements += 1
        ray.kill(self.actors[index])
        self.names[index] = f"{self.spec.naming.format(prefix=self.name_prefix, i=index)}-r{self.replacements}"
        self.actors[index] = self._start(index, self.names[index])
        ray.get(self.actors[index].info.remote())
        return self.actors[index]

    def restart(self, index: int, wait_s: float = 300.0) -> bool:
        """Kill actor `index` and wait until Ray has restarted it (`max_restarts=-1`): until a process other
        than the one killed answers (the kill lands asynchronously). False if none did within `wait_s`."""
        try:
            killed = self._pid(index, timeout_s=5.0)
        except ALIVE_ERRORS:
            killed = None  # dead, or busy past the timeout: any answer after the kill is the new process's
        ray.kill(self.actors[index], no_restart=False)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                if self._pid(index, timeout_s=30.0) != killed:
                    return True
            except ALIVE_ERRORS:
                pass
            time.sleep(0.2)
        return False

    def _pid(self, index: int, timeout_s: float) -> int:
        return ray.get(self.actors[index].__ray_call__.remote(_own_pid), timeout=timeout_s)

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)


@functools.cache
def remote_class(cls: type):
    """`ray.remote(cls)`, made once per class (Ray wraps a class anew on every call)."""
    return ray.remote(cls)


def _own_pid(_actor) -> int:
    return os.getpid()
