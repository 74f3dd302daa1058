"""Turn a problem's tests into what the sandbox evaluates, and judge what it returns.

The expected values never enter the sandbox. An `assert` test such as
    assert set(similar_elements((3, 4), (4, 5))) == set((4,))
is split by its syntax tree: every maximal sub-expression that touches a name the candidate may
define (`similar_elements(...)`) is evaluated in the sandbox and comes back as a plain value; the
rest (`set(__v0) == set((4,))`) is evaluated here, in the trusted parent, on that value. An object
with an always-true `__eq__` never gets here: it cannot be encoded, and the test fails.

Tests that cannot be split (loops, helper variables, lambdas over candidate calls) run whole inside
the sandbox as `script` plans; their verdict is weaker and is marked `verdict_inside=True`.
"""

from __future__ import annotations

import ast
import builtins
import functools
import math
from dataclasses import dataclass
from typing import Any

from ledex_rl.problems.base import TestCase
from sandbox.results import NO_VALUE
from sandbox.values import MalformedValue, decode, equal, show

# Names the parent may evaluate on returned values: pure builtins and math, nothing the candidate defines.
SAFE_BUILTINS = {
    name: getattr(builtins, name)
    for name in (
        "abs all any bool chr complex dict divmod enumerate filter float frozenset int isinstance len list map "
        "max min ord range repr reversed round set sorted str sum tuple zip type hex bin oct pow"
    ).split()
}
SAFE_ENV: dict[str, Any] = {"math": math, "True": True, "False": False, "None": None}
SAFE_NAMES = set(SAFE_BUILTINS) | set(SAFE_ENV)
_SCOPES = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.NamedExpr)


@dataclass(frozen=True)
class Plan:
    """What the child runs for one test (`wire`) and what the parent keeps to judge it (never sent)."""

    wire: dict
    test: TestCase
    residual: ast.Expression | None = None  # assert: the verdict expression over __v0, __v1, ...

    @property
    def verdict_inside(self) -> bool:
        return self.wire["kind"] == "script"


def make_plan(test: TestCase) -> Plan:
    if test.kind == "assert":
        split = split_assert(test.source)
        if split is not None:
            exprs, residual = split
            truthy = truth_positions(residual, len(exprs))
            return Plan({"kind": "eval", "exprs": exprs, "truthy": truthy}, test, residual)
        return Plan({"kind": "script", "source": test.source}, test)
    if test.kind == "call":
        return Plan({"kind": "call", "args": list(test.args)}, test)
    if test.kind == "io":
        return Plan({"kind": "io", "stdin": test.stdin}, test)
    return Plan({"kind": "script", "source": test.source}, test)


@functools.lru_cache(maxsize=65536)
def split_assert(source: str) -> tuple[list[str], ast.Expression] | None:
    """`assert EXPR` -> (sandbox sub-expressions, parent residual), or None when it cannot be split.

    Cached: the same tests are split for every candidate program of a problem. Callers must not
    mutate the result."""
    try:
        tree = ast.parse(source.strip())
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    test_expr = tree.body[0].test
    offloaded: list[str] = []

    def tainted(node: ast.AST) -> bool:
        return any(isinstance(n, ast.Name) and n.id not in SAFE_NAMES for n in ast.walk(node))

    def is_verdict_node(node: ast.AST) -> bool:
        """Nodes the parent evaluates itself, recursing into their operands."""
        if isinstance(node, (ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.Tuple, ast.List, ast.Set, ast.Dict)):
            return True
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in SAFE_BUILTINS:
                return True
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "math":
                return True
        return False

    class Rewriter(ast.NodeTransformer):
        def visit(self, node):
            if not isinstance(node, ast.expr) or not tainted(node):
                return node
            if is_verdict_node(node):
                return self.generic_visit(node)
            offloaded.append(ast.unparse(node))
            return ast.copy_location(ast.Name(id=f"__v{len(offloaded) - 1}", ctx=ast.Load()), node)

    # A candidate call under a lambda or comprehension may use its variables, which exist only here.
    if any(isinstance(n, _SCOPES) and tainted(n) for n in ast.walk(test_expr)):
        return None
    residual = Rewriter().visit(test_expr)
    if not offloaded:
        return None
    expression = ast.Expression(body=residual)
    ast.fix_missing_locations(expression)
    return offloaded, expression


