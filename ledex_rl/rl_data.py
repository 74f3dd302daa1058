"""RL data (docs/method.md §4): which wrong solutions become PPO prompts, with the
references their rewards need, and where in a sampled response each reward goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from ledex_rl import prompts
from ledex_rl.collected import CollectedRow
from ledex_rl.rewards import RewardParts


@dataclass(frozen=True)
class RLPrompt:
    task_id: str
    wrong_code: str
    feedback: str
    reference_codes: tuple[str, ...]  # R_c
    reference_explanations: tuple[str, ...]  # E_c


def rl_prompts(rows: Iterable[CollectedRow], problems: Mapping, use_reference_solutions: bool) -> list[RLPrompt]:
    """One prompt per wrong first attempt that has at least one correct refinement to compare with:
    its verified teacher refinements (the paper), or, only when it has none and with
    `use_reference_solutions`, the dataset's solution (not in the paper; it gives S_cb a reference
    but no explanations)."""
    rows = list(rows)
    verified: dict[tuple, list[CollectedRow]] = {}
    for row in rows:
        if row.kind == "refinement" and row.passed and row.code.strip():
            verified.setdefault((row.task_id, row.parent_index), []).append(row)
    out = []
    for row in rows:
        if row.kind != "first_attempt" or row.passed or row.task_id not in problems:
            continue
        refs = verified.get((row.task_id, row.sample_index), [])
        codes = list(dict.fromkeys(r.code for r in refs))
        explanations = tuple(dict.fromkeys(r.explanation for r in refs if r.explanation.strip()))
        reference = problems[row.task_id].reference_solution
        if use_reference_solutions and not codes and reference.strip():
            codes.append(reference)
        if codes:
            out.append(RLPrompt(row.task_id, row.code, row.feedback, tuple(codes), explanations))
    return out


# Tokens of context decoded before each token: enough for a byte-level BPE to finish any UTF-8
# character (4 bytes) and for SentencePiece's leading-space rule to see the previous word.
_DECODE_WINDOW = 8


def token_end_offsets(tokenizer, token_ids) -> list[int]:
    """Character offset at which each token's text ends in `tokenizer.decode(token_ids)`.

    A character split over several tokens (byte-level BPE, byte fallback) ends at the token that
    completes it. Linear in the length: each token's new text is the difference of two decodes of
    a short window before it, as vLLM's incremental detokenizer does; where that disagrees with the
    whole decode (special tokens inside the text), every prefix is decoded instead.
    """
    ids = list(token_ids)
    ends, length = [], 0
    for k in range(len(ids)):
        window = ids[max(0, k - _DECODE_WINDOW) : k + 1]
        length += _complete_chars(_decode(tokenizer, window)) - _complete_chars(_decode(tokenizer, window[:-1]))
        ends.append(length)
    if length == _complete_chars(_decode(tokenizer, ids)):
        return ends
    return [_complete_chars(_decode(tokenizer, ids[: k + 1])) for k in range(len(ids))]


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True) if ids else ""


def _complete_chars(text: str) -> int:
    """Characters of `text` that are whole: a decode that ends inside a multi-byte character ends
    with one replacement character for the incomplete part."""
    return len(text) - text.endswith("\ufffd")


def token_at(offsets: list[int], char_pos: int) -> int:
    """Index of the token whose text contains character `char_pos`."""
    for k, end in enumerate(offsets):
        if end > char_pos:
            return k
    return len(offsets) - 1


def reward_positions(text: str, offsets: list[int], mode: str, parts: RewardParts) -> list[tuple[int, float]]:
    """[(token index, reward)]: R(r) on the last code token (the last token when there is no code),
    and in explain-then-refine R(e) on the last explanation token (the first token when empty)."""
    if not offsets:
        return []
    parsed = prompts.parse_response(text)
    last = len(offsets) - 1
    if parsed.has_code:
        code_end = parsed.code_start + len(text[parsed.code_start : parsed.code_end].rstrip())
        code_pos = min(token_at(offsets, max(code_end - 1, 0)), last)
    else:
        code_pos = last
    placed = [(code_pos, parts.code_reward)]
    if mode == "explain_refine" and parts.explanation_reward is not None:
        explanation_pos = token_at(offsets, parsed.explanation_end - 1) if parsed.explanation_end > 0 else 0
        placed.insert(0, (min(explanation_pos, code_pos), parts.explanation_reward))
    return placed
