"""The miniature domain's teacher: a scripted expert behind a real OpenAI-compatible HTTP endpoint.

It plays the part GPT-3.5 plays in the paper. Given a refinement conversation (task, wrong code,
execution feedback, request), it recognises the task, names the actual bug (from the task's bug
catalogue, with the failing test's numbers from the feedback) and writes the fix. With probability
`error_rate` per answer it is wrong instead: it blames another bug and gives a fix that still fails, so
the collect stage's execution check has something to filter. Answers are seeded per request and choice.

    ledex-rl miniature-teacher --port 8123 --error-rate 0.2    # then collect.teacher.kind=openai
    with TeacherServer(ScriptedTeacher(...)) as server: ... server.url ...
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Sequence

from ledex_rl import prompts
from ledex_rl.problems import miniature
from ledex_rl.problems.base import Problem

log = logging.getLogger(__name__)

_FAILED = re.compile(r"assert (?P<call>.+?) == (?P<expected>.+?) failed: .+? (?:returned|raised) (?P<got>.+)")
_TEMPLATES = (
    "{what} For example, {call} returns {got}, but the test expects {expected}. To fix it, {fix}.",
    "The bug: {what} That is why {call} gives {got} instead of {expected}. The fix is to {fix}.",
    "{what} The failing test shows it: {call} should be {expected} but is {got}. So {fix}.",
)
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
        problems = [p for name, split in ((miniature.SOURCE, "train"), (miniature.SOURCE, "test"), (miniature.UNSEEN_SOURCE, "test"))
                    for p in miniature.load(name, split, limit=instances_per_split)]
        return cls(problems, error_rate)

    def answer(self, messages: Sequence[dict], seed: int) -> str:
        """One explanation + fix for a refinement conversation; `seed` picks the wording and whether
        this answer is one of the wrong ones."""
        problem = self.by_task.get(messages[0]["content"]) if messages else None
        if problem is None or len(messages) < 3:
            return "I cannot tell which task this is, so I cannot fix the code."
        wrong = prompts.parse_response(messages[1]["content"]).code.strip()
        failing = _FAILED.search(messages[2]["content"])
        numbers = failing.groupdict() if failing else {"call": f"{problem.entry_point}(...)", "expected": "the right value", "got": "something else"}
        rng = random.Random(seed)
        bugs = problem.metadata["bugs"]
        if rng.random() < self.error_rate:
            wrong_bugs = [b for b in bugs if b["code"].strip() != wrong] or bugs
            blamed = rng.choice(wrong_bugs)
            return self._reply(rng, blamed["what"], blamed["fix"], numbers, blamed["code"])
        actual = next((b for b in bugs if b["code"].strip() == wrong), None)
        if actual is None:
            explanation = _VAGUE.format(fn=problem.entry_point, task=problem.prompt, **numbers)
            return prompts.answer_text(problem.reference_solution, explanation)
        return self._reply(rng, actual["what"], actual["fix"], numbers, problem.reference_solution)

    @staticmethod
    def _reply(rng: random.Random, what: str, fix: str, numbers: dict, code: str) -> str:
        return prompts.answer_text(code, rng.choice(_TEMPLATES).format(what=what, fix=fix, **numbers))


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
            choices = [{"index": i, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": teacher.answer(messages, seed * 1000 + i)}} for i in range(n)]
            self._send(200, {"object": "chat.completion", "model": body.get("model", "scripted"), "choices": choices})

        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
