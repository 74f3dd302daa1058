"""The DeepSpeed trainer group, the reference model and weight sync, on the tiny model and a real
local Ray cluster: training lowers the loss, a sync makes the engine score tokens as the trainer
does, checkpoints restore the step and optimizer."""

import pytest

from ledex_rl.config import load_config
from ledex_rl.sft_data import SFTExample, collate, tokenize


def trainer_cfg(*overrides):
    return load_config("configs/tiny.yaml", ["trainer.num_cpus_per_rank=0.25", "trainer.cpu_threads=1", *overrides])


def sample_batch(tokenizer, n=4):
    examples = [
        SFTExample(
            "generate", f"t{i}", ({"role": "user", "content": f"Return {i} plus one."},), f"```python\ndef f():\n    return {i} + 1\n```"
        )
        for i in range(n)
    ]
    return collate([tokenize(ex, tokenizer, "chat", 256) for ex in examples], tokenizer.pad_token_id or 0)


def two_micro_batches(batch):
    return [{k: v[i : i + 2] for k, v in batch.items()} for i in (0, 2)]


def sequences_of(batch):
    """The unpadded token sequences of a collated batch."""
    return [tuple(ids[: sum(mask)]) for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def engine(ray_cluster, tiny_model):
    from actors.rollout_engine import EnginePool

    cfg = load_config("configs/tiny.yaml", ["rollout.num_cpus_per_engine=0.25"])
    pool = EnginePool(str(tiny_model), cfg.rollout, cfg.model, seed=0, name_prefix="test-trainer-rollout")
    yield pool
    pool.shutdown()


def make_group(tiny_model, cfg, lr=1e-3, total_steps=20, batch=4, micro=2):
    from actors.trainer import OptimSchedule, TrainerGroup

    optim = OptimSchedule(lr=lr, total_steps=total_steps, warmup_steps=0, batch_size=batch, micro_batch_size=micro)
    return TrainerGroup(str(tiny_model), cfg.trainer, cfg.model, optim, seed=0, name_prefix="test-trainer")


def synced_in_place(group, engine) -> dict:
    """Sync, and check that the CPU engine placed every bucket itself (not through vLLM's reload)."""
    before = engine.info()[0]
    stats = group.sync_weights(engine)
    after = engine.info()[0]
    assert after["buckets_in_place"] - before["buckets_in_place"] == stats["buckets"]
    assert after["buckets_reloaded"] == before["buckets_reloaded"]
    return stats


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.zero_stage=2", "trainer.gradient_checkpointing=true"],
        ["trainer.zero_stage=3", "trainer.lora_rank=4"],
        ["trainer.zero_stage=3", "trainer.num_ranks=2"],
    ],
    ids=["zero2-checkpointing", "zero3-lora", "zero3-two-ranks"],
)
def test_training_then_sync_makes_engine_logprobs_equal_trainers(ray_cluster, tiny_model, tokenizer, engine, overrides):
    import numpy as np

    group = make_group(tiny_model, trainer_cfg(*overrides))
    try:
        batch = sample_batch(tokenizer)
        micro = two_micro_batches(batch)
        before = group.eval_loss(micro)
        for _ in range(3):
            metrics = group.train_step(micro)
        assert metrics["global_step"] == 3 and metrics["tokens"] > 0
        assert group.eval_loss(micro) < before - 0.05  # it learned the batch

        sequences = sequences_of(batch)
        stale = engine.score(sequences)
        stats = synced_in_place(group, engine)
        assert stats["buckets"] >= 1 and stats["bytes"] > 0
        synced = engine.score(sequences)
        trained = group.token_logprobs(micro)
        for s, e, t in zip(stale, synced, trained):
            assert len(e) == len(t) == len(s)
            np.testing.assert_allclose(e, t, atol=2e-3)  # the engine now holds the trained weights
            assert np.abs(np.array(s) - np.array(t)).max() > 0.05  # and it did not before
    finally:
        group.shutdown()


