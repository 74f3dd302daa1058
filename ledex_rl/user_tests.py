"""A user's tests file (`ledex-rl debug PROGRAM --tests FILE`), read as the sandbox's tests.

Plain asserts and pytest-style files both work:
- a top-level `assert` is one test, split so that its verdict is computed outside the sandbox (one
  that uses pytest's helpers, such as `approx`, is run whole by the sandbox's judge instead);
- `def test_*()` functions, and `test_*` methods of `Test*` classes, are one test each, run by the
  judge (a process that never runs the program: sandbox/zygote.py), which calls the program's
  functions through proxies and reports a failing assert with its line and operand values;
- `@pytest.mark.parametrize` with literal values is one test per case (`test_add(a=1, b=2)`); with
  other values, one test that runs them all; `pytest.raises`, `approx`, `param`, `fail` and `skip`
  are provided inside the sandbox (pytest itself is not there);
- tests marked `skip`, `skipif` or `xfail`, and tests that need fixtures, are not run: they are
  listed in `TestsFile.skipped`, with why;
- everything else at top level (imports, helpers, constants) is set-up; `if __name__ == "__main__":`
  blocks are ignored. The tests may import the program by its file's name (`from stats import mean`),
  and both may import the user's own modules from their folders (`local_modules`).
"""

from __future__ import annotations

import ast
import itertools
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from ledex_rl.errors import UserError
from ledex_rl.problems.base import TestCase


class DebugInputError(UserError, ValueError):
    """A file that cannot be debugged as given; the message names the file and what to fix."""


@dataclass(frozen=True)
class TestsFile:
    __test__ = False

    tests: tuple[TestCase, ...]
    setup: str  # the file with its top-level asserts and `__main__` block blanked: line numbers are the user's
    source: str
    skipped: tuple[str, ...] = ()  # tests not run, each with why
    texts: tuple[str, ...] = ()  # per test, its source as the model is shown it (a test function whole)
    modules: dict = field(default_factory=dict)  # name -> source of the user's helper modules (`local_modules`)

    def shown(self, failing: list[int], limit: int = 5) -> str:
        """The source of the failing tests (`failing`: indices into `tests`), each text once, at most `limit`."""
        every = self.texts or tuple(t.source for t in self.tests)
        texts = list(dict.fromkeys(every[i] for i in failing if i < len(every)))
        more = f"\n# ... and {len(texts) - limit} more failing tests" if len(texts) > limit else ""
        return "\n\n".join(texts[:limit]) + more


def read_tests(path: str | Path) -> TestsFile:
    file = Path(path)
    if not file.is_file():
        raise DebugInputError(f"tests file {file} does not exist; pass a Python file with asserts or test_ functions via --tests")
    return parse_tests(file.read_text(), str(file))


MAX_MODULES = 50  # helper files a debug run brings into the sandbox


def local_modules(files: list[str | Path], exclude: str = "") -> dict[str, str]:
    """name -> source of the modules beside `files` that they import, and that those import in turn: the
    user's own helpers, which the sandbox has no other way to see. `exclude`: the program's own name."""
    folders = list(dict.fromkeys(Path(f).resolve().parent for f in files))
    found: dict[str, str] = {}
    todo = [Path(f).read_text() for f in files if Path(f).is_file()]
    while todo:
        for name in sorted(_imported(todo.pop()) - set(found) - {exclude}):
            path = next((folder / f"{name}.py" for folder in folders if (folder / f"{name}.py").is_file()), None)
            if path is not None:
                found[name] = path.read_text()
                todo.append(found[name])
    if len(found) > MAX_MODULES:
        raise DebugInputError(
            f"the program and its tests import {len(found)} files from their folders (at most {MAX_MODULES}); "
            "debug a smaller part of the project"
        )
    return found


