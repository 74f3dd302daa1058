"""Teachers: whoever explains and refines wrong code during collection, behind one interface.

- `EngineTeacher`: a model on vLLM engine actors. With the policy's own engines this is the paper's
  self-bootstrap setting; with an `EnginePool` of another model, a bigger local teacher.
- `OpenAITeacher`: any OpenAI-compatible chat endpoint (OpenAI, vLLM's server, llama.cpp, ...),
  with bounded concurrency, retries with exponential backoff on 429/5xx, and the key read from the
  environment variable the config names (never from the config file).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, Sequence

from ledex_rl.errors import UserError
from ledex_rl import prompts

log = logging.getLogger(__name__)


class Teacher(Protocol):
    name: str

    def complete(
        self, conversations: Sequence[list[dict]], n: int, temperature: float, max_tokens: int, seeds: Sequence[int]
    ) -> list[list[str]]:
        """For each conversation, `n` sampled answers (text)."""


class TeacherUnavailable(UserError, RuntimeError):
    """The teacher cannot answer (endpoint down, key missing); the message says what to fix."""


class PromptTooLong(UserError, ValueError):
    """A prompt and its answer budget do not fit the model's context; the message names both settings."""


class EngineTeacher:
    def __init__(self, engines, tokenizer, name: str, style: str = "chat", max_model_len: int = 0):
        self.engines, self.tokenizer, self.name, self.style = engines, tokenizer, name, style
        self.max_model_len = max_model_len  # the engines' context (model.max_model_len); 0: not checked

    def check_fits(self, conversation: list[dict], max_tokens: int) -> None:
        """A one-line error, before generating, when the prompt plus `max_tokens` exceeds the context."""
        used = len(self.tokenizer(prompts.render(conversation, self.tokenizer, self.style), add_special_tokens=False)["input_ids"])
        if self.max_model_len and used + max_tokens > self.max_model_len:
            raise PromptTooLong(f"the prompt is {used} tokens and the answer may take {max_tokens}, over the model's context of "
                                f"{self.max_model_len} (model.max_model_len); shorten the tests file, lower --max-new-tokens, "
                                "or raise model.max_model_len if the model allows it")

    def complete(self, conversations, n, temperature, max_tokens, seeds):
        from actors.rollout_engine import GenerationRequest

        requests = [
            GenerationRequest(prompts.render(c, self.tokenizer, self.style), n=n, temperature=temperature, max_tokens=max_tokens, seed=s)
            for c, s in zip(conversations, seeds)
        ]
        return [[c.text for c in completions] for completions in self.engines.generate(requests)]


class OpenAITeacher:
    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8,
                 max_retries: int = 6, timeout_s: float = 120.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.name = model, f"openai:{model}"
        self.api_key = os.environ.get(api_key_env, "")
        self.api_key_env = api_key_env
        self.concurrency, self.max_retries, self.timeout_s = concurrency, max_retries, timeout_s

    def complete(self, conversations, n, temperature, max_tokens, seeds):
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda cs: self._one(cs[0], n, temperature, max_tokens, cs[1]), zip(conversations, seeds)))

    def _one(self, messages, n, temperature, max_tokens, seed) -> list[str]:
        body = {"model": self.model, "messages": messages, "n": n, "temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        delay = 1.0
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    data = json.loads(response.read())
                choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
                return [(c.get("message") or {}).get("content") or "" for c in choices]
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):
                    raise TeacherUnavailable(
                        f"teacher endpoint {self.url} refused the key (HTTP {exc.code}); set {self.api_key_env}"
                    ) from None
                retriable = exc.code == 429 or exc.code >= 500
                reason = f"HTTP {exc.code}"
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as exc:
                if isinstance(getattr(exc, "reason", exc), ConnectionRefusedError):  # nothing listens: retrying cannot help
                    raise TeacherUnavailable(f"nothing is listening at {self.url} (connection refused); start the endpoint "
                                             "or fix its base URL") from None
                retriable, reason, retry_after = True, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}", None
            if not retriable or attempt == self.max_retries:
                raise TeacherUnavailable(f"teacher endpoint {self.url} failed after {attempt + 1} tries ({reason})")
            wait = float(retry_after) if retry_after and str(retry_after).replace(".", "", 1).isdigit() else delay
            log.warning("teacher: %s; retrying in %.1fs", reason, wait)
            time.sleep(wait * (1 + 0.1 * random.random()))
            delay = min(delay * 2, 60.0)
        raise AssertionError("unreachable")
