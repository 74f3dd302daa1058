"""APPS (Hendrycks et al., 2021): stdin/stdout problems, and call-based ones when `fn_name` is given."""

from __future__ import annotations

import json

from ledex_rl.problems.base import MalformedRow, Problem, TestCase, require


def problem_from_row(row: dict) -> Problem:
    require(row, "problem_id", "question", "input_output")
    io = _json_field(row, "input_output")
    if not isinstance(io, dict) or not io.get("inputs") or "outputs" not in io:
        raise MalformedRow("input_output has no inputs/outputs")
    inputs, outputs = io["inputs"], io["outputs"]
    if len(inputs) != len(outputs):
        raise MalformedRow(f"input_output has {len(inputs)} inputs but {len(outputs)} outputs")
    fn_name = io.get("fn_name") or ""
    if fn_name:
        # Call-based: each input is the argument list; each output is a one-element list in APPS.
        tests = tuple(
            TestCase(kind="call", args=tuple(i), expected=o[0] if isinstance(o, list) and len(o) == 1 else o)
            for i, o in zip(inputs, outputs)
        )
    else:
        tests = tuple(TestCase(kind="io", stdin=_text(i), expected_stdout=_text(o)) for i, o in zip(inputs, outputs))
    solutions = _json_field(row, "solutions") if row.get("solutions") else []
    return Problem(
        task_id=f"APPS/{row['problem_id']}",
        source="apps",
        prompt=row["question"],
        entry_point=fn_name,
        reference_solution=solutions[0] if solutions else "",
        tests=tests,
        starter_code=row.get("starter_code") or "",
        metadata={"difficulty": row.get("difficulty", ""), "url": row.get("url", "")},
    )


def _json_field(row: dict, key: str):
    value = row[key]
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise MalformedRow(f"{key} is not valid JSON ({exc.msg})") from None
    return value


def _text(value) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)
