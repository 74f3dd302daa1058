"""Summaries of the RL metrics the learning benchmarks report (pure)."""

import pytest

from ledex_rl.metrics import rl_blocks


def step(n, er, rf):
    return {"step": n, "reward/total": 0.0, "reward/pass_rate/explain_refine": er, "reward/pass_rate/refine": rf,
            "reward/code/explain_refine": 10 * er - 5, "reward/code/refine": 10 * rf - 5, "reward/explanation": 1.0,
            "kl/mean_per_response": n / 10, "ppo/entropy": 0.5, "response/length_mean": 40.0}


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
