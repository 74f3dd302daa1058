"""`ledex-rl debug`: the tests file reader, the fix merger, and the command end to end with the real
sandbox: with a deterministic scripted model (replaced only inside this file's fixture) and, marked
slow, with SmolLM2 on a real buggy file."""

import ast

import pytest
from click.testing import CliRunner

from ledex_rl import debugger, user_tests
from ledex_rl.cli import main

BUGGY = '''import math


def mean(xs):
    """The arithmetic mean."""
    return sum(xs) / (len(xs) + 1)


def spread(xs):
    return max(xs) - min(xs)
'''

TESTS = """from math import isclose

HALF = 0.5

assert mean([1, 2, 3]) == 2
assert mean([HALF, HALF]) == HALF


def test_single():
    assert mean([5]) == 5


if __name__ == "__main__":
    test_single()
"""

FIX = "The divisor counts one element too many.\n\n```python\ndef mean(xs):\n    return sum(xs) / len(xs)\n```"
WRONG_FIX = "The sum is wrong.\n\n```python\ndef mean(xs):\n    return sum(xs) / (len(xs) + 2)\n```"


def test_read_tests_splits_asserts_test_functions_and_setup(tmp_path):
    (tmp_path / "t.py").write_text(TESTS)
    tests = user_tests.read_tests(tmp_path / "t.py")
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
        (["debug", str(tmp_path / "p.py"), "--tests", str(tmp_path / "empty.py")], "no tests to run in"),
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
    result = CliRunner().invoke(
        main, ["debug", str(tmp_path / "p.py"), "--tests", str(tmp_path / "t.py"), "--model", str(tmp_path / "nope")]
    )
    assert result.exit_code == 2
    assert "error: model folder" in result.output and "does not exist; fix --model" in result.output  # the flag typed
    assert "2 of 3 tests pass" not in result.output  # the tests ran first: 0 of 3 pass
    assert "0 of 3 tests pass" in result.output


def test_merge_fix_replaces_only_the_functions_the_model_rewrote():
    merged = debugger.merge_fix(
        BUGGY, "import statistics\n\ndef mean(xs):\n    return statistics.fmean(xs)\n\ndef extra():\n    return 1\n"
    )
    assert merged.startswith("import math\nimport statistics\n")
    assert "statistics.fmean" in merged and "(len(xs) + 1)" not in merged
    assert "def spread(xs):" in merged and merged.rstrip().endswith("return 1")


MODULE = '''"""Small statistics helpers."""
from functools import lru_cache

SCALE = 1


@lru_cache(maxsize=None)
def mean(xs):
    """The arithmetic mean, times SCALE."""
    return SCALE * sum(xs) / (len(xs) + 1)


# spread: max - min
def spread(xs):
    return max(xs) - min(xs)
'''


def test_merge_fix_keeps_the_files_docstrings_imports_decorators_and_comments():
    """The usual answer: only the changed function, without its docstring or decorator."""
    merged = debugger.merge_fix(MODULE, "def mean(xs):\n    return SCALE * sum(xs) / len(xs)\n")
    tree = ast.parse(merged)
    assert ast.get_docstring(tree) == "Small statistics helpers."
    mean = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "mean")
    assert ast.get_docstring(mean) == "The arithmetic mean, times SCALE."
    assert [ast.unparse(d) for d in mean.decorator_list] == ["lru_cache(maxsize=None)"]
    assert "return SCALE * sum(xs) / len(xs)" in merged and "(len(xs) + 1)" not in merged
    assert "from functools import lru_cache" in merged and "SCALE = 1" in merged and "# spread: max - min" in merged
    assert merged == MODULE.replace("sum(xs) / (len(xs) + 1)", "sum(xs) / len(xs)")  # nothing else moved


