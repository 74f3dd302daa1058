"""The problem set a run trains on, saved once by collection (`run_dir/collect/problems.jsonl`): every
training source's problems, EvalPlus expected outputs filled in, each tagged with the stages its source
feeds. SFT and RL read it back instead of reloading the sources and recomputing the expected outputs
in the sandbox.

The first line names the sources it was made from; a stage whose `data.train` differs gets None and
loads the sources itself. Values (call arguments, expected outputs) are written in the sandbox's strict
value encoding, so a tuple stays a tuple and a set a set. Sits above `sandbox/` (its value codec), as
`expected_outputs.py` does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Callable, Sequence

from ledex_rl.config import ProblemSourceConfig
from ledex_rl.expected_outputs import fill_expected_outputs
from ledex_rl.problems import stage_problems
from ledex_rl.problems.base import Problem, TestCase
from sandbox.values import decode, encode

log = logging.getLogger(__name__)

FILE = "problems.jsonl"


def save(collect_dir: Path, sources: Sequence[ProblemSourceConfig], problems: Sequence[Problem], stages: Sequence[Sequence[str]]) -> Path:
    """Write `problems` (each fed to `stages[i]`), made from `sources`, at once (a temporary file renamed)."""
    path, partial = collect_dir / FILE, collect_dir / f"{FILE}.partial"
    collect_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"sources": _fingerprint(sources)})]
    lines += [json.dumps(_record(problem, kept)) for problem, kept in zip(problems, stages)]
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(path)
    return path


def load(collect_dir: Path, sources: Sequence[ProblemSourceConfig], stage: str) -> list[Problem] | None:
    """The saved problems that `stage` ("sft" or "rl") learns from, or None when nothing was saved for these sources."""
    path = collect_dir / FILE
    if not path.is_file():
        return None
    header, *rows = path.read_text().splitlines()
    if json.loads(header)["sources"] != _fingerprint(sources):
        log.info("%s was made from other data.train sources; loading the sources again", path)
        return None
    records = [json.loads(row) for row in rows]
    return [_problem(record) for record in records if stage in record["stages"]]


def for_stage(collect_dir: Path, sources: Sequence[ProblemSourceConfig], stage: str, run_jobs: Callable | None = None) -> list[Problem]:
    """The saved problems of `stage`; where none were saved for these sources (a collection made before
    problem sets were saved, or other sources), loaded again and, with `run_jobs`, their expected outputs
    computed again."""
    saved = load(collect_dir, sources, stage)
    if saved is not None:
        return saved
    problems = stage_problems(sources, stage)
    return fill_expected_outputs(problems, run_jobs)[0] if run_jobs else problems


def _fingerprint(sources: Sequence[ProblemSourceConfig]) -> list[dict]:
    return [json.loads(json.dumps(dataclasses.asdict(source))) for source in sources]  # tuples as lists


def _record(problem: Problem, stages: Sequence[str]) -> dict:
    fields = dataclasses.asdict(problem) | {"tests": [_test_record(t) for t in problem.tests]}
    return {"stages": list(stages), "problem": fields}


def _test_record(test: TestCase) -> dict:
    return dataclasses.asdict(test) | {"args": encode(test.args), "expected": encode(test.expected)}


def _problem(record: dict) -> Problem:
    fields = record["problem"]
    tests = tuple(TestCase(**(t | {"args": decode(t["args"]), "expected": decode(t["expected"])})) for t in fields["tests"])
    return Problem(**(fields | {"tests": tests}))
