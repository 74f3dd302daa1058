"""`ledex-rl debug PROGRAM.py --tests TESTS.py`: what a trained LeDex model is for.

Run the program's tests in the sandbox; while they fail, show the model the program and the test
feedback, print its explanation of the bug and its fix as a diff, and run the tests on the fix. Up to
`rounds` rounds. The program is only rewritten when the user asks (`--write` / `--out`).

The tests file is plain Python or pytest-style: ledex_rl/user_tests.py reads it. A fix is spliced into
the program by name (`merge_fix`).
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ledex_rl import prompts
from ledex_rl.config import LedexConfig, load_config
from ledex_rl.teachers import Teacher
from ledex_rl.user_tests import DebugInputError, TestsFile, parse_tests
from sandbox import Job, Sandbox
from sandbox.results import ExecutionResult


def read_program(path: str | Path) -> str:
    file = Path(path)
    if not file.is_file():
        raise DebugInputError(f"program file {file} does not exist; pass the Python file to debug")
    return file.read_text()


def entry_point(program: str, tests_source: str) -> str:
    """The function the tests exercise: the first top-level function of the program named in the tests."""
    try:
        names = [n.name for n in ast.parse(program).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    except SyntaxError:
        return ""
    used = {n.id for n in ast.walk(ast.parse(tests_source)) if isinstance(n, ast.Name)}
    return next((n for n in names if n in used), names[0] if names else "")


DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
IMPORTS = (ast.Import, ast.ImportFrom)


def merge_fix(original: str, fixed: str) -> str:
    """The fix spliced into the original by name: each function, class or constant the answer defines
    replaces the original's of that name (keeping its docstring when the answer dropped it), new
    definitions are appended, new imports and constants go below the original's header (module
    docstring and imports). Everything else of the original (imports, constants, comments, functions
    the answer left out) is kept, and the answer's other statements (example calls, `__main__` blocks)
    are dropped. An answer without definitions, or a file without any, is taken as it is."""
    try:
        old_tree, new_tree = ast.parse(original), ast.parse(fixed)
    except SyntaxError:
        return fixed
    old_named, new_named = _named(old_tree), _named(new_tree)
    if not any(isinstance(n, DEFINITIONS) for n in new_named.values()) or not old_named:
        return fixed
    lines = original.splitlines()
    _replace_named(lines, original, old_named, fixed, new_named)
    added = [n for name, n in new_named.items() if name not in old_named]
    old_imports = {ast.unparse(n) for n in old_tree.body if isinstance(n, IMPORTS)}
    imports = [n for n in new_tree.body if isinstance(n, IMPORTS) and ast.unparse(n) not in old_imports]
    constants = [n for n in added if not isinstance(n, DEFINITIONS)]
    at = _header_end(old_tree)
    lines[at:at] = _all_lines(fixed, imports) + ([""] if constants else []) + _all_lines(fixed, constants)
    appended = ["\n".join(_lines(fixed, n)) for n in added if isinstance(n, DEFINITIONS)]
    return "\n".join(lines).rstrip("\n") + "".join(f"\n\n\n{text}" for text in appended) + "\n"


def _replace_named(lines: list[str], original: str, old_named: dict, fixed: str, new_named: dict) -> None:
    """In `lines` (the original's), each statement the answer redefines replaced by the answer's, bottom up."""
    for name, node in sorted(old_named.items(), key=lambda item: -item[1].lineno):
        if name in new_named:
            new = new_named[name]  # the original's decorators stay unless the answer writes its own
            start = _first_line(node) if getattr(new, "decorator_list", None) else node.lineno
            lines[start - 1 : node.end_lineno] = _with_docstring(fixed, new, original, node)


def _named(tree: ast.Module) -> dict[str, ast.stmt]:
    """Top-level statements that bind one name: definitions and single-name assignments (last one wins)."""
    named = {}
    for node in tree.body:
        if isinstance(node, DEFINITIONS):
            named[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if len(targets) == 1 and isinstance(targets[0], ast.Name):
                named[targets[0].id] = node
    return named


def _first_line(node: ast.stmt) -> int:
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])


def _lines(source: str, node: ast.stmt) -> list[str]:
    """A top-level statement's lines, decorators included."""
    return source.splitlines()[_first_line(node) - 1 : node.end_lineno]


def _all_lines(source: str, nodes: list[ast.stmt]) -> list[str]:
    return [line for node in nodes for line in _lines(source, node)]


def _header_end(tree: ast.Module) -> int:
    """The line after the module docstring and the imports that open the file (0 when neither)."""
    end = 0
    for node in tree.body:
        if not (isinstance(node, IMPORTS) or (node is tree.body[0] and _is_docstring(node))):
            break
        end = node.end_lineno
    return end


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _with_docstring(fixed: str, new: ast.stmt, original: str, old: ast.stmt) -> list[str]:
    """The answer's definition as lines, with the original's docstring put back if the answer dropped it."""
    text = _lines(fixed, new)
    kept = getattr(old, "body", [None])[0]
    if not isinstance(new, DEFINITIONS) or not _is_docstring(kept) or _is_docstring(new.body[0]) or new.body[0].lineno == new.lineno:
        return text
    indent = " " * new.body[0].col_offset
    docstring = ast.get_source_segment(original, kept).splitlines()
    at = new.body[0].lineno - _first_line(new)
    return text[:at] + [indent + docstring[0]] + docstring[1:] + text[at:]


def unified_diff(before: str, after: str, name: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), fromfile=f"{name} (before)", tofile=f"{name} (proposed)"
        )
    )


