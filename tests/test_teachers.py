"""The OpenAI-compatible teacher against a real local HTTP endpoint: answers, retries, refusals."""

import time

import pytest

from ledex_rl.config import ProblemSourceConfig
from ledex_rl.problems import load_problems
from ledex_rl.teachers import OpenAITeacher, TeacherUnavailable

from .teacher_server import TeacherServer


@pytest.fixture(scope="module")
def problems():
    return load_problems(ProblemSourceConfig(name="humaneval", limit=3))[0]


def conversation(problem):
    from ledex_rl import prompts

    return prompts.refinement_messages(problem, "def f():\n    pass", "0 of 7 tests passed.", "explain_refine")


def test_answers_n_choices_in_order(problems):
    with TeacherServer(problems) as server:
        teacher = OpenAITeacher(server.url, "fake-teacher")
        answered: list[int] = []
        answers = teacher.complete(
            [conversation(p) for p in problems], n=2, temperature=0.8, max_tokens=256, seeds=[1, 2, 3], on_progress=answered.append
        )
    assert len(answers) == 3 and all(len(a) == 2 for a in answers)
    assert answered == [1, 2, 3]  # one call per conversation answered, as it is answered
    assert problems[0].entry_point in answers[0][0] and "return None" in answers[0][1]


def test_retries_rate_limits_with_backoff(problems):
    with TeacherServer(problems, fail_first=2) as server:
        answers = OpenAITeacher(server.url, "fake-teacher", max_retries=3).complete([conversation(problems[0])], 1, 0.8, 64, [0])
        assert server.requests == 3
    assert "```python" in answers[0][0]


def test_bad_key_and_unreachable_endpoint_are_clear_errors(problems, monkeypatch):
    with TeacherServer(problems, require_key="right") as server:
        monkeypatch.setenv("LEDEX_TEST_KEY", "wrong")
        with pytest.raises(TeacherUnavailable, match="refused the key .*set LEDEX_TEST_KEY"):
            OpenAITeacher(server.url, "m", api_key_env="LEDEX_TEST_KEY").complete([conversation(problems[0])], 1, 0.8, 64, [0])
        monkeypatch.setenv("LEDEX_TEST_KEY", "right")
        assert OpenAITeacher(server.url, "m", api_key_env="LEDEX_TEST_KEY").complete([conversation(problems[0])], 1, 0.8, 64, [0])
    started = time.monotonic()
    with pytest.raises(TeacherUnavailable, match="nothing is listening at .*connection refused"):
        OpenAITeacher("http://127.0.0.1:9/v1", "m").complete([conversation(problems[0])], 1, 0.8, 64, [0])
    assert time.monotonic() - started < 5  # no retries against a closed port (6 backoffs would take 63 s)
