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
    `logits` may cover only the last K positions (a model run with `logits_to_keep=K`): they are
    aligned with the last K labels. Only positions that carry loss go through the softmax.
    """
    keep = logits.shape[1]
    targets = labels[:, -keep:][:, 1:] if keep < labels.shape[1] else labels[:, 1:]
    mask = targets != IGNORE
    picked_logits = logits[:, :-1][mask].float()  # [number of loss tokens, vocab]
    nll = torch.nn.functional.cross_entropy(picked_logits, targets[mask], reduction="sum")
    return nll, mask.sum()


def logprob_lists(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[float]]:
    """`token_logprobs` per example as plain lists, without the right padding."""
    logp = token_logprobs(logits, input_ids)
    lengths = attention_mask.sum(-1).tolist()
    return [row[: max(int(n) - 1, 0)].tolist() for row, n in zip(logp, lengths)]


def logits_tail(input_ids: torch.Tensor, response_start: torch.Tensor) -> int:
    """How many final positions need logits to score every response: from the position that
    predicts the earliest response's first token. A forward run with `logits_to_keep` set to this
    skips the prompts' logits, most of the memory at a 49k vocabulary."""
    return input_ids.shape[1] - (int(response_start.min()) - 1)


def response_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, response_start: torch.Tensor, width: int, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits of the response tokens divided by `temperature`: [b, width, V] float32,
    log-probabilities of the response tokens under them: [b, width]).

    Response token j of row b is `input_ids[b, response_start[b] + j]`, predicted at the position
    before it. `logits` cover the last K positions of `input_ids` (K = L when complete). Sampling at
    temperature T draws from softmax(logits / T): PPO's ratios and KL must use the same distribution.
    Columns past a row's response repeat its last position; the caller masks them.
    """
    length, keep = input_ids.shape[1], logits.shape[1]
    steps = torch.arange(width, device=input_ids.device)[None]
    predicting = (response_start[:, None] - 1 + steps).clamp(max=length - 2)  # [b, width]
    picked = logits.gather(1, (predicting - (length - keep))[..., None].expand(-1, -1, logits.shape[-1]))
    scaled = picked.float() / temperature
    targets = input_ids.gather(1, predicting + 1)
    return scaled, torch.log_softmax(scaled, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
