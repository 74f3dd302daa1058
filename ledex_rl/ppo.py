"""PPO for LeDex (docs/method.md §5), as pure torch functions over padded [batch, T] tensors.

Positions index response tokens (0 .. T-1); `mask` is 1 on real response tokens. Per token:

    r_t = -beta * (log pi(y_t) - log pi_ref(y_t))
          + R(e) at the last explanation token + R(r) at the last code token
    delta_t = r_t + gamma V_{t+1} - V_t ;  A_t = sum_k (gamma lambda)^k delta_{t+k}   (GAE)
    L_policy = -mean(min(ratio A, clip(ratio) A))        ratio = pi(y_t) / pi_old(y_t), at the sampling temperature
    L_critic = mean(max((V - G)^2, (clip(V) - G)^2)) / 2  G = A + V (returns); the critic's own model and optimizer

With `rl.advantage=grpo` the advantage is the group-normalised total score on every token, and the KL
to the reference is a term of the loss instead of the reward (DeepSeekMath's GRPO, as TRL's `beta`):

    L = L_policy + beta * mean(exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def token_rewards(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, kl_coef: float, score_positions: list[list[tuple[int, float]]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token rewards, per-token KL). `score_positions[i]` lists (position, reward) pairs for
    response i, e.g. [(last explanation token, R(e)), (last code token, R(r))]."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    for i, placements in enumerate(score_positions):
        for position, value in placements:
            rewards[i, position] += value
    return rewards, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns). The value after the last real token is 0 (the episode ends there)."""
    T = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    values = values * mask
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def grpo_advantages(scores: torch.Tensor, groups: list[int], mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO-style: each response's total reward normalised within its group (same prompt), broadcast
    to every token of the response. No value function is needed."""
    groups_t = torch.tensor(groups, device=scores.device)
    normalised = torch.zeros_like(scores)
    for g in groups_t.unique():
        members = groups_t == g
        group_scores = scores[members]
        std = group_scores.std(unbiased=False) if group_scores.numel() > 1 else torch.tensor(0.0)
        normalised[members] = (group_scores - group_scores.mean()) / (std + eps)
    return normalised[:, None] * mask


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(clipped surrogate loss, fraction of tokens where the clip was active)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_fraction


def kl_loss(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GRPO's KL term: the k3 estimator of KL(pi || pi_ref) per response token, exp(d) - d - 1 with
    d = log pi_ref - log pi (>= 0, and 0 where the two agree), its masked mean. [b, T] -> scalar."""
    d = ref_logprobs - logprobs
    return masked_mean(torch.exp(d) - d - 1, mask)


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> torch.Tensor:
    clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return masked_mean(-(logp.exp() * logp).sum(-1), mask)


@dataclass
class RewardScaler:
    """Divides rewards by a running standard deviation of the responses' total rewards, so that the
    critic regresses returns of about unit scale whatever the reward's range (LeDex's is +-5) and a
    value clip of 0.2 means what it says. Signs and ratios are kept, the KL penalty included."""

    count: float = 0.0
    mean: float = 0.0
    m2: float = 0.0
    eps: float = 1e-4

    def update(self, totals: torch.Tensor) -> None:
        """Welford's update with a batch of per-response totals: [B]."""
        n = float(totals.numel())
        if n == 0:
            return
        batch_mean, batch_var = float(totals.mean()), float(totals.var(unbiased=False))
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.m2 += batch_var * n + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return (self.m2 / self.count) ** 0.5 if self.count > 1 else 1.0

    def scale(self, rewards: torch.Tensor) -> torch.Tensor:
        return rewards / max(self.std, self.eps)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over real tokens: 1 is a perfect critic, 0 no better
    than a constant, below 0 worse."""
    var = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    residual = returns - values
    var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
    return float(1 - var_residual / var.clamp_min(1e-8))


@dataclass
class KLController:
    """Fixed, or adaptive as in Ziegler et al. (TRL's legacy default): the coefficient grows when
    the measured KL is above `target` and shrinks when below, at a pace set by `horizon`."""

    value: float
    adaptive: bool = False
    target: float = 6.0
    horizon: int = 10000

    def update(self, kl: float, n_steps: int) -> float:
        if self.adaptive:
            error = max(min(kl / self.target - 1, 0.2), -0.2)
            self.value *= 1 + error * n_steps / self.horizon
        return self.value
