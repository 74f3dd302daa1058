"""Every problem source on small fixtures, and on the full MBPP files in ../shared/data when present."""

import ast
import json
import warnings

import pytest

from ledex_rl.config import ProblemSourceConfig
from ledex_rl.problems import SourceUnavailable, load_problems
from ledex_rl.problems.evalplus import NOT_COMPUTED, needs_expected_outputs

from .conftest import FIXTURES


def load(name, **kw):
    return load_problems(ProblemSourceConfig(name=name, **kw))


def test_humaneval_from_the_package():
    problems, report = load("humaneval")
    assert len(problems) == 164 and not report.skipped
    first = problems[0]
    assert first.task_id == "HumanEval/0" and first.entry_point == "has_close_elements"
    assert first.preamble == "from typing import List\n"
    assert all(t.kind == "assert" for t in first.tests) and len(first.tests) == 7
    assert first.reference_solution.startswith(first.prompt)
    # Checks with loops or helper variables stay whole.
    by_id = {p.task_id: p for p in problems}
    assert [t.kind for t in by_id["HumanEval/32"].tests] == ["script"]
    assert "def poly" in by_id["HumanEval/32"].preamble  # helper from the prompt, needed by the tests


def test_offset_and_limit_keep_train_and_eval_apart():
    train, _ = load("humaneval", limit=20)
    rest, _ = load("humaneval", offset=20)
    assert len(train) == 20 and len(rest) == 144
    assert not {p.task_id for p in train} & {p.task_id for p in rest}


def test_humaneval_malformed_rows_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "he.jsonl"
    good = {
        "task_id": "X/0",
        "prompt": "def f(x):\n",
        "canonical_solution": "    return x\n",
        "test": "def check(candidate):\n    assert candidate(1) == 1\n",
        "entry_point": "f",
    }
    rows = [
        json.dumps(good),
        "{oops",
        json.dumps({**good, "task_id": "X/1", "test": "def helper(): pass"}),
        json.dumps({k: v for k, v in good.items() if k != "entry_point"}),
    ]
    path.write_text("\n".join(rows) + "\n")
    problems, report = load("humaneval", path=str(path))
    assert [p.task_id for p in problems] == ["X/0"]
    assert len(report.skipped) == 3
    assert report.skipped[0].startswith(f"{path}:2: skipped malformed row: not valid JSON")
    assert "no `def check(candidate)`" in report.skipped[1] and f"{path}:3" in report.skipped[1]
    assert "missing field(s) entry_point" in report.skipped[2]


def test_mbpp_small_fixture_split_and_bad_rows():
    path = str(FIXTURES / "handmade_mbpp_rows.jsonl")
    train, report = load("mbpp", path=path, split="train")
    assert [p.task_id for p in train] == ["Mbpp/601"]
    assert train[0].entry_point == "add" and "\r" not in train[0].reference_solution
    assert len(report.skipped) == 2  # 602 has no tests, 603's test is not an assert
    assert any("missing field(s) test_list" in s for s in report.skipped)
    assert any("not a single assert statement" in s for s in report.skipped)
    test, _ = load("mbpp", path=path, split="test")
    assert [p.task_id for p in test] == ["Mbpp/11"]


def test_apps_fixture_io_and_call_based():
    problems, report = load("apps", path=str(FIXTURES / "apps.jsonl"), split="train")
    assert [p.task_id for p in problems] == ["APPS/1", "APPS/2"]
    io, call = problems
    assert io.io_based and io.tests[1].stdin == "5 7\n" and io.tests[1].expected_stdout == "12\n"
    assert call.entry_point == "square" and call.tests[0].kind == "call"
    assert call.tests[1].args == (4,) and call.tests[1].expected == 16
    assert len(report.skipped) == 3
    assert any("input_output is not valid JSON" in s for s in report.skipped)
    assert any("1 inputs but 0 outputs" in s for s in report.skipped)


def test_codecontests_fixture():
    problems, report = load("codecontests", path=str(FIXTURES / "codecontests.jsonl"), split="train")
    (p,) = problems
    assert len(p.tests) == 3 and [t.group for t in p.tests] == ["base", "plus", "plus"]
    assert p.reference_solution == "print(sum(map(int, input().split())))"  # the Python 3 one
    assert "no tests" in report.skipped[0]


def test_missing_file_and_unreachable_hub_are_clear_errors(tmp_path):
    with pytest.raises(SourceUnavailable, match="does not exist; fix its `path`"):
        load("apps", path=str(tmp_path / "nope.jsonl"))
    with pytest.raises(SourceUnavailable, match="cannot load 'codeparrot/apps' from the Hugging Face hub"):
        load("apps", split="train")


# --- the real MBPP files, when ../shared/data is present ------------------------------------------------


def test_mbpp_full_and_splits(shared_data):
    path = str(shared_data / "mbpp" / "mbpp.jsonl")
    sizes = {split: len(load("mbpp", path=path, split=split)[0]) for split in ("train", "validation", "test", "prompt")}
    assert sizes == {"train": 374, "validation": 90, "test": 500, "prompt": 10}
    everything, report = load("mbpp", path=path, split="all")
    assert len(everything) == 974 and not report.skipped
    for problem in everything:  # every reference solution's tests are well formed
        with warnings.catch_warnings():  # some MBPP solutions use "\d" in plain strings
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            compile(problem.reference_solution, problem.task_id, "exec")
        for test in problem.tests:
            node = ast.parse(test.source)
            assert isinstance(node.body[0], ast.Assert)
            assert problem.entry_point in test.source
    assert {p.task_id: p.entry_point for p in everything}["Mbpp/126"] == "sum"  # shadows the builtin


def test_mbpp_sanitized(shared_data):
    problems, report = load("mbpp-sanitized", path=str(shared_data / "mbpp" / "sanitized-mbpp.json"), split="all")
    assert len(problems) == 427 and not report.skipped


def test_mbpp_plus_prerelease(shared_data):
    path = str(shared_data / "mbpp-plus-prerelease" / "MbppPlus.jsonl")
    problems, report = load("mbpp-plus", path=path, split="all")
    assert len(problems) == 399 and not report.skipped
    test_split, _ = load("mbpp-plus", path=path, split="test")
    assert len(test_split) == 239  # the paper's MBPP+ size (the paper's section 4.1)
    first = problems[0]
    plus = [t for t in first.tests if t.group == "plus"]
    assert len(plus) > 100 and all(t.kind == "call" and t.expected is NOT_COMPUTED for t in plus)
    assert needs_expected_outputs(first)
