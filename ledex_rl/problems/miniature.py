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
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ledex_rl.problems.base import Problem, TestCase

SOURCE, UNSEEN_SOURCE = "miniature", "miniature-unseen"
SPLIT_SIZES = {"train": 240, "test": 80, "prompt": 6000, "unseen": 80}
TRAIN_POOL = 2000  # held-out instances differ from the first TRAIN_POOL training instances, whatever `limit` takes
_SPLIT_SEEDS = {"train": 1, "test": 2, "prompt": 3, "unseen": 4}
TEMPLATES = tomllib.loads(Path(__file__).with_name("miniature_families.toml").read_text())

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


# --- the families: each draws one instance's values and test cases from an RNG; their text is the
# table in miniature_families.toml ---------------------------------------------------------------------

_SCALARS = ("x", "n", "value", "num")
_LISTS = ("xs", "nums", "values", "items")
_STRINGS = ("s", "text", "word", "chars")
_PLACES = {1: "last", 2: "second to last", 3: "third to last"}


def _from_table(family: str, cases: list[tuple[tuple, object]], **values: str | int) -> Instance:
    """`family`'s templates filled with the drawn `values` (each int value p also fills {p_plus_1} and
    {p_minus_1}) and its test `cases` as (arguments, expected result) pairs."""
    ints = {k: v for k, v in values.items() if isinstance(v, int)}
    fill = {**values, **{f"{k}_plus_1": v + 1 for k, v in ints.items()}, **{f"{k}_minus_1": v - 1 for k, v in ints.items()}}
    template = TEMPLATES[family]
    bugs = [(b["body"].format_map(fill), b["what"].format_map(fill), b["fix"].format_map(fill)) for b in template["bugs"]]
    args, task, body = (template[key].format_map(fill) for key in ("signature", "task", "solution"))
    return _instance(family, str(values["fn"]), task, args, body, cases, bugs)


def _shift(rng: random.Random, family: str, sign: int) -> Instance:
    """add_const (sign 1) and sub_const (-1): x plus or minus a constant."""
    fn, x, c = _fn_name(rng), rng.choice(_SCALARS), rng.randint(2, 60)
    return _from_table(family, [((v,), v + sign * c) for v in _ints(rng, 3)], fn=fn, x=x, c=c)


def add_const(rng):
    return _shift(rng, "add_const", 1)


def sub_const(rng):
    return _shift(rng, "sub_const", -1)


def _extreme(rng: random.Random, largest: bool) -> Instance:
    """max_plus and min_minus: the largest number plus c, or the smallest minus c."""
    fn, xs, c = _fn_name(rng), rng.choice(_LISTS), rng.randint(1, 20)
    data = [_ints(rng, rng.randint(3, 7)) for _ in range(3)]
    cases = [((d,), max(d) + c if largest else min(d) - c) for d in data]
    return _from_table("max_plus" if largest else "min_minus", cases, fn=fn, xs=xs, c=c)


def max_plus(rng):
    return _extreme(rng, True)


def min_minus(rng):
    return _extreme(rng, False)


def _count_compared(rng: random.Random, greater: bool) -> Instance:
    """count_greater and count_less: how many numbers lie above (or below) k; the last list holds k and
    its neighbours, so a bug at the boundary always shows."""
    fn, xs, k = _fn_name(rng), rng.choice(_LISTS), rng.randint(-5, 25)
    step = 1 if greater else -1
    data = [_ints(rng, rng.randint(4, 8)) + [k] for _ in range(2)] + [[k + 3 * step, k, k + step, k + 2 * step]]
    cases = [((d,), sum(1 for v in d if (v > k if greater else v < k))) for d in data]
    return _from_table("count_greater" if greater else "count_less", cases, fn=fn, xs=xs, k=k)


def count_greater(rng):
    return _count_compared(rng, True)


def count_less(rng):
    return _count_compared(rng, False)


