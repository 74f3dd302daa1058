"""Summaries of the RL metrics the learning benchmarks report (pure)."""

import pytest

from ledex_rl.metrics import rl_blocks


def step(n, er, rf):
    return {
        "step": n,
        "reward/total": 0.0,
        "reward/pass_rate/explain_refine": er,
        "reward/pass_rate/refine": rf,
        "reward/code/explain_refine": 10 * er - 5,
        "reward/code/refine": 10 * rf - 5,
        "reward/explanation": 1.0,
        "kl/mean_per_response": n / 10,
        "ppo/entropy": 0.5,
        "response/length_mean": 40.0,
    }


def test_rl_blocks_average_the_samples_and_attach_the_validation_of_the_block_end():
    history = [{"step": 0, "validation/pass_rate/refine/greedy": 0.25}]
    history += [step(n, 0.1 if n <= 4 else 0.5, 0.2) for n in range(1, 9)]
    history[4] = {**history[4], "validation/pass_rate/refine/greedy": 0.5}  # logged with step 4
    blocks = rl_blocks(history, block=4)
    assert [b["steps"] for b in blocks] == [[1, 4], [5, 8]]
    assert [b["pass_rate"]["explain_refine"] for b in blocks] == pytest.approx([0.1, 0.5])
    assert blocks[1]["code_reward"]["explain_refine"] == pytest.approx(0.0)
    assert blocks[0]["kl"] == pytest.approx(0.25) and blocks[1]["kl"] == pytest.approx(0.65)
    assert blocks[0]["heldout"] == {"refine/greedy": 0.5} and blocks[1]["heldout"] is None
    assert blocks[0]["heldout_before_rl"] == {"refine/greedy": 0.25} and "heldout_before_rl" not in blocks[1]


def test_metrics_reach_every_tracker_offline_and_a_resumed_stage_continues_its_runs(tmp_path, monkeypatch):
    """TensorBoard, W&B (offline) and MLflow (a file store in the run dir), read back from what each wrote."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ledex_rl.config import LoggingConfig
    from ledex_rl.metrics import MetricsLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    every = LoggingConfig(backends=("tensorboard", "wandb", "mlflow"), project="ledex-test")
    first = MetricsLogger(tmp_path, "rl", every)
    first.log(1, {"train/loss": 2.0, "eval/pass@1": 0.25})
    first.close()
    resumed = MetricsLogger(tmp_path, "rl", every)  # a stopped stage, started again
    resumed.log(2, {"train/loss": 1.0, "eval/pass@1": 0.5})
    resumed.close()

    events = EventAccumulator(str(tmp_path / "tensorboard" / "rl"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 2.0), (2, 1.0)]

    # Offline, W&B writes a folder per start; both carry the same run id, so `wandb sync` makes them one run.
    logs = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 2 and len({log.name for log in logs}) == 1
    assert all(b"train/loss" in log.read_bytes() and b"eval/pass@1" in log.read_bytes() for log in logs)

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("ledex-test").experiment_id])
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "eval/pass_at_1")] == [(1, 0.25), (2, 0.5)]


def test_a_tracker_that_is_not_installed_is_a_one_line_error(tmp_path, monkeypatch):
    import sys

    from ledex_rl.config import LoggingConfig
    from ledex_rl.metrics import MetricsLogger, TrackerMissing

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(TrackerMissing, match=r"logging.backends names wandb, which is not installed; pip install -e .\[tracking\]"):
        MetricsLogger(tmp_path, "sft", LoggingConfig(backends=("wandb",)))
