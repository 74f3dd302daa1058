"""Low-rank adapters (LoRA) for the trainer, and the merged weights the rollout engine needs.

With `trainer.lora_rank > 0` the linear layers named in `targets` are frozen and learn a low-rank
update: W x + (alpha / r) B A x. The engines and the saved checkpoint always get plain merged
weights (W + (alpha / r) B A) under the original names, so vLLM and transformers load them unchanged.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype))  # starts as a no-op
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + (self.lora_b @ self.lora_a) * self.scale


def apply_lora(model: nn.Module, rank: int, alpha: float, targets: Sequence[str] = DEFAULT_TARGETS) -> int:
    """Freeze `model` and wrap its target linear layers; returns how many layers were wrapped."""
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name in targets:
                setattr(module, child_name, LoRALinear(child, rank, alpha))
                wrapped += 1
    if not wrapped:
        raise ValueError(f"trainer.lora_rank: no linear layer named any of {list(targets)} in the model")
    return wrapped


def export_names(model: nn.Module, include_tied: bool = True) -> Iterator[tuple[str, list[tuple[str, nn.Parameter]]]]:
    """(exported name, the parameters it is made of) for every weight the engine holds, in order.
    Without LoRA each name is one parameter; a LoRA layer's weight is made of base, A and B.

    `include_tied` also lists a tied weight under each of its names (`lm_head.weight` for tied
    embeddings): vLLM's in-place reload unties them and needs both; a saved checkpoint needs one.
    """
    lora_prefixes = {name for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    for name, param in model.named_parameters(remove_duplicate=not include_tied):
        owner = name.rsplit(".", 1)[0]
        if owner in lora_prefixes:
            continue  # lora_a / lora_b: emitted with the base weight below
        base_owner = owner.rsplit(".", 1)[0] if owner.endswith(".base") else None
        if base_owner in lora_prefixes:
            module = model.get_submodule(base_owner)
            leaf = name.rsplit(".", 1)[1]
            parts = [(name, param)] + ([(f"{base_owner}.lora_a", module.lora_a), (f"{base_owner}.lora_b", module.lora_b)] if leaf == "weight" else [])
            yield f"{base_owner}.{leaf}", parts
        else:
            yield name, [(name, param)]


def export_value(model: nn.Module, name: str, parts: list[tuple[str, nn.Parameter]]) -> torch.Tensor:
    """The engine-ready tensor for one exported name (call with the parts' data gathered)."""
    if len(parts) == 3:
        module = model.get_submodule(name.rsplit(".", 1)[0])
        return module.merged_weight().detach()
    return parts[0][1].detach()
