"""A PPO step's data as named, shape-documented batches shared by the controller, the trainer and the
reference model (in the spirit of OpenRLHF's `Experience`). Everything per token is response-aligned:
column j is response token j of each row, whatever the prompt's length.

    B: responses in the step; T: the longest response; L: the longest prompt + response of a micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch


@dataclass(frozen=True)
class MicroBatch:
    """What one forward pass sees. `response_start[b]` is the index in `input_ids` of row b's first
    response token; response token j of row b is `input_ids[b, response_start[b] + j]`, and column j
    of every [b, T] field refers to it. The PPO fields are None where a pass does not need them."""

    input_ids: torch.Tensor  # [b, L] long, right-padded
    attention_mask: torch.Tensor  # [b, L] long
    response_start: torch.Tensor  # [b] long
    response_mask: torch.Tensor  # [b, T] float: 1 on real response tokens
    old_logprobs: torch.Tensor | None = None  # [b, T] the sampling policy's; None: the update's own forward (its only one)
    old_values: torch.Tensor | None = None  # [b, T] the critic's values before the update
    advantages: torch.Tensor | None = None  # [b, T]
    returns: torch.Tensor | None = None  # [b, T] value targets
    ref_logprobs: torch.Tensor | None = None  # [b, T] the reference's log-probs (GRPO's KL term)

    @property
    def width(self) -> int:
        return self.response_mask.shape[1]

    def padding(self) -> "MicroBatch":
        """A copy that carries no loss (every response token masked): what a rank runs when it has
        fewer micro-batches than the others, so that collective ZeRO-3 gathers stay in step."""
        return replace(self, response_mask=torch.zeros_like(self.response_mask))


@dataclass(frozen=True)
class ResponseScores:
    """The trainer's view of a micro-batch's responses before an update."""

    logprobs: torch.Tensor  # [b, T] the policy's log-probs at the sampling temperature
    values: torch.Tensor  # [b, T] the critic's values (zeros without a critic)


@dataclass
class Experience:
    """A whole PPO step on the controller: the sampled rows, then what each phase adds ([B, T])."""

    sequences: list[list[int]]  # prompt + response token ids per row (ragged)
    response_start: list[int]  # where each row's response begins
    response_mask: torch.Tensor  # [B, T]
    old_logprobs: torch.Tensor | None = None  # [B, T] the policy that sampled, at the sampling temperature
    ref_logprobs: torch.Tensor | None = None  # [B, T] the frozen reference, same temperature
    old_values: torch.Tensor | None = None  # [B, T] the critic
    rewards: torch.Tensor | None = None  # [B, T] per-token rewards (KL penalty + scores at their tokens)
    kl: torch.Tensor | None = None  # [B, T] log pi - log pi_ref per token
    advantages: torch.Tensor | None = None  # [B, T]
    returns: torch.Tensor | None = None  # [B, T]
    pad_id: int = 0
    extras: dict = field(default_factory=dict)

    @classmethod
    def from_samples(cls, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int) -> "Experience":
        width = max((len(r) for r in responses), default=0)
        mask = torch.zeros(len(responses), max(width, 1))
        for i, r in enumerate(responses):
            mask[i, : len(r)] = 1.0
        return cls([list(p) + list(r) for p, r in zip(prompts, responses)], [len(p) for p in prompts], mask, pad_id=pad_id)

    def __len__(self) -> int:
        return len(self.sequences)

    def micro_batches(self, indices: Sequence[int], size: int, with_targets: bool = False) -> list[MicroBatch]:
        """Rows `indices` in micro-batches of `size`, each padded to its own longest row; with
        `with_targets`, the PPO fields that are filled in ride along."""
        out = []
        indices = list(indices)
        for i in range(0, len(indices), size):
            chunk = indices[i : i + size]
            longest = max(len(self.sequences[j]) for j in chunk)
            ids = torch.full((len(chunk), longest), self.pad_id, dtype=torch.long)
            attention = torch.zeros(len(chunk), longest, dtype=torch.long)
            for row, j in enumerate(chunk):
                ids[row, : len(self.sequences[j])] = torch.tensor(self.sequences[j])
                attention[row, : len(self.sequences[j])] = 1
            targets = {}
            if with_targets:
                names = ("old_logprobs", "old_values", "advantages", "returns", "ref_logprobs")
                targets = {name: getattr(self, name)[chunk] for name in names if getattr(self, name) is not None}
            out.append(
                MicroBatch(ids, attention, torch.tensor([self.response_start[j] for j in chunk]), self.response_mask[chunk], **targets)
            )
        return out
