"""The reward formulas, token placement, GAE, GRPO and the PPO losses, against values worked by hand."""

import math

import numpy as np
import pytest
import torch

from ledex_rl import ppo, rewards


def test_reward_formulas_match_the_paper():
    assert rewards.code_reward(1.0, 1.0) == 5.0 and rewards.code_reward(0.0, 0.0) == -5.0
    assert rewards.code_reward(0.4, 0.5) == pytest.approx(-0.5)
    assert rewards.explanation_reward(0.4) == pytest.approx(-5.0)
    assert rewards.explanation_reward(0.7) == pytest.approx(0.0)
    assert rewards.explanation_reward(1.0) == pytest.approx(5.0)


def test_codebleu_score_is_the_mean_over_references():
    code = "def add(a, b):\n    return a + b\n"
    same = rewards.codebleu_score(code, [code])
    assert same == pytest.approx(1.0, abs=1e-6)
    other = "def add(x, y):\n    total = 0\n    for v in (x, y):\n        total += v\n    return total\n"
    mixed = rewards.codebleu_score(code, [code, other])
    assert mixed == pytest.approx((1.0 + rewards.codebleu_score(code, [other])) / 2)
    assert 0 < rewards.codebleu_score(code, [other]) < 1
    assert rewards.codebleu_score("", [code]) == 0.0 and rewards.codebleu_score(code, []) == 0.0


def test_codebleu_counts_a_data_flow_mismatch_as_zero():
    """codebleu 0.7.0 gives full data-flow credit when nothing matches; S_cb must not."""
    from codebleu import calc_codebleu

    reference = "def add(a, b):\n    total = a + b\n    return total"
    unrelated = "def add(a, b):\n    return 7"
    parts = calc_codebleu([reference], [unrelated], lang="python")
    assert parts["dataflow_match_score"] == 0
    three = parts["ngram_match_score"] + parts["weighted_ngram_match_score"] + parts["syntax_match_score"]
    assert rewards.codebleu_score(unrelated, [reference]) == pytest.approx(three / 4)
    assert rewards.codebleu_score(unrelated, [reference]) < parts["codebleu"] - 0.2
    assert rewards.codebleu_score(reference, [reference]) == pytest.approx(1.0)


def test_codebleu_without_reference_data_flow_averages_the_other_three_parts():
    from codebleu import calc_codebleu

    reference = "def seven():\n    return 7"  # no variable, so no data-flow edge
    candidate = "def seven():\n    return 8"
    parts = calc_codebleu([reference], [candidate], lang="python")
    three = parts["ngram_match_score"] + parts["weighted_ngram_match_score"] + parts["syntax_match_score"]
    assert rewards.codebleu_score(candidate, [reference]) == pytest.approx(three / 3)
    assert rewards.codebleu_score(reference, [reference]) == pytest.approx(1.0)


def test_mean_cosine():
    refs = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert rewards.mean_cosine(np.array([1.0, 0.0]), refs) == pytest.approx(0.5)
    assert rewards.mean_cosine(np.array([1.0, 1.0]), refs) == pytest.approx(math.sqrt(0.5))
    assert rewards.mean_cosine(np.array([1.0, 0.0]), np.zeros((0, 2))) == 0.0


def test_score_response_edge_cases():
    code = "def f():\n    return 1\n"
    full = rewards.score_response(code, 1.0, True, [code], "Because.", 0.82)
    assert full.code_reward == pytest.approx(5.0) and full.explanation_reward == pytest.approx((50 * 0.82 - 35) / 3)
    no_code = rewards.score_response("", 1.0, True, [code], "Because.", 0.9)
    assert no_code.code_reward == -5.0 and not no_code.passed  # unparsable or missing code
    empty_expl = rewards.score_response(code, 0.5, False, [code], "  ", 0.9)
    assert empty_expl.s_ex == 0.0 and empty_expl.explanation_reward == pytest.approx(-35 / 3)
    no_refs = rewards.score_response(code, 0.5, False, [], "Because.", None)
    assert no_refs.s_cb == 0.0 and no_refs.code_reward == pytest.approx(-2.5) and no_refs.explanation_reward == 0.0
    refine_only = rewards.score_response(code, 1.0, True, [code], None, None)
    assert refine_only.explanation_reward is None and refine_only.s_ex is None


def test_token_rewards_place_scores_and_kl():
    logp = torch.tensor([[-1.0, -1.0, -1.0, -1.0], [-1.0, -1.0, 0.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5, -1.0], [-1.0, -2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0]])
    r, kl = ppo.token_rewards(logp, ref, mask, kl_coef=0.1, score_positions=[[(1, 2.0), (3, -4.0)], [(1, 3.0)]])
    assert kl.tolist() == [[0.5, 0.0, -0.5, 0.0], [0.0, 1.0, 0.0, 0.0]]
    expected = [[-0.05, 2.0, 0.05, -4.0], [0.0, -0.1 + 3.0, 0.0, 0.0]]
    assert torch.allclose(r, torch.tensor(expected))