def mul_const(rng):
    fn, x, c = _fn_name(rng), rng.choice(_SCALARS), rng.randint(2, 30)
    return _from_table("mul_const", [((v,), v * c) for v in _ints(rng, 3, 1, 30)], fn=fn, x=x, c=c)


def sum_range(rng):
    fn, n, a = _fn_name(rng), rng.choice(("n", "limit", "stop", "end")), rng.randint(2, 9)
    uppers = rng.sample(range(a + 1, a + 30), 3)
    return _from_table("sum_range", [((v,), sum(range(a, v + 1))) for v in uppers], fn=fn, n=n, a=a)


def repeat_str(rng):
    fn, s, k = _fn_name(rng), rng.choice(_STRINGS), rng.randint(2, 6)
    words = [_word(rng) for _ in range(3)]
    return _from_table("repeat_str", [((w,), w * k) for w in words], fn=fn, s=s, k=k)


def is_multiple(rng):
    fn, x, k = _fn_name(rng), rng.choice(_SCALARS), rng.randint(2, 12)
    values = [k * rng.randint(1, 9), k * rng.randint(1, 9) + rng.randint(1, k - 1), k * rng.randint(1, 9) + 1]
    return _from_table("is_multiple", [((v,), v % k == 0) for v in values], fn=fn, x=x, k=k)


def nth_from_end(rng):
    fn, xs, k = _fn_name(rng), rng.choice(_LISTS), rng.randint(1, 3)
    data = [_ints(rng, rng.randint(k + 3, k + 6)) for _ in range(3)]
    one_past = f"len({xs}) - {k - 1}" if k > 1 else f"len({xs})"
    return _from_table("nth_from_end", [((d,), d[-k]) for d in data], fn=fn, xs=xs, k=k, place=_PLACES[k], one_past=one_past)


def clamp(rng):
    fn, x = _fn_name(rng), rng.choice(_SCALARS)
    lo = rng.randint(-10, 10)
    hi = lo + rng.randint(3, 20)
    values = [lo - rng.randint(1, 9), rng.randint(lo, hi), hi + rng.randint(1, 9)]
    return _from_table("clamp", [((v,), max(lo, min(v, hi))) for v in values], fn=fn, x=x, lo=lo, hi=hi)


def count_char(rng):
    fn, s, ch = _fn_name(rng), rng.choice(_STRINGS), rng.choice("abcdefghij")
    words = [_word(rng) + ch * rng.randint(0, 2) for _ in range(3)]
    return _from_table("count_char", [((w,), w.count(ch)) for w in words], fn=fn, s=s, ch=ch)


def keep_multiples(rng):
    fn, xs, k = _fn_name(rng), rng.choice(_LISTS), rng.randint(2, 5)
    data = [_ints(rng, rng.randint(3, 7), 0, 30) + [k * rng.randint(1, 6)] for _ in range(3)]
    return _from_table("keep_multiples", [((d,), [v for v in d if v % k == 0]) for d in data], fn=fn, xs=xs, k=k)


def distance(rng):
    fn, c = _fn_name(rng), rng.randint(0, 9)
    a, b = rng.choice((("a", "b"), ("x", "y"), ("p", "q"), ("left", "right")))
    pairs = [tuple(_ints(rng, 2)) for _ in range(3)]
    pairs[0] = (min(pairs[0]), max(pairs[0]) + 1)  # a < b at least once, so a - b is caught
    cases = [((p, q), abs(p - q) + c) for p, q in pairs]
    plus_c, plus_c_words = (f" + {c}", f" plus {c}") if c else ("", "")
    return _from_table("distance", cases, fn=fn, a=a, b=b, plus_c=plus_c, plus_c_words=plus_c_words)


def prefix(rng):
    fn, s, k = _fn_name(rng), rng.choice(_STRINGS), rng.randint(2, 5)
    words = [_word(rng, lo=k + 2, hi=k + 6) for _ in range(3)]
    return _from_table("prefix", [((w,), w[:k]) for w in words], fn=fn, s=s, k=k)


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
