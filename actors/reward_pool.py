"""Reward actors: score refinements with the LeDex rewards (ledex_rl/rewards.py).

Each actor runs the response's code on the executor pool (test pass rate; the verdicts are computed
outside the sandbox), computes CodeBLEU against the verified refinements of the same wrong code, and
embeds the explanation to compare with the verified explanations. CPU-only, so a pool larger than
the cluster waits for the autoscaler.

    pool = RewardPool(cfg.rl.rewards, executors)
    parts = pool.score([ScoreRequest(problem, response, "explain_refine", ref_codes, ref_expls), ...])
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Sequence

import ray

from actors.executor_pool import ExecutorClient, ExecutorPool, PoolAddress
from actors.group import ActorGroup, ActorSpec
from ledex_rl.errors import UserError
from ledex_rl.hardware import thread_env
from ledex_rl.config import RewardConfig
from ledex_rl.modes import AnswerMode
from ledex_rl.problems.base import Problem
from ledex_rl.rewards import RewardParts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreRequest:
    problem: Problem
    response: str
    mode: AnswerMode
    reference_codes: tuple[str, ...]  # R_c: verified correct refinements of the same wrong code
    reference_explanations: tuple[str, ...]  # E_c: the explanations that came with them


@dataclass(frozen=True)
class ScoredShard:
    """One reward actor's answer: each answer's reward parts, in request order."""

    parts: list[RewardParts]
    execute_s: float  # running the answers' code on the executors
    score_s: float  # CodeBLEU and the explanation embeddings


class RewardActor:
    def __init__(self, embedding_model: str, executors: PoolAddress, threads: int = 1):
        import torch
        from sentence_transformers import SentenceTransformer

        from ledex_rl.models import resolve_embedding_model

        torch.set_num_threads(threads)
        self.embedder = SentenceTransformer(resolve_embedding_model(embedding_model), device="cpu")
        self.executors = ExecutorClient.attach(executors)
        self.scored = 0

    def score(self, requests: list[ScoreRequest]) -> ScoredShard:
        """Run each answer's code on the executors, then score it: R(r) and R(e) with their parts."""
        from ledex_rl import prompts
        from ledex_rl.rewards import mean_cosine, score_response
        from sandbox import Job

        parsed = [prompts.parse_response(r.response) for r in requests]
        started = time.perf_counter()
        results = self.executors.run([Job.for_problem(r.problem, p.code) for r, p in zip(requests, parsed)])
        executed = time.perf_counter()
        similarities = self._similarities(requests, parsed, mean_cosine)
        parts = []
        for request, p, result, similarity in zip(requests, parsed, results, similarities):
            explanation = p.explanation if request.mode == "explain_refine" else None
            parts.append(score_response(p.code, result.pass_rate, result.passed, request.reference_codes, explanation, similarity))
        self.scored += len(requests)
        return ScoredShard(parts, executed - started, time.perf_counter() - executed)

    def _similarities(self, requests, parsed, mean_cosine) -> list[float | None]:
        """S_ex for explain-then-refine responses with reference explanations; one encode call."""
        texts: dict[str, int] = {}
        for r, p in zip(requests, parsed):
            if r.mode == "explain_refine" and r.reference_explanations and p.explanation.strip():
                for t in (p.explanation, *r.reference_explanations):
                    texts.setdefault(t, len(texts))
        if not texts:
            return [None] * len(requests)
        vectors = self.embedder.encode(list(texts), convert_to_numpy=True, batch_size=32)
        sims: list[float | None] = []
        for r, p in zip(requests, parsed):
            if r.mode == "explain_refine" and r.reference_explanations and p.explanation.strip():
                refs = vectors[[texts[t] for t in r.reference_explanations]]
                sims.append(mean_cosine(vectors[texts[p.explanation]], refs))
            else:
                sims.append(None)
        return sims

    def embed(self, texts: list[str]):
        return self.embedder.encode(texts, convert_to_numpy=True)

    def info(self) -> dict:
        return {"pid": os.getpid(), "scored": self.scored}


class RewardError(UserError, RuntimeError):
    """A reward actor hung or died twice on the same answers; the message says what to check."""


class RewardPool:
    def __init__(self, cfg: RewardConfig, executors: ExecutorPool, name_prefix: str = "reward", node_role: dict[str, float] | None = None):
        self.cfg, self.name_prefix = cfg, name_prefix
        # node_role: NodeRolesConfig.resources("sandbox"); max_restarts=-1: `_get_or_retry` restarts a stuck actor
        spec = ActorSpec(cfg.actor_resources(), node_role or {}, env=thread_env(1), max_restarts=-1)
        self.group = ActorGroup(RewardActor, name_prefix, spec, [(cfg.embedding_model, executors.address())] * cfg.num_reward_actors)
        self.actors = self.group.actors
        self.retries = 0

    def score(self, requests: Sequence[ScoreRequest]) -> list[RewardParts]:
        """Each answer's reward parts, in request order; requests are split evenly over the actors.
        `last_timing` then holds the slowest actor's execute and score seconds."""
        k = len(self.actors)
        shards = [list(range(i, len(requests), k)) for i in range(k)]
        refs = [(idx, actor.score.remote([requests[i] for i in idx])) for actor, idx in zip(self.actors, shards) if idx]
        out: list = [None] * len(requests)
        self.last_timing = {"execute_s": 0.0, "score_s": 0.0}
        for k, (idx, ref) in enumerate(refs):
            shard = self._get_or_retry(k, ref, [requests[i] for i in idx])
            self.last_timing["execute_s"] = max(self.last_timing["execute_s"], shard.execute_s)
            self.last_timing["score_s"] = max(self.last_timing["score_s"], shard.score_s)
            for i, parts in zip(idx, shard.parts):
                out[i] = parts
        return out

    def _get_or_retry(self, k: int, ref, shard: list) -> ScoredShard:
        """One actor's answer; after a timeout or a death the actor is restarted and the shard retried once."""
        timeout = self.cfg.timeout_s
        for attempt in (1, 2):
            try:
                return ray.get(ref, timeout=timeout)
            except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:
                what = f"took longer than {timeout:g} s" if isinstance(exc, ray.exceptions.GetTimeoutError) else "died"
                if attempt == 2:
                    raise RewardError(
                        f"rl: reward actor {self.name_prefix}-{k} {what} twice scoring {len(shard)} answers; check "
                        "its log in the Ray dashboard, or raise rl.rewards.timeout_s"
                    ) from None
                log.warning("reward actor %s-%d %s; restarting it and retrying its %d answers", self.name_prefix, k, what, len(shard))
                self.retries += 1
                if not self.group.restart(k):
                    raise RewardError(
                        f"rl: reward actor {self.name_prefix}-{k} did not restart within 300 s; check the cluster's resources in the Ray dashboard"
                    ) from None
                ref = self.actors[k].score.remote(shard)
        raise AssertionError("unreachable")

    def shutdown(self) -> None:
        self.group.shutdown()
