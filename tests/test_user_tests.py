"""A user's tests file, pytest-style, read by ledex_rl/user_tests.py and run in the real sandbox: every
verdict still computed where the program cannot reach it (top-level asserts in the parent, test
functions in the judge), with the feedback a user and a model can act on."""

from dataclasses import replace

import pytest

from ledex_rl import debugger, user_tests
from sandbox import Sandbox

PROGRAM = '''"""Small helpers."""


def mean(xs):
    return sum(xs) / (len(xs) + 1)


def add(a, b):
    return a + b


def evens(n):
    for i in range(n):
        if i % 2 == 0:
            yield i


def parse(text):
    if not text.isdigit():
        raise ValueError(f"not a number: {text}")
    return int(text)
'''

TESTS = """import pytest
from pytest import approx

from helpers import add, evens
import helpers

assert list(evens(5)) == [0, 2, 4]
assert sorted(evens(5), reverse=True) == [4, 2, 0]
assert helpers.mean([1, 2]) == approx(1.5)


@pytest.mark.parametrize("a, b, total", [(1, 2, 3), (2, 2, 4), (-1, 1, 0)])
def test_add(a, b, total):
    assert add(a, b) == total


@pytest.mark.parametrize("text", [pytest.param("7"), "12"])
def test_parse_cases(text):
    assert helpers.parse(text) == int(text)


def test_parse_rejects_words():
    with pytest.raises(ValueError, match="not a number"):
        helpers.parse("seven")


class TestEvens:
    def test_items(self):
        assert [i * 10 for i in evens(4)] == [0, 20]

    def test_mean(self):
        got = helpers.mean([5, 7])
        assert got == 6


def test_uses_a_fixture(tmp_path):
    assert tmp_path


@pytest.mark.skip(reason="slow")
def test_skipped():
    assert False


if __name__ == "__main__":
    test_add(1, 2, 3)
"""


def test_pytest_style_tests_are_read_one_test_per_case():
    tests = user_tests.parse_tests(TESTS)
    sources = [t.source for t in tests.tests]
    assert sources[:3] == [
        "assert list(evens(5)) == [0, 2, 4]",
        "assert sorted(evens(5), reverse=True) == [4, 2, 0]",
        "assert helpers.mean([1, 2]) == approx(1.5)",
    ]
    assert [t.kind for t in tests.tests[:3]] == ["assert", "assert", "script"]  # approx: run whole by the judge
    assert sources[3:6] == ["test_add(a=1, b=2, total=3)", "test_add(a=2, b=2, total=4)", "test_add(a=-1, b=1, total=0)"]
    assert sources[6:] == ["test_parse_cases()", "test_parse_rejects_words()", "TestEvens().test_items()", "TestEvens().test_mean()"]
    assert len(tests.skipped) == 2
    assert "test_uses_a_fixture: needs the fixture(s) tmp_path" in tests.skipped[0] and "test_skipped: marked" in tests.skipped[1]
    # line numbers are the file's own: only the top-level asserts and the __main__ block are blanked
    assert tests.setup.splitlines()[12] == "def test_add(a, b, total):" and "evens(5)" not in tests.setup


@pytest.fixture(scope="module")
def box():
    with Sandbox(slots=1) as sandbox:
        yield sandbox


def run(box, program, tests_source):
    tests = user_tests.parse_tests(tests_source)
    return box.run([debugger.job_for(program, tests, module="helpers")])[0]


def test_a_pytest_file_runs_against_the_program_with_verdicts_outside(box):
    result = run(box, PROGRAM, TESTS)
    verdicts = dict(zip([t.source for t in user_tests.parse_tests(TESTS).tests], (t.status for t in result.tests)))
    failing = {source for source, status in verdicts.items() if status != "passed"}
    # mean divides by len + 1: its two tests fail; everything else (generators, parametrize, raises) passes
    assert failing == {"assert helpers.mean([1, 2]) == approx(1.5)", "TestEvens().test_mean()"}, result.feedback()
    fixed = PROGRAM.replace("(len(xs) + 1)", "len(xs)")
    assert run(box, fixed, TESTS).passed


def test_a_failing_test_function_reports_its_line_and_operands(box):
    result = run(box, PROGRAM, TESTS)
    message = next(t.message for t in result.tests if "test_mean" in t.message)
    line = TESTS.splitlines().index("        assert got == 6") + 1  # the tests file's own numbering
    assert f"failed at line {line} (assert got == 6): 4.0 == 6 is false" in message, message
    broken = PROGRAM.replace("raise ValueError", "return -1  #")
    message = next(t.message for t in run(box, broken, TESTS).tests if "test_parse_rejects_words" in t.message)
    line = TESTS.splitlines().index('    with pytest.raises(ValueError, match="not a number"):') + 1
    assert "DID NOT RAISE ValueError" in message and f"line {line}" in message, message


def test_an_unparametrized_forgery_still_fails(box):
    """The judge, not the program, runs the test functions: a program that patches pytest's helpers or the
    assert machinery in its own process changes nothing."""
    forged = (
        PROGRAM
        + """
import pytest, builtins
pytest.approx = lambda *a, **k: type("Eq", (), {"__eq__": lambda s, o: True})()
builtins.AssertionError = type("Quiet", (Exception,), {})
"""
    )
    result = run(box, forged, TESTS)
    failing = {t.message.split(":")[0] for t in result.tests if t.status != "passed"}
    assert any("approx" in f for f in failing) and any("test_mean" in f for f in failing), result.feedback()