@dataclass
class DebugRound:
    round: int
    explanation: str
    code: str
    diff: str
    passed: bool
    feedback: str
    unchanged: bool = False  # the model returned the program as it was (or no code): the tests were not rerun


@dataclass
class DebugOutcome:
    passed: bool
    code: str  # the last program tried (the fix when `passed`)
    first: ExecutionResult  # the tests on the program as given
    rounds: list[DebugRound] = field(default_factory=list)


@dataclass(frozen=True)
class DebugSettings:
    rounds: int = 3  # at most this many explain-and-fix rounds
    temperature: float = 0.0  # 0: greedy
    max_new_tokens: int = 512
    seed: int = 0


def job_for(program: str, tests: TestsFile, module: str = ""):
    """The sandbox job; `module`: the name the tests import the program by (its file's stem)."""
    return Job(
        program=program,
        tests=tests.tests,
        entry_point=entry_point(program, tests.source),
        test_setup=tests.setup,
        module=module if module.isidentifier() else "",
        modules=tests.modules,
    )


def task_for(tests: TestsFile, result) -> str:
    """The task as the model sees it: the tests that fail (`result`: the sandbox's), not the whole file."""
    failing = [i for i, verdict in enumerate(result.tests) if verdict.status != "passed"] or list(range(len(tests.tests)))
    return f"Fix the Python program so that it passes these tests:\n```python\n{tests.shown(failing).strip()}\n```"


@dataclass(frozen=True)
class DebugEvents:
    """What a caller hears while `debug` runs (the CLI prints both)."""

    progress: Callable[[str], None] = lambda text: None  # what is happening now: asking the model, testing its fix
    round_done: Callable[[DebugRound], None] = lambda step: None


def debug(
    program: str,
    tests: TestsFile,
    fixer: Teacher,
    run_jobs: Callable,
    settings: DebugSettings = DebugSettings(),
    events: DebugEvents = DebugEvents(),
    module: str = "",
    first: ExecutionResult | None = None,
) -> DebugOutcome:
    """Test (unless `first` is the result of that), then explain-and-fix while the tests fail, at most
    `settings.rounds` times. `module`: the name the tests import the program by."""

    def run(code: str):
        return run_jobs([job_for(code, tests, module)])[0]

    result = first or run(program)
    outcome, code = DebugOutcome(result.passed, program, result), program
    for r in range(1, settings.rounds + 1):
        if result.passed:
            break
        explanation, proposed = _ask(fixer, tests, code, result, settings, r, events)
        unchanged = proposed.strip() == code.strip()
        if not unchanged:
            events.progress(f"round {r}: running the tests on the proposed fix")
        result = result if unchanged else run(proposed)
        step = DebugRound(r, explanation, proposed, unified_diff(code, proposed, "program"), result.passed, result.feedback(), unchanged)
        outcome.rounds.append(step)
        events.round_done(step)
        code = proposed
    outcome.passed, outcome.code = result.passed, code
    return outcome


