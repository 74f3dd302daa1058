"""The ways a model answers, defined once (docs/method.md §2): a first attempt at a task (`generate`), or
a refinement of a wrong attempt, with the fix alone (`refine`) or explained first (`explain_refine`)."""

from __future__ import annotations

from typing import Literal, get_args

Mode = Literal["refine", "explain_refine"]  # the two ways to answer a refinement request
AnswerMode = Literal["generate", "refine", "explain_refine"]  # a first attempt, or a refinement in a Mode

MODES: tuple[str, ...] = get_args(Mode)
ANSWER_MODES: tuple[str, ...] = get_args(AnswerMode)