def test_merge_fix_puts_new_imports_and_constants_below_the_header_and_drops_example_calls():
    answer = (
        'import statistics\n\nSCALE = 2\nOFFSET = 0\n\ndef mean(xs):\n    """Mean."""\n'
        "    return SCALE * statistics.fmean(xs) + OFFSET\n\ndef median(xs):\n    return statistics.median(xs)\n\n"
        "print(mean([1, 2]))\nif __name__ == '__main__':\n    print(median([1]))\n"
    )
    merged = debugger.merge_fix(MODULE, answer)
    tree = ast.parse(merged)
    assert ast.get_docstring(tree) == "Small statistics helpers."  # a new import did not push the docstring down
    assert merged.index("import statistics") < merged.index("OFFSET = 0") < merged.index("def mean")
    assert "SCALE = 2" in merged and "SCALE = 1" not in merged  # a constant of the same name is replaced in place
    mean = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "mean")
    assert ast.get_docstring(mean) == "Mean."  # the answer's own docstring wins
    assert merged.rstrip().endswith("return statistics.median(xs)") and "print(" not in merged
    namespace = {}
    exec(compile(merged, "merged", "exec"), namespace)
    assert namespace["mean"]((1, 2)) == 3 and namespace["spread"]([1, 4]) == 3


def test_merge_fix_takes_code_without_definitions_as_it_is():
    script = "x = int(input())\nprint(x + 1)\n"
    assert debugger.merge_fix("x = int(input())\nprint(x)\n", script) == script
    assert debugger.merge_fix(MODULE, "not python (") == "not python ("


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

    def load(cfg, model, endpoint):
        fixer.loads += 1
        return fixer, lambda: None

    fixer.loads = 0
    monkeypatch.setattr(debugger, "load_fixer", load)
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
    assert "... round 1: asking scripted (up to 512 new tokens)" in out and "... round 2: running the tests on the proposed fix" in out
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


def test_an_unchanged_answer_is_named_and_not_rerun():
    from sandbox import Sandbox

    tests = user_tests.parse_tests(TESTS)
    calls = []
    with Sandbox(slots=1) as box:

        def run_jobs(jobs):
            calls.append(jobs)
            return box.run(jobs)

        same = 'I see no bug.\n\n```python\ndef mean(xs):\n    """The arithmetic mean."""\n    return sum(xs) / (len(xs) + 1)\n```'
        outcome = debugger.debug(BUGGY, tests, ScriptedFixer([same, FIX]), run_jobs, debugger.DebugSettings(rounds=2))
    assert [r.unchanged for r in outcome.rounds] == [True, False] and outcome.rounds[0].diff == ""
    assert len(calls) == 2 and outcome.passed  # the original and round 2's fix: round 1 was not rerun


def test_debug_json_reports_the_rounds_for_ci(tmp_path, scripted):
    import json

    program, tests = tmp_path / "stats.py", tmp_path / "test_stats.py"
    program.write_text(BUGGY)
    tests.write_text(TESTS)
    result = CliRunner().invoke(main, ["debug", str(program), "--tests", str(tests), "--json", "--out", str(tmp_path / "fixed.py")])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.output)["programs"]  # nothing but the JSON on stdout
    assert (report["tests"], report["passed_before"], report["fixed"], report["written"]) == (3, 0, True, str(tmp_path / "fixed.py"))
    assert [r["passed"] for r in report["rounds"]] == [False, True] and "len(xs) + 2" in report["rounds"][0]["diff"]
    assert report["code"] == (tmp_path / "fixed.py").read_text() and "def spread" in report["code"]


def test_several_programs_share_one_model_and_find_their_tests(tmp_path, scripted):
    (tmp_path / "stats.py").write_text(BUGGY)
    (tmp_path / "test_stats.py").write_text(TESTS)
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "stats.py").write_text(BUGGY.replace("(len(xs) + 1)", "len(xs)"))
    (tmp_path / "ok" / "tests").mkdir()
    (tmp_path / "ok" / "tests" / "test_stats.py").write_text(TESTS)
    result = CliRunner().invoke(main, ["debug", str(tmp_path / "stats.py"), "sandbox.test_timeout_s=2", str(tmp_path / "ok" / "stats.py")])
    assert result.exit_code == 0, result.output
    assert "ok/stats.py: 3 of 3 tests pass" in result.output and "2 of 2 programs pass their tests (1 fixed)" in result.output
    assert scripted.loads == 1  # one model for every program
    mismatch = CliRunner().invoke(
        main, ["debug", str(tmp_path / "stats.py"), str(tmp_path / "ok" / "stats.py"), "--tests", str(tmp_path / "test_stats.py")]
    )
    assert mismatch.exit_code == 2 and "1 --tests for 2 programs: pass one --tests per program" in mismatch.output
    (tmp_path / "lonely.py").write_text(BUGGY)
    missing = CliRunner().invoke(main, ["debug", str(tmp_path / "lonely.py")])
    assert missing.exit_code == 2 and "no tests found for" in missing.output and "test_lonely.py beside it" in missing.output


