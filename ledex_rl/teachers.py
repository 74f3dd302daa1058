"""Teachers: whoever explains and refines wrong code during collection, behind one interface.

- `EngineTeacher`: a model on vLLM engine actors. With the policy's own engines this is the paper's
  self-bootstrap setting; with an `EnginePool` of another model, a bigger local teacher.
- `OpenAITeacher`: any OpenAI-compatible chat endpoint (OpenAI, vLLM's server, llama.cpp, ...) through
  the `openai` client, with bounded concurrency, the client's retries with exponential backoff on
  429/5xx/timeouts, and the key read from the environment variable the config names (never from the
  config file).
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Protocol, Sequence

from ledex_rl.errors import UserError
from ledex_rl import prompts


class Teacher(Protocol):
    """Whoever answers refinement conversations: `EngineTeacher` (a model on vLLM engines) or
    `OpenAITeacher` (an endpoint); collection's teacher and `ledex-rl debug`'s model alike."""

    name: str

    def complete(
        self,
        conversations: Sequence[list[dict]],
        n: int,
        temperature: float,
        max_tokens: int,
        seeds: Sequence[int],
        on_progress: Callable[[int], object] | None = None,
    ) -> list[list[str]]:
        """For each conversation, `n` sampled answers (text); `on_progress(conversations answered)` as
        they are answered."""


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
            raise PromptTooLong(
                f"the prompt is {used} tokens and the answer may take {max_tokens}, over the model's context of "
                f"{self.max_model_len} (model.max_model_len); shorten the tests file, lower --max-new-tokens, "
                "or raise model.max_model_len if the model allows it"
            )

    def complete(self, conversations, n, temperature, max_tokens, seeds, on_progress=None):
        from actors.rollout_engine import GenerationRequest

        requests = [
            GenerationRequest(prompts.render(c, self.tokenizer, self.style), n=n, temperature=temperature, max_tokens=max_tokens, seed=s)
            for c, s in zip(conversations, seeds)
        ]
        return [[c.text for c in completions] for completions in self.engines.generate(requests, on_progress=on_progress)]


class OpenAITeacher:
    """An OpenAI-compatible chat endpoint through the `openai` client, which retries 429s, 5xx answers,
    timeouts and dropped connections with exponential backoff (honouring Retry-After), `max_retries`
    times. A port nothing listens on fails at once, before the client's retries."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        max_retries: int = 6,
        timeout_s: float = 120.0,
    ):
        import openai  # ~0.3 s: kept out of the CLI's start-up

        self.base_url, self.model, self.name = base_url.rstrip("/"), model, f"openai:{model}"
        self.api_key_env, self.concurrency, self.max_retries = api_key_env, concurrency, max_retries
        # A local server (vLLM, llama.cpp, the miniature teacher) takes any key; the client insists on one.
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=os.environ.get(api_key_env) or "no-key", max_retries=max_retries, timeout=timeout_s
        )
        self._listening = False

    def complete(self, conversations, n, temperature, max_tokens, seeds, on_progress=None):
        self._check_listening()
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(self._one, messages, n, temperature, max_tokens, seed) for messages, seed in zip(conversations, seeds)]
            for answered, _ in enumerate(as_completed(futures), 1):
                if on_progress:
                    on_progress(answered)
            return [future.result() for future in futures]

    def _one(self, messages, n, temperature, max_tokens, seed) -> list[str]:
        import openai

        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=messages, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed
            )
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise TeacherUnavailable(
                f"teacher endpoint {self.base_url} refused the key (HTTP {exc.status_code}); set {self.api_key_env}"
            ) from None
        except openai.APIStatusError as exc:
            raise TeacherUnavailable(
                f"teacher endpoint {self.base_url} failed (HTTP {exc.status_code}) after {self.max_retries} retries"
            ) from None
        except openai.APIConnectionError as exc:
            raise TeacherUnavailable(
                f"teacher endpoint {self.base_url} failed ({type(exc).__name__}) after {self.max_retries} retries"
            ) from None
        return [choice.message.content or "" for choice in sorted(response.choices, key=lambda c: c.index)]

    def _check_listening(self) -> None:
        """A refused connection is a one-line error at once (retrying cannot help); other network
        errors are left to the client's retries."""
        if self._listening:
            return
        url = urllib.parse.urlsplit(self.base_url)
        try:
            socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=10).close()
        except ConnectionRefusedError:
            raise TeacherUnavailable(
                f"nothing is listening at {self.base_url} (connection refused); start the endpoint or fix its base URL"
            ) from None
        except OSError:
            return
        self._listening = True
