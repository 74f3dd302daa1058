"""Rollout tokens/s of the vLLM engine actor next to plain transformers `generate`, same run.

    .venv/bin/python scripts/bench_rollout.py [--model tiny|smollm2-135m-instruct|PATH] [--prompts 16] [--tokens 128]

Both generate exactly `--tokens` new tokens for each of the same chat prompts (HumanEval first
attempts) at temperature 0.8: the engine with `ignore_eos`, transformers with `min_new_tokens`. The
engine runs in a Ray actor as in training; transformers runs in this process with the same number of
torch threads. Each is warmed up once, then timed.
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for transformers")
    args = parser.parse_args()

    import ray
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from actors.rollout_engine import EnginePool, GenerationRequest
    from ledex_rl import prompts
    from ledex_rl.config import ProblemSourceConfig, load_config
    from ledex_rl.models import resolve_model
    from ledex_rl.problems import load_problems

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    problems = load_problems(ProblemSourceConfig(name="humaneval", limit=args.prompts))[0]
    texts = [prompts.render(prompts.first_attempt_messages(p), tokenizer) for p in problems]
    cfg = load_config(None, [f"model.name_or_path={path}", "model.dtype=float32", "rollout.num_cpus_per_engine=1"])
    rows = []

    # --- vLLM engine actor -------------------------------------------------------------------------
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter()
    pool = EnginePool(path, cfg.rollout, cfg.model, seed=0, name_prefix="bench-rollout")
    startup = time.perf_counter() - started
    pool.generate([GenerationRequest(texts[0], max_tokens=8)])  # warm-up
    t = time.perf_counter()
    outputs = pool.generate(
        [GenerationRequest(tx, n=1, temperature=0.8, max_tokens=args.tokens, seed=i, ignore_eos=True) for i, tx in enumerate(texts)]
    )
    elapsed = time.perf_counter() - t
    generated = sum(len(c.token_ids) for completions in outputs for c in completions)
    rows.append(("vLLM engine actor (Ray)", generated, elapsed, f"start-up {startup:.1f} s"))
    pool.shutdown()
    ray.shutdown()

    # --- transformers generate ----------------------------------------------------------------------
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        model.generate(**{k: v[:1] for k, v in batch.items()}, max_new_tokens=8, do_sample=False)  # warm-up
        t = time.perf_counter()
        out = model.generate(
            **batch,
            max_new_tokens=args.tokens,
            min_new_tokens=args.tokens,
            do_sample=True,
            temperature=0.8,
            pad_token_id=tokenizer.pad_token_id,
        )
        elapsed = time.perf_counter() - t
    generated = (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
    rows.append((f"transformers generate ({args.threads} threads)", generated, elapsed, "batched, left-padded"))

    print(f"\nmodel: {args.model} ({path}); {len(texts)} prompts x {args.tokens} new tokens, T=0.8, fp32, CPU\n")
    print("| generator | tokens | seconds | tokens/s | note |")
    print("|---|---|---|---|---|")
    for name, tokens, seconds, note in rows:
        print(f"| {name} | {tokens} | {seconds:.2f} | {tokens / seconds:.1f} | {note} |")
    print(f"\nratio: {rows[0][1] / rows[0][2] / (rows[1][1] / rows[1][2]):.2f}x")


if __name__ == "__main__":
    main()