def test_a_generator_is_listed_only_where_the_test_consumes_it(box):
    """`list(evens(5))` compares its items, as Python does; `evens(5) == [...]` is no pass (a generator is
    not a list), and neither is an endless one."""
    tests = "assert list(evens(3)) == [0, 2]\nassert evens(3) == [0, 2]\nassert list(forever()) == [0]\n"
    result = run(box, PROGRAM + "\n\ndef forever():\n    while True:\n        yield 0\n", tests)
    assert [t.status for t in result.tests][:2] == ["passed", "failed"] and result.tests[2].status != "passed", result.feedback()


def test_the_model_is_shown_only_the_failing_tests(box):
    tests = user_tests.parse_tests(TESTS)
    task = debugger.task_for(tests, run(box, PROGRAM, TESTS))
    assert "assert helpers.mean([1, 2]) == approx(1.5)" in task and "def test_mean(self):" in task
    assert "def test_add" not in task and "evens(5)" not in task and "tmp_path" not in task


def test_an_exception_from_the_program_is_named_once_with_the_tests_line(box):
    result = run(box, PROGRAM, "import helpers\n\n\ndef test_words():\n    assert helpers.parse('x') == 1\n")
    message = result.tests[0].message
    assert "raised ValueError: not a number: x" in message and "ValueError: ValueError" not in message, message
    assert message.endswith("at line 5 (assert helpers.parse('x') == 1)"), message


def test_helpers_beside_the_program_and_the_tests_are_brought_into_the_sandbox(box, tmp_path):
    """The program and the tests import the user's own modules from their folders; the judge loads the
    tests' helpers itself, and the program stays a proxy there."""
    (tmp_path / "units.py").write_text("SCALE = 10\n\n\ndef scaled(x):\n    return x * SCALE\n")
    (tmp_path / "cases.py").write_text("from units import SCALE\n\nCASES = [(1, 1 * SCALE), (2, 2 * SCALE)]\n")
    (tmp_path / "convert.py").write_text("from units import scaled\n\n\ndef convert(x):\n    return scaled(x) + 1\n")
    (tmp_path / "test_convert.py").write_text(
        "from cases import CASES\nfrom convert import convert\n\n\ndef test_cases():\n    for x, want in CASES:\n        assert convert(x) == want\n"
    )
    modules = user_tests.local_modules([tmp_path / "convert.py", tmp_path / "test_convert.py"], exclude="convert")
    assert set(modules) == {"units", "cases"}  # transitively, and never the program itself
    tests = user_tests.read_tests(tmp_path / "test_convert.py")
    tests = replace(tests, modules=modules)
    program = (tmp_path / "convert.py").read_text()
    failing = box.run([debugger.job_for(program, tests, "convert")])[0]
    assert not failing.passed and "11 == 10 is false" in failing.feedback(), failing.feedback()
    assert box.run([debugger.job_for(program.replace(" + 1", ""), tests, "convert")])[0].passed


GRAPH = """
class Node:
    def __init__(self, value=None, successor=None, successors=None):
        self.value, self.successor, self.successors = value, successor, successors or []


def reverse(node):
    previous = None
    while node:
        node.successor, previous, node = previous, node, node.successor
    return previous


def reachable(start, goal):
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node is goal:
            return True
        if id(node) not in seen:
            seen.add(id(node))
            todo.extend(node.successors)
    return False
"""

GRAPH_TESTS = """from graph import Node, reverse, reachable


def values(node):
    out = []
    while node:
        out.append(node.value)
        node = node.successor
    return out


def test_reverse():
    c = Node(3, Node(2, Node(1)))
    assert values(c) == [3, 2, 1]
    assert values(reverse(c)) == [1, 2, 3]


def test_reachable():
    a, b, c = Node("a"), Node("b"), Node("c")
    a.successors = [b]
    b.successors = [c]
    assert reachable(a, c) and not reachable(c, a)


def test_a_node_is_itself():
    a = Node(1)
    assert reverse(a) is a and reverse(a) == a and a != Node(1) and len({a, a}) == 1
"""


def test_the_programs_objects_stay_in_its_process_and_the_tests_use_them(box):
    """A test that builds the program's objects (QuixBugs' nodes) and walks what it returns: each object
    stays in the candidate's process, the judge holds a reference and asks for its attributes, truth and
    identity; the verdict is still the judge's. The same tests fail on a wrong program."""
    tests = user_tests.parse_tests(GRAPH_TESTS)
    result = box.run([debugger.job_for(GRAPH, tests, module="graph")])[0]
    assert result.passed and result.num_passed == 3, result.feedback()
    wrong = GRAPH.replace("    return previous", "    return node").replace("if node is goal", "if node is not goal")
    result = box.run([debugger.job_for(wrong, tests, module="graph")])[0]
    assert [t.status for t in result.tests] == ["failed", "failed", "failed"], result.feedback()
    assert "[] == [1, 2, 3] is false" in result.feedback(), result.feedback()


ALWAYS_EQUAL_IN_A_TEST_FUNCTION = "def test_add():\n    assert add(1, 2) == 3\n"


@pytest.mark.parametrize(
    "forgery",
    [
        "",
        # the candidate's side of the channel rewritten to say the object compares by identity, as an int
        "import sys\nsys.modules['__main__'].KeptObjects.keep = lambda self, v: {'t': 'ref', 'v': [0, 'int', False]}\n",
    ],
)
def test_an_always_equal_object_held_by_the_judge_is_no_pass(box, forgery):
    program = "class E:\n    def __eq__(self, other):\n        return True\n\n\ndef add(a, b):\n    return E()\n" + forgery
    result = box.run([debugger.job_for(program, user_tests.parse_tests(ALWAYS_EQUAL_IN_A_TEST_FUNCTION), module="adder")])[0]
    assert result.tests[0].status != "passed" and result.num_passed == 0, result.feedback()
    if not forgery:
        assert "a E object cannot be compared outside the sandbox" in result.feedback(), result.feedback()
