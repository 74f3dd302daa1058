"""The LeDex rewards (docs/method.md §3), as pure functions.

    S_cb(r) = mean CodeBLEU(r, r_c) over the verified correct refinements r_c of the same wrong code
    S_ut(r) = fraction of the problem's unit tests that r passes
    R(r)    = 5 (S_cb + S_ut) - 5                       in [-5, 5]
    S_ex(e) = mean cosine similarity of sentence embeddings of e and the explanations that led to
              correct refinements of the same wrong code
    R(e)    = (50 S_ex - 35) / 3                         S_ex 0.4 -> -5, 0.7 -> 0, 1.0 -> 5

Edge cases (not in the paper; chosen here and tested):
- no code in the response: S_cb = S_ut = 0, so R(r) = -5;
- no reference refinements: S_cb = 0 (only the tests speak);
- CodeBLEU's data-flow part is 0 when nothing matches, and left out where the reference has no data
  flow (codebleu 0.7.0 gives full credit in both cases; see `codebleu`);
- an empty explanation in explain-then-refine: S_ex = 0, so R(e) = -35/3 (worse than any real one);
- no reference explanations: R(e) = 0 (no signal either way), and the code reward still applies.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

EMPTY_EXPLANATION_REWARD = (50 * 0.0 - 35) / 3


def code_reward(s_cb: float, s_ut: float) -> float:
    return 5.0 * (s_cb + s_ut) - 5.0


def explanation_reward(s_ex: float) -> float:
    return (50.0 * s_ex - 35.0) / 3.0


def codebleu_score(candidate: str, references: Sequence[str]) -> float:
    """S_cb: mean CodeBLEU of `candidate` against each reference (0 when either side is empty)."""
    if not candidate.strip() or not references:
        return 0.0
    scores = [codebleu(candidate, ref) for ref in references if ref.strip()]
    return float(np.mean(scores)) if scores else 0.0


def codebleu(candidate: str, reference: str) -> float:
    """CodeBLEU with equal weights on its four parts (n-gram, weighted n-gram, syntax, data flow).

    codebleu 0.7.0 adds `dataflow_match_score or 1`: a candidate whose data flow matches none of the
    reference's gets full data-flow credit, exactly as one that matches all of it. Here a real 0
    counts as 0; only where the reference has no data flow at all (`return 5`) is the part
    undefined, and then CodeBLEU is the mean of the other three (the package's own warning says to
    ignore the part there).
    """
    from codebleu import calc_codebleu

    parts = calc_codebleu([reference], [candidate], lang="python")
    three = parts["ngram_match_score"] + parts["weighted_ngram_match_score"] + parts["syntax_match_score"]
    if not _has_dataflow(reference):
        return three / 3
    return (three + parts["dataflow_match_score"]) / 4


@functools.lru_cache(maxsize=4096)
def _has_dataflow(reference: str) -> bool:
    """Whether codebleu extracts any data-flow edge from `reference` (what its match divides by)."""
    from codebleu.dataflow_match import dfg_function, get_data_flow, normalize_dataflow, remove_comments_and_docstrings
    from codebleu.utils import get_tree_sitter_language
    from tree_sitter import Parser

    parser = Parser()
    parser.language = get_tree_sitter_language("python")
    try:
        reference = remove_comments_and_docstrings(reference, "python")
    except Exception:  # noqa: BLE001 - codebleu scores the raw text then too
        pass
    return bool(normalize_dataflow(get_data_flow(reference, [parser, dfg_function["python"]])))


class _NoDataflowWarning(logging.Filter):
    """codebleu logs on the root logger, at every call, when a reference has no data flow; that case
    is handled in `codebleu` above."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "no reference data-flows" not in record.getMessage()


logging.getLogger().addFilter(_NoDataflowWarning())


def mean_cosine(embedding: np.ndarray, references: np.ndarray) -> float:
    """S_ex from embeddings: mean cosine similarity of one vector to each row of `references`."""
    if references.size == 0:
        return 0.0
    a = embedding / max(np.linalg.norm(embedding), 1e-12)
    b = references / np.maximum(np.linalg.norm(references, axis=1, keepdims=True), 1e-12)
    return float(np.mean(b @ a))


@dataclass(frozen=True)
class RewardParts:
    """Everything that went into one response's rewards (logged per step)."""

    s_cb: float
    s_ut: float
    s_ex: float | None  # None: refine-only, or no reference explanations
    code_reward: float
    explanation_reward: float | None  # None: nothing to place on an explanation token
    passed: bool


def score_response(
    code: str, pass_rate: float, passed: bool, reference_codes: Sequence[str], explanation: str | None, explanation_similarity: float | None
) -> RewardParts:
    """Combine the parts. `explanation` is None for refine-only responses; `explanation_similarity` is
    S_ex (None when there are no reference explanations)."""
    has_code = bool(code.strip())
    s_cb = codebleu_score(code, reference_codes) if has_code else 0.0
    s_ut = float(pass_rate) if has_code else 0.0
    r_code = code_reward(s_cb, s_ut)
    ok = passed and has_code
    if explanation is None:
        return RewardParts(s_cb, s_ut, None, r_code, None, ok)
    if not explanation.strip():
        return RewardParts(s_cb, s_ut, 0.0, r_code, EMPTY_EXPLANATION_REWARD, ok)
    if explanation_similarity is None:
        return RewardParts(s_cb, s_ut, None, r_code, 0.0, ok)
    s_ex = float(explanation_similarity)
    return RewardParts(s_cb, s_ut, s_ex, r_code, explanation_reward(s_ex), ok)
