"""Prompt formats and the response parser (which must never raise)."""

import pytest

from ledex_rl import prompts
from ledex_rl.config import ProblemSourceConfig
from ledex_rl.problems import load_problems
from ledex_rl.problems.base import Problem, TestCase

from .conftest import FIXTURES

MBPP_LIKE = Problem(
    task_id="Mbpp/601",
    source="mbpp",
    prompt="Write a function to add two numbers.",
    entry_point="add",
    reference_solution="def add(a, b):\n    return a + b",
    tests=(TestCase(kind="assert", source="assert add(1, 2) == 3"),),
    metadata={"examples": ["assert add(1, 2) == 3"]},
)


def test_first_attempt_shows_task_and_example_tests():
    (message,) = prompts.first_attempt_messages(MBPP_LIKE)
    assert message["role"] == "user"
    assert "Write a function to add two numbers." in message["content"]
    assert "assert add(1, 2) == 3" in message["content"]
    assert "```python" in message["content"]


def test_humaneval_first_attempt_shows_the_signature():
    problem = load_problems(ProblemSourceConfig(name="humaneval", limit=1))[0][0]
    text = prompts.task_text(problem)
    assert "def has_close_elements" in text and "Complete the following Python function" in text


def test_io_problem_asks_for_stdin_stdout():
    problem = load_problems(ProblemSourceConfig(name="apps", path=str(FIXTURES / "apps.jsonl"), split="train"))[0][0]
    assert "standard input" in prompts.task_text(problem)


@pytest.mark.parametrize("mode, word", [("refine", "Fix it"), ("explain_refine", "explain")])
def test_refinement_conversation_layout(mode, word):
    messages = prompts.refinement_messages(MBPP_LIKE, "def add(a, b):\n    return a - b", "assert add(1, 2) == 3 failed: got -1", mode)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert "return a - b" in messages[1]["content"]  # the wrong attempt sits in the history
    assert "got -1" in messages[2]["content"] and word in messages[2]["content"]
    if mode == "refine":
        assert "explain" not in messages[2]["content"].lower()


def test_starchat_markup_for_base_models():
    text = prompts.render([{"role": "user", "content": "hi"}], tokenizer=None, style="base")
    assert text == "<|user|>\nhi<|end|>\n<|assistant|>\n"


def test_render_uses_the_chat_template(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = prompts.render(prompts.first_attempt_messages(MBPP_LIKE), tokenizer)
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")


def test_few_shot_prompt_ends_inside_a_code_block():
    text = prompts.few_shot_prompt(MBPP_LIKE, [MBPP_LIKE, MBPP_LIKE, MBPP_LIKE])
    assert text.count("return a + b") == 3 and text.endswith("```python\n")


def test_parse_explanation_then_fenced_code():
    response = "The loop stops one early because of range(n-1).\n\n```python\ndef f(n):\n    return n\n```\nDone."
    parsed = prompts.parse_response(response)
    assert parsed.explanation == "The loop stops one early because of range(n-1)."
    assert parsed.code == "def f(n):\n    return n"
    assert response[parsed.code_start :].startswith("def f(n)")


def test_parse_prefers_python_block_over_other_languages():
    parsed = prompts.parse_response("Run:\n```bash\npip install x\n```\nthen\n```python\nx = 1\n```")
    assert parsed.code == "x = 1"


def test_parse_unclosed_fence_from_truncated_output():
    parsed = prompts.parse_response("Because.\n```python\ndef f():\n    return 1")
    assert parsed.code == "def f():\n    return 1" and parsed.explanation == "Because."


def test_parse_bare_code_without_fence():
    parsed = prompts.parse_response("The bug is the sign.\ndef add(a, b):\n    return a + b\n")
    assert parsed.explanation == "The bug is the sign." and parsed.code.startswith("def add")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        None,
        12345,
        "```",
        "``````",
        "```python",
        "no code at all, just words",
        "\x00\x01\x02",
        "```python\n```",
        b"bytes".decode() * 1000,
        "```py\n" * 50,
        "<|im_end|>" * 5,
        "\n\n\n",
    ],
)
def test_parse_never_raises(garbage):
    parsed = prompts.parse_response(garbage)
    assert isinstance(parsed.explanation, str) and isinstance(parsed.code, str)
    assert 0 <= parsed.code_start <= parsed.code_end


def test_parse_text_only_has_no_code():
    parsed = prompts.parse_response("I am not sure what is wrong.")
    assert not parsed.has_code and parsed.explanation == "I am not sure what is wrong."


def test_parse_skips_an_empty_first_fence():
    """An empty fence before the real code must not make the answer "no code" (R(r) = -5)."""
    parsed = prompts.parse_response("Fixed:\n```python\n```\n\n```python\ndef f():\n    return 1\n```")
    assert parsed.code == "def f():\n    return 1"
    bare = prompts.parse_response("Fixed:\n```python\n\n```\ndef f():\n    return 1\n")
    assert bare.code.startswith("def f():")
