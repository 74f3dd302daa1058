"""CodeContests (Li et al., 2022): stdin/stdout problems; public, private and generated tests."""

from __future__ import annotations

from ledex_rl.problems.base import MalformedRow, Problem, TestCase, require

PYTHON3 = 3  # the `language` code of Python 3 solutions in CodeContests


def problem_from_row(row: dict) -> Problem:
    require(row, "name", "description")
    tests = []
    for group in ("public_tests", "private_tests", "generated_tests"):
        block = row.get(group) or {}
        inputs, outputs = block.get("input") or [], block.get("output") or []
        if len(inputs) != len(outputs):
            raise MalformedRow(f"{group} has {len(inputs)} inputs but {len(outputs)} outputs")
        kind = "base" if group == "public_tests" else "plus"
        tests += [TestCase(kind="io", stdin=i, expected_stdout=o, group=kind) for i, o in zip(inputs, outputs)]
    if not tests:
        raise MalformedRow("no tests (public, private and generated are all empty)")
    solutions = row.get("solutions") or {}
    python = [s for lang, s in zip(solutions.get("language") or [], solutions.get("solution") or []) if lang == PYTHON3]
    return Problem(
        task_id=f"CodeContests/{row['name']}",
        source="codecontests",
        prompt=row["description"],
        entry_point="",
        reference_solution=python[0] if python else "",
        tests=tuple(tests),
        metadata={"difficulty": row.get("difficulty", ""), "public_tests": len((row.get("public_tests") or {}).get("input") or [])},
    )
