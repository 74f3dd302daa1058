"""Evaluate one model (docs/method.md §7): first attempts, then rounds of self-refinement.

For every task: sample `samples_per_task` first attempts and execute them. Then, for each mode
(refine-only, explain-then-refine) separately, every sample that still fails is refined once per
round, from the task, its latest code and that code's execution feedback, and the refinement is
executed. A sample that passes is not refined again, so after round r each sample holds its latest
code: pass@k "after refinement" is pass@k of those (the paper's "each wrong sample replaced by its
refinement"), over the same n samples.

EvalPlus-style benchmarks (tests in groups "base" and "plus"): the feedback the model sees and the
decision to refine come from the base tests; scoring reports both the base tests and all tests.

Output in `out_dir`: `parts/part-NNNNN.parquet` (one row per executed sample: task, sample, round,
mode, response, code, verdicts, feedback, seed), written a chunk of tasks at a time so a stopped
evaluation resumes at the first unfinished chunk; `results.json` (`ledex_rl.eval_metrics`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from ledex_rl import prompts
from ledex_rl.config import EvalConfig, LedexConfig
from ledex_rl.console import STAGE_LOG
from ledex_rl.expected_outputs import fill_expected_outputs
from ledex_rl.parts import Parts
from ledex_rl.problems import load_problems
from ledex_rl.problems.base import Problem
from ledex_rl.seeds import request_seed

log = logging.getLogger(__name__)
stage_log = logging.getLogger(STAGE_LOG)  # shown on the console

SCHEMA = pa.schema(
    [
        ("task_id", pa.string()),
        ("benchmark", pa.string()),
        ("sample_index", pa.int32()),
        ("round", pa.int32()),  # 0: first attempt; r: the r-th refinement of this sample in `mode`
        ("mode", pa.string()),  # generate | refine | explain_refine
        ("response", pa.string()),
        ("explanation", pa.string()),
        ("code", pa.string()),
        ("passed", pa.bool_()),  # every test (base and plus)
        ("passed_base", pa.bool_()),  # the base tests only (equals `passed` without plus tests)
        ("pass_rate", pa.float32()),
        ("plus_tests", pa.int32()),
        ("feedback", pa.string()),  # from the base tests: what the next refinement is shown
        ("seed", pa.int64()),
    ]
)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    passed_base: bool
    pass_rate: float
    feedback: str


class Evaluator:
    """Runs the evaluation of one model: `engines` (an EnginePool with the model), `executors`
    (anything with `.run(jobs)`: the executor pool, or a Sandbox)."""

    def __init__(
        self,
        out_dir: Path,
        engines,
        tokenizer,
        style: str,
        executors,
        cfg: EvalConfig,
        seed: int,
        model_name: str,
        progress: bool = True,
        label: str = "",
    ):
        self.out_dir = Path(out_dir)
        self.parts = Parts(self.out_dir / "parts", SCHEMA)
        self.engines, self.tokenizer, self.style, self.executors = engines, tokenizer, style, executors
        self.cfg, self.seed, self.model_name, self.progress = cfg, seed, model_name, progress
        self.label = label or Path(model_name).name
        self.seconds = {"generate": 0.0, "execute": 0.0}

    def run(self, problems: Sequence[Problem]) -> dict:
        from tqdm.auto import tqdm

        from ledex_rl.eval_metrics import summarize

        done = self.parts.finished_tasks()
        todo = [p for p in problems if p.task_id not in done]
        if done:
            stage_log.info("eval %s: resuming; %d tasks done, %d to go", self.model_name, len(problems) - len(todo), len(todo))
        started = time.perf_counter()
        bar = tqdm(
            total=len(problems), initial=len(problems) - len(todo), desc=f"eval {self.label}", unit="task", disable=not self.progress
        )
        size = self.cfg.chunk_size
        self._bar = bar
        for i in range(0, len(todo), size):
            chunk = todo[i : i + size]
            self.parts.write(self.evaluate_chunk(chunk))
            bar.update(len(chunk))
        bar.close()
        wanted = {p.task_id for p in problems}
        rows = [r for r in self.parts.read_rows() if r["task_id"] in wanted]
        results = summarize(rows, self.cfg.ks, self.cfg.refine_rounds, self.cfg.modes)
        results.update(
            {
                "model": self.model_name,
                "samples_per_task": self.cfg.samples_per_task,
                "temperature": self.cfg.temperature,
                "refine_temperature": self.cfg.refine_temperature,
                "max_new_tokens": self.cfg.max_new_tokens,
                "seconds": {k: round(v, 1) for k, v in self.seconds.items()} | {"wall": round(time.perf_counter() - started, 1)},
            }
        )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        return results

    # --- one chunk of tasks: first attempts, then every round of both modes -----------------------

    def evaluate_chunk(self, chunk: Sequence[Problem]) -> list[dict]:
        from actors.rollout_engine import GenerationRequest

        cfg = self.cfg
        requests = [
            GenerationRequest(
                self._prompt(prompts.first_attempt_messages(p)),
                n=cfg.samples_per_task,
                temperature=cfg.temperature,
                max_tokens=cfg.max_new_tokens,
                seed=request_seed(self.seed, p.task_id, "eval-first"),
            )
            for p in chunk
        ]
        self._status(f"{len(chunk)} tasks: first attempts")
        outputs = self._generate(requests)
        samples = [(p, i, c.text, r.seed) for p, r, cs in zip(chunk, requests, outputs) for i, c in enumerate(cs)]
        verdicts = self._execute([(p, prompts.parse_response(text).code) for p, _, text, _ in samples])
        rows = [self._row(p, i, 0, "generate", text, v, seed) for (p, i, text, seed), v in zip(samples, verdicts)]
        # The latest (code, verdict) of every sample in every mode; round 0 is shared.
        latest = {
            (mode, p.task_id, i): (prompts.parse_response(text).code, v)
            for mode in cfg.modes
            for (p, i, text, _), v in zip(samples, verdicts)
        }
        by_id = {p.task_id: p for p in chunk}
        for round_ in range(1, cfg.refine_rounds + 1):
            wrong = [key for key, (_, v) in latest.items() if not v.passed_base]
            if not wrong:
                break
            requests = []
            for mode, task_id, i in wrong:
                code, verdict = latest[(mode, task_id, i)]
                messages = prompts.refinement_messages(by_id[task_id], code, verdict.feedback, mode)
                requests.append(
                    GenerationRequest(
                        self._prompt(messages),
                        n=1,
                        temperature=cfg.refine_temperature,
                        max_tokens=cfg.max_new_tokens,
                        seed=request_seed(self.seed, task_id, "eval-refine", mode, round_, i),
                    )
                )
            self._status(f"{len(chunk)} tasks: round {round_}, {len(requests)} refinements")
            texts = [cs[0].text for cs in self._generate(requests)]
            codes = [prompts.parse_response(t).code for t in texts]
            verdicts = self._execute([(by_id[task_id], code) for (_, task_id, _), code in zip(wrong, codes)])
            for (mode, task_id, i), text, code, verdict, request in zip(wrong, texts, codes, verdicts, requests):
                latest[(mode, task_id, i)] = (code, verdict)
                rows.append(self._row(by_id[task_id], i, round_, mode, text, verdict, request.seed))
        return rows

    def _status(self, text: str) -> None:
        bar = getattr(self, "_bar", None)
        if bar is not None:
            bar.set_postfix_str(text)

    def _prompt(self, messages: list[dict]) -> str:
        return prompts.render(messages, self.tokenizer, self.style)

    def _generate(self, requests):
        started = time.perf_counter()
        outputs = self.engines.generate(requests)
        self.seconds["generate"] += time.perf_counter() - started
        return outputs

    def _execute(self, programs: Sequence[tuple[Problem, str]]) -> list[Verdict]:
        """Execute each (problem, code) once per distinct code; problems with plus tests also get a
        run of their base tests alone, whose feedback is what the model is shown."""
        from sandbox import Job

        started = time.perf_counter()
        keys = list(dict.fromkeys((p.task_id, code) for p, code in programs))
        problem_of = {p.task_id: p for p, _ in programs}
        jobs, slots = [], {}
        for task_id, code in keys:
            problem = problem_of[task_id]
            slots[(task_id, code)] = [len(jobs)]
            jobs.append(Job.for_problem(problem, code))
            base = [t for t in problem.tests if t.group == "base"]
            if len(base) < len(problem.tests):
                slots[(task_id, code)].append(len(jobs))
                jobs.append(Job.for_problem(problem, code, tests=base))
        results = self.executors.run(jobs)
        verdicts = {}
        for key, (whole, *base) in slots.items():
            full = results[whole]
            base_result = results[base[0]] if base else full
            verdicts[key] = Verdict(full.passed, base_result.passed, full.pass_rate, base_result.feedback())
        self.seconds["execute"] += time.perf_counter() - started
        return [verdicts[(p.task_id, code)] for p, code in programs]

    def _row(self, problem: Problem, index: int, round_: int, mode: str, response: str, verdict: Verdict, seed: int) -> dict:
        parsed = prompts.parse_response(response)
        return {
            "task_id": problem.task_id,
            "benchmark": problem.source,
            "sample_index": index,
            "round": round_,
            "mode": mode,
            "response": response,
            "explanation": parsed.explanation,
            "code": parsed.code,
            "passed": verdict.passed,
            "passed_base": verdict.passed_base,
            "pass_rate": verdict.pass_rate,
            "plus_tests": sum(t.group != "base" for t in problem.tests),
            "feedback": verdict.feedback,
            "seed": seed,
        }


def load_eval_problems(cfg: LedexConfig, run_jobs, limit: int = 0) -> list:
    """The problems of data.eval, with EvalPlus expected outputs filled in; `limit` keeps the first
    tasks of each source (evaluation during RL)."""
    problems = []
    for source in cfg.data.eval:
        if limit:
            source = replace(source, limit=min(source.limit, limit) if source.limit else limit)
        loaded, report = load_problems(source)
        log.info("eval: %s [%s]: %d problems, %d rows skipped", source.name, source.split, len(loaded), len(report.skipped))
        problems += loaded
    problems, dropped = fill_expected_outputs(problems, run_jobs)
    return problems


def during_training(cfg: LedexConfig, step: int, engines, tokenizer, style: str, executors, problems, out: Path) -> dict:
    """Evaluate the policy the engines hold now (after `step` RL steps) on `problems`; returns flat
    metrics (eval/<benchmark>/<mode>_pass@k) to log next to the training metrics."""
    results = Evaluator(
        out / f"step-{step:05d}", engines, tokenizer, style, executors, cfg.eval, cfg.seed, f"rl step {step}", progress=False
    ).run(problems)
    flat = {}
    for name, m in results["benchmarks"].items():
        name = name.replace(" (base tests)", "_base")
        for key, value in m["init"].items():
            flat[f"eval/{name}/init_{key}"] = value
        for mode in results["modes"]:
            for key, value in m[mode][-1].items() if m[mode] else ():
                if key.startswith("pass@") or (key == "success_rate" and value is not None):
                    flat[f"eval/{name}/{mode}_{key}"] = value
    return flat
