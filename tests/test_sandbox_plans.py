"""Pure parts of the sandbox: splitting asserts, decoding values, judging records (no processes)."""

import ast

import pytest

from ledex_rl.problems.base import TestCase
from sandbox.plans import judge, make_plan, same_output, split_assert
from sandbox.values import MalformedValue, decode, equal


@pytest.mark.parametrize(
    "source, offloaded, residual",
    [
        ("assert add(1, 2) == 3", ["add(1, 2)"], "__v0 == 3"),
        ("assert set(f((3, 4), (4, 5))) == set((4,))", ["f((3, 4), (4, 5))"], "set(__v0) == set((4,))"),
        ("assert math.isclose(area(3), 15.58, rel_tol=0.001)", ["area(3)"], "math.isclose(__v0, 15.58, rel_tol=0.001)"),
        ("assert abs(candidate(2.0) - 1.5) < 1e-06", ["candidate(2.0)"], "abs(__v0 - 1.5) < 1e-06"),
        ("assert not is_prime(4)", ["is_prime(4)"], "not __v0"),
        ("assert f(1) == f(2)", ["f(1)", "f(2)"], "__v0 == __v1"),
        ("assert f('a').upper() == 'A'", ["f('a').upper()"], "__v0 == 'A'"),
        ("assert f([Pair(1, 2)], 1) == 1", ["f([Pair(1, 2)], 1)"], "__v0 == 1"),
        ("assert candidate(3) == True, 'message'", ["candidate(3)"], "__v0 == True"),
    ],
)
def test_split_assert(source, offloaded, residual):
    split = split_assert(source)
    assert split.exprs == offloaded
    assert ast.unparse(split.residual) == residual


@pytest.mark.parametrize(
    "source",
    [
        "assert all(f(x) == x for x in range(3))",
        "assert (lambda: f(1))() == 1",
        "print(f(1))",
        "x = 1",
        "assert True",
        "assert (y := f(1)) == 1",
    ],
)
def test_unsplittable_asserts_are_judged(source):
    assert split_assert(source) is None
    assert make_plan(TestCase(kind="assert", source=source), "f").wire["kind"] == "judged"


@pytest.mark.parametrize(
    "source",
    [
        "assert f(1) == sys.getsizeof((1,))",  # MBPP task 596: the expected value from a module
        "assert isclose(f(1), 3.5)",  # the verdict from a name the setup imports
        "assert f(1) == Counter('aab')",
        "assert f(1) == hash('a')",  # a builtin the parent does not evaluate
        "assert f(1) == EXPECTED",  # a constant of the setup
        "assert [f(1)][0] == 1",
    ],
)
def test_asserts_with_values_that_are_not_the_programs_answers_are_judged(source):
    """Only what starts from the program's own names is evaluated in its process: an expected value or
    a verdict computed there from a builtin, a module or a setup's name would be the program's to choose."""
    setup = "from math import isclose\nfrom collections import Counter\nEXPECTED = 3"
    assert split_assert(source) is not None
    assert make_plan(TestCase(kind="assert", source=source), "f", setup).wire["kind"] == "judged"
    for own in ("assert f(1).real == 1", "assert candidate(1) == 1", "assert f(1) == g(2)", "assert f(1) == SIZE"):
        assert make_plan(TestCase(kind="assert", source=own), "f", setup).wire["kind"] == "eval", own
    assert make_plan(TestCase(kind="assert", source="assert sum(1, 2) == 3"), "sum").wire["kind"] == "judged"  # MBPP task 126


def test_expected_values_never_go_on_the_wire():
    plan = make_plan(TestCase(kind="assert", source="assert add(1, 2) == 98765"), "add")
    assert "98765" not in repr(plan.wire)
    call = make_plan(TestCase(kind="call", args=(1, 2), expected=98765), "add")
    assert "98765" not in repr(call.wire)
    io = make_plan(TestCase(kind="io", stdin="1 2\n", expected_stdout="98765\n"), "")
    assert "98765" not in repr(io.wire)


def test_decode_rebuilds_exact_types():
    wire = {
        "t": "tuple",
        "v": [1, {"t": "set", "v": [2]}, {"t": "dict", "v": [[{"t": "tuple", "v": [1]}, "x"]]}, {"t": "float", "v": "nan"}],
    }
    value = decode(wire)
    assert value[:3] == (1, {2}, {(1,): "x"}) and value[3] != value[3]


@pytest.mark.parametrize(
    "bad", [{"t": "evil", "v": 1}, {"t": "set", "v": [[1]]}, {"t": "dict", "v": [[[1], 2]]}, {"x": 1}, {"t": "tuple", "v": 3}]
)
def test_decode_rejects_malformed(bad):
    with pytest.raises(MalformedValue):
        decode(bad)


def test_equal_with_float_tolerance():
    assert equal([1.0000001, (2, 3.0)], [1.0, (2, 3.0)])  # EvalPlus default 1e-6 for floats
    assert not equal([1.1], [1.0])
    assert equal(0.30000000000000004, 0.3)
    assert not equal((1, 2), [1, 2])
    assert equal(1.05, 1.0, atol=0.1)


def test_judge_assert_pass_fail_and_error():
    plan = make_plan(TestCase(kind="assert", source="assert add(1, 2) == 3"), "add")
    assert judge(plan, {"i": 0, "values": [3]}, "add").status == "passed"
    failed = judge(plan, {"i": 0, "values": [-1]}, "add")
    assert failed.status == "failed" and failed.message == "assert add(1, 2) == 3 failed: add(1, 2) returned -1"
    raised = judge(plan, {"i": 0, "error": "ZeroDivisionError", "message": "ZeroDivisionError: division by zero"}, "add")
    assert raised.status == "error" and "division by zero" in raised.message
    assert judge(plan, None, "add").status == "error"  # no record is never a pass
    assert judge(plan, {"i": 0, "ok": True}, "add").status == "error"  # a forged script-style record
    assert judge(plan, {"i": 0, "values": [3, 3]}, "add").status == "error"
    assert judge(plan, {"i": 0, "error": "unserializable", "message": "a __main__.E object"}, "add").status == "failed"


def test_judge_tuple_versus_list_follows_python():
    plan = make_plan(TestCase(kind="assert", source="assert f() == (4, 5)"), "f")
    assert judge(plan, {"i": 0, "values": [{"t": "tuple", "v": [4, 5]}]}, "f").status == "passed"
    assert judge(plan, {"i": 0, "values": [[4, 5]]}, "f").status == "failed"


def test_judge_call_and_io():
    call = make_plan(TestCase(kind="call", args=([1, 2],), expected=3.0, atol=0.0), "f")
    assert judge(call, {"i": 0, "values": [3.0000001]}, "f").status == "passed"
    assert "got 4" in judge(call, {"i": 0, "values": [4]}, "f").message
    io = make_plan(TestCase(kind="io", stdin="1 2\n", expected_stdout="3\n"), "")
    assert judge(io, {"i": 0, "values": ["3   \n\n"]}, "").status == "passed"
    assert judge(io, {"i": 0, "values": ["4\n"]}, "").status == "failed"


def test_same_output_normalisation():
    assert same_output("1 2\n3\n", "1 2\n3")
    assert same_output("1  2\n3", "1 2 3")  # token fallback
    assert not same_output("1 2", "1 3")
    assert not same_output(None, "")
