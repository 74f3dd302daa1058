"""Stage 1, collect (docs/method.md §1): verified explanations and refinements.

For each training problem: sample N first attempts from the policy, execute them, keep the correct
ones as code-generation data; for every wrong one ask the teacher for K explain-then-refine answers
given the task, the wrong code and the execution feedback; execute every refinement. A refinement
that passes every test makes its explanation "correct"; failed ones are kept too, labelled (RL uses
both).

Output, in `run_dir/collect/`: `parts/part-NNNNN.parquet` (one row per first attempt or refinement,
with its provenance), written a chunk of problems at a time and atomically, so a stopped run resumes
at the first unfinished chunk; and `summary.json` / `summary.md` in the shape of the paper's Table 1.
Every request carries its own seed, so a resumed run produces exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ledex_rl import problem_set, prompts
from ledex_rl.collected import SCHEMA, CollectedRow, records_of, rows_of
from ledex_rl.config import CollectConfig, LedexConfig
from ledex_rl.console import STAGE_LOG
from ledex_rl.parts import Parts
from ledex_rl.seeds import request_seed
from ledex_rl.problems.base import Problem

log = logging.getLogger(__name__)
stage_log = logging.getLogger(STAGE_LOG)  # shown on the console


@dataclass
class Timing:
    generating: float = 0.0
    executing: float = 0.0
    waiting: float = 0.0  # for executions that generation could not hide
    problems: int = 0
    started: float = field(default_factory=time.perf_counter)

    def report(self) -> dict:
        wall = time.perf_counter() - self.started
        return {
            "problems": self.problems,
            "wall_s": round(wall, 2),
            "problems_per_minute": round(self.problems / wall * 60, 2) if wall else 0.0,
            "generating_s": round(self.generating, 2),
            "executing_s": round(self.executing, 2),
            "waiting_s": round(self.waiting, 2),
        }


class Collector:
    """Runs collection over problems with a policy engine pool, a teacher and an executor pool."""

    def __init__(
        self,
        out_dir: Path,
        policy,
        tokenizer,
        style: str,
        executors,
        teacher,
        cfg: CollectConfig,
        seed: int,
        policy_name: str,
        chunk_size: int = 8,
    ):
        self.out_dir, self.parts = Path(out_dir), Parts(Path(out_dir) / "parts", SCHEMA)
        self.policy, self.tokenizer, self.style = policy, tokenizer, style
        self.executors, self.teacher, self.cfg = executors, teacher, cfg
        self.seed, self.policy_name, self.chunk_size = seed, policy_name, chunk_size
        self.timing = Timing()
        self._io = ThreadPoolExecutor(1, thread_name_prefix="execute")
        self.bar = None  # the progress bar while `run` runs

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, problems: Sequence[Problem], progress: bool = True) -> dict:
        done = self.parts.finished_tasks()
        todo = [p for p in problems if p.task_id not in done]
        if done:
            stage_log.info(
                "collect: resuming; %d problems already collected, %d to go", len(done & {p.task_id for p in problems}), len(todo)
            )
        chunks = [todo[i : i + self.chunk_size] for i in range(0, len(todo), self.chunk_size)]
        bar = self.bar = _progress(len(todo), progress)
        next_first = self._first_attempts(chunks[0], f"chunk 1/{len(chunks)}") if chunks else None
        for i, chunk in enumerate(chunks):
            first = next_first
            # Execute this chunk's first attempts while the engines sample the next chunk's.
            executing = self._submit([job for _, _, job in first])
            self._phase(f"chunk {i + 1}/{len(chunks)}: executing first attempts")
            if i + 1 < len(chunks):
                next_first = self._first_attempts(chunks[i + 1], f"chunk {i + 1}/{len(chunks)}: executing first attempts; chunk {i + 2}")
            first_results = self._wait(executing)
            rows = self._refine_and_label(chunk, first, first_results)
            self.parts.write(records_of(rows))
            self.timing.problems += len(chunk)
            bar.update(len(chunk))
            bar.set_postfix(self._postfix())
        bar.close()
        summary = summarize(rows_of(self.parts.read_rows()))
        summary["throughput"] = self.timing.report()
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (self.out_dir / "summary.md").write_text(summary_markdown(summary))
        return summary

    # --- steps ------------------------------------------------------------------------------------

    def _first_attempts(self, chunk: Sequence[Problem], phase: str) -> list[tuple]:
        """-> [(problem, unique attempt dict, Job)] for every unique first attempt in the chunk; the bar
        shows `phase` and how many of the chunk's problems are sampled."""
        from actors.rollout_engine import GenerationRequest
        from sandbox import Job

        cfg = self.cfg
        requests = [
            GenerationRequest(
                prompts.render(prompts.first_attempt_messages(p), self.tokenizer, self.style),
                n=cfg.samples_per_problem,
                temperature=cfg.temperature,
                max_tokens=cfg.max_new_tokens,
                seed=request_seed(self.seed, p.task_id, "first"),
            )
            for p in chunk
        ]
        started = time.perf_counter()
        outputs = self.policy.generate(
            requests, on_progress=lambda k: self._phase(f"{phase}: sampling first attempts ({k}/{len(chunk)} problems)")
        )
        self.timing.generating += time.perf_counter() - started
        attempts = []
        for problem, request, completions in zip(chunk, requests, outputs):
            unique: dict[str, dict] = {}
            for completion in completions:
                parsed = prompts.parse_response(completion.text)
                key = parsed.code.strip()
                if key in unique:
                    unique[key]["duplicates"] += 1
                    continue
                unique[key] = {
                    "response": completion.text,
                    "code": parsed.code,
                    "explanation": parsed.explanation,
                    "seed": request.seed,
                    "duplicates": 1,
                }
            for attempt in unique.values():
                attempts.append((problem, attempt, Job.for_problem(problem, attempt["code"])))
        return attempts

    def _refine_and_label(self, chunk, first, first_results) -> list[CollectedRow]:
        cfg = self.cfg
        rows, wrong = [], []
        per_task_index: dict[str, int] = {}
        for (problem, attempt, _), result in zip(first, first_results):
            index = per_task_index.get(problem.task_id, 0)
            per_task_index[problem.task_id] = index + 1
            messages = prompts.first_attempt_messages(problem)
            rows.append(
                self._row(
                    problem,
                    "first_attempt",
                    "generate",
                    index,
                    -1,
                    messages,
                    attempt["response"],
                    attempt["code"],
                    attempt["explanation"],
                    result,
                    self.policy_name,
                    cfg.temperature,
                    cfg.max_new_tokens,
                    attempt["seed"],
                    duplicates=attempt["duplicates"],
                )
            )
            if not result.passed:
                wrong.append((problem, index, attempt["code"], result.feedback()))
        if not wrong:
            return rows
        conversations = [prompts.refinement_messages(p, code, feedback, "explain_refine") for p, _, code, feedback in wrong]
        seeds = [request_seed(self.seed, p.task_id, "teacher", index) for p, index, _, _ in wrong]
        self._phase(f"the teacher explains and fixes {len(wrong)} wrong attempts")
        started = time.perf_counter()
        answers = self.teacher.complete(
            conversations,
            cfg.teacher_samples,
            cfg.teacher_temperature,
            cfg.teacher_max_new_tokens,
            seeds,
            on_progress=lambda k: self._phase(f"the teacher explains and fixes {len(wrong)} wrong attempts ({k} done)"),
        )
        self.timing.generating += time.perf_counter() - started
        from sandbox import Job

        refinements = []
        for (problem, index, code, feedback), messages, seed, texts in zip(wrong, conversations, seeds, answers):
            for k, text in enumerate(texts):
                parsed = prompts.parse_response(text)
                refinements.append((problem, index, code, feedback, messages, seed, k, text, parsed))
        self._phase(f"verifying {len(refinements)} fixes")
        results = self._wait(self._submit([Job.for_problem(r[0], r[8].code) for r in refinements]))
        for (problem, index, code, feedback, messages, seed, k, text, parsed), result in zip(refinements, results):
            rows.append(
                self._row(
                    problem,
                    "refinement",
                    "explain_refine",
                    k,
                    index,
                    messages,
                    text,
                    parsed.code,
                    parsed.explanation,
                    result,
                    self.teacher.name,
                    cfg.teacher_temperature,
                    cfg.teacher_max_new_tokens,
                    seed,
                    wrong_code=code,
                    wrong_feedback=feedback,
                )
            )
        return rows

    def _row(
        self,
        problem,
        kind,
        mode,
        index,
        parent,
        messages,
        response,
        code,
        explanation,
        result,
        model,
        temperature,
        max_tokens,
        seed,
        duplicates=1,
        wrong_code="",
        wrong_feedback="",
    ) -> CollectedRow:
        return CollectedRow(
            task_id=problem.task_id,
            source=problem.source,
            kind=kind,
            mode=mode,
            sample_index=index,
            parent_index=parent,
            messages=json.dumps(messages),
            response=response,
            explanation=explanation,
            code=code,
            wrong_code=wrong_code,
            wrong_feedback=wrong_feedback,
            passed=result.passed,
            pass_rate=result.pass_rate,
            num_tests=len(result.tests),
            status=result.status,
            feedback=result.feedback(),
            test_results=json.dumps([{"status": t.status, "message": t.message} for t in result.tests]),
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
            duplicates=duplicates,
        )

    def _phase(self, text: str) -> None:
        """What the stage is doing now, on its progress bar (a chunk of problems takes minutes on a CPU)."""
        if self.bar is not None:
            self.bar.set_description_str(f"collect ({text})")

    def _submit(self, jobs) -> Future:
        def run():
            started = time.perf_counter()
            results = self.executors.run(jobs)
            return results, time.perf_counter() - started

        return self._io.submit(run)

    def _wait(self, future: Future):
        started = time.perf_counter()
        results, executing = future.result()
        self.timing.waiting += time.perf_counter() - started
        self.timing.executing += executing
        return results

    def _postfix(self) -> dict:
        t = self.timing.report()
        return {"gen_s": t["generating_s"], "exec_s": t["executing_s"], "wait_s": t["waiting_s"]}


