"""`ledex-rl debug`: the tests file reader, the fix merger, and the command end to end with the real
sandbox: with a deterministic scripted model (replaced only inside this file's fixture) and, marked
slow, with SmolLM2 on a real buggy file."""

import pytest
from click.testing import CliRunner

from ledex_rl import debugger
from ledex_rl.cli import main

BUGGY = '''import math


def mean(xs):
    """The arithmetic mean."""
    return sum(xs) / (len(xs) + 1)


def spread(xs):
    return max(xs) - min(xs)
'''

TESTS = '''from math import isclose

HALF = 0.5

assert mean([1, 2, 3]) == 2
assert mean([HALF, HALF]) == HALF


def test_single():
    assert mean([5]) == 5


if __name__ == "__main__":
    test_single()
'''

FIX = "The divisor counts one element too many.\n\n```python\ndef mean(xs):\n    return sum(xs) / len(xs)\n```"
WRONG_FIX = "The sum is wrong.\n\n```python\ndef mean(xs):\n    return sum(xs) / (len(xs) + 2)\n```"


def test_read_tests_splits_asserts_test_functions_and_setup(tmp_path):
    (tmp_path / "t.py").write_text(TESTS)
    tests = debugger.read_tests(tmp_path / "t.py")
    assert [t.kind for t in tests.tests] == ["assert", "assert", "script"]
    assert tests.tests[2].source == "test_single()"
    assert "HALF = 0.5" in tests.setup and "def test_single" in tests.setup and "__main__" not in tests.setup
    assert debugger.entry_point(BUGGY, TESTS) == "mean"


def test_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "p.py").write_text(BUGGY)
    (tmp_path / "t.py").write_text("assert mean([1]) == 1\nassert mean(\n")
    (tmp_path / "empty.py").write_text("x = 1\n")
    runner = CliRunner()
    cases = [
        (["debug", str(tmp_path / "missing.py"), "--tests", str(tmp_path / "t.py")], "program file"),
        (["debug", str(tmp_path / "p.py"), "--tests", str(tmp_path / "t.py")], "t.py:2: syntax error in the tests"),
        (["debug", str(tmp_path / "p.py"), "--tests", str(tmp_path / "empty.py")], "no tests found"),
    ]
    for args, message in cases:
        result = runner.invoke(main, args)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], result.output
    for flag in ("--rounds", "--max-new-tokens"):  # checked by click before anything starts: its usage error names the flag
        result = runner.invoke(main, ["debug", str(tmp_path / "p.py"), "--tests", str(tmp_path / "t.py"), flag, "0"])
        assert result.exit_code == 2 and f"Invalid value for '{flag}': 0 is not in the range x>=1" in result.output


def test_a_model_that_cannot_be_loaded_is_a_clear_error(tmp_path):
    (tmp_path / "p.py").write_text(BUGGY)
    (tmp_path / "t.py").write_text(TESTS)
    result = CliRunner().invoke(main, ["debug", str(tmp_path / "p.py"), "--tests", str(tmp_path / "t.py"), "--model", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "error: model folder" in result.output and "does not exist; fix --model" in result.output  # the flag typed
    assert "2 of 3 tests pass" not in result.output  # the tests ran first: 0 of 3 pass
    assert "0 of 3 tests pass" in result.output


def test_merge_fix_replaces_only_the_functions_the_model_rewrote():
    merged = debugger.merge_fix(BUGGY, "import statistics\n\ndef mean(xs):\n    return statistics.fmean(xs)\n\ndef extra():\n    return 1\n")
    assert merged.startswith("import statistics\nimport math")
    assert "statistics.fmean" in merged and "(len(xs) + 1)" not in merged
    assert "def spread(xs):" in merged and merged.rstrip().endswith("return 1")
    whole = "def mean(xs):\n    return 0\n\ndef spread(xs):\n    return 0\n"
    assert debugger.merge_fix(BUGGY, whole) == whole  # a full rewrite is taken as it is


class ScriptedFixer:
    name = "scripted"

    def __init__(self, answers):
        self.answers, self.conversations = list(answers), []

    def complete(self, conversations, n, temperature, max_tokens, seeds):
        self.conversations += conversations
        return [[self.answers.pop(0)] for _ in conversations]


@pytest.fixture
def scripted(monkeypatch):
    """Replaces the model, only here: round 1 proposes a wrong fix, round 2 the right one."""
    fixer = ScriptedFixer([WRONG_FIX, FIX])
    monkeypatch.setattr(debugger, "load_fixer", lambda cfg, model, endpoint: (fixer, lambda: None))
    return fixer


def test_debug_fixes_a_seeded_bug_and_writes_only_when_asked(tmp_path, scripted):
    program, tests = tmp_path / "stats.py", tmp_path / "test_stats.py"
    program.write_text(BUGGY)
    tests.write_text(TESTS)
    result = CliRunner().invoke(main, ["debug", str(program), "--tests", str(tests), "--rounds", "3", "--write"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "0 of 3 tests pass" in out and "assert mean([1, 2, 3]) == 2" in out
    assert "round 1: explanation" in out and "The sum is wrong." in out
    assert "round 1: still failing" in out and "round 2: all tests pass" in out
    assert "-    return sum(xs) / (len(xs) + 1)" in out and "+    return sum(xs) / len(xs)" in out
    assert "fixed after 2 round(s); wrote" in out
    fixed = program.read_text()
    assert "return sum(xs) / len(xs)" in fixed and "def spread(xs):" in fixed and "import math" in fixed
    assert (tmp_path / "stats.py.bak").read_text() == BUGGY
    # round 2 was asked about round 1's code and its feedback, not the original
    second = scripted.conversations[1]
    assert "(len(xs) + 2)" in second[1]["content"] and "tests passed" in second[2]["content"]


def test_debug_leaves_the_file_alone_without_write(tmp_path, scripted):
    program, tests = tmp_path / "stats.py", tmp_path / "test_stats.py"
    program.write_text(BUGGY)
    tests.write_text(TESTS)
    result = CliRunner().invoke(main, ["debug", str(program), "--tests", str(tests), "--rounds", "1"])
    assert result.exit_code == 1 and "not fixed after 1 round(s)" in result.output
    assert program.read_text() == BUGGY


@pytest.mark.slow
def test_debug_with_smollm2_on_a_real_buggy_file(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    program, tests = tmp_path / "stats.py", tmp_path / "test_stats.py"
    program.write_text(BUGGY)
    tests.write_text(TESTS)
    result = CliRunner().invoke(main, ["debug", str(program), "--tests", str(tests), "--rounds", "2", "--max-new-tokens", "256",
                                       "--config", os.path.join(os.path.dirname(__file__), "..", "configs", "default.yaml"),
                                       "--out", str(tmp_path / "fixed.py"), "--model", "smollm2-135m-instruct"])
    out = result.output
    assert result.exit_code in (0, 1), out
    print(out)
    assert "0 of 3 tests pass" in out and "asking " in out and "to explain and fix it" in out
    assert "RolloutEngine pid" not in out  # the engine's own logs are not streamed into the user's terminal
    assert "round 1: explanation" in out and "round 1: proposed fix" in out
    assert ("\nfixed after" in out) == (result.exit_code == 0) == (tmp_path / "fixed.py").is_file()
    assert program.read_text() == BUGGY
