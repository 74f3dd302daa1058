"""MBPP+ and HumanEval+ (EvalPlus, Liu et al., 2023) in EvalPlus's jsonl format.

Rows carry inputs only (`base_input`, `plus_input`); the expected outputs are computed by running
`canonical_solution` on each input in the sandbox (see `ledex_rl.expected_outputs`). Until then the
plus tests are `call` tests whose `expected` is `NOT_COMPUTED`.
"""

from __future__ import annotations

from ledex_rl.problems import humaneval
from ledex_rl.problems.base import MalformedRow, Problem, TestCase, require


class _NotComputed:
    def __repr__(self) -> str:
        return "NOT_COMPUTED"


NOT_COMPUTED = _NotComputed()


def problem_from_row(row: dict, source: str) -> Problem:
    require(row, "task_id", "prompt", "entry_point", "canonical_solution", "plus_input")
    plus_inputs = row["plus_input"] or []  # one pre-release row stores {} for "no extra inputs"
    if not isinstance(plus_inputs, list) or not all(isinstance(x, list) for x in plus_inputs):
        raise MalformedRow("plus_input must be a list of argument lists")
    atol = float(row.get("atol") or 0.0)
    plus = tuple(TestCase(kind="call", args=tuple(args), expected=NOT_COMPUTED, atol=atol, group="plus") for args in plus_inputs)
    if source == "humaneval-plus":
        require(row, "test")
        base = humaneval.problem_from_row(row, source)
        return Problem(**{**base.__dict__, "tests": base.tests + plus})
    # MBPP+: the prompt is the task text in a docstring; the base tests are MBPP's asserts.
    require(row, "assertion")
    text = row["prompt"].strip().strip("'\"").strip()
    base_tests = tuple(TestCase(kind="assert", source=line.strip()) for line in row["assertion"].splitlines() if line.strip())
    number = int(str(row["task_id"]).split("/")[-1])
    return Problem(
        task_id=str(row["task_id"]),
        source=source,
        prompt=text,
        entry_point=row["entry_point"],
        reference_solution=row["canonical_solution"].strip() + "\n",
        tests=base_tests + plus,
        metadata={"mbpp_task_id": number, "examples": [t.source for t in base_tests]},
    )


def needs_expected_outputs(problem: Problem) -> bool:
    return any(t.kind == "call" and t.expected is NOT_COMPUTED for t in problem.tests)
