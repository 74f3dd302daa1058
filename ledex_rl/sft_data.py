"""SFT data (docs/method.md §1): collected rows -> chat examples -> token ids with a loss mask.

- A correct first attempt is code-generation data: user task -> assistant code.
- A verified refinement is used twice: refine-only (the answer is the code) and explain-then-refine
  (the answer is the explanation, then the code). The wrong first attempt sits in the history as an
  earlier assistant turn.
- Loss is computed on the final assistant answer and its end-of-turn marker only: never on user
  turns, never on the wrong first attempt.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Iterable, Sequence

from ledex_rl import prompts
from ledex_rl.collected import CollectedRow
from ledex_rl.losses import IGNORE  # label of a token that carries no loss
from ledex_rl.modes import MODES, AnswerMode
from ledex_rl.seeds import held_out_tasks

Kind = AnswerMode


@dataclass(frozen=True)
class SFTExample:
    kind: Kind
    task_id: str
    prompt: tuple[dict, ...]  # the conversation before the answer
    answer: str  # the assistant turn that is learned


@dataclass(frozen=True)
class TokenizedExample:
    kind: Kind
    task_id: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE on the prompt; the token id on the answer

    @property
    def num_loss_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def examples_from_rows(rows: Iterable[CollectedRow]) -> list[SFTExample]:
    """The paper's SFT items from collected rows, deduplicated."""
    examples: dict[tuple, SFTExample] = {}
    for row in rows:
        if not row.passed or not row.code.strip():
            continue
        messages = json.loads(row.messages)
        if row.kind == "first_attempt":
            ex = SFTExample("generate", row.task_id, tuple(messages), prompts.answer_text(row.code))
            examples.setdefault((ex.task_id, ex.kind, ex.prompt[0]["content"], ex.answer), ex)
            continue
        task = messages[0]["content"]
        for mode in MODES:
            explanation = row.explanation if mode == "explain_refine" else ""
            if mode == "explain_refine" and not explanation.strip():
                continue  # an answer that is only code teaches nothing about explaining
            prompt = prompts.refinement_conversation(task, row.wrong_code, row.wrong_feedback, mode)
            ex = SFTExample(mode, row.task_id, tuple(prompt), prompts.answer_text(row.code, explanation))
            examples.setdefault((ex.task_id, ex.kind, row.wrong_code, ex.answer), ex)
    return list(examples.values())


def split_held_out(examples: Sequence[SFTExample], fraction: float, seed: int = 0, tasks: Iterable[str] | None = None) -> tuple[list, list]:
    """Split by task, so no held-out task is seen in training; stable across runs and resumes. The
    fraction is taken of `tasks` (default: the examples' tasks); RL's validation takes the same
    fraction of the same collected tasks, so equal fractions hold out the same tasks in both."""
    held = held_out_tasks(tasks if tasks is not None else (ex.task_id for ex in examples), fraction, seed)
    return [ex for ex in examples if ex.task_id not in held], [ex for ex in examples if ex.task_id in held]


def tokenize(example: SFTExample, tokenizer, style: str, max_len: int) -> TokenizedExample | None:
    """Token ids and labels; None when the prompt alone leaves no room for an answer.

    The prompt is tokenized exactly as the rollout engine tokenizes a text prompt, so what SFT
    teaches is what generation sees. The answer keeps the template's end-of-turn marker (the model
    must learn to stop) and is cut on the right when too long.
    """
    prompt_text = prompts.render(example.prompt, tokenizer, style)
    full_text = render_with_answer(example.prompt, example.answer, tokenizer, style)
    if full_text.startswith(prompt_text):
        answer_part = full_text[len(prompt_text) :].rstrip()
    else:  # a template that rewrites history: fall back to answer + end of sequence
        answer_part = example.answer + (tokenizer.eos_token or "")
    prompt_ids = tokenizer(prompt_text).input_ids
    answer_ids = tokenizer(answer_part, add_special_tokens=False).input_ids
    room = max_len - len(prompt_ids)
    if room < 1 or not answer_ids:
        return None
    answer_ids = answer_ids[:room]
    return TokenizedExample(example.kind, example.task_id, tuple(prompt_ids + answer_ids), tuple([IGNORE] * len(prompt_ids) + answer_ids))


def render_with_answer(messages: Sequence[dict], answer: str, tokenizer, style: str) -> str:
    conversation = [*messages, {"role": "assistant", "content": answer}]
    if style == "chat" and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False)
    return prompts.starchat(conversation, add_generation_prompt=False)


def step_schedule(num_examples: int, batch_size: int, epochs: int, seed: int) -> list[list[int]]:
    """Example indices for every optimizer step of every epoch, reshuffled each epoch. A short last
    batch is filled from the start of the epoch's order, so every step has the same batch size."""
    if num_examples == 0:
        return []
    steps = []
    for epoch in range(epochs):
        order = list(range(num_examples))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        while len(order) % batch_size:
            order += order[: batch_size - len(order) % batch_size]
        steps += [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return steps


def micro_batches(indices: Sequence[int], lengths: Sequence[int], micro_batch_size: int) -> list[list[int]]:
    """Split one step's examples into micro-batches of similar length, so little compute is padding."""
    ordered = sorted(indices, key=lambda i: lengths[i])
    return [ordered[i : i + micro_batch_size] for i in range(0, len(ordered), micro_batch_size)]


def collate(examples: Sequence[TokenizedExample], pad_id: int) -> dict:
    """Right-padded lists (plain Python, cheap to ship to a Ray actor): input_ids, attention_mask, labels."""
    width = max(len(ex.input_ids) for ex in examples)
    batch = {"input_ids": [], "attention_mask": [], "labels": []}
    for ex in examples:
        pad = width - len(ex.input_ids)
        batch["input_ids"].append(list(ex.input_ids) + [pad_id] * pad)
        batch["attention_mask"].append([1] * len(ex.input_ids) + [0] * pad)
        batch["labels"].append(list(ex.labels) + [IGNORE] * pad)
    return batch


def reference_examples(problems: Sequence, rows: Iterable[CollectedRow], refinements_per_task: int = 1) -> list[SFTExample]:
    """Fallback data from the datasets' own solutions (`sft.use_reference_solutions`), for models too
    weak to produce verified data themselves: each reference solution as code-generation data, and as
    the refine-only answer to up to `refinements_per_task` of that task's wrong first attempts. Not in
    the paper; it never adds explain-then-refine items, which need a verified explanation."""
    by_task = {p.task_id: p for p in problems if p.reference_solution.strip()}
    examples: dict[tuple, SFTExample] = {}
    for problem in by_task.values():
        ex = SFTExample(
            "generate", problem.task_id, tuple(prompts.first_attempt_messages(problem)), prompts.answer_text(problem.reference_solution)
        )
        examples[(ex.task_id, "generate")] = ex
    for row in rows:
        problem = by_task.get(row.task_id)
        if problem is None or row.kind != "first_attempt" or row.passed:
            continue
        if sum(key[:2] == (problem.task_id, "refine") for key in examples) >= refinements_per_task:
            continue
        prompt = prompts.refinement_messages(problem, row.code, row.feedback, "refine")
        ex = SFTExample("refine", problem.task_id, tuple(prompt), prompts.answer_text(problem.reference_solution))
        examples.setdefault((ex.task_id, "refine", row.code), ex)
    return list(examples.values())
