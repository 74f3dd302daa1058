"""RL step time and its phases, next to TRL's trainer on the same model, batch and lengths.

TRL 1.x no longer ships a PPO trainer (it was removed after 0.2x, and the last releases with it need
transformers 4). The peer is therefore TRL's GRPOTrainer, and ledex_rl runs with
`rl.advantage=grpo` for the comparison: same model, prompts (explain-then-refine and refine-only
prompts for collected wrong attempts), answers per step, answers per prompt, maximum new tokens,
temperature, one optimizer step per batch, a KL term to a reference model, and the same LeDex code
reward (unit tests in the sandbox + CodeBLEU). TRL generates with transformers `generate` in the
training process; ledex_rl generates on a vLLM engine actor and scores on reward actors.

    .venv/bin/pip install trl==1.16.0     # only for this benchmark
    .venv/bin/python scripts/bench_rl_step.py --model tiny|smollm2 [--steps 3] [--max-new-tokens 64]
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
from ledex_rl.config import load_config  # noqa: E402
from ledex_rl.models import build_tiny_model, resolve_model  # noqa: E402


def humaneval_rows(n: int) -> list[dict]:
    """A collected dataset: for each of n HumanEval tasks, a wrong first attempt (an empty body)."""
    from ledex_rl.config import ProblemSourceConfig
    from ledex_rl.problems import load_problems

    rows = []
    for p in load_problems(ProblemSourceConfig(name="humaneval", limit=n))[0]:
        rows.append(
            {
                "task_id": p.task_id,
                "source": p.source,
                "kind": "first_attempt",
                "mode": "generate",
                "sample_index": 0,
                "parent_index": -1,
                "messages": json.dumps(prompts.first_attempt_messages(p)),
                "response": "",
                "explanation": "",
                "code": p.starter_code.rstrip() + "\n    pass\n",
                "wrong_code": "",
                "wrong_feedback": "",
                "passed": False,
                "pass_rate": 0.0,
                "num_tests": len(p.tests),
                "status": "failed",
                "feedback": "every test failed: the function returns None",
                "test_results": "[]",
                "model": "synthetic",
                "temperature": 1.0,
                "max_tokens": 64,
                "seed": 0,
                "duplicates": 1,
            }
        )
    return rows


def ledex_steps(cfg, steps: int) -> list[dict]:
    from ledex_rl.pipeline import run_stage

    run_stage("rl", cfg)
    history = [json.loads(line) for line in (Path(cfg.run_dir) / "rl" / "metrics.jsonl").read_text().splitlines()]
    return history[1:] if len(history) > 1 else history  # the first step warms caches up


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
    wrong = [r for r in rows if r["kind"] == "first_attempt"]
    data = []
    for i, r in enumerate(wrong):
        mode = ("explain_refine", "refine")[i % 2]
        conv = prompts.refinement_messages(problems[r["task_id"]], r["code"], r["feedback"], mode)
        data.append({"prompt": conv, "task_id": r["task_id"]})
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--per-prompt", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from ledex_rl.collected import SCHEMA

    work = Path(tempfile.mkdtemp(prefix="bench-rl-step-"))
    model_path = str(build_tiny_model(target=work / "tiny")) if args.model == "tiny" else resolve_model("smollm2-135m-instruct")
    rows = humaneval_rows(16)
    parts = work / "run" / "collect" / "parts"
    parts.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), parts / "part-00000.parquet")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cfg = load_config(
        None,
        [
            f"run_dir={work / 'run'}",
            f"model.name_or_path={model_path}",
            "rl.advantage=grpo",
            "rl.use_reference_solutions=true",
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
    ours = ledex_steps(cfg, args.steps)
    ray.shutdown()
    theirs = trl_steps(model_path, rows, args.batch, args.per_prompt, args.max_new_tokens, args.steps, cfg.rl.ppo.lr)
    phases = ("generate", "score", "reference", "values", "train", "sync")
    step_s = [sum(m[f"time/{p}_s"] for p in phases) for m in ours]
    print(
        f"\nmodel {args.model}: {args.batch} answers per step ({args.per_prompt} per prompt), up to {args.max_new_tokens} new tokens, "
        f"{len(ours)} timed steps each"
    )
    print("| system | step s (median) | " + " | ".join(phases) + " |")
    print("|---|---|" + "---|" * len(phases))
    print(
        f"| ledex_rl (Ray actors, vLLM) | {statistics.median(step_s):.2f} | "
        + " | ".join(f"{statistics.median(m[f'time/{p}_s'] for m in ours):.2f}" for p in phases)
        + " |"
    )
    print(f"| TRL GRPOTrainer | {statistics.median(theirs):.2f} | " + " | ".join("-" for _ in phases) + " |")
    print(f"ratio TRL / ledex_rl: {statistics.median(theirs) / statistics.median(step_s):.2f}x")


if __name__ == "__main__":
    main()
