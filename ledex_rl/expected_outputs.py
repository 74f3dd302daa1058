"""Expected outputs for EvalPlus problems (MBPP+, HumanEval+), which ship inputs only.

The canonical solution is run on every input in the sandbox (dataset code is code too), and what it
returns becomes the expected value. An input whose output cannot be computed (timeout, error, a value
that cannot leave the sandbox) is dropped and counted, never kept with a wrong expectation.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable, Sequence

from ledex_rl.problems.base import Problem
from ledex_rl.problems.evalplus import NOT_COMPUTED, needs_expected_outputs

log = logging.getLogger(__name__)


def fill_expected_outputs(problems: Sequence[Problem], run_jobs: Callable) -> tuple[list[Problem], int]:
    """Returns the problems with every `call` test's `expected` filled in, and how many were dropped.

    `run_jobs` is `Sandbox.run` or `ExecutorPool.run`: a list of Jobs in, results in order out.
    """
    from sandbox import Job
    from sandbox.results import NO_VALUE

    todo = [p for p in problems if needs_expected_outputs(p)]
    jobs = [
        Job.for_problem(p, p.reference_solution, tests=[t for t in p.tests if t.kind == "call" and t.expected is NOT_COMPUTED])
        for p in todo
    ]
    results = {p.task_id: r for p, r in zip(todo, run_jobs(jobs))}
    filled, dropped = [], 0
    for problem in problems:
        result = results.get(problem.task_id)
        if result is None:
            filled.append(problem)
            continue
        outcomes = iter(result.tests)
        tests = []
        for test in problem.tests:
            if test.kind == "call" and test.expected is NOT_COMPUTED:
                outcome = next(outcomes, None)
                if outcome is None or outcome.value is NO_VALUE:
                    dropped += 1
                    continue
                test = replace(test, expected=outcome.value)
            tests.append(test)
        filled.append(replace(problem, tests=tuple(tests)))
    if dropped:
        log.warning("expected outputs: %d inputs dropped (the canonical solution failed on them)", dropped)
    return filled, dropped