def _imported(source: str) -> set[str]:
    """The top-level names of the absolute imports in `source`."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def tests_path_for(program: str, given: tuple[str, ...], index: int, count: int) -> str:
    """The tests file of the `index`-th of `count` programs: `given` (one per program, in order), else
    test_NAME.py or NAME_test.py beside NAME.py, or in a tests/ folder beside it."""
    if given:
        if len(given) != count:
            raise DebugInputError(f"{len(given)} --tests for {count} programs: pass one --tests per program, in order, or none")
        return given[index]
    file = Path(program)
    candidates = [
        file.with_name(f"test_{file.stem}.py"),
        file.with_name(f"{file.stem}_test.py"),
        file.parent / "tests" / f"test_{file.stem}.py",
    ]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise DebugInputError(f"no tests found for {program}: pass --tests FILE, or put test_{file.stem}.py beside it")
    return str(found)


def parse_tests(source: str, file: str = "tests") -> TestsFile:
    """Tests from a tests file's text; `file` names it in errors."""
    try:
        module = ast.parse(source)
    except SyntaxError as exc:
        raise DebugInputError(f"{file}:{exc.lineno}: syntax error in the tests ({exc.msg}); fix the tests file") from None
    tests, texts, skipped, setup = [], [], [], source.splitlines()
    pytest_names = _pytest_names(module)
    for node in module.body:
        if isinstance(node, ast.Assert):
            kind = "script" if _names(node) & pytest_names else "assert"
            tests.append(TestCase(kind=kind, source=ast.get_source_segment(source, node) or ""))
            texts.append(tests[-1].source)
        elif not (isinstance(node, ast.If) and "__name__" in ast.unparse(node.test)):
            for call, function in _test_functions(node):
                added = _add_function_tests(function, call, tests, skipped)
                texts += [_text(source, function)] * added
            continue
        setup[node.lineno - 1 : node.end_lineno] = [""] * (node.end_lineno - node.lineno + 1)
    if not tests:
        why = f" ({'; '.join(skipped)})" if skipped else ""
        raise DebugInputError(f"no tests to run in {file}{why}: write top-level `assert` statements or `def test_...()` functions")
    return TestsFile(tuple(tests), "\n".join(setup), source, tuple(skipped), tuple(texts))


def _text(source: str, function: ast.FunctionDef) -> str:
    """A test function's source, decorators included, dedented (a method of a Test class)."""
    first = min([function.lineno] + [d.lineno for d in function.decorator_list])
    return textwrap.dedent("\n".join(source.splitlines()[first - 1 : function.end_lineno]))


def _pytest_names(module: ast.Module) -> set[str]:
    """The names the file binds to pytest or to what it imports from pytest."""
    names = set()
    for node in module.body:
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name for a in node.names if a.name == "pytest"}
        elif isinstance(node, ast.ImportFrom) and node.module == "pytest":
            names |= {a.asname or a.name for a in node.names}
    return names


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _test_functions(node: ast.stmt) -> list[tuple[str, ast.FunctionDef]]:
    """(how to call it, its definition) for a top-level test function or each test method of a Test class."""
    if isinstance(node, FUNCTIONS) and node.name.startswith("test"):
        return [(node.name, node)]
    if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
        return [(f"{node.name}().{m.name}", m) for m in node.body if isinstance(m, FUNCTIONS) and m.name.startswith("test")]
    return []


def _add_function_tests(function: ast.FunctionDef, call: str, tests: list, skipped: list) -> int:
    """One test per literal parametrize case (or one that runs them all); a reason in `skipped` instead
    when the test is marked to skip or needs fixtures. -> how many tests were added."""
    marked = next((d for d in function.decorator_list if re.search(r"\bmark\.(skip|skipif|xfail)\b", ast.unparse(d))), None)
    if marked is not None:
        skipped.append(f"{call}: marked {ast.unparse(marked)}")
        return 0
    missing = [a for a in _required_arguments(function, call) if a not in _parametrized_names(function)]
    if missing:
        skipped.append(f"{call}: needs the fixture(s) {', '.join(missing)}, which debug does not provide")
        return 0
    cases = _parametrized_cases(function) or [{}]
    for case in cases:
        arguments = ", ".join(f"{name}={value!r}" for name, value in case.items())
        tests.append(TestCase(kind="script", source=f"{call}({arguments})"))
    return len(cases)


def _required_arguments(function: ast.FunctionDef, call: str) -> list[str]:
    args = function.args
    positional = (args.posonlyargs + args.args)[1 if "()." in call else 0 :]  # a method's self
    required = positional[: len(positional) - len(args.defaults)]
    return [a.arg for a in required] + [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is None]


def _parametrize_calls(function: ast.FunctionDef) -> list[ast.Call]:
    return [d for d in function.decorator_list if isinstance(d, ast.Call) and ast.unparse(d.func).endswith("mark.parametrize")]


def _split_names(names: object) -> list[str]:
    return [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n) for n in names]


def _parametrized_names(function: ast.FunctionDef) -> set[str]:
    found = set()
    for call in _parametrize_calls(function):
        try:
            found |= set(_split_names(ast.literal_eval(call.args[0])))
        except (ValueError, TypeError, SyntaxError, IndexError):
            continue
    return found


def _parametrized_cases(function: ast.FunctionDef) -> list[dict] | None:
    """Every combination of the literal parametrize cases ([{}] without any; None where a value is not
    a literal: the sandbox's `pytest` then runs all cases in one test)."""
    per_decorator = []
    for call in _parametrize_calls(function):
        try:
            names, values = _split_names(ast.literal_eval(call.args[0])), ast.literal_eval(call.args[1])
            per_decorator.append([dict(zip(names, v if len(names) > 1 else (v,), strict=True)) for v in values])
        except (ValueError, TypeError, SyntaxError, IndexError):
            return None
    return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*per_decorator)]
