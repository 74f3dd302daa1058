"""MBPP (Austin et al., 2021), full (974) and sanitized (427), with the standard task-id split."""

from __future__ import annotations

import ast

from ledex_rl.problems.base import MalformedRow, Problem, TestCase, require

# The split everyone uses, by task_id (the hub's splits follow it too).
SPLITS = {"prompt": range(1, 11), "test": range(11, 511), "validation": range(511, 601), "train": range(601, 975)}


def in_split(task_id: int, split: str) -> bool:
    return split == "all" or task_id in SPLITS[split]


def problem_from_row(row: dict, sanitized: bool) -> Problem:
    """Full rows name the task `text`; sanitized rows name it `prompt` and add `test_imports`."""
    text_key = "prompt" if sanitized else "text"
    require(row, "task_id", text_key, "code", "test_list")
    tests = tuple(_assert_test(t) for t in row["test_list"])
    if not tests:
        raise MalformedRow("test_list is empty")
    entry_point = _called_function(tests[0].source, _defined_functions(row["code"]))
    setup = row.get("test_setup_code") or ""
    imports = "\n".join(row.get("test_imports") or [])
    task_id = int(row["task_id"])
    return Problem(
        task_id=f"{'MbppSanitized' if sanitized else 'Mbpp'}/{task_id}",
        source="mbpp-sanitized" if sanitized else "mbpp",
        prompt=row[text_key],
        entry_point=entry_point,
        reference_solution=row["code"].replace("\r\n", "\n"),
        tests=tests,
        test_setup="\n".join(x for x in (imports, setup) if x),
        metadata={"mbpp_task_id": task_id, "examples": [t.source for t in tests]},
    )


def _assert_test(source: str) -> TestCase:
    try:
        node = ast.parse(source.strip())
    except SyntaxError as exc:
        raise MalformedRow(f"test {source[:60]!r} is not valid Python ({exc.msg})") from None
    if len(node.body) != 1 or not isinstance(node.body[0], ast.Assert):
        raise MalformedRow(f"test {source[:60]!r} is not a single assert statement")
    return TestCase(kind="assert", source=source.strip())


def _defined_functions(code: str) -> set[str]:
    try:
        return {n.name for n in ast.parse(code.replace("\r\n", "\n")).body if isinstance(n, ast.FunctionDef)}
    except SyntaxError:
        return set()


def _called_function(assert_source: str, defined: set[str]) -> str:
    """The function under test: the first name the assert calls that the reference solution defines
    (task 126 defines its own `sum`), else the first called name that is not a builtin."""
    import builtins

    called = [node.func.id for node in ast.walk(ast.parse(assert_source)) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)]
    for name in called:
        if name in defined:
            return name
    for name in called:
        if not hasattr(builtins, name):
            return name
    raise MalformedRow(f"cannot tell which function {assert_source[:60]!r} tests")
