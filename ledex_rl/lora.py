"""Low-rank adapters (LoRA) through PEFT, and the merged weights the rollout engine needs.

With `trainer.lora_rank > 0` PEFT injects LoRA layers into the linear layers named in `targets` and
freezes the rest: W x + (alpha / r) B A x. The engines and the saved model always get plain merged
weights (W + (alpha / r) B A) under the original names, so vLLM and transformers load them unchanged;
the adapter itself is saved beside the model in PEFT's format (`adapter/`), which PEFT, transformers
and vLLM's LoRA support load.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER = "default"  # PEFT's name for a model's one adapter


def lora_config(rank: int, alpha: float, targets: Sequence[str]) -> LoraConfig:
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, bias="none")


def apply_lora(model: nn.Module, rank: int, alpha: float, targets: Sequence[str] = DEFAULT_TARGETS) -> int:
    """Freeze `model` and give its target linear layers LoRA adapters; returns how many layers got one."""
    present = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    wanted = [t for t in targets if t in present]  # PEFT refuses a target the model does not have
    if not wanted:
        raise ValueError(f"trainer.lora_rank: no linear layer named any of {list(targets)} in the model")
    inject_adapter_in_model(lora_config(rank, alpha, wanted), model, adapter_name=ADAPTER)
    return sum(isinstance(module, LoraLayer) for module in model.modules())


def export_names(model: nn.Module, include_tied: bool = True) -> Iterator[tuple[str, list[tuple[str, nn.Parameter]]]]:
    """(exported name, the parameters it is made of) for every weight the engine holds, in order.
    Without LoRA each name is one parameter; a LoRA layer's weight is made of its base weight, A and B.

    `include_tied` also lists a tied weight under each of its names (`lm_head.weight` for tied
    embeddings): vLLM's in-place reload unties them and needs both; a saved checkpoint needs one.
    """
    lora_layers = {name for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    for name, param in model.named_parameters(remove_duplicate=not include_tied):
        owner, leaf = name.rsplit(".", 1)
        layer = owner.removesuffix(".base_layer")
        if ".lora_" in name:
            continue  # A and B: emitted with the base weight below
        if layer != owner and layer in lora_layers:
            module = model.get_submodule(layer)
            adapters = [
                (f"{layer}.lora_A.{ADAPTER}.weight", module.lora_A[ADAPTER].weight),
                (f"{layer}.lora_B.{ADAPTER}.weight", module.lora_B[ADAPTER].weight),
            ]
            yield f"{layer}.{leaf}", [(name, param)] + (adapters if leaf == "weight" else [])
        else:
            yield name, [(name, param)]


def export_value(model: nn.Module, name: str, parts: list[tuple[str, nn.Parameter]]) -> torch.Tensor:
    """The engine-ready tensor for one exported name (call with the parts' data gathered)."""
    if len(parts) == 3:
        (_, base), (_, a), (_, b) = parts
        scaling = model.get_submodule(name.rsplit(".", 1)[0]).scaling[ADAPTER]
        return (base + (b @ a) * scaling).detach()
    return parts[0][1].detach()


def adapter_names(model: nn.Module) -> dict[str, nn.Parameter]:
    """The adapter's parameters under the names PEFT saves them by (`base_model.model.<layer>.lora_A.weight`)."""
    return {f"base_model.model.{name.replace(f'.{ADAPTER}.', '.')}": param for name, param in model.named_parameters() if ".lora_" in name}
