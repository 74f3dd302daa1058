"""The wire between host, zygote and job: the zygote's warm JSON encoder must write exactly what
json.dumps writes (the host parses it), and a job's body reaches its child whole whatever its size."""

from __future__ import annotations

import json

import pytest

from ledex_rl.problems.base import TestCase
from sandbox import Job, Sandbox
from sandbox.executor import json_line
from sandbox.zygote import to_json

VALUES = [
    {"i": 0, "values": [1, -2, 3.5, -0.0, 1e300, 5e-324, 10**40]},
    {"i": 1, "values": [float("nan"), float("inf"), float("-inf")]},
    {"i": 2, "values": ['é\n"\\\x00\u2028', "𝄞", ""]},
    {"i": 3, "values": [None, True, False, [], {}, [[{"t": "set", "v": [1, 2]}]]]},
    {"stage": "done", "n": 3},
    {"id": 7, "status": "exited", "signal": 0, "exit_code": None, "wall_ms": 1.25, "reaped": True, "wiped": True},
    {1: "int keys become strings", 2.5: "as do float keys"},
]


@pytest.mark.parametrize("value", VALUES)
def test_the_warm_encoder_writes_what_json_dumps_writes(value):
    assert to_json(value) == json.dumps(value)
    assert json.loads(to_json(value)) == json.loads(json.dumps(value))


@pytest.mark.parametrize("value", VALUES)
def test_the_host_reads_each_line_back_as_json_loads_would(value):
    assert json_line(to_json(value)) == json.loads(json.dumps(value))


@pytest.mark.parametrize("line", ["", "x", '{"i": 0}{"i": 1}', '{"i": 0} 1', '{"i": 0', "[1, 2]]", '"unterminated'])
def test_a_line_that_is_not_exactly_one_json_value_is_refused(line):
    with pytest.raises(ValueError):
        json_line(line)


def test_what_json_cannot_carry_is_refused_as_json_dumps_refuses_it():
    for value in ({"v": object()}, {"v": {1, 2}}, {(1, 2): "tuple key"}):
        with pytest.raises(TypeError):
            json.dumps(value)
        with pytest.raises(TypeError):
            to_json(value)


def test_bodies_larger_than_a_pipe_holds_reach_the_candidate_and_the_judge_whole():
    """The zygote moves a body into its child's pipe before the fork only as far as it fits; the rest,
    and the judge's body after it, must follow in order (a program and a judged test of ~300 KB each)."""
    padding = "#" + "x" * 99 + "\n"
    program = padding * 3000 + "def add(a, b):\n    return a + b\n" + f"SIZE = {len(padding) * 3000}\n"
    judged = padding * 3000 + "for i in range(5):\n    assert add(i, 1) == i + 1\n"
    tests = (TestCase(kind="assert", source="assert SIZE == 303000"), TestCase(kind="assert", source=judged))
    with Sandbox(slots=1) as box:
        right = box.run_one(Job(program, tests, entry_point="add"))
        wrong = box.run_one(Job(program.replace("a + b", "a - b"), tests, entry_point="add"))
        after = box.run_one(Job("def add(a, b):\n    return a + b\n", tests[1:], entry_point="add"))
    assert right.passed and [t.status for t in right.tests] == ["passed", "passed"]
    assert [t.status for t in wrong.tests] == ["passed", "failed"]
    assert after.passed  # the slot's next job reads its own header, not the rest of a body