def test_small_buckets_still_sync_whole_model(ray_cluster, tiny_model, tokenizer, engine):
    """1 MB buckets split the tiny model into several sends; the result must be the same."""
    import numpy as np

    group = make_group(tiny_model, trainer_cfg("trainer.sync_bucket_mb=1"))
    try:
        batch = sample_batch(tokenizer)
        micro = two_micro_batches(batch)
        group.train_step(micro)
        stats = synced_in_place(group, engine)
        assert stats["buckets"] > 2
        sequences = sequences_of(batch)
        for e, t in zip(engine.score(sequences), group.token_logprobs(micro)):
            np.testing.assert_allclose(e, t, atol=2e-3)
    finally:
        group.shutdown()


@pytest.mark.slow
def test_a_compiled_engine_takes_weights_in_place_too(ray_cluster, tiny_model, tokenizer):
    """A compiled engine (rollout.enforce_eager=false; the default on GPUs): weights placed in its
    parameters must reach the compiled graph, so its log-probs equal the trainer's after a sync."""
    import numpy as np

    from actors.rollout_engine import EnginePool

    cfg = load_config("configs/tiny.yaml", ["rollout.num_cpus_per_engine=0.25", "rollout.enforce_eager=false"])
    engine = EnginePool(str(tiny_model), cfg.rollout, cfg.model, seed=0, name_prefix="test-compiled-rollout")
    group = make_group(tiny_model, trainer_cfg())
    try:
        batch = sample_batch(tokenizer)
        micro = two_micro_batches(batch)
        for _ in range(3):
            group.train_step(micro)
        stale = engine.score(sequences_of(batch))
        synced_in_place(group, engine)
        for s, e, t in zip(stale, engine.score(sequences_of(batch)), group.token_logprobs(micro)):
            np.testing.assert_allclose(e, t, atol=2e-3)
            assert np.abs(np.array(s) - np.array(t)).max() > 0.05
    finally:
        group.shutdown()
        engine.shutdown()


def test_checkpoint_restores_step_weights_and_optimizer(ray_cluster, tiny_model, tokenizer, tmp_path):
    """Train 2 steps, checkpoint, train 2 more; a fresh group that loads the checkpoint and trains the
    same 2 steps ends with the same loss (weights, AdamW moments and the schedule were restored)."""
    cfg = trainer_cfg()
    batch = sample_batch(tokenizer)
    micro = two_micro_batches(batch)
    group = make_group(tiny_model, cfg)
    try:
        group.train_step(micro)
        group.train_step(micro)
        group.save_checkpoint(tmp_path / "ckpt", {"step": 2})
        group.train_step(micro)
        expected = group.train_step(micro)
    finally:
        group.shutdown()
    fresh = make_group(tiny_model, cfg)
    try:
        assert fresh.load_checkpoint(tmp_path / "ckpt") == {"step": 2}
        fresh.train_step(micro)
        resumed = fresh.train_step(micro)
        assert resumed["global_step"] == expected["global_step"] == 4
        assert resumed["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert resumed["lr"] == pytest.approx(expected["lr"])
    finally:
        fresh.shutdown()


def test_saved_model_loads_in_transformers_with_trained_weights(ray_cluster, tiny_model, tokenizer, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ledex_rl.losses import logprob_lists

    group = make_group(tiny_model, trainer_cfg("trainer.lora_rank=4"))
    try:
        batch = sample_batch(tokenizer)
        micro = two_micro_batches(batch)
        group.train_step(micro)
        group.save_model(tmp_path / "model", tiny_model)
        trained = group.token_logprobs(micro)
    finally:
        group.shutdown()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert AutoTokenizer.from_pretrained(tmp_path / "model").chat_template == tokenizer.chat_template
    assert not any("lora" in name for name, _ in model.named_parameters())
    ids, mask = torch.tensor(batch["input_ids"]), torch.tensor(batch["attention_mask"])
    with torch.no_grad():
        loaded = logprob_lists(model(input_ids=ids, attention_mask=mask).logits, ids, mask)
    for a, b in zip(loaded, trained):
        assert a == pytest.approx(b, abs=1e-4)
    # The adapter alone, in PEFT's format, on the model training started from, computes the same.
    from peft import PeftModel

    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), tmp_path / "model" / "adapter")
    assert adapted.peft_config["default"].r == 4
    with torch.no_grad():
        from_adapter = logprob_lists(adapted(input_ids=ids, attention_mask=mask).logits, ids, mask)
    for a, b in zip(from_adapter, trained):
        assert a == pytest.approx(b, abs=1e-4)


