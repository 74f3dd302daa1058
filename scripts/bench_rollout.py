"""Rollout tokens/s and start-up of the vLLM engine actor next to plain transformers `generate`, same run.

    .venv/bin/python scripts/bench_rollout.py [--model tiny|smollm2-135m-instruct|PATH] [--prompts 16] [--tokens 128]
        [--repeats 5] [--out docs/bench/rollout.json]

Every generator makes exactly `--tokens` new tokens for each of the same chat prompts (HumanEval first
attempts) at temperature 0.8, `--repeats` times after a warm-up: the engines with `ignore_eos` and the
per-token log-probs RL needs, transformers with `min_new_tokens` in this process with the same number of
torch threads. Rows:

- the engine actor as configured by default (eager on a CPU): started first with empty caches
  (`engine_startup_s`), then again (`engine_startup_cached_s`), and timed;
- the engine actor compiled (`rollout.enforce_eager=false`, the default on GPUs), the same way;
- a bare vLLM engine in this process with the default settings, no Ray: what the actor costs;
- transformers `generate`, batched and left-padded.

Start-up is wall clock around the pool's construction (Ray actor, imports, weights, compilation).
Run it alone on the machine: the figures are CPU-bound and another process's threads slow them down.
It measures the installed `ledex_rl` (the driver and the Ray workers import it): to measure another
checkout, run it with PYTHONPATH=<that checkout>.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Timed:
    """Tokens per second of `repeats` timed runs, and the start-up before them."""

    name: str
    tokens_per_s: tuple[float, ...]
    startup_s: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.tokens_per_s)

    def spread(self) -> str:
        return f"{min(self.tokens_per_s):.1f}-{max(self.tokens_per_s):.1f}"


def engine_requests(texts: list[str], tokens: int) -> list:
    from actors.rollout_engine import GenerationRequest

    return [GenerationRequest(tx, n=1, temperature=0.8, max_tokens=tokens, seed=i, ignore_eos=True) for i, tx in enumerate(texts)]


def time_generation(generate, repeats: int) -> tuple[float, ...]:
    """tokens/s of each of `repeats` calls of `generate` (which returns the tokens it made)."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        tokens = generate()
        rates.append(tokens / (time.perf_counter() - started))
    return tuple(rates)


def engine_actor(name: str, path: str, cfg, texts: list[str], tokens: int, repeats: int) -> Timed:
    """Start an EnginePool (one engine actor), warm it up, time `repeats` generations; 0 repeats: start-up only."""
    from actors.rollout_engine import EnginePool, GenerationRequest

    started = time.perf_counter()
    pool = EnginePool(path, cfg.rollout, cfg.model, seed=0, name_prefix="bench-rollout")
    startup = time.perf_counter() - started
    try:
        pool.generate([GenerationRequest(texts[0], max_tokens=8)])
        requests = engine_requests(texts, tokens)
        rates = time_generation(lambda: sum(len(c.token_ids) for cs in pool.generate(requests) for c in cs), repeats)
    finally:
        pool.shutdown()
    return Timed(name, rates, startup)


def bare_engine(path: str, cfg, texts: list[str], tokens: int, repeats: int) -> Timed:
    """The actor's engine class built in this process, no Ray: the same settings, the same calls."""
    from actors.rollout_engine import RolloutEngine

    started = time.perf_counter()
    engine = RolloutEngine(path, cfg.rollout, cfg.model, seed=0)
    startup = time.perf_counter() - started
    requests = engine_requests(texts, tokens)
    engine.generate(requests[:1])
    rates = time_generation(lambda: sum(len(c.token_ids) for cs in engine.generate(requests) for c in cs), repeats)
    return Timed("bare vLLM engine (this process, no Ray)", rates, startup)


