"""Token-level quantities shared by the trainer and the reference model (pure torch functions)."""

from __future__ import annotations

import torch

IGNORE = -100


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(token t | tokens < t) for t = 1..T-1: shape [batch, T-1]. Computed in float32."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return torch.gather(logp, -1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def masked_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of negative log-likelihoods over tokens whose label is not IGNORE, number of such tokens).

    `labels` are aligned with the input (label t is the token at position t); the shift happens here.
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = torch.gather(logp, -1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return -(picked * mask).sum(), mask.sum()


def logprob_lists(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[float]]:
    """`token_logprobs` per example as plain lists, without the right padding."""
    logp = token_logprobs(logits, input_ids)
    lengths = attention_mask.sum(-1).tolist()
    return [row[: max(int(n) - 1, 0)].tolist() for row, n in zip(logp, lengths)]
