"""scripts/debug_programs, the set scripts/bench_debug.py measures `ledex-rl debug` on: every program
fails its tests as given, and passes them with its one-line fix (so a fixed count means something)."""

from pathlib import Path

import pytest

from ledex_rl import debugger, user_tests
from sandbox import Sandbox

PROGRAMS = Path(__file__).resolve().parents[1] / "scripts" / "debug_programs"
FIXES = {
    "average": ("(len(xs) - 1)", "len(xs)"),
    "binary_search": ("while low < high", "while low <= high"),
    "clamp": ("        return high\n    if x > high", "        return low\n    if x > high"),
    "count_vowels": ('if ch in "aeiou"', 'if ch.lower() in "aeiou"'),
    "factorial": ("if n == 1:", "if n <= 1:"),
    "fizzbuzz": ("    if n % 3 == 0:\n", '    if n % 15 == 0:\n        return "FizzBuzz"\n    if n % 3 == 0:\n'),
    "is_palindrome": ('text.replace(" ", "")', 'text.replace(" ", "").lower()'),
    "mean_and_spread": ("(x - m) for", "(x - m) ** 2 for"),
    "parse_age": ("age < 0 and age > 150", "age < 0 or age > 150"),
    "running_total": ("        yield total\n        total += x", "        total += x\n        yield total"),
    "second_largest": ("sorted(xs)", "sorted(set(xs))"),
    "word_lengths": ("len(sentence)", "len(word)"),
}


@pytest.fixture(scope="module")
def box():
    with Sandbox(slots=1) as sandbox:
        yield sandbox


def test_the_set_is_what_the_benchmark_says():
    programs = {p.stem for p in PROGRAMS.glob("*.py") if not p.name.startswith("test_")}
    assert programs == set(FIXES) and all((PROGRAMS / f"test_{name}.py").is_file() for name in programs)


@pytest.mark.parametrize("name", sorted(FIXES))
def test_each_program_fails_and_its_one_line_fix_passes(box, name):
    source = (PROGRAMS / f"{name}.py").read_text()
    tests = user_tests.read_tests(PROGRAMS / f"test_{name}.py")
    buggy, (old, new) = box.run([debugger.job_for(source, tests, name)])[0], FIXES[name]
    assert not buggy.passed and old in source
    fixed = box.run([debugger.job_for(source.replace(old, new), tests, name)])[0]
    assert fixed.passed, fixed.feedback()
