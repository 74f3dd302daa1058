"""The one actor-group shape every role uses (actors/group.py), on a real local Ray cluster: names,
resources and environment as the spec says, fan-out in order, a dead actor found, replaced under a new
name or restarted in place by Ray."""

import os
import time

from actors.group import ActorGroup, ActorSpec
from ledex_rl.config import ActorResources


class Echo:
    def __init__(self, index: int):
        self.index, self.pid = index, os.getpid()

    def info(self) -> dict:
        import ray

        context = ray.get_runtime_context()
        return {
            "index": self.index,
            "pid": self.pid,
            "threads": os.environ.get("OMP_NUM_THREADS"),
            "resources": context.get_assigned_resources(),
        }

    def add(self, n: int) -> int:
        return self.index + n


def test_a_group_starts_named_actors_with_its_resources_and_fans_out_in_order(ray_cluster):
    spec = ActorSpec(ActorResources(cpu=0.1), env={"OMP_NUM_THREADS": "3"})
    group = ActorGroup(Echo, "test-echo", spec, [(i,) for i in range(3)])
    try:
        assert group.call("add", 10) == [10, 11, 12]
        infos = group.info()
        assert [i["threads"] for i in infos] == ["3"] * 3
        assert all(i["resources"] == {"CPU": 0.1} for i in infos)
        assert ray_cluster.get_actor("test-echo-2") is not None
    finally:
        group.shutdown()


def unresponsive_once_the_kill_lands(group: ActorGroup, wait_s: float = 30.0) -> list[int]:
    """`group.unresponsive()`, asked until it finds a dead actor or `wait_s` passes: `ray.kill` lands
    asynchronously, and an `info` sent right after it may still be answered (CI, stop 25)."""
    deadline = time.monotonic() + wait_s
    while not (dead := group.unresponsive(timeout_s=10)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return dead


def test_a_dead_actor_is_found_and_replaced_under_a_new_name(ray_cluster):
    group = ActorGroup(Echo, "test-replace", ActorSpec(ActorResources(cpu=0.1)), [(0,), (1,)])
    try:
        ray_cluster.kill(group.actors[1])
        assert unresponsive_once_the_kill_lands(group) == [1]
        group.replace(1)
        assert group.call("add", 1) == [1, 2] and group.unresponsive(timeout_s=10) == []
        assert ray_cluster.get_actor("test-replace-1-r1") is not None and group.replacements == 1
    finally:
        group.shutdown()


def test_restart_waits_until_ray_has_restarted_the_actor_in_place(ray_cluster):
    group = ActorGroup(Echo, "test-restart", ActorSpec(ActorResources(cpu=0.1), max_restarts=-1), [(7,)])
    try:
        before = group.info()[0]["pid"]
        assert group.restart(0, wait_s=60)
        after = group.info()[0]
        assert after["pid"] != before and after["index"] == 7
    finally:
        group.shutdown()
