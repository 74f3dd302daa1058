"""The RL stage end to end on the tiny model: every actor (rollout, executor, reward, reference,
trainer) on a local Ray cluster, two PPO steps, weights synced to the engine each step."""

import json

import pytest

from ledex_rl.config import load_config
from tests.test_sft import sft_overrides, write_collected

# Small actors, so that every role fits the test cluster beside the others, and a fast rate.
SMALL = (
    "rl.ppo.lr=1e-4",
    "rl.rewards.reward_actor_num_cpus=0.25",
    "rl.reference.num_cpus=0.1",
    "sandbox.executor_num_cpus=0.1",
    "rollout.num_cpus_per_engine=0.25",
)


@pytest.mark.parametrize("advantage", ["gae", "grpo"])
def test_two_ppo_steps_through_every_actor(ray_cluster, tiny_env, tmp_path, advantage):
    import torch
    from transformers import AutoModelForCausalLM

    from ledex_rl.pipeline import run_stage
    from ledex_rl.run_dir import policy_for

    write_collected(tmp_path, n_tasks=4)
    extra = ["trainer.zero_stage=2", f"rl.advantage={advantage}", *SMALL]
    if advantage == "grpo":  # one update per step: it takes the sampling policy's log-probs from its own forward
        extra += ["rl.ppo.samples_per_prompt=2", "rl.ppo.mini_batch_size=4"]
    else:  # evaluation during RL after step 2 only; validation on held-out tasks before step 1 and after each step
        extra += [
            "rl.eval_every_steps=2",
            "rl.eval_tasks=1",
            "eval.max_new_tokens=16",
            "rl.validation_fraction=0.5",
            "rl.validation_every_steps=1",
        ]
    cfg = load_config("configs/tiny.yaml", sft_overrides(tmp_path, *extra))
    start = policy_for(cfg, "rl")
    assert run_stage("rl", cfg)
    summary = json.loads((tmp_path / "rl" / "summary.json").read_text())
    assert summary["engine_weights_versions"] == [2]  # the engine received new weights after each step
    metrics = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    if advantage == "gae":
        validation = [m for m in metrics if any(k.startswith("validation/") for k in m)]
        assert [m["step"] for m in validation] == [0, 1, 2]
        for m in validation:
            assert {f"validation/pass_rate/{mode}/{how}" for mode in ("refine", "explain_refine") for how in ("greedy", "sampled")} <= set(
                m
            )
        metrics = metrics[1:]
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        for key in (
            "reward/code",
            "reward/explanation",
            "reward/pass_rate",
            "kl/mean_per_response",
            "ppo/policy_loss",
            "ppo/value_loss",
            "ppo/clip_fraction",
            "ppo/entropy",
            "response/length_mean",
            "time/generate_s",
            "time/score_s",
            "time/execute_s",
            "time/reference_s",
            "time/train_s",
            "time/sync_s",
        ):
            assert key in m, key
        assert -5.0 <= m["reward/code"] <= 5.0 and m["ppo/entropy"] > 0
        assert m["ppo/policy_grad_norm"] > 0 and (m["ppo/critic_grad_norm"] > 0) == (advantage == "gae")  # GRPO: no critic
        assert {"reward/pass_rate/refine", "reward/pass_rate/explain_refine", "reward/code/refine"} <= set(m)
    if advantage == "gae":
        assert "eval/humaneval/init_pass@1" not in metrics[0]
        assert {"eval/humaneval/init_pass@1", "eval/humaneval/refine_pass@1", "eval/humaneval/explain_refine_pass@1"} <= set(metrics[1])
        assert (tmp_path / "rl" / "evals" / "step-00002" / "results.json").is_file()
    # Step 2 sampled from the updated policy, which has drifted from the reference: KL is no longer ~0.
    assert abs(metrics[1]["kl/mean_per_response"]) > 1e-4
    if advantage == "grpo":  # its KL term is in the loss, and no separate pass scored the old policy
        assert metrics[1]["ppo/kl_loss"] > 0 and all(m["time/values_s"] < 0.01 for m in metrics)
    assert policy_for(cfg, "eval") == str(tmp_path / "rl" / "model")
    before = AutoModelForCausalLM.from_pretrained(start).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "rl" / "model").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_killed_rl_run_resumes_and_step_k_plus_1_matches(ray_cluster, tiny_env, tmp_path):
    """SIGKILL `ledex-rl rl` once step 1 is checkpointed and logged; the rerun resumes after step 1
    (trainer and optimizer state, KL controller, engines brought to the checkpoint's weights), and its
    step 2 equals step 2 of an uninterrupted run with the same seed."""
    import os
    import signal
    import sys
    import time

    import ray

    from ledex_rl.pipeline import run_stage
    from tests.test_sft import start_detached

    extra = ["trainer.zero_stage=2", "rl.ppo.steps=3", *SMALL]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    for d in (killed, whole):
        write_collected(d, n_tasks=4)
    address = ray.get_runtime_context().gcs_address
    overrides = sft_overrides(killed, *extra, f"ray.address={address}")
    proc = start_detached([sys.executable, "-m", "ledex_rl.cli", "rl", "--config", "configs/tiny.yaml", *overrides])
    log = killed / "rl" / "metrics.jsonl"
    deadline = time.time() + 600
    while not (log.is_file() and log.read_text().strip()) and time.time() < deadline:
        assert proc.poll() is None, "rl finished or failed before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "rl" / "DONE").exists()
    time.sleep(2)  # let Ray reap the dead driver's actors

    assert run_stage("rl", load_config("configs/tiny.yaml", sft_overrides(killed, *extra)))
    assert run_stage("rl", load_config("configs/tiny.yaml", sft_overrides(whole, *extra)))
    resumed = [json.loads(line) for line in log.read_text().splitlines()]
    expected = [json.loads(line) for line in (whole / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in resumed] == [1, 2, 3]  # step 1 ran once: the rerun started after its checkpoint
    for key in ("reward/total", "reward/code", "kl/mean_per_response", "kl/coef", "ppo/policy_loss", "response/length_mean"):
        assert resumed[1][key] == pytest.approx(expected[1][key], rel=1e-3, abs=1e-5), key


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_killing_an_executor_and_the_engine_mid_run_loses_no_trajectory(ray_cluster, tiny_env, tmp_path):
    """Kill the executor and the rollout engine (by their actor handles) as step 2 starts: Ray restarts
    the executor and its jobs are retried; the engine is replaced and given the current weights. Every
    step still scores its whole batch, and the run ends with the engine at the last weights version."""
    import threading
    import time

    import ray

    from ledex_rl.pipeline import run_stage

    write_collected(tmp_path, n_tasks=4)
    extra = ["trainer.zero_stage=0", "rl.ppo.steps=3", *SMALL]
    cfg = load_config("configs/tiny.yaml", sft_overrides(tmp_path, *extra))
    killed = []

    def kill_at_step_2():
        log = tmp_path / "rl" / "metrics.jsonl"
        deadline = time.time() + 600
        while not (log.is_file() and log.read_text().strip()) and time.time() < deadline:
            time.sleep(0.05)
        for name in ("rl-executor-0", "rl-rollout-0"):
            ray.kill(ray.get_actor(name), no_restart=False)
            killed.append(name)

    killer = threading.Thread(target=kill_at_step_2, daemon=True)
    killer.start()
    assert run_stage("rl", cfg)
    killer.join(timeout=10)
    assert killed == ["rl-executor-0", "rl-rollout-0"]
    metrics = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [m["response/count"] for m in metrics] == [cfg.rl.ppo.batch_size] * 3
    summary = json.loads((tmp_path / "rl" / "summary.json").read_text())
    assert summary["engine_replacements"] == 1
    assert summary["engine_weights_versions"] == [3]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_dead_trainer_stops_the_run_with_a_resumable_checkpoint(ray_cluster, tiny_env, tmp_path):
    """Kill trainer rank 0 after step 1: the stage stops with one line naming the checkpoint, and the
    rerun resumes after step 1 and finishes."""
    import threading
    import time

    import ray

    from ledex_rl.pipeline import run_stage
    from ledex_rl.stages.rl import ActorDied

    write_collected(tmp_path, n_tasks=4)
    extra = ["rl.ppo.steps=3", *SMALL]
    cfg = load_config("configs/tiny.yaml", sft_overrides(tmp_path, *extra))
    log = tmp_path / "rl" / "metrics.jsonl"
    step_1_saved = tmp_path / "rl" / "checkpoints" / "client_state.json"  # written once every rank has saved

    def kill_trainer():
        deadline = time.time() + 600
        while not step_1_saved.is_file() and time.time() < deadline:
            time.sleep(0.05)
        ray.kill(ray.get_actor("rl-trainer-rank0"))

    threading.Thread(target=kill_trainer, daemon=True).start()
    with pytest.raises(ActorDied, match="an actor of step 2 died .*resume after step 1 from its checkpoint"):
        run_stage("rl", cfg)
    time.sleep(2)
    assert run_stage("rl", cfg)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
