"""New weights into a live vLLM CPU engine, in place, without vLLM's layer-by-layer reload.

vLLM's CPU build hands each linear layer's weight to oneDNN, which packs it into its own blocked
layout and frees the original (`dispatch_cpu_unquantized_gemm`). Its in-place reload therefore
rebuilds every layer of a bucket on the meta device, allocates it, copies the checkpoint's shards in,
packs, and copies back. Measured on SmolLM2-135M (fp32, 2 cores): 0.9 s per sync, of which packing
is 0.2 s. Here each weight goes straight to where the engine keeps it: a linear layer's new weight
(q/k/v and gate/up concatenated as vLLM fuses them) is packed from the bucket's own buffer, and any
other parameter (norms, the embedding table, biases) is copied into place; a layer that keeps a
packed copy of a kept weight (the LM head) is packed again.

`load_in_place` runs in the engine's worker (`LLM.collective_rpc`); it loads nothing and returns
False when a weight has no place it knows (another naming, a shape that differs, tensor parallelism),
and the engine then uses vLLM's reload for that bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class Placement:
    """One parameter's new value: `module.<attr>` becomes `value` (shards already concatenated)."""

    module: nn.Module
    attr: str  # "weight" or "bias"
    value: torch.Tensor


def load_in_place(worker, named_tensors: Sequence[tuple[str, torch.Tensor]]) -> bool:
    """In the engine's worker: place every (checkpoint name, tensor) of the bucket; False, with nothing
    loaded, when some weight has no known place."""
    model = worker.model_runner.model
    placements = plan_placements(model, named_tensors)
    if placements is None:
        return False
    with torch.no_grad():
        handed_over = [p.module for p in placements if _assign(p)]
        for module in {id(p.module): p.module for p in placements if p.attr == "weight"}.values():
            _repack(module)
        for module in handed_over:
            if module.weight.numel():  # kept, not packed (a layer on torch's own linear): own the memory
                module.weight = nn.Parameter(module.weight.detach().clone(), requires_grad=False)
    return True


def plan_placements(model: nn.Module, named_tensors: Sequence[tuple[str, torch.Tensor]]) -> list[Placement] | None:
    """Where each weight goes, fused shards gathered in the order the model fuses them; None when a
    name has no module, a fused layer is incomplete, or a shape differs from what the engine holds."""
    shard_of = {
        shard: (fused, i, len(shards))
        for fused, shards in getattr(model, "packed_modules_mapping", {}).items()
        for i, shard in enumerate(shards)
    }
    parts: dict[tuple[str, str], list] = {}
    for name, tensor in named_tensors:
        path, _, attr = name.rpartition(".")
        parent, _, leaf = path.rpartition(".")
        fused, index, count = shard_of.get(leaf, (leaf, 0, 1))
        parts.setdefault((f"{parent}.{fused}" if parent else fused, attr), [None] * count)[index] = tensor
    placements = []
    for (path, attr), shards in parts.items():
        module = _submodule(model, path)
        if module is None or any(s is None for s in shards):
            return None
        value = shards[0] if len(shards) == 1 else torch.cat(shards)
        if tuple(value.shape) != _held_shape(module, attr):
            return None
        placements.append(Placement(module, attr, value))
    return placements


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _held_shape(module: nn.Module, attr: str) -> tuple[int, ...] | None:
    """The shape the engine holds `module.<attr>` in; a packed linear weight was freed, so its shape
    comes from the layer's sizes."""
    param = getattr(module, attr, None)
    if not isinstance(param, torch.Tensor):
        return None
    if param.numel() == 0 and attr == "weight" and hasattr(module, "output_size_per_partition"):
        return (module.output_size_per_partition, module.input_size_per_partition)
    return tuple(param.shape)


def _assign(placement: Placement) -> bool:
    """Copy the value into place; True when it was handed over instead (the bucket's own buffer, which
    the object store owns, becomes the weight until the layer packs it)."""
    module, attr, value = placement.module, placement.attr, placement.value
    param = getattr(module, attr)
    if param.numel():
        param.copy_(value)
        return False
    # A linear weight oneDNN packed and freed: the new one is packed from where it lies.
    setattr(module, attr, nn.Parameter(value.to(getattr(module, "params_dtype", value.dtype)), requires_grad=False))
    return True


def _repack(module: nn.Module) -> None:
    """Let the layer's own method pack its weight again, as after vLLM's load (a no-op for layers
    that keep none: norms)."""
    method = getattr(module, "quant_method", None)
    if method is not None and hasattr(module, "cpu_linear"):
        method.process_weights_after_loading(module)