def transformers_generate(path: str, texts: list[str], tokens: int, repeats: int, threads: int) -> Timed:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    options = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True, temperature=0.8, pad_token_id=tokenizer.pad_token_id)

    def generate() -> int:
        out = model.generate(**batch, **options)
        return (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]

    with torch.no_grad():
        model.generate(**{k: v[:1] for k, v in batch.items()}, max_new_tokens=8, do_sample=False)  # warm-up
        return Timed(f"transformers generate ({threads} threads, batched)", time_generation(generate, repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed generations per generator, after a warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for transformers")
    parser.add_argument("--out", help="add this model's row to a JSON file (docs/bench/rollout.json)")
    args = parser.parse_args()

    import ray
    from transformers import AutoTokenizer

    from ledex_rl import prompts
    from ledex_rl.config import ProblemSourceConfig, load_config
    from ledex_rl.models import resolve_model
    from ledex_rl.problems import load_problems

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Compile caches of this run's own (vLLM's and inductor's), so that the first start compiles as on a
    # fresh machine; the engine actors inherit them from this process through the local Ray cluster.
    os.environ["VLLM_CACHE_ROOT"] = tempfile.mkdtemp(prefix="bench-rollout-vllm-cache-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-rollout-inductor-cache-")
    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    problems = load_problems(ProblemSourceConfig(name="humaneval", limit=args.prompts))[0]
    texts = [prompts.render(prompts.first_attempt_messages(p), tokenizer) for p in problems]
    settings = [f"model.name_or_path={path}", "model.dtype=float32", "rollout.num_cpus_per_engine=1"]
    default, compiled = load_config(None, settings), load_config(None, [*settings, "rollout.enforce_eager=false"])
    mode = "eager" if default.rollout.eager() else "compiled"

    hf = transformers_generate(path, texts, args.tokens, args.repeats, args.threads)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    first = engine_actor("engine actor, first start", path, default, texts, args.tokens, 0)
    actor = engine_actor(f"vLLM engine actor (Ray), {mode}: the default", path, default, texts, args.tokens, args.repeats)
    compiled_first = engine_actor("compiled engine actor, first start", path, compiled, texts, args.tokens, 0)
    compiled_actor = engine_actor("vLLM engine actor (Ray), compiled", path, compiled, texts, args.tokens, args.repeats)
    ray.shutdown()
    bare = bare_engine(path, default, texts, args.tokens, args.repeats)

    print(
        f"\nmodel: {args.model} ({path}); {len(texts)} prompts x {args.tokens} new tokens, T=0.8, fp32, CPU, {args.repeats} timed runs each\n"
    )
    print("| generator | tokens/s (median) | min-max | start-up s | vs transformers |")
    print("|---|---|---|---|---|")
    for row in (actor, compiled_actor, bare, hf):
        startup = f"{row.startup_s:.1f}" if row.startup_s else ""
        print(f"| {row.name} | {row.median:.1f} | {row.spread()} | {startup} | {row.median / hf.median:.2f}x |")
    print(f"\nengine start-up with empty caches, then again: {first.startup_s:.1f} s, {actor.startup_s:.1f} s ({mode});", end=" ")
    print(f"{compiled_first.startup_s:.1f} s, {compiled_actor.startup_s:.1f} s (compiled)")
    if args.out:
        write_row(Path(args.out), args, Starts(first, actor), Starts(compiled_first, compiled_actor), bare, hf)


@dataclass(frozen=True)
class Starts:
    """An engine configuration's first start (empty caches) and its timed second start."""

    first: Timed
    timed: Timed


def write_row(out: Path, args, default: Starts, compiled: Starts, bare: Timed, hf: Timed) -> None:
    """Replace this model's row in the JSON file (keeping other models' rows)."""
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    row = {
        "model": args.model,
        "engine_tokens_per_s": round(default.timed.median, 1),
        "transformers_tokens_per_s": round(hf.median, 1),
        "engine_startup_s": round(default.first.startup_s, 1),
        "engine_startup_cached_s": round(default.timed.startup_s, 1),
        "engine_spread_tokens_per_s": default.timed.spread(),
        "transformers_spread_tokens_per_s": hf.spread(),
        "engine_mode": default.timed.name,
        "compiled_engine_tokens_per_s": round(compiled.timed.median, 1),
        "compiled_engine_spread_tokens_per_s": compiled.timed.spread(),
        "compiled_engine_startup_s": round(compiled.first.startup_s, 1),
        "compiled_engine_startup_cached_s": round(compiled.timed.startup_s, 1),
        "bare_engine_tokens_per_s": round(bare.median, 1),
        "bare_engine_startup_s": round(bare.startup_s, 1),
        "prompts": args.prompts,
        "tokens": args.tokens,
        "repeats": args.repeats,
    }
    rows = [r for r in rows if r["model"] != args.model] + [row]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
