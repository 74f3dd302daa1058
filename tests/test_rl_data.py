"""RL data: which wrong attempts become prompts with which references, and which token gets which reward,
on real tokenizations (the tiny model's byte-level BPE and SmolLM2's)."""

import pytest
import torch

from ledex_rl import ppo, prompts
from ledex_rl.problems.base import Problem, TestCase
from ledex_rl.rewards import RewardParts
from ledex_rl.rl_data import reward_positions, rl_prompts, token_at, token_end_offsets
from tests.test_sft import row

PROBLEMS = {
    t: Problem(
        task_id=t,
        source="humaneval",
        prompt="Write f.",
        entry_point="f",
        reference_solution="def f():\n    return 1",
        tests=(TestCase(kind="assert", source="assert f() == 1"),),
    )
    for t in ("A", "B")
}
WRONG, TEACHER = "def f():\n    return 2", "def f():\n    x = 1\n    return x"


def test_dataset_solution_is_a_reference_only_where_no_refinement_was_verified():
    rows = [
        row("A", "first_attempt", False, WRONG),
        row("A", "refinement", True, TEACHER, "It returns 2.", WRONG, "got 2", parent=0),
        row("A", "refinement", False, "def f():\n    return 3", "Off by one.", WRONG, "got 2", parent=0),
        row("B", "first_attempt", False, WRONG),  # no verified refinement
        row("B", "first_attempt", True, "def f():\n    return 1"),  # correct: not an RL prompt
    ]
    with_fallback = {p.task_id: p for p in rl_prompts(rows, PROBLEMS, use_reference_solutions=True)}
    assert with_fallback["A"].reference_codes == (TEACHER,)  # the teacher's, not the dataset's beside it
    assert with_fallback["A"].reference_explanations == ("It returns 2.",)
    assert with_fallback["B"].reference_codes == (PROBLEMS["B"].reference_solution,)
    assert with_fallback["B"].reference_explanations == ()
    paper = rl_prompts(rows, PROBLEMS, use_reference_solutions=False)
    assert [p.task_id for p in paper] == ["A"] and paper[0].reference_codes == (TEACHER,)


def test_held_out_tasks_are_stable_and_leave_training_tasks():
    from ledex_rl.seeds import held_out_tasks

    tasks = [f"t{i}" for i in range(20)]
    held = held_out_tasks(tasks * 2, 0.25, seed=3)
    assert len(held) == 5 and held <= set(tasks) and held == held_out_tasks(reversed(tasks), 0.25, seed=3)
    assert held != held_out_tasks(tasks, 0.25, seed=4)
    assert held_out_tasks(["only"], 0.5) == set() and held_out_tasks(tasks, 0.0) == set()
    assert len(held_out_tasks(["a", "b"], 0.9)) == 1  # at least one task stays for training


def test_masked_whiten_uses_only_real_tokens():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -50.0, 7.0]])
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0]])
    out = ppo.masked_whiten(x, mask)
    real = out[mask.bool()]
    assert real.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert real.pow(2).mean().item() == pytest.approx(1.0, abs=1e-4)
    assert out[~mask.bool()].abs().sum() == 0  # padding stays zero and does not shift the statistics
    expected = (torch.tensor([1.0, 2, 3, 4, 5]) - 3) / torch.tensor([1.0, 2, 3, 4, 5]).std(unbiased=False)
    assert torch.allclose(real, expected, atol=1e-5)


@pytest.fixture(scope="module", params=["tiny", "smollm2"])
def tokenizer(request, tiny_model):
    from transformers import AutoTokenizer

    if request.param == "tiny":
        return AutoTokenizer.from_pretrained(tiny_model)
    from ledex_rl.models import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


PARTS = RewardParts(s_cb=0.5, s_ut=1.0, s_ex=0.8, code_reward=2.5, explanation_reward=1.7, passed=True)
CODE = "def f(xs):\n    return sorted(xs)[-1]"


def _placed(tokenizer, text: str, mode: str, eos: bool = True):
    """What the RL step does: the sampled ids (with the end-of-turn token when the model stopped),
    decoded, their character offsets, then the reward positions."""
    ids = tokenizer(text, add_special_tokens=False).input_ids + ([tokenizer.eos_token_id] if eos else [])
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    return ids, decoded, reward_positions(decoded, token_end_offsets(tokenizer, ids), mode, PARTS)