def test_the_session_api_fixes_a_program_from_text(scripted):
    with debugger.Session(overrides=["sandbox.test_timeout_s=2"], settings=debugger.DebugSettings(rounds=2)) as session:
        outcome = session.fix(BUGGY, TESTS, module="stats")
        again = session.fix(outcome.code, TESTS)
    assert outcome.passed and len(outcome.rounds) == 2 and outcome.first.num_passed == 0
    assert "return sum(xs) / len(xs)" in outcome.code and '"""The arithmetic mean."""' in outcome.code
    assert again.passed and again.rounds == [] and scripted.loads == 1


def test_debug_names_the_limit_a_test_ran_into_and_takes_overrides(tmp_path, scripted):
    program, tests = tmp_path / "stats.py", tmp_path / "test_stats.py"
    program.write_text("def mean(xs):\n    while True:\n        pass\n")
    tests.write_text("assert mean([2]) == 2\n")
    result = CliRunner().invoke(
        main, ["debug", str(program), "--tests", str(tests), "--rounds", "1", "sandbox.test_timeout_s=0.5", "sandbox.job_timeout_s=2"]
    )
    assert result.exit_code == 1 and "0 of 1 tests pass" in result.output, result.output  # round 1's scripted fix is wrong
    assert "limits: 0.5 s per test (sandbox.test_timeout_s), 2 s per run (sandbox.job_timeout_s)" in result.output


def test_a_prompt_too_long_for_the_model_is_a_one_line_error_before_generating(tiny_model):
    from transformers import AutoTokenizer

    from ledex_rl.teachers import EngineTeacher, PromptTooLong

    teacher = EngineTeacher(None, AutoTokenizer.from_pretrained(tiny_model), "tiny", "chat", max_model_len=256)
    conversation = [{"role": "user", "content": "fix it " * 20}]
    teacher.check_fits(conversation, 64)
    with pytest.raises(PromptTooLong, match=r"the prompt is \d+ tokens and the answer may take 200, over the model's context of 256"):
        teacher.check_fits(conversation, 200)
    with pytest.raises(PromptTooLong):
        teacher.check_fits([{"role": "user", "content": "assert f(1) == 2\n" * 100}], 1)


@pytest.mark.slow
def test_debug_with_smollm2_on_a_real_buggy_file(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    program, tests = tmp_path / "stats.py", tmp_path / "test_stats.py"
    program.write_text(BUGGY)
    tests.write_text(TESTS)
    result = CliRunner().invoke(
        main,
        [
            "debug",
            str(program),
            "--tests",
            str(tests),
            "--rounds",
            "2",
            "--max-new-tokens",
            "256",
            "--config",
            os.path.join(os.path.dirname(__file__), "..", "configs", "default.yaml"),
            "--out",
            str(tmp_path / "fixed.py"),
            "--model",
            "smollm2-135m-instruct",
        ],
    )
    out = result.output
    assert result.exit_code in (0, 1), out
    print(out)
    assert "0 of 3 tests pass" in out and "asking " in out and "to explain and fix it" in out
    assert "RolloutEngine pid" not in out  # the engine's own logs are not streamed into the user's terminal
    assert "round 1: explanation" in out and "round 1: proposed fix" in out
    assert ("\nfixed after" in out) == (result.exit_code == 0) == (tmp_path / "fixed.py").is_file()
    assert program.read_text() == BUGGY