def test_gae_by_hand():
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.2, 0.4]])
    mask = torch.ones(1, 3)
    gamma, lam = 0.9, 0.5
    d2 = 1.0 - 0.4
    d1 = 0.0 + gamma * 0.4 - 0.2
    d0 = 0.0 + gamma * 0.2 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    adv, ret = ppo.gae(r, v, mask, gamma, lam)
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2]]))
    assert torch.allclose(ret, adv + v)
    # lambda = 1: the advantage is the discounted return minus the value (the paper's form)
    adv1, _ = ppo.gae(r, v, mask, 0.99, 1.0)
    assert adv1[0, 0].item() == pytest.approx(0.99**2 * 1.0 - 0.5)
    # padding after the end contributes nothing and gets zero advantage
    adv_p, _ = ppo.gae(torch.tensor([[0.0, 1.0, 7.0]]), torch.tensor([[0.1, 0.2, 9.0]]), torch.tensor([[1.0, 1, 0]]), 1.0, 1.0)
    assert adv_p[0].tolist() == pytest.approx([1.0 - 0.1, 1.0 - 0.2, 0.0])


def test_grpo_normalises_within_groups():
    scores = torch.tensor([1.0, 3.0, 10.0, 10.0])
    adv = ppo.grpo_advantages(scores, [0, 0, 1, 1], torch.ones(4, 2))
    assert adv[:, 0].tolist() == pytest.approx([-1.0, 1.0, 0.0, 0.0], abs=1e-4)
    assert (adv[:, 0] == adv[:, 1]).all()


def test_policy_loss_clips():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios 1.5 and 0.5
    adv = torch.tensor([[1.0, -1.0]])
    loss, clip_frac = ppo.policy_loss(new, old, adv, torch.ones(1, 2), clip_range=0.2)
    # token 0: min(1.5*1, 1.2*1) = 1.2 ; token 1: min(0.5*-1, 0.8*-1) = -0.8 ; loss = -mean = -0.2
    assert loss.item() == pytest.approx(-(1.2 - 0.8) / 2)
    assert clip_frac.item() == pytest.approx(1.0)
    loss_in, frac_in = ppo.policy_loss(torch.log(torch.tensor([[1.1, 0.9]])), old, adv, torch.ones(1, 2), 0.2)
    assert loss_in.item() == pytest.approx(-(1.1 - 0.9) / 2) and frac_in.item() == 0.0


def test_value_loss_clips():
    v_old = torch.tensor([[0.0, 0.0]])
    v = torch.tensor([[1.0, 0.1]])
    returns = torch.tensor([[2.0, 0.0]])
    loss = ppo.value_loss(v, v_old, returns, torch.ones(1, 2), clip_range=0.2)
    # token 0: max((1-2)^2, (0.2-2)^2) = 3.24 ; token 1: max(0.01, 0.01) = 0.01
    assert loss.item() == pytest.approx(0.5 * (3.24 + 0.01) / 2)


def test_adaptive_kl_moves_toward_target():
    kl = ppo.KLController(0.2, adaptive=True, target=6.0, horizon=100)
    assert kl.update(12.0, 10) == pytest.approx(0.2 * (1 + 0.2 * 10 / 100))
    fixed = ppo.KLController(0.2)
    assert fixed.update(100.0, 10) == 0.2


def test_reward_scaler_tracks_the_std_of_totals_and_keeps_signs():
    scaler = ppo.RewardScaler()
    torch.manual_seed(0)
    batches = [torch.randn(64) * 5 + 1 for _ in range(20)]
    for b in batches:
        scaler.update(b)
    assert scaler.std == pytest.approx(float(torch.cat(batches).std(unbiased=False)), rel=1e-4)
    rewards = torch.tensor([[0.0, -2.0, 5.0]])
    assert torch.allclose(scaler.scale(rewards), rewards / scaler.std) and scaler.std > 4


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert ppo.explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert ppo.explained_variance(torch.full_like(returns, 2.0), returns, mask) == pytest.approx(0.0, abs=1e-6)


def test_default_advantage_carries_the_code_reward_to_the_first_token():
    """The default is the paper's printed advantage (lambda = 1): with a zero critic, a reward on the last
    of 50 tokens reaches the first at gamma^49 (TRL's lambda = 0.95 would leave 5% of that)."""
    from ledex_rl.config import PPOConfig

    p = PPOConfig()
    rewards_ = torch.zeros(1, 50)
    rewards_[0, -1] = 1.0
    adv, _ = ppo.gae(rewards_, torch.zeros(1, 50), torch.ones(1, 50), p.gamma, p.lam)
    assert adv[0, 0].item() == pytest.approx(p.gamma**49)


def test_grpo_kl_term_is_k3_and_zero_only_where_policy_and_reference_agree():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -9.0]])
    ref = torch.tensor([[-1.0, -1.5, -0.7], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    d = ref - logprobs
    by_hand = ((d.exp() - d - 1) * mask).sum() / mask.sum()
    assert torch.isclose(ppo.kl_loss(logprobs, ref, mask), by_hand)
    assert ppo.kl_loss(logprobs, ref, mask) > 0 and float(ppo.kl_loss(ref, ref, mask)) == 0.0
    assert float(ppo.kl_loss(logprobs[1:], ref[1:], mask[1:])) == 0.0  # the masked token does not count
