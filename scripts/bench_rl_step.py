"""RL step time against TRL's trainer on the same model, prompts, reward and lengths, by wall clock.

TRL 1.x no longer ships a PPO trainer (it was removed after 0.2x, and the last releases with it need
transformers 4). The peer is therefore TRL's GRPOTrainer, and ledex_rl runs with
`rl.advantage=grpo` for the comparison: same model, prompts (refine-only prompts for the same
collected wrong attempts, so that both sides earn the same reward: the LeDex code reward, unit tests
in the sandbox + CodeBLEU, and no explanation reward), answers per step, answers per prompt, maximum
new tokens, temperature, one optimizer step per batch and a KL term to a reference model. TRL
generates with transformers `generate` in the training process; ledex_rl generates on a vLLM engine
actor and scores on reward actors.

Both sides are timed the same way: wall clock around each whole step (ledex_rl's `time/step_s`, from
the start of sampling to the end of the weight sync; TRL's from its step-begin to its step-end
callback), the first step of each run left out as warm-up. `--rounds` runs alternate which side goes
first; each run starts fresh. Medians and the spread (min-max) go to docs/bench/rl_step.json.

    .venv/bin/pip install trl==1.16.0     # only for this benchmark
    .venv/bin/python scripts/bench_rl_step.py --model tiny|smollm2 [--steps 10] [--rounds 2] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledex_rl import prompts  # noqa: E402
from ledex_rl.collected import CollectedRow, write_rows  # noqa: E402
from ledex_rl.config import load_config  # noqa: E402
from ledex_rl.models import build_tiny_model, resolve_model  # noqa: E402


def humaneval_rows(n: int) -> list[CollectedRow]:
    """A collected dataset: for each of n HumanEval tasks, a wrong first attempt (an empty body)."""
    from ledex_rl.config import ProblemSourceConfig
    from ledex_rl.problems import load_problems

    rows = []
    for p in load_problems(ProblemSourceConfig(name="humaneval", limit=n))[0]:
        rows.append(
            CollectedRow(
                task_id=p.task_id,
                source=p.source,
                kind="first_attempt",
                mode="generate",
                sample_index=0,
                parent_index=-1,
                messages=json.dumps(prompts.first_attempt_messages(p)),
                response="",
                explanation="",
                code=p.starter_code.rstrip() + "\n    pass\n",
                wrong_code="",
                wrong_feedback="",
                passed=False,
                pass_rate=0.0,
                num_tests=len(p.tests),
                status="failed",
                feedback="every test failed: the function returns None",
                test_results="[]",
                model="synthetic",
                temperature=1.0,
                max_tokens=64,
                seed=0,
                duplicates=1,
            )
        )
    return rows


def ledex_steps(cfg) -> list[float]:
    """Seconds per ledex_rl RL step (wall clock around the whole step), after a warm-up step."""
    import ray

    from ledex_rl.pipeline import run_stage

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_stage("rl", cfg)
    finally:
        ray.shutdown()  # TRL runs next with the machine to itself
    history = [json.loads(line) for line in (Path(cfg.run_dir) / "rl" / "metrics.jsonl").read_text().splitlines()]
    return [m["time/step_s"] for m in history if "time/step_s" in m][1:]


def trl_steps(model_path: str, rows: list[dict], batch: int, per_prompt: int, max_new_tokens: int, steps: int, lr: float) -> list[float]:
    """Seconds per TRL GRPO step (after a warm-up step), rewarded with the LeDex code reward."""
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from ledex_rl.config import ProblemSourceConfig
    from ledex_rl.problems import load_problems
    from ledex_rl.rewards import codebleu_score, code_reward
    from sandbox import Job, Sandbox

    problems = {p.task_id: p for p in load_problems(ProblemSourceConfig(name="humaneval", limit=64))[0]}
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    wrong = [r for r in rows if r.kind == "first_attempt"]
    data = []
    for i, r in enumerate(wrong):
        mode = "refine"  # as ledex_rl's rl.modes=[refine]: the code reward alone on both sides
        conv = prompts.refinement_messages(problems[r.task_id], r.code, r.feedback, mode)
        data.append({"prompt": conv, "task_id": r.task_id})
    sandbox = Sandbox(slots=1)

    def ledex_code_reward(completions, task_id, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        codes = [prompts.parse_response(t).code for t in texts]
        results = sandbox.run([Job.for_problem(problems[t], code) for t, code in zip(task_id, codes)])
        return [
            code_reward(codebleu_score(code, [problems[t].reference_solution]), res.pass_rate if code.strip() else 0.0)
            for t, code, res in zip(task_id, codes, results)
        ]

    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.started)

    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-"),
        use_cpu=True,
        per_device_train_batch_size=batch,
        num_generations=per_prompt,
        max_completion_length=max_new_tokens,
        temperature=0.8,
        learning_rate=lr,
        beta=0.04,
        num_iterations=1,
        max_steps=steps + 1,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=False,
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model_path,
        reward_funcs=ledex_code_reward,
        args=args,
        train_dataset=Dataset.from_list(data),
        processing_class=tokenizer,
        callbacks=[StepTimer()],
    )
    trainer.train()
    sandbox.close()
    return times[1:]


def spread(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run, after one warm-up step")
    parser.add_argument("--rounds", type=int, default=2, help="runs per side; odd rounds start with TRL")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--per-prompt", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    work = Path(tempfile.mkdtemp(prefix="bench-rl-step-"))
    model_path = str(build_tiny_model(target=work / "tiny")) if args.model == "tiny" else resolve_model("smollm2-135m-instruct")
    rows = humaneval_rows(16)

    def ledex_run(r: int) -> list[float]:
        parts = work / f"run{r}" / "collect" / "parts"  # a fresh run directory: nothing to resume
        parts.mkdir(parents=True)
        write_rows(parts / "part-00000.parquet", rows)
        return ledex_steps(ledex_config(work / f"run{r}", model_path, args))

    lr = ledex_config(work / "run", model_path, args).rl.ppo.lr
    times: dict[str, list[float]] = {"ledex_rl": [], "trl": []}
    for r in range(args.rounds):
        for side in ("ledex_rl", "trl") if r % 2 == 0 else ("trl", "ledex_rl"):
            if side == "ledex_rl":
                run = ledex_run(r)
            else:
                run = trl_steps(model_path, rows, args.batch, args.per_prompt, args.max_new_tokens, args.steps, lr)
            times[side] += run
            print(f"round {r + 1}, {side}: " + " ".join(f"{t:.2f}" for t in run), flush=True)
    ours, theirs = spread(times["ledex_rl"]), spread(times["trl"])
    row = {
        "model": args.model,
        "ledex_step_s": round(ours["median"], 3),
        "trl_step_s": round(theirs["median"], 3),
        "ledex_spread_s": [round(ours["min"], 3), round(ours["max"], 3)],
        "trl_spread_s": [round(theirs["min"], 3), round(theirs["max"], 3)],
        "steps": len(times["ledex_rl"]),
        "trl_steps": len(times["trl"]),
        "rounds": args.rounds,
        "batch": args.batch,
        "per_prompt": args.per_prompt,
        "max_new_tokens": args.max_new_tokens,
        "trl_over_ledex": round(theirs["median"] / ours["median"], 2),
    }
    out = Path(__file__).resolve().parents[1] / "docs" / "bench" / "rl_step.json"
    previous = json.loads(out.read_text())["rows"] if out.is_file() else []
    out.write_text(json.dumps({"rows": [r for r in previous if r["model"] != args.model] + [row]}, indent=2) + "\n")
    print(f"\nmodel {args.model}: {args.batch} answers per step ({args.per_prompt} per prompt), up to {args.max_new_tokens} new tokens")
    print("| system | step s (median) | min | max | timed steps |")
    print("|---|---|---|---|---|")
    for name, t in (("ledex_rl (Ray actors, vLLM)", ours), ("TRL GRPOTrainer", theirs)):
        print(
            f"| {name} | {t['median']:.2f} | {t['min']:.2f} | {t['max']:.2f} | {len(times['ledex_rl' if name.startswith('ledex') else 'trl'])} |"
        )
    print(f"ratio TRL / ledex_rl: {row['trl_over_ledex']:.2f}x")


def ledex_config(run_dir: Path, model_path: str, args):
    return load_config(
        None,
        [
            f"run_dir={run_dir}",
            f"model.name_or_path={model_path}",
            "rl.advantage=grpo",
            "rl.modes=[refine]",
            "rl.use_reference_solutions=true",
            "rl.validation_fraction=0",
            "rl.eval_every_steps=0",
            f"rl.ppo.steps={args.steps + 1}",
            f"rl.ppo.batch_size={args.batch}",
            f"rl.ppo.mini_batch_size={args.batch}",
            "rl.ppo.micro_batch_size=2",
            f"rl.ppo.samples_per_prompt={args.per_prompt}",
            "rl.ppo.ppo_epochs=1",
            f"rl.ppo.max_new_tokens={args.max_new_tokens}",
            "rl.ppo.temperature=0.8",
            "rl.ppo.adaptive_kl=false",
            "rl.ppo.kl_coef=0.04",
            "rl.ppo.save_every_steps=1000",
            "model.max_model_len=1024",
        ],
    )


if __name__ == "__main__":
    main()
