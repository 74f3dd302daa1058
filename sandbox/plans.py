"""Turn a problem's tests into what the sandbox evaluates, and judge what it returns.

The expected values never enter the sandbox. An `assert` test such as
    assert set(similar_elements((3, 4), (4, 5))) == set((4,))
is split by its syntax tree: every maximal sub-expression that touches a name the candidate may
define (`similar_elements(...)`) is evaluated in the sandbox and comes back as a plain value; the
rest (`set(__v0) == set((4,))`) is evaluated here, in the trusted parent, on that value. An object
with an always-true `__eq__` never gets here: it cannot be encoded, and the test fails.

Tests that cannot be split (loops, helper variables, lambdas over candidate calls) are `judged`: a
second process in the sandbox, which never runs the candidate's code, runs the test and calls the
candidate's functions through proxies that carry only plain values (see sandbox/zygote.py). Every
verdict is thus computed where the candidate cannot reach it.
"""

from __future__ import annotations

import ast
import builtins
import functools
import json
import math
import re
import types
from dataclasses import dataclass
from typing import Any

from ledex_rl.problems.base import TestCase
from sandbox.results import NO_VALUE
from sandbox.values import MalformedValue, decode, equal, show
from sandbox.zygote import STDLIB_MODULES

# --- what the parent may evaluate on returned values, and what that may cost -------------------------
#
# A residual is the dataset's own expression, but its operands are values the candidate chose: a
# returned 10**5000 fed to `**`, `range` or `*` would make the trusted parent spend minutes or
# gigabytes. Every operation whose cost is not linear in its operands' size is checked first.
MAX_INT_BITS = 1 << 16  # the largest int a residual may build (about 20,000 digits)
MAX_ITEMS = 1 << 20  # the longest sequence a residual may build (range, repetition, sum of lists, a format's width)
MAX_MODPOW_COST = 1 << 33  # bits(exponent) * bits(modulus)^2 of a modular power (about 20 ms here)


class ResidualTooCostly(ValueError):
    """A residual operation on returned values would exceed the parent's budget."""


def _bits(value: Any) -> int:
    return abs(value).bit_length() if isinstance(value, int) else 0


def _checked_pow(base: Any, exponent: Any, modulus: Any = None) -> Any:
    if modulus is None and isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        if exponent * _bits(base) > MAX_INT_BITS:
            raise ResidualTooCostly(f"a power with {exponent * _bits(base)} bits")
    # A modular power costs about bits(exponent) * bits(modulus)^2 (measured: 14,000-bit operands, 4.5 s).
    if modulus is not None and _bits(exponent) * _bits(modulus) ** 2 > MAX_MODPOW_COST:
        raise ResidualTooCostly("a modular power too large")
    return pow(base, exponent) if modulus is None else pow(base, exponent, modulus)


def _checked_mod(a: Any, b: Any) -> Any:
    """`a % b`; for a returned string, printf-style formatting, whose widths and precisions could ask
    for gigabytes (`"%999999999d" % 2`: a test of `f(x) % 2 == 0` when f returns a string)."""
    if isinstance(a, (str, bytes)):
        text = a if isinstance(a, str) else a.decode("latin-1")
        sizes = [int(digits) for digits in re.findall(r"\d+", text)]
        if "*" in text:  # widths and precisions taken from the arguments
            sizes += [x for x in (b if isinstance(b, tuple) else (b,)) if isinstance(x, int)]
        if any(abs(size) > MAX_ITEMS for size in sizes):
            raise ResidualTooCostly("a format width or precision too large")
    return a % b


def _checked_round(number: Any, ndigits: Any = None) -> Any:
    if isinstance(ndigits, int) and abs(ndigits) > MAX_INT_BITS:  # round(n, -k) builds 10**k
        raise ResidualTooCostly(f"rounding to {ndigits} digits")
    return round(number) if ndigits is None else round(number, ndigits)