def truth_positions(residual: ast.Expression, count: int) -> list[bool]:
    """Which offloaded values the verdict uses only for their truth (`assert f(x)`, `not f(x)`,
    `f(x) and g(y)`): for those the sandbox returns a bool, so any object may be returned."""
    truthy = [False] * count
    used_elsewhere = set()

    def mark(node: ast.AST) -> None:
        if isinstance(node, ast.Name) and node.id.startswith("__v"):
            truthy[int(node.id[3:])] = True
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            mark(node.operand)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                mark(value)

    mark(residual.body)
    # A value used both as a truth and elsewhere (`f(x) and f(x) == 3`) must come back whole.
    for node in ast.walk(residual.body):
        if isinstance(node, (ast.Compare, ast.Call, ast.BinOp)):
            for name in ast.walk(node):
                if isinstance(name, ast.Name) and name.id.startswith("__v"):
                    used_elsewhere.add(int(name.id[3:]))
    return [t and i not in used_elsewhere for i, t in enumerate(truthy)]


# --- judging -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    status: str  # passed | failed | error | timeout
    message: str = ""
    value: Any = NO_VALUE  # what a `call` test's function returned (used to compute expected outputs)


def judge(plan: Plan, record: dict | None, entry_point: str) -> Verdict:
    """The verdict for one test from its record (None: the child never reported it)."""
    test = plan.test

    def label() -> str:  # built only for a message: most tests pass
        return test.describe(entry_point or "candidate")

    if record is None:
        return Verdict("error", f"{_short(label())}: no result (the program stopped or exited before this test)")
    if "error" in record:
        kind, message = record["error"], record.get("message", "")
        if kind == "timeout":
            return Verdict("timeout", f"{_short(label())}: timed out")
        if kind == "unserializable":
            return Verdict("failed", f"{_short(label())}: {message}")
        return Verdict("error", f"{_short(label())}: raised {message or kind}")
    wire = plan.wire["kind"]
    if wire == "script":
        return Verdict("passed") if record.get("ok") is True else Verdict("error", f"{_short(label())}: no verdict")
    try:
        raw = record["values"]
        values = [decode(v) for v in raw]
    except (KeyError, TypeError, MalformedValue) as exc:
        return Verdict("error", f"{_short(label())}: malformed result ({exc})")
    expected_count = len(plan.wire["exprs"]) if wire == "eval" else 1
    if len(values) != expected_count:
        return Verdict("error", f"{_short(label())}: malformed result (wrong number of values)")
    if wire == "eval":
        env = {"__builtins__": SAFE_BUILTINS, **SAFE_ENV, **{f"__v{i}": v for i, v in enumerate(values)}}
        try:
            ok = bool(eval(_compiled(plan.residual), env))  # noqa: S307 - dataset code on plain data
        except Exception as exc:  # noqa: BLE001
            return Verdict("failed", f"{_short(label())}: checking the result raised {type(exc).__name__}: {exc}")
        if ok:
            return Verdict("passed")
        got = ", ".join(f"{src} returned {show(v)}" for src, v in zip(plan.wire["exprs"], values))
        return Verdict("failed", f"{_short(label())} failed: {got}")
    (got,) = values
    if wire == "call":
        if equal(got, test.expected, test.atol):
            return Verdict("passed", value=got)
        return Verdict("failed", f"{_short(label())} failed: got {show(got)}", value=got)
    if same_output(got, test.expected_stdout):
        return Verdict("passed")
    return Verdict("failed", f"input {show(test.stdin, 80)}: expected output {show(test.expected_stdout, 80)}, got {show(got, 80)}")


@functools.lru_cache(maxsize=65536)
def _compiled(residual: ast.Expression):
    return compile(residual, "<verdict>", "eval")


def same_output(got: Any, expected: str) -> bool:
    """stdout comparison as judges do: ignore trailing spaces and blank lines; else compare tokens."""
    if not isinstance(got, str):
        return False

    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip().splitlines()]

    return lines(got) == lines(expected) or got.split() == expected.split()


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
