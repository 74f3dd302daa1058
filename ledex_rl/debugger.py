"""`ledex-rl debug PROGRAM.py --tests TESTS.py`: what a trained LeDex model is for.

Run the program's tests in the sandbox; while they fail, show the model the program and the test
feedback, print its explanation of the bug and its fix as a diff, and run the tests on the fix. Up to
`rounds` rounds. The program is only rewritten when the user asks (`--write` / `--out`).

The tests file is plain Python: top-level `assert` statements become one test each, `def test_*()`
functions become one test each (called with no arguments), and everything else at top level
(imports, helpers, constants) is set-up that runs before the tests. `if __name__ == "__main__":`
blocks are ignored.
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

from ledex_rl.errors import UserError
from ledex_rl import prompts
from ledex_rl.problems.base import TestCase


class DebugInputError(UserError, ValueError):
    """A file that cannot be debugged as given; the message names the file and what to fix."""


class Fixer(Protocol):
    """What answers the refinement prompt: `ledex_rl.teachers.EngineTeacher` (a model on vLLM engines)
    or `OpenAITeacher` (an endpoint)."""

    name: str

    def complete(self, conversations: Sequence[list[dict]], n: int, temperature: float, max_tokens: int,
                 seeds: Sequence[int]) -> list[list[str]]: ...


@dataclass(frozen=True)
class TestsFile:
    __test__ = False

    tests: tuple[TestCase, ...]
    setup: str
    source: str


def read_program(path: str | Path) -> str:
    file = Path(path)
    if not file.is_file():
        raise DebugInputError(f"program file {file} does not exist; pass the Python file to debug")
    return file.read_text()


def read_tests(path: str | Path) -> TestsFile:
    file = Path(path)
    if not file.is_file():
        raise DebugInputError(f"tests file {file} does not exist; pass a Python file with asserts or test_ functions via --tests")
    source = file.read_text()
    try:
        module = ast.parse(source)
    except SyntaxError as exc:
        raise DebugInputError(f"{file}:{exc.lineno}: syntax error in the tests ({exc.msg}); fix the tests file") from None
    tests, setup = [], []
    for node in module.body:
        text = ast.get_source_segment(source, node) or ""
        if isinstance(node, ast.Assert):
            tests.append(TestCase(kind="assert", source=text))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            setup.append(text)
            tests.append(TestCase(kind="script", source=f"{node.name}()"))
        elif isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
            continue
        else:
            setup.append(text)
    if not tests:
        raise DebugInputError(f"no tests found in {file}: write top-level `assert` statements or `def test_...()` functions")
    return TestsFile(tuple(tests), "\n".join(setup), source)


def entry_point(program: str, tests_source: str) -> str:
    """The function the tests exercise: the first top-level function of the program named in the tests."""
    try:
        names = [n.name for n in ast.parse(program).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    except SyntaxError:
        return ""
    used = {n.id for n in ast.walk(ast.parse(tests_source)) if isinstance(n, ast.Name)}
    return next((n for n in names if n in used), names[0] if names else "")


def merge_fix(original: str, fixed: str) -> str:
    """The model often answers with only the function it changed. Then the fix replaces the functions
    and classes of the same name in the original, new top-level definitions are appended and new
    imports go to the top; a fix that keeps every top-level name is used as it is."""
    try:
        old_tree, new_tree = ast.parse(original), ast.parse(fixed)
    except SyntaxError:
        return fixed
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    old_names = {n.name for n in old_tree.body if isinstance(n, defs)}
    new_defs = {n.name: n for n in new_tree.body if isinstance(n, defs)}
    if old_names <= set(new_defs) or not new_defs:
        return fixed
    lines = original.splitlines()
    replaced = set()
    for node in sorted((n for n in old_tree.body if isinstance(n, defs) and n.name in new_defs), key=lambda n: -n.lineno):
        start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
        lines[start : node.end_lineno] = (ast.get_source_segment(fixed, new_defs[node.name], padded=True) or "").splitlines()
        replaced.add(node.name)
    old_imports = {ast.unparse(n) for n in old_tree.body if isinstance(n, (ast.Import, ast.ImportFrom))}
    imports = [ast.get_source_segment(fixed, n) for n in new_tree.body
               if isinstance(n, (ast.Import, ast.ImportFrom)) and ast.unparse(n) not in old_imports]
    added = [ast.get_source_segment(fixed, n) for name, n in new_defs.items() if name not in replaced]
    merged = "\n".join(imports + lines)
    return merged + ("\n\n" + "\n\n".join(added) if added else "") + "\n"


def unified_diff(before: str, after: str, name: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile=f"{name} (before)", tofile=f"{name} (proposed)"))


@dataclass
class DebugRound:
    round: int
    explanation: str
    code: str
    diff: str
    passed: bool
    feedback: str


@dataclass
class DebugOutcome:
    passed: bool
    code: str
    initial_feedback: str
    rounds: list[DebugRound] = field(default_factory=list)


def job_for(program: str, tests: TestsFile):
    from sandbox import Job

    return Job(program=program, tests=tests.tests, entry_point=entry_point(program, tests.source), test_setup=tests.setup)


def task_for(tests: TestsFile) -> str:
    return f"Fix the Python program so that it passes these tests:\n```python\n{tests.source.strip()}\n```"


def debug(program: str, tests: TestsFile, fixer: Fixer, run_jobs: Callable, rounds: int = 3, temperature: float = 0.0,
          max_tokens: int = 512, seed: int = 0, on_round: Callable[[DebugRound], None] | None = None) -> DebugOutcome:
    """Test, then explain-and-fix while the tests fail (at most `rounds` times)."""
    def run(code: str):
        return run_jobs([job_for(code, tests)])[0]

    result = run(program)
    outcome = DebugOutcome(result.passed, program, result.feedback())
    code = program
    for r in range(1, rounds + 1):
        if result.passed:
            break
        messages = prompts.refinement_conversation(task_for(tests), code, result.feedback(), "explain_refine")
        answer = fixer.complete([messages], 1, temperature, max_tokens, [seed + r])[0][0]
        parsed = prompts.parse_response(answer)
        proposed = merge_fix(code, parsed.code) if parsed.has_code else code
        result = run(proposed)
        step = DebugRound(r, parsed.explanation or "(no explanation given)", proposed, unified_diff(code, proposed, "program"),
                          result.passed, result.feedback())
        outcome.rounds.append(step)
        if on_round is not None:
            on_round(step)
        code = proposed
    outcome.passed, outcome.code = result.passed, code
    return outcome


def load_fixer(cfg, model: str | None, endpoint: str | None):
    """-> (fixer, close). `endpoint`: an OpenAI-compatible URL serving `model`. Otherwise `model` (a
    built-in name, HF id or folder; default: this run's newest trained policy, else the base model) on
    one vLLM engine in a local Ray cluster (or the one `ray.address` names)."""
    from ledex_rl.teachers import EngineTeacher, OpenAITeacher

    if endpoint:
        if not model:
            raise DebugInputError("--endpoint needs --model: the model name the endpoint serves")
        return OpenAITeacher(endpoint, model), lambda: None
    from transformers import AutoTokenizer

    from actors.rollout_engine import EnginePool
    from ledex_rl.cluster import connect
    from ledex_rl.models import resolve_model
    from ledex_rl.pipeline import policy_for

    path = resolve_model(model, "--model") if model else policy_for(cfg, "eval")
    tokenizer = AutoTokenizer.from_pretrained(path)
    connect(cfg.ray, quiet=True)
    engines = EnginePool(path, cfg.rollout, cfg.model, cfg.seed, name_prefix="debug-rollout")
    fixer = EngineTeacher(engines, tokenizer, model or path, prompts.prompt_style(cfg.model.prompt_style, tokenizer))
    return fixer, engines.shutdown