# --- summary (the paper's Table 1) ----------------------------------------------------------------------


def summarize(rows: list[CollectedRow]) -> dict:
    by_source: dict[str, dict] = {}
    refined: dict[tuple, bool] = {}
    for row in rows:
        s = by_source.setdefault(
            row.source, {"problems": set(), "unique": 0, "correct": 0, "wrong": 0, "refinements": 0, "correct_refinements": 0}
        )
        s["problems"].add(row.task_id)
        if row.kind == "first_attempt":
            s["unique"] += 1
            s["correct" if row.passed else "wrong"] += 1
        else:
            s["refinements"] += 1
            s["correct_refinements"] += bool(row.passed)
            key = (row.source, row.task_id, row.parent_index)
            refined[key] = refined.get(key, False) or bool(row.passed)
    table = {}
    for source, s in sorted(by_source.items()):
        fixed = sum(v for (src, _, _), v in refined.items() if src == source)
        table[source] = {
            "problems": len(s["problems"]),
            "unique_solutions": s["unique"],
            "correct": s["correct"],
            "wrong": s["wrong"],
            "wrong_with_correct_refinement": fixed,
            "refinement_rate": round(fixed / s["wrong"], 4) if s["wrong"] else 0.0,
            "refinements": s["refinements"],
            "correct_refinements": s["correct_refinements"],
        }
    return {"table1": table}