def test_reference_model_colocated_with_the_trainer_scores_like_the_starting_policy(ray_cluster, tiny_model, tokenizer, engine):
    """The reference actor lands in the trainer's rank-0 bundle (sized for both) and, after the
    policy trains, still scores tokens as the engine did before any sync: it stays frozen."""
    import numpy as np
    import ray

    from actors.reference_model import reference_logprobs, start_reference
    from actors.trainer import OptimSchedule, TrainerGroup

    cfg = trainer_cfg()
    optim = OptimSchedule(lr=1e-3, total_steps=5, warmup_steps=0, batch_size=4, micro_batch_size=2)
    extra = cfg.rl.reference.resources()
    group = TrainerGroup(str(tiny_model), cfg.trainer, cfg.model, optim, extra_bundle0=extra, name_prefix="test-coloc")
    ref = start_reference(
        str(tiny_model), cfg.model, cfg.rl.reference, "cpu", threads=1, placement_group=group.placement_group, name="test-reference"
    )
    try:
        batch = sample_batch(tokenizer, n=2)
        sequences = sequences_of(batch)
        group.train_step(two_micro_batches(sample_batch(tokenizer)))
        base = load_config("configs/tiny.yaml", ["rollout.num_cpus_per_engine=0.25"])
        from actors.rollout_engine import EnginePool

        base_engine = EnginePool(str(tiny_model), base.rollout, base.model, name_prefix="test-ref-rollout")
        try:
            expected = base_engine.score(sequences)
        finally:
            base_engine.shutdown()
        for r, e in zip(reference_logprobs(ref, [batch]), expected):
            np.testing.assert_allclose(r, e, atol=2e-3)
        table = ray.util.placement_group_table(group.placement_group)
        assert table["bundles"][0]["CPU"] == cfg.trainer.num_cpus_per_rank + cfg.rl.reference.num_cpus
    finally:
        ray.kill(ref)
        group.shutdown()


def test_a_stuck_engine_gives_a_clear_error_not_a_hang(ray_cluster):
    """The send loop waits at most `timeout_s` per bucket and names what to check."""
    import ray
    import torch

    from actors.weight_sync import WeightSyncError, send_buckets

    @ray.remote(num_cpus=0)
    class StuckEngine:  # the far side of the protocol, stuck in its load
        def load_weight_bucket(self, bucket):
            import time

            time.sleep(60)

        def finish_weight_update(self, version):
            return 0.0

    stuck = StuckEngine.remote()
    try:
        with pytest.raises(WeightSyncError, match="did not load bucket 0 within 2 s.*trainer.sync_timeout_s"):
            send_buckets([[("w", torch.zeros(4))]], [stuck], version=1, timeout_s=2)
    finally:
        ray.kill(stuck)


def test_gradient_norm_is_reported_at_zero_0_as_at_zero_2(ray_cluster, tiny_model, tokenizer):
    """DeepSpeed drops the norm at ZeRO 0 (fp32); the trainer clips there itself and reports it. The
    same first step on the same batch has the same gradient at every stage."""
    micro = two_micro_batches(sample_batch(tokenizer))
    norms = []
    for stage in (0, 2):
        group = make_group(tiny_model, trainer_cfg(f"trainer.zero_stage={stage}"))
        try:
            norms.append(group.train_step(micro)["grad_norm"])
        finally:
            group.shutdown()
    assert norms[0] > 0
    assert norms[0] == pytest.approx(norms[1], rel=1e-3)
