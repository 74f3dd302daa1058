"""A real OpenAI-compatible HTTP endpoint for tests, answering as a scripted teacher would.

For a refinement request about a HumanEval task it answers `n` choices: the first explains and gives
the canonical solution, the others give a wrong one. It can also fail the first N requests with 429.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class TeacherServer:
    def __init__(self, problems, fail_first: int = 0, require_key: str = ""):
        self.problems, self.fail_first, self.require_key = problems, fail_first, require_key
        self.requests = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests += 1
                    failing = server.requests <= server.fail_first
                if server.require_key and self.headers.get("Authorization") != f"Bearer {server.require_key}":
                    self.send_response(401)
                    self.end_headers()
                    return
                if failing:
                    self.send_response(429)
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                choices = [
                    {"index": i, "message": {"role": "assistant", "content": server.answer(body["messages"], i)}}
                    for i in range(body.get("n", 1))
                ]
                data = json.dumps({"choices": choices}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, messages, index: int) -> str:
        task = messages[0]["content"]
        problem = next((p for p in self.problems if p.starter_code and p.starter_code.strip() in task), None)
        if problem is None:
            return "I do not know this task."
        if index == 0:
            return f"The code does not implement the task.\n\n```python\n{problem.reference_solution}\n```"
        return f"It returns the wrong value.\n\n```python\ndef {problem.entry_point}(*args):\n    return None\n```"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
