"""A pool of sandboxed executor actors: CPU-only Ray actors, each owning a `Sandbox` of N slots.

    pool = ExecutorPool(cfg.sandbox)
    results = pool.run(jobs)            # in order; or pool.run_iter(jobs) in completion order
    ExecutorClient.attach(pool.address())   # in another actor: the same executors, found by name

Jobs go out in chunks (`jobs_per_call`) so that Ray's per-call cost stays small next to ~4 ms per
execution, with at most two chunks in flight per actor (backpressure: a huge batch does not pile up
in one actor's queue). An actor that dies is restarted by Ray (`max_restarts=-1`); the chunk it was
running is retried once on the pool, then reported as `sandbox_error` results, never lost.
Actors request only CPUs, so a pool larger than the cluster waits for the autoscaler to add nodes.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Iterator, Sequence

import ray

from actors.group import ActorGroup, ActorSpec
from ledex_rl.config import SandboxConfig
from sandbox import ExecutionResult, Job, Sandbox

log = logging.getLogger(__name__)

IN_FLIGHT_PER_ACTOR = 2


class ExecutorActor:
    """One node's share of execution: a Sandbox whose zygotes live as long as the actor."""

    def __init__(self, cfg: SandboxConfig):
        self.sandbox = Sandbox.from_config(cfg, cfg.slots_per_executor)
        self.host = socket.gethostname()
        self.executed = 0

    def run(self, jobs: list[Job]) -> list[ExecutionResult]:
        results = self.sandbox.run(jobs)
        self.executed += len(jobs)
        return results

    def info(self) -> dict:
        return {
            "tier": self.sandbox.tier,
            "slots": len(self.sandbox._slots),
            "host": self.host,
            "pid": os.getpid(),
            "executed": self.executed,
            "resources": ray.get_runtime_context().get_assigned_resources(),  # what Ray gave it (CPU share, role)
        }


@dataclass(frozen=True)
class PoolAddress:
    """Where a running pool's executors are, for another actor to use them (`ExecutorClient.attach`). An
    actor is given this, not the pool: Ray keeps actor handles passed to a constructor in the object
    store, logs an error for each restartable actor given one, and cannot promise them to a restart
    (ray#53727). The executors restart in place, so their names hold for the pool's life."""

    cfg: SandboxConfig
    name_prefix: str
    names: tuple[str, ...]


class ExecutorClient:
    """Runs jobs on running executor actors; starts, restarts and stops none of them."""

    def __init__(self, cfg: SandboxConfig, actors: list, name_prefix: str):
        self.cfg, self.actors, self.name_prefix = cfg, actors, name_prefix
        self.stats = {"jobs": 0, "retried_chunks": 0, "failed_chunks": 0, "seconds": 0.0}

    @classmethod
    def attach(cls, address: PoolAddress) -> ExecutorClient:
        return cls(address.cfg, [ray.get_actor(name) for name in address.names], address.name_prefix)

    def run(self, jobs: Sequence[Job]) -> list[ExecutionResult]:
        results: list[ExecutionResult | None] = [None] * len(jobs)
        for index, result in self.run_iter(jobs):
            results[index] = result
        return results  # type: ignore[return-value]

    def run_iter(self, jobs: Sequence[Job]) -> Iterator[tuple[int, ExecutionResult]]:
        """Yield (index, result) as chunks finish, so callers can overlap work with execution."""
        from ledex_rl.ray_metrics import record

        started, finished = time.perf_counter(), 0
        size = self.cfg.jobs_per_call
        pending = deque((list(range(i, min(i + size, len(jobs)))), 0) for i in range(0, len(jobs), size))
        in_flight: dict[ray.ObjectRef, tuple[list[int], int, int]] = {}
        load = [0] * len(self.actors)
        while pending or in_flight:
            while pending:
                actor_index = min(range(len(self.actors)), key=load.__getitem__)
                if load[actor_index] >= IN_FLIGHT_PER_ACTOR:
                    break
                indices, attempt = pending.popleft()
                ref = self.actors[actor_index].run.remote([jobs[i] for i in indices])
                in_flight[ref] = (indices, attempt, actor_index)
                load[actor_index] += 1
            (done,), _ = ray.wait(list(in_flight), num_returns=1)
            indices, attempt, actor_index = in_flight.pop(done)
            load[actor_index] -= 1
            try:
                chunk_results = ray.get(done)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                if attempt == 0:
                    log.warning("executor %d died with %d jobs in flight; retrying them once", actor_index, len(indices))
                    self.stats["retried_chunks"] += 1
                    pending.append((indices, 1))
                    continue
                self.stats["failed_chunks"] += 1
                message = f"the executor died twice while running this job ({type(exc).__name__})"
                chunk_results = [ExecutionResult("sandbox_error", message=message, metadata=jobs[i].metadata) for i in indices]
            finished += len(indices)
            queued = sum(len(ix) for ix, _ in pending) + sum(len(ix) for ix, _, _ in in_flight.values())
            record(
                {"sandbox/executions_per_second": finished / max(time.perf_counter() - started, 1e-9), "sandbox/queue_depth": queued},
                self.name_prefix,
            )
            for i, result in zip(indices, chunk_results):
                yield i, result
        self.stats["jobs"] += len(jobs)
        self.stats["seconds"] += time.perf_counter() - started


class ExecutorPool(ExecutorClient):
    """`cfg.num_executors` executor actors, started here, and the client that runs jobs on them."""

    def __init__(self, cfg: SandboxConfig, name_prefix: str = "executor", node_role: dict[str, float] | None = None):
        # max_task_retries=0: a chunk is retried here, once, so a job that kills its actor cannot loop.
        spec = ActorSpec(
            cfg.executor_resources(), node_role or {}, max_restarts=-1, max_task_retries=0
        )  # NodeRolesConfig.resources("sandbox")
        self.group = ActorGroup(ExecutorActor, name_prefix, spec, [(cfg,)] * cfg.num_executors, wait=False)
        super().__init__(cfg, self.group.actors, name_prefix)

    def address(self) -> PoolAddress:
        return PoolAddress(self.cfg, self.name_prefix, tuple(self.group.names))

    def info(self) -> list[dict]:
        return self.group.info()

    def shutdown(self) -> None:
        self.group.shutdown()
