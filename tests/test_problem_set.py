"""The problem set saved once per run (ledex_rl/problem_set.py): values keep their types, each stage gets
its sources' problems, a set made from other sources is not used, and without one the sources load."""

import dataclasses
import math

from ledex_rl import problem_set
from ledex_rl.config import ProblemSourceConfig
from ledex_rl.problems import load_problems
from ledex_rl.problems.base import Problem, TestCase

SFT_ONLY = ProblemSourceConfig(name="humaneval", limit=2, stages=("sft",))
RL_TOO = ProblemSourceConfig(name="humaneval", offset=2, limit=2)


def evalplus_like(task_id: str) -> Problem:
    tests = (
        TestCase("call", args=((1, 2), {3}, b"x"), expected=(frozenset({1}), [1.5, float("inf")], {(1, 2): None})),
        TestCase("call", args=(1,), expected=float("nan"), atol=1e-6, group="plus"),
        TestCase("assert", source="assert f(1) == 2"),
    )
    return Problem(task_id, "mbpp_plus", "Write f.", "f", "def f(x):\n    return x\n", tests, metadata={"mbpp_task_id": 2})


def test_values_keep_their_types_and_each_stage_gets_its_sources_problems(tmp_path):
    first, second = evalplus_like("a"), evalplus_like("b")
    problem_set.save(tmp_path, [SFT_ONLY, RL_TOO], [first, second], [("sft",), ("sft", "rl")])
    assert [p.task_id for p in problem_set.load(tmp_path, [SFT_ONLY, RL_TOO], "sft")] == ["a", "b"]
    (loaded,) = problem_set.load(tmp_path, [SFT_ONLY, RL_TOO], "rl")
    assert dataclasses.replace(loaded, tests=loaded.tests[:1] + loaded.tests[2:]) == dataclasses.replace(
        second, tests=second.tests[:1] + second.tests[2:]
    )
    assert type(loaded.tests[0].args[0]) is tuple and type(loaded.tests[0].expected[0]) is frozenset
    assert math.isnan(loaded.tests[1].expected) and loaded.tests[1].group == "plus"


def test_a_set_made_from_other_sources_is_not_used(tmp_path):
    problem_set.save(tmp_path, [SFT_ONLY, RL_TOO], [evalplus_like("a")], [("sft", "rl")])
    assert problem_set.load(tmp_path, [SFT_ONLY, ProblemSourceConfig(name="humaneval", offset=2, limit=3)], "rl") is None
    assert problem_set.load(tmp_path / "nothing-here", [SFT_ONLY, RL_TOO], "rl") is None


def test_stages_read_the_saved_set_and_load_the_sources_without_one(tmp_path):
    sources = [SFT_ONLY, RL_TOO]
    assert problem_set.for_stage(tmp_path, sources, "rl") == load_problems(RL_TOO)[0]  # nothing saved: loaded
    problem_set.save(tmp_path, sources, [evalplus_like("saved")], [("rl",)])
    assert [p.task_id for p in problem_set.for_stage(tmp_path, sources, "rl")] == ["saved"]