def _ask(
    fixer: Teacher, tests: TestsFile, code: str, result: ExecutionResult, settings: DebugSettings, r: int, events: DebugEvents
) -> tuple[str, str]:
    """One explain-and-fix answer -> (its explanation, the program with its fix spliced in)."""
    messages = prompts.refinement_conversation(task_for(tests, result), code, result.feedback(), "explain_refine")
    if hasattr(fixer, "check_fits"):  # a local model knows its context length; an endpoint answers for itself
        fixer.check_fits(messages, settings.max_new_tokens)
    events.progress(f"round {r}: asking {fixer.name} (up to {settings.max_new_tokens} new tokens)")
    answer = fixer.complete([messages], 1, settings.temperature, settings.max_new_tokens, [settings.seed + r])[0][0]
    parsed = prompts.parse_response(answer)
    return parsed.explanation or "(no explanation given)", merge_fix(code, parsed.code) if parsed.has_code else code


class Session:
    """Debug programs with one model and one sandbox: the model starts once, when the first program
    fails its tests, and serves every program after it.

        from ledex_rl.debugger import Session

        with Session(model="smollm2-135m-instruct", overrides=["sandbox.test_timeout_s=10"]) as session:
            outcome = session.fix(Path("stats.py").read_text(), Path("test_stats.py").read_text(), module="stats")
            print(outcome.passed, outcome.code)

    `tests`: a tests file's text or a `TestsFile`; `module`: the name the tests import the program by.
    The model is `model` (a built-in name, HF id or folder; default: the config's newest trained policy,
    else model.name_or_path) or the model an OpenAI-compatible `endpoint` serves."""

    def __init__(
        self,
        model: str | None = None,
        endpoint: str | None = None,
        config: LedexConfig | str | None = None,
        overrides: Sequence[str] = (),
        settings: DebugSettings | None = None,
    ):
        self.cfg = config if isinstance(config, LedexConfig) else load_config(config, overrides)
        self.model, self.endpoint = model or None, endpoint or None
        self.settings = settings or DebugSettings(seed=self.cfg.seed)
        self.sandbox = Sandbox.from_config(self.cfg.sandbox, slots=1)
        self._fixer, self._close_fixer = None, lambda: None

    def test(self, program: str, tests: str | TestsFile, module: str = "") -> ExecutionResult:
        return self.sandbox.run([job_for(program, _as_tests(tests), module)])[0]

    def fix(
        self,
        program: str,
        tests: str | TestsFile,
        module: str = "",
        first: ExecutionResult | None = None,
        events: DebugEvents = DebugEvents(),
    ) -> DebugOutcome:
        tests = _as_tests(tests)
        first = first or self.test(program, tests, module)
        if first.passed:
            return DebugOutcome(True, program, first)
        return debug(program, tests, self.fixer, self.sandbox.run, self.settings, events, module, first)

    @property
    def fixer(self) -> Teacher:
        if self._fixer is None:
            self._fixer, self._close_fixer = load_fixer(self.cfg, self.model, self.endpoint)
        return self._fixer

    def close(self) -> None:
        try:
            self._close_fixer()
        finally:
            self.sandbox.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _as_tests(tests: str | TestsFile) -> TestsFile:
    return tests if isinstance(tests, TestsFile) else parse_tests(tests)


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
    from ledex_rl.run_dir import policy_for

    path = resolve_model(model, "--model") if model else policy_for(cfg, "eval")
    tokenizer = AutoTokenizer.from_pretrained(path)
    connect(cfg.ray, quiet=True)
    engines = EnginePool(path, cfg.rollout, cfg.model, cfg.seed, name_prefix="debug-rollout", node_role=cfg.ray.roles.resources("rollout"))
    fixer = EngineTeacher(
        engines, tokenizer, model or path, prompts.prompt_style(cfg.model.prompt_style, tokenizer), max_model_len=cfg.model.max_model_len
    )
    return fixer, engines.shutdown