def summary_markdown(summary: dict) -> str:
    lines = [
        "| Dataset (#problems) | #Unique solutions | #Correct | #Wrong | #Correct refinement | Refinement rate | #Verified explanations |",
        "|---|---|---|---|---|---|---|",
    ]
    for source, s in summary["table1"].items():
        lines.append(
            f"| {source} ({s['problems']}) | {s['unique_solutions']} | {s['correct']} | {s['wrong']} | "
            f"{s['wrong_with_correct_refinement']} | {s['refinement_rate'] * 100:.2f}% | {s['correct_refinements']} |"
        )
    t = summary.get("throughput")
    if t:
        lines.append("")
        lines.append(
            f"{t['problems']} problems in {t['wall_s']} s ({t['problems_per_minute']} per minute); generating "
            f"{t['generating_s']} s, executing {t['executing_s']} s, waiting for execution {t['waiting_s']} s."
        )
    return "\n".join(lines) + "\n"


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="collect", unit="problem", disable=not enabled)


# --- the stage ------------------------------------------------------------------------------------------


def run(cfg: LedexConfig, out: Path) -> None:
    """Build the actors in plain sight, then collect."""
    from transformers import AutoTokenizer

    from actors.executor_pool import ExecutorPool
    from actors.rollout_engine import EnginePool
    from ledex_rl.cluster import connect
    from ledex_rl.expected_outputs import fill_expected_outputs
    from ledex_rl.models import resolve_model
    from ledex_rl.problems import load_problems
    from ledex_rl.teachers import EngineTeacher, OpenAITeacher

    connect(cfg.ray)
    problems: list[Problem] = []
    stages: list[Sequence[str]] = []  # the stages each problem's source feeds
    for source in cfg.data.train:
        loaded, report = load_problems(source)
        problems += loaded
        stages += [source.stages] * len(loaded)
        log.info("collect: %s [%s]: %d problems, %d rows skipped", source.name, source.split, len(loaded), len(report.skipped))
    model_path = resolve_model(cfg.model.name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    style = prompts.prompt_style(cfg.model.prompt_style, tokenizer)

    executors = ExecutorPool(cfg.sandbox, node_role=cfg.ray.roles.resources("sandbox"))
    problems, dropped = fill_expected_outputs(problems, executors.run)
    problem_set.save(out, cfg.data.train, problems, stages)  # SFT and RL read these back
    policy = EnginePool(
        model_path, cfg.rollout, cfg.model, cfg.seed, name_prefix="policy-rollout", node_role=cfg.ray.roles.resources("rollout")
    )
    teacher_cfg = cfg.collect.teacher
    if teacher_cfg.kind == "policy":
        teacher = EngineTeacher(policy, tokenizer, f"policy:{cfg.model.name_or_path}", style)
    elif teacher_cfg.kind == "vllm":
        teacher_path = resolve_model(teacher_cfg.model, "collect.teacher.model")
        teacher_engines = EnginePool(
            teacher_path, cfg.rollout, cfg.model, cfg.seed, name_prefix="teacher-rollout", node_role=cfg.ray.roles.resources("rollout")
        )
        teacher_tokenizer = AutoTokenizer.from_pretrained(teacher_path)
        teacher = EngineTeacher(
            teacher_engines, teacher_tokenizer, f"vllm:{teacher_cfg.model}", "chat" if teacher_tokenizer.chat_template else "base"
        )
    else:
        teacher = OpenAITeacher(teacher_cfg.base_url, teacher_cfg.model, teacher_cfg.api_key_env)
    collector = Collector(
        out, policy, tokenizer, style, executors, teacher, cfg.collect, cfg.seed, cfg.model.name_or_path, chunk_size=cfg.collect.chunk_size
    )
    summary = collector.run(problems)
    print(summary_markdown(summary))
