"""Rate explanations 1-5 with an LLM judge, on the paper's rubric (docs/method.md §7).

The paper rated 50 explanations of wrong first attempts with GPT-4, on correctness and helpfulness
(1-5 each). Its judge prompt is not published; ours states the rubric of the paper's Table 15 and asks
for both scores on fixed lines. The score of an explanation is the mean of the two (the paper does not
say how it combined them). Any OpenAI-compatible endpoint can judge (`eval.judge`).
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path
from typing import Sequence

from ledex_rl.config import JudgeConfig
from ledex_rl.problems.base import Problem

log = logging.getLogger(__name__)

RUBRIC = """You are reviewing an explanation of why a piece of code is wrong.

Rate the explanation on two scales from 1 to 5.
Correctness: 1 = totally wrong or misleading about the bug; 3 = partly right; 5 = totally correct.
Helpfulness: 1 = unrelated, or only repeats the error message; 3 = points at the problem area; 5 = gives at least one clear hint on how to fix the code.

Answer with exactly two lines:
Correctness: <1-5>
Helpfulness: <1-5>"""

_SCORE = re.compile(r"(correctness|helpfulness)\s*[:=]\s*\**\s*([1-5])\b", re.IGNORECASE)


def judge_messages(problem: Problem, wrong_code: str, feedback: str, explanation: str) -> list[dict]:
    reference = (
        f"\n\nA correct solution, for your reference:\n```python\n{problem.reference_solution.strip()}\n```"
        if problem.reference_solution.strip()
        else ""
    )
    return [
        {"role": "system", "content": RUBRIC},
        {
            "role": "user",
            "content": f"Task:\n{problem.prompt.strip()}\n\nWrong code:\n```python\n{wrong_code.strip()}\n```\n\n"
            f"Test feedback:\n{feedback.strip()}{reference}\n\nExplanation to rate:\n{explanation.strip()}",
        },
    ]


def parse_scores(text: str) -> tuple[int, int] | None:
    """(correctness, helpfulness) from the judge's answer, or None when either is missing."""
    found = {name.lower(): int(value) for name, value in _SCORE.findall(text or "")}
    if "correctness" not in found or "helpfulness" not in found:
        return None
    return found["correctness"], found["helpfulness"]


def pick_explanations(rows: Sequence[dict], limit: int, seed: int) -> list[tuple[dict, dict]]:
    """(wrong first attempt, its first explain-then-refine answer) pairs, at most one per task, a
    seeded random choice of `limit` tasks (the paper: 50 problems with a wrong first attempt)."""
    first = {(r["task_id"], r["sample_index"]): r for r in rows if r["round"] == 0 and not r["passed_base"]}
    answers = {}
    for r in rows:
        if r["mode"] == "explain_refine" and r["round"] == 1 and (r["task_id"], r["sample_index"]) in first:
            answers.setdefault(r["task_id"], (first[(r["task_id"], r["sample_index"])], r))
    tasks = sorted(answers)
    random.Random(seed).shuffle(tasks)
    return [answers[t] for t in tasks[:limit]]


def judge(rows: Sequence[dict], problems: dict[str, Problem], cfg: JudgeConfig, seed: int, out_dir: Path) -> dict:
    """Rate up to `cfg.max_explanations` explanations; writes judge.jsonl and returns the summary
    for results.json. Without a configured judge, says so and returns {"skipped": reason}."""
    from ledex_rl.teachers import OpenAITeacher

    if not cfg.base_url:
        reason = "no judge configured (set eval.judge.base_url and eval.judge.model to an OpenAI-compatible endpoint)"
        log.info("eval: explanation judging skipped: %s", reason)
        return {"skipped": reason}
    pairs = pick_explanations(rows, cfg.max_explanations, seed)
    if not pairs:
        return {"skipped": "no wrong first attempt has an explain-then-refine answer to rate", "model": cfg.model}
    client = OpenAITeacher(cfg.base_url, cfg.model, cfg.api_key_env)
    conversations = [judge_messages(problems[w["task_id"]], w["code"], w["feedback"], a["explanation"]) for w, a in pairs]
    answers = client.complete(conversations, 1, 0.0, 64, [seed] * len(conversations))
    records, scores = [], []
    for (wrong, answer), texts in zip(pairs, answers):
        parsed = parse_scores(texts[0] if texts else "")
        records.append(
            {
                "task_id": wrong["task_id"],
                "sample_index": wrong["sample_index"],
                "explanation": answer["explanation"],
                "judge_answer": texts[0] if texts else "",
                "correctness": parsed and parsed[0],
                "helpfulness": parsed and parsed[1],
            }
        )
        if parsed:
            scores.append(parsed)
    with (Path(out_dir) / "judge.jsonl").open("w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    if not scores:
        return {"model": cfg.model, "rated": 0, "unparsed": len(records), "score": None}
    correctness = sum(c for c, _ in scores) / len(scores)
    helpfulness = sum(h for _, h in scores) / len(scores)
    return {
        "model": cfg.model,
        "rated": len(scores),
        "unparsed": len(records) - len(scores),
        "correctness": correctness,
        "helpfulness": helpfulness,
        "score": (correctness + helpfulness) / 2,
    }