def _checked_mul(a: Any, b: Any) -> Any:
    for seq, times in ((a, b), (b, a)):
        if isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int) and len(seq) * max(times, 0) > MAX_ITEMS:
            raise ResidualTooCostly(f"a repetition of {len(seq) * times} items")
    if isinstance(a, int) and isinstance(b, int) and _bits(a) + _bits(b) > MAX_INT_BITS:
        raise ResidualTooCostly("a product too large")
    return a * b


def _checked_lshift(a: Any, b: Any) -> Any:
    if isinstance(b, int) and b > MAX_INT_BITS:
        raise ResidualTooCostly(f"a shift by {b} bits")
    return a << b


_BINOPS = {"Pow": _checked_pow, "Mult": _checked_mul, "LShift": _checked_lshift, "Mod": _checked_mod}


class _Guard(ast.NodeTransformer):
    """`a ** b`, `a * b`, `a << b`, `a % b` in a residual -> `__binop__("Pow", a, b)`: checked before computed."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        name = type(node.op).__name__
        if name not in _BINOPS:
            return node
        call = ast.Call(func=ast.Name(id="__binop__", ctx=ast.Load()), args=[ast.Constant(name), node.left, node.right], keywords=[])
        return ast.copy_location(call, node)


def _checked_range(*args: Any) -> range:
    r = range(*args)
    if len(r) > MAX_ITEMS:
        raise ResidualTooCostly(f"a range of {len(r)} items")
    return r


def _checked_sum(iterable: Any, start: Any = 0) -> Any:
    """sum(), but adding lists or tuples in linear time (sum(lists, []) is quadratic) and within budget."""
    if not isinstance(start, (list, tuple)):
        return sum(iterable, start)
    parts, size = [start], len(start)
    for item in iterable:
        if type(item) is not type(start):
            raise TypeError(f'can only concatenate {type(start).__name__} (not "{type(item).__name__}") to {type(start).__name__}')
        size += len(item)
        if size > MAX_ITEMS:
            raise ResidualTooCostly(f"a sum of sequences longer than {MAX_ITEMS}")
        parts.append(item)
    joined = [x for part in parts for x in part]
    return joined if isinstance(start, list) else tuple(joined)


def _checked_math() -> types.SimpleNamespace:
    """math, with the functions whose cost grows faster than their input checked."""
    names = {name: getattr(math, name) for name in dir(math) if not name.startswith("_")}

    def bounded(fn, limit):
        def call(*args):
            if any(isinstance(a, int) and a > limit for a in args):
                raise ResidualTooCostly(f"math.{fn.__name__} of a value above {limit}")
            return fn(*args)

        return call

    for name in ("factorial", "comb", "perm"):
        names[name] = bounded(getattr(math, name), 20000)

    def prod(iterable, *, start=1):
        items = list(iterable)
        if sum(_bits(x) for x in items) + _bits(start) > MAX_INT_BITS:
            raise ResidualTooCostly("a product too large")
        return math.prod(items, start=start)

    names["prod"] = prod
    return types.SimpleNamespace(**names)


# Names the parent may evaluate on returned values: pure builtins and math, nothing the candidate defines.
SAFE_BUILTINS = {
    name: getattr(builtins, name)
    for name in (
        "abs all any bool chr complex dict divmod enumerate filter float frozenset int isinstance len list map "
        "max min ord repr reversed set sorted str tuple zip type hex bin oct"
    ).split()
} | {"range": _checked_range, "pow": _checked_pow, "sum": _checked_sum, "round": _checked_round}
SAFE_ENV: dict[str, Any] = {
    "math": _checked_math(),
    "True": True,
    "False": False,
    "None": None,
    "__binop__": lambda op, a, b: _BINOPS[op](a, b),
}
SAFE_NAMES = set(SAFE_BUILTINS) | {"math", "True", "False", "None"}
_SCOPES = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.NamedExpr)


@dataclass(frozen=True)
class Plan:
    """What the child runs for one test (`wire`) and what the parent keeps to judge it (never sent)."""

    wire: dict
    test: TestCase
    residual: ast.Expression | None = None  # assert: the verdict expression over __v0, __v1, ...

    @property
    def judged(self) -> bool:
        return self.wire["kind"] == "judged"


@dataclass(frozen=True)
class SplitAssert:
    """An assert split into what the sandbox evaluates and what the parent decides."""

    exprs: list[str]  # sub-expressions the sandbox evaluates, in order: __v0, __v1, ...
    residual: ast.Expression  # the verdict over them, evaluated by the parent
    truthy: list[bool]  # per value: only its truth counts (truth_positions)
    iterable: list[bool]  # per value: consumed as an iterable (iterable_positions)
    roots: list[str | None]  # per value: the name its calls, attributes and items start from (`f` in `f(x)[0]`)


def make_plan(test: TestCase, entry_point: str, setup: str = "") -> Plan:
    """`entry_point`: the function under test (HumanEval's tests call it `candidate`); `setup`: the code
    the tests run after (the task's preamble and test setup)."""
    if test.kind == "assert":
        split = split_assert(test.source)
        # Only the program's own answers may be computed in its process. In `f(x) == sys.getsizeof(y)` or
        # `isclose(f(x), 3.5)` the expected value, or the verdict, would be the program's to choose (it can
        # replace `sys.getsizeof`, or define `isclose`): such a test is judged, where builtins, standard
        # modules and the setup's names are the judge's own.
        if split is not None and all(programs_own(root, entry_point, bound_names(setup)) for root in split.roots):
            wire = {"kind": "eval", "exprs": split.exprs, "truthy": split.truthy}
            return Plan({**wire, "iterable": split.iterable} if any(split.iterable) else wire, test, split.residual)
        return Plan({"kind": "judged", "source": test.source}, test)
    if test.kind == "call":  # the arguments as JSON carries them (lists for tuples), as they always arrived
        return Plan({"kind": "call", "args": json.loads(json.dumps(list(test.args)))}, test)
    if test.kind == "io":
        return Plan({"kind": "io", "stdin": test.stdin}, test)
    return Plan({"kind": "judged", "source": test.source}, test)


@functools.lru_cache(maxsize=65536)
def split_assert(source: str) -> SplitAssert | None:
    """`assert EXPR` -> its split, or None when it cannot be split.

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
    roots: list[str | None] = []
    dirty = tainted_nodes(test_expr)

    def tainted(node: ast.AST) -> bool:
        return id(node) in dirty

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
            roots.append(root_name(node))
            return ast.copy_location(ast.Name(id=f"__v{len(offloaded) - 1}", ctx=ast.Load()), node)

    # A candidate call under a lambda or comprehension may use its variables, which exist only here.
    if any(isinstance(n, _SCOPES) and tainted(n) for n in ast.walk(test_expr)):
        return None
    residual = Rewriter().visit(test_expr)
    if not offloaded:
        return None
    expression = ast.Expression(body=_Guard().visit(residual))
    ast.fix_missing_locations(expression)
    count = len(offloaded)
    return SplitAssert(offloaded, expression, truth_positions(expression, count), iterable_positions(expression, count), roots)


# Names that mean the same in any program unless it rebinds them: a value computed from one is not the
# program's answer to give.
STANDARD_NAMES = frozenset(dir(builtins)) | STDLIB_MODULES


def programs_own(root: str | None, entry_point: str, setup_names: frozenset[str]) -> bool:
    """Is `root` a name only the program gives a meaning to (the function under test, its other
    functions, classes and constants), so that what is computed from it is the program's answer?"""
    if root in ("candidate", entry_point):
        return True
    return root is not None and root not in STANDARD_NAMES and root not in setup_names


@functools.lru_cache(maxsize=4096)
def bound_names(source: str) -> frozenset[str]:
    """Every name `source` binds anywhere: imports, definitions, assignments (more names than it
    strictly binds at top level only send more tests to the judge)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return frozenset()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return frozenset(names)


def root_name(node: ast.expr) -> str | None:
    """The name a chain of calls, attributes and items starts from: `f` in `f(x).y[0]`; None for others."""
    while isinstance(node, (ast.Call, ast.Attribute, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def tainted_nodes(root: ast.AST) -> set[int]:
    """ids of the nodes under `root` (itself included) that use a name the parent does not know: one
    pass down and one up, where asking each node's subtree in turn took time quadratic in the depth
    (HumanEval's long literal lists: about 1 ms of the host's CPU per job)."""
    order = list(ast.walk(root))  # parents before their children
    dirty: set[int] = set()
    for node in reversed(order):
        if (isinstance(node, ast.Name) and node.id not in SAFE_NAMES) or any(id(c) in dirty for c in ast.iter_child_nodes(node)):
            dirty.add(id(node))
    return dirty


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
    # A value used both as a truth and elsewhere (`f(x) and f(x) == 3`) must come back whole: any
    # value under a comparison, call or operation.
    stack = [(residual.body, False)]
    while stack:
        node, inside = stack.pop()
        if inside and isinstance(node, ast.Name) and node.id.startswith("__v"):
            used_elsewhere.add(int(node.id[3:]))
        inside = inside or isinstance(node, (ast.Compare, ast.Call, ast.BinOp))
        stack.extend((child, inside) for child in ast.iter_child_nodes(node))
    return [t and i not in used_elsewhere for i, t in enumerate(truthy)]


# Builtins that consume their arguments as iterables. An offloaded value passed straight to one of them
# (`list(f(x))`, `sorted(g())`) comes back as a list of its items when it is an iterator (a generator, a
# map): Python would consume it there, and a generator object itself cannot leave the sandbox.
ITERABLE_CONSUMERS = frozenset("list tuple set frozenset sorted sum min max any all enumerate zip map filter dict".split())


def iterable_positions(residual: ast.Expression, count: int) -> list[bool]:
    """Which offloaded values the verdict passes straight to an iterable-consuming builtin."""
    listed = [False] * count
    for node in ast.walk(residual.body):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ITERABLE_CONSUMERS:
            for arg in node.args:
                if isinstance(arg, ast.Name) and arg.id.startswith("__v"):
                    listed[int(arg.id[3:])] = True
    return listed


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
        where = record.get("where")  # a judged test: the tests file's line it stopped at
        at = f" at {_short(where, 200)}" if isinstance(where, str) else ""
        if kind == "AssertionError" and plan.judged:  # the test's own assertion did not hold
            detail = str(message).removeprefix("AssertionError:").strip()
            return Verdict("failed", f"{_short(label())}: failed{at}{': ' + _short(detail, 200) if detail else ''}")
        return Verdict("error", f"{_short(label())}: raised {message or kind}{at}")
    wire = plan.wire["kind"]
    if wire == "judged":
        return Verdict("passed") if record.get("ok") is True else Verdict("error", f"{_short(label())}: no verdict")
    try:
        raw = record["values"]
        values = [decode(v) for v in raw]
    except (KeyError, TypeError, MalformedValue, RecursionError) as exc:
        return Verdict("error", f"{_short(label())}: malformed result ({type(exc).__name__})")
    expected_count = len(plan.wire["exprs"]) if wire == "eval" else 1
    if len(values) != expected_count:
        return Verdict("error", f"{_short(label())}: malformed result (wrong number of values)")
    if wire == "eval":
        env = {"__builtins__": SAFE_BUILTINS, **SAFE_ENV, **{f"__v{i}": v for i, v in enumerate(values)}}
        try:
            ok = bool(eval(_compiled(plan.residual), env))  # noqa: S307 - dataset code on plain data, within budget
        except Exception as exc:  # noqa: BLE001
            return Verdict("failed", f"{_short(label())}: checking the result raised {type(exc).__name__}: {_short(str(exc), 120)}")
        if ok:
            return Verdict("passed")
        got = ", ".join(f"{src} returned {show(v)}" for src, v in zip(plan.wire["exprs"], values))
        return Verdict("failed", f"{_short(label())} failed: {got}")
    (got,) = values
    if wire == "call":
        try:
            same = equal(got, test.expected, test.atol)
        except (ArithmeticError, RecursionError, TypeError, ValueError) as exc:  # a huge int against a float, say
            return Verdict("failed", f"{_short(label())}: the result cannot be compared ({type(exc).__name__})", value=got)
        if same:
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
