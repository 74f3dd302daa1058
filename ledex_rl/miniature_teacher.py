"""The miniature domain's teacher: a scripted expert behind a real OpenAI-compatible HTTP endpoint.

It plays the part GPT-3.5 plays in the paper. Given a refinement conversation (task, wrong code,
execution feedback, request), it recognises the task, names the actual bug (from the task's bug
catalogue, or from how its code differs from a solution) and writes the fix. With probability
`error_rate` per answer it is wrong instead: it blames another bug and gives a fix that still fails, so
the collect stage's execution check has something to filter. Answers are seeded per request and choice.

    ledex-rl miniature-teacher --port 8123 --error-rate 0.2    # then collect.teacher.kind=openai
    with TeacherServer(ScriptedTeacher(...)) as server: ... server.url ...
"""

from __future__ import annotations

import difflib
import io
import json
import logging
import random
import re
import threading
import tokenize
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Sequence

from ledex_rl import prompts
from ledex_rl.problems import miniature
from ledex_rl.problems.base import Problem

log = logging.getLogger(__name__)

_FAILED = re.compile(r"assert (?P<call>.+?) == (?P<expected>.+?) failed: .+? (?:returned|raised) (?P<got>.+)")
# Short on purpose: they name the bug and the fix, which is what a 2.7M-parameter student can learn
# to say; the failing call's numbers appear only where the bug is not in the catalogue (_VAGUE).
_TEMPLATES = ("{what} To fix it, {fix}.", "The bug: {what} The fix is to {fix}.", "{what} So {fix}.")
_VAGUE = "{fn} does not do what the task asks: {call} should be {expected} but is {got}. It must be rewritten: {task}"


class ScriptedTeacher:
    """Answers refinement conversations about miniature tasks (any split it was given)."""

    def __init__(self, problems: Sequence[Problem], error_rate: float = 0.2):
        if not 0 <= error_rate <= 1:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
        self.by_task = {prompts.task_text(p): p for p in problems}
        self.error_rate = error_rate

    @classmethod
    def for_every_split(cls, error_rate: float = 0.2, instances_per_split: int = miniature.TRAIN_POOL) -> "ScriptedTeacher":
        problems = [
            p
            for name, split in ((miniature.SOURCE, "train"), (miniature.SOURCE, "test"), (miniature.UNSEEN_SOURCE, "test"))
            for p in miniature.load(name, split, limit=instances_per_split)
        ]
        return cls(problems, error_rate)

    def answer(self, messages: Sequence[dict], seed: int) -> str:
        """One explanation + fix for a refinement conversation; `seed` picks the wording and whether
        this answer is one of the wrong ones."""
        problem = self.by_task.get(messages[0]["content"]) if messages else None
        if problem is None or len(messages) < 3:
            return "I cannot tell which task this is, so I cannot fix the code."
        wrong = prompts.parse_response(messages[1]["content"]).code.strip()
        failing = _FAILED.search(messages[2]["content"])
        numbers = (
            failing.groupdict()
            if failing
            else {"call": f"{problem.entry_point}(...)", "expected": "the right value", "got": "something else"}
        )
        rng = random.Random(seed)
        bugs = problem.metadata["bugs"]
        if rng.random() < self.error_rate:
            wrong_bugs = [b for b in bugs if b["code"].strip() != wrong] or bugs
            blamed = rng.choice(wrong_bugs)
            return self._reply(rng, blamed["what"], blamed["fix"], blamed["code"])
        actual = next((b for b in bugs if b["code"].strip() == wrong), None)
        if actual is not None:
            return self._reply(rng, actual["what"], actual["fix"], problem.reference_solution)
        difference = describe_difference(problem.entry_point, wrong, problem.reference_solution)
        if difference is not None:
            return self._reply(rng, *difference, problem.reference_solution)
        explanation = _VAGUE.format(fn=problem.entry_point, task=problem.prompt, **numbers)
        return prompts.answer_text(problem.reference_solution, explanation)

    @staticmethod
    def _reply(rng: random.Random, what: str, fix: str, code: str) -> str:
        return prompts.answer_text(code, rng.choice(_TEMPLATES).format(what=what, fix=fix))


def describe_difference(fn: str, wrong: str, right: str) -> tuple[str, str] | None:
    """(what is wrong, how to fix it) for a mistake the bug catalogue does not list, from the tokens
    that differ between the wrong code and the solution (at most two places); None when the wrong
    code is not valid Python or does not differ."""
    wrong_tokens, right_tokens = _tokens(wrong), _tokens(right)
    if not wrong_tokens or not right_tokens:
        return None
    matcher = difflib.SequenceMatcher(a=[t for t, _, _ in wrong_tokens], b=[t for t, _, _ in right_tokens], autojunk=False)
    changes = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    if not changes or len(changes) > 2:
        return None
    pairs = [(_span(wrong, wrong_tokens, i1, i2), _span(right, right_tokens, j1, j2)) for _, i1, i2, j1, j2 in changes]
    what = (
        f"{fn} has "
        + " and ".join(f"`{w}` where the task needs `{r}`" if w and r else f"an extra `{w}`" if w else f"no `{r}`" for w, r in pairs)
        + "."
    )
    fix = " and ".join(f"write `{r}` instead of `{w}`" if w and r else f"remove `{w}`" if w else f"add `{r}`" for w, r in pairs)
    return what, fix


def _tokens(code: str) -> list[tuple[str, int, int]]:
    """(token, start offset, end offset) of the code's meaningful tokens; [] when it does not tokenize."""
    lines = code.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    skip = (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER, tokenize.COMMENT)
    try:
        return [
            (t.string, starts[t.start[0] - 1] + t.start[1], starts[t.end[0] - 1] + t.end[1])
            for t in tokenize.generate_tokens(io.StringIO(code).readline)
            if t.type not in skip
        ]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return []


def _span(code: str, tokens: list[tuple[str, int, int]], first: int, last: int) -> str:
    """The source text of tokens[first:last] ('' when empty)."""
    return code[tokens[first][1] : tokens[last - 1][2]] if last > first else ""


class TeacherServer:
    """`POST <url>/chat/completions` in the OpenAI format (n, seed honoured), on a thread; a context
    manager for scripts and tests, or `serve_forever` for the CLI."""

    def __init__(self, teacher: ScriptedTeacher, host: str = "127.0.0.1", port: int = 0):
        self.teacher = teacher
        self.httpd = ThreadingHTTPServer((host, port), _handler(teacher))
        self.url = f"http://{host}:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "TeacherServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def serve_forever(self) -> None:
        self.httpd.serve_forever()


def _handler(teacher: ScriptedTeacher):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet: one line per request would drown the console
            pass

        def do_POST(self):
            if not self.path.rstrip("/").endswith("/chat/completions"):
                return self._send(404, {"error": {"message": f"no route {self.path}; POST /v1/chat/completions"}})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                messages, n, seed = body["messages"], int(body.get("n", 1)), int(body.get("seed") or 0)
            except (ValueError, KeyError, TypeError) as exc:
                return self._send(400, {"error": {"message": f"bad request: {exc}"}})
            choices = [
                {
                    "index": i,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": teacher.answer(messages, seed * 1000 + i)},
                }
                for i in range(n)
            ]
            self._send(200, {"object": "chat.completion", "model": body.get("model", "scripted"), "choices": choices})

        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
