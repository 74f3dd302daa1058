"""PPO through the real trainer actor (policy + critic), the real reference actor and a real vLLM engine
on the tiny model: tokens are scored at the temperature they were sampled at, and an update moves the
policy toward the rewarded answer and away from the punished one."""

import pytest
import torch

from ledex_rl import prompts
from ledex_rl.config import load_config
from ledex_rl.experience import Experience

TEMPERATURE = 0.8


def ppo_cfg(*overrides):
    return load_config(
        "configs/tiny.yaml",
        [
            "trainer.num_cpus_per_rank=0.25",
            "trainer.cpu_threads=1",
            "rl.reference.num_cpus=0.1",
            f"rl.ppo.temperature={TEMPERATURE}",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def actors(ray_cluster, tiny_model):
    """A trainer group with a critic, and the reference model, both from the tiny model."""
    import ray

    from actors.reference_model import start_reference
    from actors.trainer import OptimSchedule, TrainerGroup

    cfg = ppo_cfg()
    optim = OptimSchedule(lr=1e-4, total_steps=10, warmup_steps=0, batch_size=2, micro_batch_size=2, schedule="constant")
    group = TrainerGroup(str(tiny_model), cfg.trainer, cfg.model, optim, critic=optim, name_prefix="test-ppo-trainer")
    reference = start_reference(str(tiny_model), cfg.model, cfg.rl.reference, "cpu", threads=1, name="test-ppo-reference")
    yield group, reference
    ray.kill(reference)
    group.shutdown()


def test_trainer_and_reference_score_sampled_tokens_at_the_sampling_temperature(actors, tiny_model, tokenizer):
    from actors.reference_model import reference_response_logprobs
    from actors.rollout_engine import EnginePool, GenerationRequest

    group, reference = actors
    cfg = ppo_cfg("rollout.num_cpus_per_engine=0.25")
    engines = EnginePool(str(tiny_model), cfg.rollout, cfg.model, seed=0, name_prefix="test-ppo-rollout")
    try:
        prompt = prompts.render([{"role": "user", "content": "Write f."}], tokenizer, "chat")
        (completions,) = engines.generate([GenerationRequest(prompt, n=4, temperature=TEMPERATURE, max_tokens=16, seed=3)])
    finally:
        engines.shutdown()
    exp = Experience.from_samples([c.prompt_token_ids for c in completions], [c.token_ids for c in completions], tokenizer.pad_token_id)
    micro = exp.micro_batches(range(len(exp)), 2)
    trainer_logprobs = torch.cat([s.logprobs for s in group.ppo_evaluate(micro, TEMPERATURE)])
    reference_logprobs = reference_response_logprobs(reference, micro, TEMPERATURE)
    at_one = torch.cat([s.logprobs for s in group.ppo_evaluate(micro, 1.0)])
    for i, c in enumerate(completions):
        sampled = torch.tensor(c.logprobs)
        n = len(c.token_ids)
        assert torch.allclose(trainer_logprobs[i, :n], sampled, atol=2e-3)
        assert torch.allclose(reference_logprobs[i, :n], sampled, atol=2e-3)
        assert (at_one[i, :n] - sampled).abs().max() > 0.01  # temperature 1 is another distribution


def _answers(tokenizer):
    """Two prompts, each with a rewarded and a punished answer, as real token ids."""
    prompt_ids, answer_ids, rewards = [], [], []
    for task in ("Write f that returns 1.", "Write g that returns 2."):
        prompt = tokenizer(prompts.render([{"role": "user", "content": task}], tokenizer, "chat")).input_ids
        for answer, reward in ((prompts.answer_text("def f():\n    return 1"), 1.0), ("I am not sure.", -1.0)):
            prompt_ids.append(prompt)
            answer_ids.append(tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id])
            rewards.append(reward)
    return prompt_ids, answer_ids, rewards


def test_ppo_steps_raise_the_rewarded_answer_and_lower_the_punished_one(actors, tokenizer):
    """Through the stage's own advantage and training code: negating the advantages, the policy loss
    or the reward makes this fail."""
    from actors.reference_model import reference_response_logprobs
    from ledex_rl.stages.rl import PPOStep

    group, reference = actors
    cfg = ppo_cfg(
        "rl.ppo.batch_size=4",
        "rl.ppo.mini_batch_size=2",
        "rl.ppo.micro_batch_size=2",
        "rl.ppo.ppo_epochs=2",
        "rl.ppo.kl_coef=0.0",
        "rl.ppo.adaptive_kl=false",
    )
    stepper = PPOStep(cfg, [], {}, tokenizer, "chat", engines=None, rewards=None, reference=reference, trainer=group)
    prompt_ids, answer_ids, rewards = _answers(tokenizer)

    def answer_logprobs():
        exp = Experience.from_samples(prompt_ids, answer_ids, tokenizer.pad_token_id)
        micro = exp.micro_batches(range(len(exp)), 2)
        stepper.evaluate(exp, micro)
        return exp, micro, (exp.old_logprobs.sum(1) / exp.response_mask.sum(1))

    _, _, before = answer_logprobs()
    for step in range(3):
        exp, micro, _ = answer_logprobs()
        exp.ref_logprobs = reference_response_logprobs(reference, micro, TEMPERATURE)
        placements = [[(len(ids) - 1, reward)] for ids, reward in zip(answer_ids, rewards)]
        stepper.advantages(exp, placements, [i // 2 for i in range(len(exp))])
        metrics = stepper.train(exp, step)
    _, _, after = answer_logprobs()
    change = after - before
    rewarded, punished = change[torch.tensor(rewards) > 0], change[torch.tensor(rewards) < 0]
    assert (rewarded > 0.02).all(), change
    assert (punished < -0.02).all(), change
    assert all(m["policy_grad_norm"] > 0 and m["critic_grad_norm"] > 0 for m in metrics)


def test_grpo_without_advantages_moves_the_policy_back_toward_the_reference(ray_cluster, tiny_model, actors, tokenizer):
    """GRPO's KL term is in the loss: with equal rewards in every group the advantages are 0, so only
    that term moves the policy, and it moves it toward the reference. The step's only update takes
    the sampling policy's log-probs from its own forward (no separate pass). Dropping the term, or
    negating it, makes this fail."""
    from actors.reference_model import reference_response_logprobs
    from actors.trainer import OptimSchedule, TrainerGroup
    from ledex_rl import ppo
    from ledex_rl.stages.rl import PPOStep

    _, reference = actors
    cfg = ppo_cfg(
        "rl.advantage=grpo",
        "rl.ppo.batch_size=4",
        "rl.ppo.mini_batch_size=4",
        "rl.ppo.micro_batch_size=2",
        "rl.ppo.ppo_epochs=1",
        "rl.ppo.samples_per_prompt=2",
        "rl.ppo.kl_coef=1.0",
        "rl.ppo.adaptive_kl=false",
    )
    optim = OptimSchedule(lr=1e-3, total_steps=10, warmup_steps=0, batch_size=4, micro_batch_size=2, schedule="constant")
    group = TrainerGroup(str(tiny_model), cfg.trainer, cfg.model, optim, name_prefix="test-grpo-trainer")  # GRPO: no critic
    try:
        stepper = PPOStep(cfg, [], {}, tokenizer, "chat", engines=None, rewards=None, reference=reference, trainer=group)
        assert stepper.single_update
        prompt_ids, answer_ids, rewards = _answers(tokenizer)

        def grpo_step(step, scores):
            exp = Experience.from_samples(prompt_ids, answer_ids, tokenizer.pad_token_id)
            exp.ref_logprobs = reference_response_logprobs(reference, exp.micro_batches(range(len(exp)), 2), TEMPERATURE)
            stepper.advantages(exp, [[(len(ids) - 1, s)] for ids, s in zip(answer_ids, scores)], [0, 0, 1, 1])
            return stepper.train(exp, step)[0]

        def kl_to_reference():
            exp = Experience.from_samples(prompt_ids, answer_ids, tokenizer.pad_token_id)
            micro = exp.micro_batches(range(len(exp)), 2)
            stepper.evaluate(exp, micro)
            return float(ppo.kl_loss(exp.old_logprobs, reference_response_logprobs(reference, micro, TEMPERATURE), exp.response_mask))

        for step in range(2):  # rewarded answers up, punished ones down: away from the reference
            grpo_step(step, rewards)
        drifted = kl_to_reference()
        assert drifted > 1e-3
        for step in range(2, 5):
            metrics = grpo_step(step, [1.0] * len(rewards))
            assert metrics["kl_loss"] > 0 and metrics["policy_grad_norm"] > 0
        assert kl_to_reference() < 0.8 * drifted
    finally:
        group.shutdown()
