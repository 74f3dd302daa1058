"""Every prompt LeDex uses, and the parser that splits a response into explanation and code.

Conversations follow the paper's layout (docs/method.md §2):
    user: the task -> assistant: the first (wrong) attempt -> user: feedback + request -> assistant: answer
Instruct models get their own chat template; base models get the paper's StarChat markup
(`<|user|> ... <|end|>`), and first attempts from base models get a 3-shot prompt (MBPP tasks 2, 3, 4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Sequence

from ledex_rl.modes import AnswerMode, Mode
from ledex_rl.problems.base import Problem


REFINE_REQUEST = "Your code is wrong. Fix it. Answer with only the corrected Python code in one ```python block."
EXPLAIN_REFINE_REQUEST = (
    "Your code is wrong. First explain, in a few sentences, why it is wrong. Then write the corrected Python code in one ```python block."
)


def task_text(problem: Problem) -> str:
    """The user's first message: the task, plus the signature or example tests the model must match."""
    if problem.starter_code and problem.source.startswith("humaneval"):
        return f"Complete the following Python function.\n```python\n{problem.starter_code.rstrip()}\n```"
    parts = [problem.prompt.strip()]
    examples = problem.metadata.get("examples")
    if examples:
        parts.append("Your code should pass these tests:\n" + "\n".join(examples))
    elif problem.starter_code:
        parts.append(f"Use this starter code:\n```python\n{problem.starter_code.rstrip()}\n```")
    elif problem.io_based:
        parts.append("Read the input from standard input and print the answer to standard output.")
    parts.append("Write the solution in Python in one ```python block.")
    return "\n\n".join(parts)


def first_attempt_messages(problem: Problem) -> list[dict]:
    return [{"role": "user", "content": task_text(problem)}]


def refinement_messages(problem: Problem, wrong_code: str, feedback: str, mode: Mode) -> list[dict]:
    return refinement_conversation(task_text(problem), wrong_code, feedback, mode)


def answer_messages(problem: Problem, wrong_code: str, feedback: str, mode: AnswerMode) -> list[dict]:
    """The conversation a `mode` answer continues: the task alone for a first attempt, else the
    refinement request about `wrong_code` and its `feedback`."""
    if mode == "generate":
        return first_attempt_messages(problem)
    return refinement_messages(problem, wrong_code, feedback, mode)


def refinement_conversation(task: str, wrong_code: str, feedback: str, mode: Mode) -> list[dict]:
    """The refinement prompt from its parts; SFT rebuilds both modes from a collected row with it."""
    request = EXPLAIN_REFINE_REQUEST if mode == "explain_refine" else REFINE_REQUEST
    return [
        {"role": "user", "content": task},
        {"role": "assistant", "content": f"```python\n{wrong_code.rstrip()}\n```"},
        {"role": "user", "content": f"Feedback from running the tests:\n{feedback.strip()}\n\n{request}"},
    ]


def answer_text(code: str, explanation: str = "") -> str:
    """The canonical assistant answer: an optional explanation, then the code in one fenced block
    (the shape `parse_response` reads back)."""
    block = f"```python\n{code.strip(chr(10)).rstrip()}\n```"
    return f"{explanation.strip()}\n\n{block}" if explanation.strip() else block


def starchat(messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
    """The paper's SFT markup, for base models without a chat template."""
    text = "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages)
    return text + ("<|assistant|>\n" if add_generation_prompt else "")


def few_shot_prompt(problem: Problem, shots: Sequence[Problem]) -> str:
    """Base-model first attempt: k solved examples (the paper uses 3; MBPP tasks 2, 3, 4), then the task."""
    blocks = [f"{task_text(s)}\n```python\n{s.reference_solution.strip()}\n```\n" for s in shots]
    blocks.append(f"{task_text(problem)}\n```python\n")
    return "\n".join(blocks)


def prompt_style(configured: str, tokenizer) -> Literal["chat", "base"]:
    """`model.prompt_style`, with `auto` meaning: the chat template when the tokenizer has one."""
    if configured != "auto":
        return configured  # type: ignore[return-value]
    return "chat" if getattr(tokenizer, "chat_template", None) else "base"


def render(messages: Sequence[dict], tokenizer=None, style: Literal["chat", "base"] = "chat") -> str:
    """Messages -> prompt text, with the tokenizer's chat template when it has one."""
    if style == "chat" and tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return starchat(messages)


# --- response parsing ----------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_START = re.compile(r"^(?:def |class |import |from \w[\w.]* import |async def |@\w)", re.MULTILINE)


@dataclass(frozen=True)
class ParsedResponse:
    """`explanation` is the text before the code; `code_start`/`code_end` are character offsets of the
    code in the response (RL places the explanation reward on the token just before `code_start`)."""

    explanation: str
    code: str
    code_start: int
    code_end: int
    explanation_end: int = 0  # offset just after the explanation's last non-space character (0: none)

    @property
    def has_code(self) -> bool:
        return bool(self.code.strip())


def parse_response(text: object) -> ParsedResponse:
    """Split a model response into explanation and code. Never raises, whatever `text` is.

    Preference: the first ```python (or unlabeled) fenced block that holds code (an empty fence is
    skipped); else the first line that starts like Python code (`def`, `class`, `import`) to the end;
    else no code and the whole text as explanation. An unclosed fence (a response cut by max_tokens)
    still yields its code.
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    python_blocks = [m for m in _FENCE.finditer(text) if m.group(1).lower() in ("python", "py", "python3", "") and m.group(2).strip()]
    chosen = python_blocks[0] if python_blocks else None
    if chosen is not None:
        start, end = chosen.start(2), chosen.end(2)
        before = text[: chosen.start()]
        return ParsedResponse(before.strip(), text[start:end].strip("\n"), start, end, len(before.rstrip()))
    match = _CODE_START.search(text)
    if match is not None:
        before = text[: match.start()]
        return ParsedResponse(before.strip(), text[match.start() :].rstrip(), match.start(), len(text), len(before.rstrip()))
    return ParsedResponse(text.strip(), "", len(text), len(text), len(text.rstrip()))