def _prefix(tokenizer, ids, position):
    return tokenizer.decode(ids[: position + 1], skip_special_tokens=True)


@pytest.mark.parametrize("explanation", ["The max is the last element, not the first.", "Ünïcode → the sort is wrong ✓ 排序"])
def test_rewards_land_on_the_last_explanation_token_and_the_last_code_token(tokenizer, explanation):
    ids, text, placed = _placed(tokenizer, prompts.answer_text(CODE, explanation), "explain_refine")
    (e_pos, e_value), (c_pos, c_value) = placed
    assert (e_value, c_value) == (PARTS.explanation_reward, PARTS.code_reward)
    # The explanation reward's token completes the explanation; the one before it does not.
    assert _prefix(tokenizer, ids, e_pos).rstrip().endswith(explanation[-1])
    assert explanation not in _prefix(tokenizer, ids, e_pos - 1)
    assert explanation in _prefix(tokenizer, ids, e_pos)
    # The code reward's token completes the code (it may carry the newline after it), not earlier.
    assert CODE in _prefix(tokenizer, ids, c_pos) and CODE not in _prefix(tokenizer, ids, c_pos - 1)
    assert c_pos < len(ids) - 1  # not on the closing fence or the end-of-turn token


def test_refine_only_gets_one_reward_on_the_last_code_token(tokenizer):
    ids, _, placed = _placed(tokenizer, prompts.answer_text(CODE), "refine")
    ((c_pos, value),) = placed
    assert value == PARTS.code_reward
    assert CODE in _prefix(tokenizer, ids, c_pos) and CODE not in _prefix(tokenizer, ids, c_pos - 1)


def test_a_first_attempt_answers_the_task_alone_and_gets_only_the_code_reward(tokenizer):
    """`generate` in rl.modes: the prompt is the task (no wrong code, no feedback), and R(e) is never placed."""
    problem = PROBLEMS["A"]
    assert prompts.answer_messages(problem, WRONG, "assert f() == 1 failed", "generate") == prompts.first_attempt_messages(problem)
    refine = prompts.answer_messages(problem, WRONG, "assert f() == 1 failed", "refine")
    assert WRONG in refine[1]["content"] and refine == prompts.refinement_messages(problem, WRONG, "assert f() == 1 failed", "refine")
    ids, _, placed = _placed(tokenizer, prompts.answer_text(CODE, "An explanation nobody asked for."), "generate")
    ((c_pos, value),) = placed
    assert value == PARTS.code_reward and CODE in _prefix(tokenizer, ids, c_pos)


def test_unclosed_fence_puts_the_code_reward_on_the_last_code_token(tokenizer):
    text = "It takes the first element.\n\n```python\n" + CODE  # cut by max_tokens: no closing fence, no EOS
    ids, _, placed = _placed(tokenizer, text, "explain_refine", eos=False)
    (e_pos, _), (c_pos, _) = placed
    assert c_pos == len(ids) - 1
    assert "It takes the first element." in _prefix(tokenizer, ids, e_pos)
    assert "It takes the first element." not in _prefix(tokenizer, ids, e_pos - 1)


def test_no_code_puts_both_rewards_at_the_end(tokenizer):
    ids, _, placed = _placed(tokenizer, "I do not know why it fails.", "explain_refine")
    (e_pos, _), (c_pos, _) = placed
    last_text_token = len(ids) - 2  # before the end-of-turn token
    assert c_pos >= last_text_token and e_pos <= c_pos
    assert "fails." in _prefix(tokenizer, ids, e_pos)


def test_token_end_offsets_follow_the_decoded_text(tokenizer):
    text = prompts.answer_text(CODE, "Ünïcode → ✓")
    ids = tokenizer(text, add_special_tokens=False).input_ids
    offsets = token_end_offsets(tokenizer, ids)
    assert offsets == sorted(offsets) and offsets[-1] == len(tokenizer.decode(ids))
    full = tokenizer.decode(ids)
    for c in range(len(full)):  # the token at character c is the first whose prefix holds it whole
        k = token_at(offsets, c)
        assert tokenizer.decode(ids[: k + 1]).startswith(full[: c + 1])
        assert not tokenizer.decode(ids[:k]).startswith(full[: c + 1])
