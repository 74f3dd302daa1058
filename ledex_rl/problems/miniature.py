"""A synthetic code-repair domain small enough to learn on two CPU cores: LeDex in miniature.

Families of small Python functions (arithmetic, strings, lists, loops, conditions). Each instance has
a task text, a reference solution, unit tests (asserts) and a catalogue of realistic bugs with what
is wrong in each, which the scripted teacher (`ledex_rl/miniature_teacher.py`) uses to explain and fix
wrong code. Function names, argument names, constants and test data vary per instance, so a held-out
instance cannot be answered from memory: it has to be read.

Sources (`data.*` entries):
- `miniature`, split `train`: instances of the twelve training families;
- `miniature`, split `test`: new instances of the same families, none equal to a training or
  pretraining instance ("held-out new instances");
- `miniature-unseen` (any split): instances of four families that never appear in training;
- `miniature`, split `prompt`: the corpus the base model `miniature-base` is pretrained on (training
  families; a share of its solutions carry one of the catalogued bugs, as real code does).

Everything is generated from a seed (`ProblemSourceConfig.offset`/`limit` slice the stream), so every
run, test and benchmark sees the same instances.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from ledex_rl.problems.base import Problem, TestCase

SOURCE, UNSEEN_SOURCE = "miniature", "miniature-unseen"
SPLIT_SIZES = {"train": 240, "test": 80, "prompt": 6000, "unseen": 80}
TRAIN_POOL = 2000  # held-out instances differ from the first TRAIN_POOL training instances, whatever `limit` takes
_SPLIT_SEEDS = {"train": 1, "test": 2, "prompt": 3, "unseen": 4}

_VERBS = tuple(
    "compute get find make calc eval build take count solve check apply give fetch derive pick measure score produce return".split()
)
_NOUNS = tuple(
    "total value result answer amount number output item score data entry figure level metric outcome quantity record sample target unit".split()
)


@dataclass(frozen=True)
class Bug:
    code: str  # the buggy program
    what: str  # what is wrong, in one sentence (the teacher's explanation)
    fix: str  # how to fix it, in one short clause


@dataclass(frozen=True)
class Instance:
    family: str
    fn: str
    task: str
    solution: str
    tests: tuple[str, ...]  # assert statements
    bugs: tuple[Bug, ...]


def _fn_name(rng: random.Random) -> str:
    return f"{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}"


def _asserts(fn: str, cases: list[tuple[tuple, object]]) -> tuple[str, ...]:
    return tuple(f"assert {fn}({', '.join(repr(a) for a in args)}) == {expected!r}" for args, expected in cases)


def _ints(rng: random.Random, n: int, lo: int = -20, hi: int = 40) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(n)]


def _word(rng: random.Random, alphabet: str = "abcdefghij", lo: int = 3, hi: int = 8) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def _def(fn: str, args: str, body: str) -> str:
    return f"def {fn}({args}):\n    return {body}\n"


def _instance(family: str, fn: str, task: str, args: str, body: str, cases, bugs) -> Instance:
    """`bugs`: (buggy body, what is wrong, how to fix it) triples."""
    return Instance(
        family,
        fn,
        task,
        _def(fn, args, body),
        _asserts(fn, cases),
        tuple(Bug(_def(fn, args, b), what, fix) for b, what, fix in bugs if b != body),
    )


# --- the families: each draws one instance from an RNG ------------------------------------------------
# The families are tables of bugs (buggy body, what is wrong, how to fix it), one row per line: the
# formatter leaves them as written (it would stand each call's arguments one per line).
# fmt: off


def _shift(rng, sign: str):
    """add_const (+) and sub_const (-): x plus or minus a constant."""
    fn, x, c = _fn_name(rng), rng.choice(("x", "n", "value", "num")), rng.randint(2, 60)
    word, verb, other, opposite = ("plus", "add", "-", "subtract") if sign == "+" else ("minus", "subtract", "+", "add")
    cases = [((v,), v + c if sign == "+" else v - c) for v in _ints(rng, 3)]
    off_by_one = f"{fn} {verb}s {c + 1} instead of {c}, so every result is one too {'large' if sign == '+' else 'small'}."
    third = ((f"{x} * {c}", f"{fn} multiplies {x} by {c} instead of adding {c}.", "use + instead of *") if sign == "+"
             else (f"{c} - {x}", f"{fn} computes {c} - {x}; the operands are in the wrong order.", f"use {x} - {c}"))
    return _instance("add_const" if sign == "+" else "sub_const", fn, f"Write a function {fn}({x}) that returns {x} {word} {c}.",
                     x, f"{x} {sign} {c}", cases, [
        (f"{x} {other} {c}", f"{fn} {opposite}s {c} {'from' if other == '-' else 'to'} {x}, but the task asks to {verb} {c}.",
         f"use {x} {sign} {c}"),
        (f"{x} {sign} {c + 1}", off_by_one, f"{verb} {c}, not {c + 1}"),
        third,
    ])


def add_const(rng):
    return _shift(rng, "+")


def sub_const(rng):
    return _shift(rng, "-")


def _extreme(rng, largest: bool):
    """max_plus and min_minus: the largest number plus c, or the smallest minus c."""
    fn, xs, c = _fn_name(rng), rng.choice(("xs", "nums", "values", "items")), rng.randint(1, 20)
    pick, other = ("max", "min") if largest else ("min", "max")
    word, other_word, sign, other_sign = ("largest", "smallest", "+", "-") if largest else ("smallest", "largest", "-", "+")
    data = [_ints(rng, rng.randint(3, 7)) for _ in range(3)]
    cases = [((d,), max(d) + c if largest else min(d) - c) for d in data]
    position, index = ("first", 0) if largest else ("last", -1)
    return _instance("max_plus" if largest else "min_minus", fn,
                     f"Write a function {fn}({xs}) that returns the {word} number in the list {xs} {'plus' if largest else 'minus'} {c}.",
                     xs, f"{pick}({xs}) {sign} {c}", cases, [
        (f"{other}({xs}) {sign} {c}", f"{fn} takes the {other_word} number with {other}, but the task asks for the {word}.",
         f"use {pick} instead of {other}"),
        (f"{xs}[{index}] {sign} {c}", f"{fn} takes the {position} element of {xs}, which is not always the {word}.", f"use {pick}({xs})"),
        (f"{pick}({xs}) {other_sign} {c}", f"{fn} {'subtracts' if largest else 'adds'} {c} instead of {'adding' if largest else 'subtracting'} it.",
         f"{'add' if largest else 'subtract'} {c}"),
    ])


def max_plus(rng):
    return _extreme(rng, True)


def min_minus(rng):
    return _extreme(rng, False)


def _count_compared(rng, greater: bool):
    """count_greater and count_less: how many numbers lie above (or below) k."""
    fn, xs, k = _fn_name(rng), rng.choice(("xs", "nums", "values", "items")), rng.randint(-5, 25)
    op, loose, opposite = (">", ">=", "<") if greater else ("<", "<=", ">")
    word, other_word = ("greater", "smaller") if greater else ("smaller", "greater")
    step = 1 if greater else -1
    data = [_ints(rng, rng.randint(4, 8)) + [k] for _ in range(2)] + [[k + 3 * step, k, k + step, k + 2 * step]]
    cases = [((d,), sum(1 for v in d if (v > k if greater else v < k))) for d in data]
    return _instance("count_greater" if greater else "count_less", fn,
                     f"Write a function {fn}({xs}) that returns how many numbers in the list {xs} are {word} than {k}.",
                     xs, f"sum(1 for v in {xs} if v {op} {k})", cases, [
        (f"sum(1 for v in {xs} if v {loose} {k})", f"{fn} also counts the numbers equal to {k}, which are not {word} than {k}.",
         f"use {op} instead of {loose}"),
        (f"sum(1 for v in {xs} if v {opposite} {k})", f"{fn} counts the numbers {other_word} than {k} instead of the {word} ones.",
         f"use {op} instead of {opposite}"),
        (f"len({xs})", f"{fn} counts every number in {xs}, not only those {word} than {k}.", f"count only v {op} {k}"),
    ])


def count_greater(rng):
    return _count_compared(rng, True)


def count_less(rng):
    return _count_compared(rng, False)


def mul_const(rng):
    fn, x, c = _fn_name(rng), rng.choice(("x", "n", "value", "num")), rng.randint(2, 30)
    cases = [((v,), v * c) for v in _ints(rng, 3, 1, 30)]
    return _instance("mul_const", fn, f"Write a function {fn}({x}) that returns {x} multiplied by {c}.", x, f"{x} * {c}", cases, [
        (f"{x} + {c}", f"{fn} adds {c} to {x}, but the task asks to multiply by {c}.", f"use {x} * {c}"),
        (f"{x} * {c - 1}", f"{fn} multiplies by {c - 1} instead of {c}.", f"multiply by {c}, not {c - 1}"),
        (f"{x} ** {c}", f"{fn} raises {x} to the power {c} instead of multiplying by {c}.", "use * instead of **"),
    ])


def sum_range(rng):
    fn, n, a = _fn_name(rng), rng.choice(("n", "limit", "stop", "end")), rng.randint(2, 9)
    cases = [((v,), sum(range(a, v + 1))) for v in rng.sample(range(a + 1, a + 30), 3)]
    return _instance("sum_range", fn, f"Write a function {fn}({n}) that returns the sum of the integers from {a} to {n} inclusive.",
                     n, f"sum(range({a}, {n} + 1))", cases, [
        (f"sum(range({a}, {n}))", f"range({a}, {n}) stops at {n} - 1, so {fn} leaves {n} itself out of the sum.",
         f"use range({a}, {n} + 1) to include {n}"),
        (f"sum(range({a + 1}, {n} + 1))", f"{fn} starts the sum at {a + 1} instead of {a}.", f"start the range at {a}"),
        (f"sum(range({n} + 1))", f"{fn} sums from 0 instead of from {a}.", f"start the range at {a}"),
    ])


def repeat_str(rng):
    fn, s, k = _fn_name(rng), rng.choice(("s", "text", "word", "chars")), rng.randint(2, 6)
    cases = [((w,), w * k) for w in (_word(rng) for _ in range(3))]
    return _instance("repeat_str", fn, f"Write a function {fn}({s}) that returns the string {s} repeated {k} times.", s, f"{s} * {k}", cases, [
        (f"{s} * {k - 1}", f"{fn} repeats {s} {k - 1} times instead of {k}.", f"multiply by {k}"),
        (f"{s} + str({k})", f"{fn} appends the digit {k} to {s} instead of repeating {s} {k} times.", f"use {s} * {k}"),
        (f"{s}[::-1] * {k}", f"{fn} reverses {s} before repeating it; the task does not ask to reverse it.", "drop the [::-1]"),
    ])


def is_multiple(rng):
    fn, x, k = _fn_name(rng), rng.choice(("x", "n", "value", "num")), rng.randint(2, 12)
    values = [k * rng.randint(1, 9), k * rng.randint(1, 9) + rng.randint(1, k - 1), k * rng.randint(1, 9) + 1]
    cases = [((v,), v % k == 0) for v in values]
    return _instance("is_multiple", fn, f"Write a function {fn}({x}) that returns True if {x} is divisible by {k}, and False otherwise.",
                     x, f"{x} % {k} == 0", cases, [
        (f"{x} % {k} == 1", f"{fn} checks for a remainder of 1, but divisible means the remainder is 0.", "compare the remainder with 0"),
        (f"{x} % {k} != 0", f"{fn} returns True exactly when {x} is not divisible by {k}: the comparison is inverted.", "use == 0"),
        (f"{x} // {k} == 0", f"{fn} uses integer division // instead of the remainder %.", "use % instead of //"),
    ])


def nth_from_end(rng):
    fn, xs, k = _fn_name(rng), rng.choice(("xs", "nums", "values", "items")), rng.randint(1, 3)
    data = [_ints(rng, rng.randint(k + 3, k + 6)) for _ in range(3)]
    cases = [((d,), d[-k]) for d in data]
    place = {1: "last", 2: "second to last", 3: "third to last"}[k]
    return _instance("nth_from_end", fn, f"Write a function {fn}({xs}) that returns the {place} element of the list {xs}.",
                     xs, f"{xs}[-{k}]", cases, [
        (f"{xs}[{k - 1}]", f"{fn} counts from the start of {xs}; the {place} element is counted from the end.", f"use the index -{k}"),
        (f"{xs}[-{k + 1}]", f"{fn} takes the element one position too far from the end.", f"use the index -{k}"),
        (f"{xs}[len({xs}) - {k - 1}]" if k > 1 else f"{xs}[len({xs})]", f"{fn} is off by one: its index is one past the {place} element.",
         f"use the index -{k}"),
    ])


def clamp(rng):
    fn, x = _fn_name(rng), rng.choice(("x", "n", "value", "num"))
    lo = rng.randint(-10, 10)
    hi = lo + rng.randint(3, 20)
    values = [lo - rng.randint(1, 9), rng.randint(lo, hi), hi + rng.randint(1, 9)]
    cases = [((v,), max(lo, min(v, hi))) for v in values]
    return _instance("clamp", fn, f"Write a function {fn}({x}) that returns {x} limited to the range from {lo} to {hi}.",
                     x, f"max({lo}, min({x}, {hi}))", cases, [
        (f"min({lo}, max({x}, {hi}))", f"{fn} swaps min and max, so it never returns a value inside the range.", f"use max({lo}, min({x}, {hi}))"),
        (f"max({lo}, min({x}, {lo}))", f"{fn} uses {lo} as the upper limit instead of {hi}.", f"use {hi} as the upper limit"),
        (f"min({x}, {hi})", f"{fn} only applies the upper limit {hi} and never the lower limit {lo}.", f"also take max with {lo}"),
    ])


def count_char(rng):
    fn, s, ch = _fn_name(rng), rng.choice(("s", "text", "word", "chars")), rng.choice("abcdefghij")
    words = [_word(rng) + ch * rng.randint(0, 2) for _ in range(3)]
    cases = [((w,), w.count(ch)) for w in words]
    return _instance("count_char", fn, f"Write a function {fn}({s}) that returns how many times the letter '{ch}' appears in {s}.",
                     s, f"{s}.count('{ch}')", cases, [
        (f"{s}.find('{ch}')", f"{fn} uses find, which returns the position of the first '{ch}', not how many there are.", "use count"),
        (f"len({s})", f"{fn} returns the length of {s} instead of the number of '{ch}' letters.", f"use {s}.count('{ch}')"),
        (f"{s}.count('{ch}') + 1", f"{fn} adds 1 to the count, so every result is one too large.", "drop the + 1"),
    ])


def keep_multiples(rng):
    fn, xs, k = _fn_name(rng), rng.choice(("xs", "nums", "values", "items")), rng.randint(2, 5)
    data = [_ints(rng, rng.randint(3, 7), 0, 30) + [k * rng.randint(1, 6)] for _ in range(3)]
    cases = [((d,), [v for v in d if v % k == 0]) for d in data]
    return _instance("keep_multiples", fn, f"Write a function {fn}({xs}) that returns a list of the numbers in {xs} that are divisible by {k}.",
                     xs, f"[v for v in {xs} if v % {k} == 0]", cases, [
        (f"[v for v in {xs} if v % {k} != 0]", f"{fn} keeps the numbers that are not divisible by {k}: the test is inverted.", "use == 0"),
        (f"[v for v in {xs} if v % {k} == 1]", f"{fn} keeps numbers with remainder 1; divisible means remainder 0.", "compare with 0"),
        (f"[v // {k} for v in {xs} if v % {k} == 0]", f"{fn} divides the kept numbers by {k}; it must return them unchanged.", "return v itself"),
    ])


def distance(rng):
    fn, c = _fn_name(rng), rng.randint(0, 9)
    a, b = rng.choice((("a", "b"), ("x", "y"), ("p", "q"), ("left", "right")))
    pairs = [tuple(_ints(rng, 2)) for _ in range(3)]
    pairs[0] = (min(pairs[0]), max(pairs[0]) + 1)  # a < b at least once, so a - b is caught
    cases = [((p, q), abs(p - q) + c) for p, q in pairs]
    extra = f" plus {c}" if c else ""
    body = f"abs({a} - {b}) + {c}" if c else f"abs({a} - {b})"
    return _instance("distance", fn, f"Write a function {fn}({a}, {b}) that returns the distance between {a} and {b} (never negative){extra}.",
                     f"{a}, {b}", body, cases, [
        (body.replace(f"abs({a} - {b})", f"{a} - {b}"), f"{fn} returns {a} - {b}, which is negative when {a} is smaller than {b}.",
         "wrap it in abs()"),
        (body.replace(f"abs({a} - {b})", f"abs({a} + {b})"), f"{fn} adds {a} and {b}; the distance is the absolute difference.",
         f"use abs({a} - {b})"),
        (body.replace(f"abs({a} - {b})", f"abs({a}) - abs({b})"), f"{fn} subtracts the absolute values, which is not the distance.",
         f"use abs({a} - {b})"),
    ])


# Families that never appear in training (`miniature-unseen`): relatives of the trained ones.


def prefix(rng):
    fn, s, k = _fn_name(rng), rng.choice(("s", "text", "word", "chars")), rng.randint(2, 5)
    cases = [((w,), w[:k]) for w in (_word(rng, lo=k + 2, hi=k + 6) for _ in range(3))]
    return _instance("prefix", fn, f"Write a function {fn}({s}) that returns the first {k} letters of {s}.", s, f"{s}[:{k}]", cases, [
        (f"{s}[{k}:]", f"{fn} returns everything after the first {k} letters instead of the first {k} letters.", f"use {s}[:{k}]"),
        (f"{s}[:{k - 1}]", f"{fn} returns only {k - 1} letters; the slice end is exclusive.", f"use {s}[:{k}]"),
        (f"{s}[-{k}:]", f"{fn} returns the last {k} letters instead of the first {k}.", f"use {s}[:{k}]"),
    ])

# fmt: on

TRAIN_FAMILIES: tuple[Callable[[random.Random], Instance], ...] = (
    add_const,
    mul_const,
    sum_range,
    count_greater,
    max_plus,
    repeat_str,
    is_multiple,
    nth_from_end,
    clamp,
    count_char,
    keep_multiples,
    distance,
)
UNSEEN_FAMILIES: tuple[Callable[[random.Random], Instance], ...] = (sub_const, min_minus, count_less, prefix)


def instances(split: str, count: int | None = None, seed: int = 0) -> list[Instance]:
    """The first `count` instances of a split (its default size when None), families in turn. Held-out
    instances (`test`) that equal a training or pretraining instance are skipped."""
    count = SPLIT_SIZES[split] if count is None else count
    families = UNSEEN_FAMILIES if split == "unseen" else TRAIN_FAMILIES
    rng = random.Random(f"miniature:{seed}:{_SPLIT_SEEDS[split]}")
    seen = {i.task for i in instances("train", TRAIN_POOL, seed) + instances("prompt", seed=seed)} if split == "test" else set()
    out: list[Instance] = []
    while len(out) < count:
        instance = families[len(out) % len(families)](rng)
        if instance.task not in seen:
            seen.add(instance.task)
            out.append(instance)
    return out


def to_problem(instance: Instance, source: str, index: int) -> Problem:
    bugs = [{"code": b.code, "what": b.what, "fix": b.fix} for b in instance.bugs]
    return Problem(
        task_id=f"{source}/{instance.family}/{index}",
        source=source,
        prompt=instance.task,
        entry_point=instance.fn,
        reference_solution=instance.solution,
        tests=tuple(TestCase(kind="assert", source=t) for t in instance.tests),
        metadata={"examples": [instance.tests[0]], "family": instance.family, "bugs": bugs},
    )


def load(name: str, split: str, offset: int = 0, limit: int = 0) -> list[Problem]:
    """Problems of a miniature source: `miniature` (split train, test or prompt) or `miniature-unseen`."""
    which = "unseen" if name == UNSEEN_SOURCE else split
    if which not in SPLIT_SIZES:
        raise ValueError(f"data source {name}: split '{split}' does not exist; use train, test or prompt")
    count = offset + (limit or SPLIT_SIZES[which] - offset)
    return [to_problem(inst, name, i) for i, inst in enumerate(instances(which, count)) if i >= offset]
