"""Bucket planning for weight sync and LoRA weight export (pure: no Ray, no engine)."""

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from actors.engine_weights import plan_placements
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


class PackedLinear(nn.Module):
    """As a CPU engine holds a linear layer once oneDNN has packed it: its sizes, its weight freed."""

    def __init__(self, out_features: int, in_features: int):
        super().__init__()
        self.output_size_per_partition, self.input_size_per_partition = out_features, in_features
        self.weight = nn.Parameter(torch.empty(0), requires_grad=False)


def engine_shaped_model() -> nn.Module:
    """The module tree of a vLLM Llama: q/k/v fused into qkv_proj, as `packed_modules_mapping` says."""
    model = nn.Module()
    model.packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"]}
    model.model = nn.Module()
    attention = nn.Module()
    attention.qkv_proj, attention.o_proj = PackedLinear(12, 4), PackedLinear(4, 4)
    layer = nn.Module()
    layer.self_attn, layer.input_layernorm = attention, nn.LayerNorm(4)
    model.model.layers = nn.ModuleList([layer])
    return model


def test_fused_shards_are_placed_in_the_order_the_engine_fuses_them():
    model = engine_shaped_model()
    prefix = "model.layers.0.self_attn."
    shards = [(prefix + f"{name}.weight", torch.full((4, 4), float(i))) for i, name in enumerate(("q_proj", "k_proj", "v_proj"))]
    bucket = [shards[2], shards[0], (prefix + "o_proj.weight", torch.ones(4, 4)), shards[1]]
    bucket.append(("model.layers.0.input_layernorm.weight", torch.ones(4)))
    by_module = {id(p.module): p for p in plan_placements(model, bucket)}
    qkv = by_module[id(model.model.layers[0].self_attn.qkv_proj)].value
    assert [float(qkv[row, 0]) for row in (0, 4, 8)] == [0.0, 1.0, 2.0]  # q, then k, then v
    assert id(model.model.layers[0].input_layernorm) in by_module and len(by_module) == 3


def test_a_weight_without_its_place_leaves_the_bucket_to_vllms_reload():
    prefix = "model.layers.0.self_attn."
    q, k, v = ((prefix + f"{name}.weight", torch.zeros(4, 4)) for name in ("q_proj", "k_proj", "v_proj"))
    assert plan_placements(engine_shaped_model(), [q, k]) is None  # v missing: the fused layer is incomplete
    assert plan_placements(engine_shaped_model(), [(prefix + "o_proj.weight", torch.zeros(4, 5))]) is None  # another shape
    assert plan_placements(engine_shaped_model(), [(prefix + "rotary.weight", torch.zeros(4))]) is None  # no such module
    assert plan_placements(engine_shaped_model(), [q, k, v]) is not None
