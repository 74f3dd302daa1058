"""The RL stage end to end on the tiny model: every actor (rollout, executor, reward, reference,
trainer) on a local Ray cluster, two PPO steps, weights synced to the engine each step."""

import json

import pytest

from ledex_rl.config import load_config
from tests.test_sft import sft_overrides, write_collected


@pytest.mark.parametrize("advantage", ["gae", "grpo"])
def test_two_ppo_steps_through_every_actor(ray_cluster, tiny_env, tmp_path, advantage):
    import torch
    from transformers import AutoModelForCausalLM

    from ledex_rl.pipeline import policy_for, run_stage

    write_collected(tmp_path, n_tasks=4)
    extra = ["trainer.zero_stage=2", "rl.ppo.lr=1e-4", f"rl.advantage={advantage}", "rl.rewards.reward_actor_num_cpus=0.25",
             "rl.reference.num_cpus=0.1", "sandbox.executor_num_cpus=0.1", "rollout.num_cpus_per_engine=0.25"]
    if advantage == "grpo":
        extra.append("rl.ppo.samples_per_prompt=2")
    else:  # evaluation during RL, after step 2 only
        extra += ["rl.eval_every_steps=2", "rl.eval_tasks=1", "eval.max_new_tokens=16"]
    cfg = load_config("configs/tiny.yaml", sft_overrides(tmp_path, *extra))
    start = policy_for(cfg, "rl")
    assert run_stage("rl", cfg)
    summary = json.loads((tmp_path / "rl" / "summary.json").read_text())
    assert summary["engine_weights_versions"] == [2]  # the engine received new weights after each step
    metrics = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        for key in ("reward/code", "reward/explanation", "reward/pass_rate", "kl/mean_per_response", "ppo/policy_loss",
                    "ppo/value_loss", "ppo/clip_fraction", "ppo/entropy", "response/length_mean", "time/generate_s",
                    "time/score_s", "time/execute_s", "time/reference_s", "time/train_s", "time/sync_s"):
            assert key in m, key
        assert -5.0 <= m["reward/code"] <= 5.0 and m["ppo/entropy"] > 0
    if advantage == "gae":
        assert "eval/humaneval/init_pass@1" not in metrics[0]
        assert {"eval/humaneval/init_pass@1", "eval/humaneval/refine_pass@1", "eval/humaneval/explain_refine_pass@1"} <= set(metrics[1])
        assert (tmp_path / "rl" / "evals" / "step-00002" / "results.json").is_file()
    # Step 2 sampled from the updated policy, which has drifted from the reference: KL is no longer ~0.
    assert abs(metrics[1]["kl/mean_per_response"]) > 1e-4
    assert policy_for(cfg, "eval") == str(tmp_path / "rl" / "model")
    before = AutoModelForCausalLM.from_pretrained(start).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "rl" / "model").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
