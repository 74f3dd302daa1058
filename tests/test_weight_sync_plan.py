"""Bucket planning for weight sync and LoRA weight export (pure: no Ray, no engine)."""

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from actors.weight_sync import layer_key, plan_buckets
from ledex_rl.lora import ADAPTER, adapter_names, apply_lora, export_names, export_value


def test_layer_key_groups_a_decoder_layer():
    assert layer_key("model.layers.3.self_attn.q_proj.weight") == "model.layers.3"
    assert layer_key("model.layers.12.mlp.up_proj.weight") == "model.layers.12"
    assert layer_key("model.embed_tokens.weight") == "model.embed_tokens.weight"
    assert layer_key("lm_head.weight") == "lm_head.weight"


def test_buckets_respect_the_size_and_never_split_a_layer():
    sizes = [("model.embed_tokens.weight", 40)]
    for i in range(3):
        sizes += [
            (f"model.layers.{i}.self_attn.q_proj.weight", 10),
            (f"model.layers.{i}.self_attn.k_proj.weight", 10),
            (f"model.layers.{i}.mlp.up_proj.weight", 20),
        ]
    sizes += [("model.norm.weight", 1), ("lm_head.weight", 40)]
    buckets = plan_buckets(sizes, max_bytes=80)
    assert [n for b in buckets for n in b] == [n for n, _ in sizes]  # everything, in order, once
    size = dict(sizes)
    for bucket in buckets:
        layers = {layer_key(n) for n in bucket}
        assert sum(size[n] for n in bucket) <= 80 or len(layers) == 1
        for other in buckets:
            if other is not bucket:
                assert not layers & {layer_key(n) for n in other}  # a layer lives in one bucket
    assert len(buckets) == 3
    # A layer larger than a bucket travels alone rather than being split.
    assert plan_buckets(sizes, max_bytes=5)[1] == [n for n, _ in sizes[1:4]]


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(4, 4, bias=False)
        self.norm = nn.LayerNorm(4)


def test_lora_export_merges_under_the_original_names():
    torch.manual_seed(0)
    model = nn.Sequential(Block())
    original = model[0].q_proj.weight.detach().clone()
    assert apply_lora(model, rank=2, alpha=4.0, targets=("q_proj", "absent_proj")) == 1
    layer = model[0].q_proj
    a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
    assert isinstance(layer, LoraLayer) and not layer.base_layer.weight.requires_grad and a.requires_grad
    assert not model[0].norm.weight.requires_grad  # everything but the adapter is frozen
    x = torch.randn(3, 4)
    assert torch.allclose(layer(x), x @ original.t())  # B starts at zero: a no-op
    with torch.no_grad():
        b.normal_()
    names = dict(export_names(model))
    assert set(names) == {"0.q_proj.weight", "0.norm.weight", "0.norm.bias"}
    merged = export_value(model, "0.q_proj.weight", names["0.q_proj.weight"])
    assert torch.allclose(x @ merged.t(), layer(x), atol=1e-6)  # the merged weight computes what LoRA computes
    assert torch.allclose(merged, original + 2.0 * b @ a)
    assert set(adapter_names(model)) == {"base_model.model.0.q_proj.lora_A.weight", "base_model.model.0.q_proj.lora_B.weight"}
