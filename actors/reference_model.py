"""The reference model: a frozen copy of the starting policy that scores tokens for PPO's KL term.

It runs on its own resources, or inside the trainer's rank-0 placement-group bundle when
`rl.reference.colocate` is set (the bundle is sized for both; see TrainerGroup's `extra_bundle0`).
"""

from __future__ import annotations

import os
from typing import Sequence

import ray
import torch

from actors.group import ActorGroup, ActorSpec
from ledex_rl.config import ModelConfig, ReferenceConfig
from ledex_rl.experience import MicroBatch
from ledex_rl.hardware import cpu_threads, thread_env


class ReferenceModel:
    def __init__(self, model_path: str, model_cfg: ModelConfig, device: str = "cpu", threads: int = 0):
        from transformers import AutoModelForCausalLM

        if device == "cpu":
            torch.set_num_threads(cpu_threads(threads))
        self.device = torch.device("cuda" if device == "cuda" else "cpu")
        dtype = getattr(torch, model_cfg.dtype) if device == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def token_logprobs(self, micro_batches: list[dict]) -> list[list[float]]:
        """Per example, log p(token t | tokens < t) for t = 1 .. its length - 1."""
        from ledex_rl.losses import logprob_lists

        out: list[list[float]] = []
        with torch.no_grad():
            for mb in micro_batches:
                ids = torch.tensor(mb["input_ids"], device=self.device)
                mask = torch.tensor(mb["attention_mask"], device=self.device)
                logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                out += logprob_lists(logits, ids, mask)
        return out

    def response_logprobs(self, micro_batches: list[MicroBatch], temperature: float) -> list[torch.Tensor]:
        """Per micro-batch: log-probs of the response tokens at the sampling temperature, [b, T]."""
        from ledex_rl.losses import logits_tail, response_logprobs

        out = []
        with torch.no_grad():
            for mb in micro_batches:
                ids, starts = mb.input_ids.to(self.device), mb.response_start.to(self.device)
                logits = self.model(
                    input_ids=ids,
                    attention_mask=mb.attention_mask.to(self.device),
                    use_cache=False,
                    logits_to_keep=logits_tail(ids, starts),
                ).logits
                out.append(response_logprobs(logits, ids, starts, mb.width, temperature)[1].cpu())
        return out

    def info(self) -> dict:
        return {"pid": os.getpid(), "device": str(self.device), "params": sum(p.numel() for p in self.model.parameters())}


def start_reference(
    model_path: str,
    model_cfg: ModelConfig,
    cfg: ReferenceConfig,
    device: str,
    threads: int = 0,
    placement_group=None,
    name: str = "reference",
    node_role: dict[str, float] | None = None,
):
    """The actor handle, placed in bundle 0 of `placement_group` when given (colocated), else on a node
    with `node_role` (NodeRolesConfig.resources("trainer"))."""
    env = thread_env(threads) if device == "cpu" else {}
    spec = ActorSpec(cfg.resources(), node_role or {}, env=env, max_restarts=1, placement_group=placement_group, naming="{prefix}")
    return ActorGroup(ReferenceModel, name, spec, [(model_path, model_cfg, device, threads)]).actors[0]


def reference_logprobs(actor, micro_batches: Sequence[dict]) -> list[list[float]]:
    """Whole-sequence log-probs per example (what the engines' `score` returns)."""
    return ray.get(actor.token_logprobs.remote(list(micro_batches)))


def reference_response_logprobs(actor, micro_batches: Sequence[MicroBatch], temperature: float) -> torch.Tensor:
    """The responses' log-probs at `temperature`, one row per response in micro-batch order: [B, T]."""
    return torch.cat(ray.get(actor.response_logprobs.remote(list(micro_batches), temperature)))
