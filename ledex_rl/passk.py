"""pass@k with the unbiased estimator of Chen et al. (2021), the metric LeDex reports (section 4.2).

For a task with n samples of which c are correct, pass@k = 1 - C(n-c, k) / C(n, k): the chance that
at least one of k samples drawn without replacement is correct. The product form below never builds
the (huge) binomials, so it is exact in floating point for any n.
"""

from __future__ import annotations

from typing import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate for one task (`n` samples, `c` correct)."""
    if not 0 <= c <= n:
        raise ValueError(f"pass@k: correct samples c={c} must be between 0 and n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k: k={k} must be between 1 and the number of samples n={n}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    missing = 1.0
    for i in range(n - c + 1, n + 1):
        missing *= 1.0 - k / i
    return 1.0 - missing


def mean_pass_at_k(samples: Sequence[int], correct: Sequence[int], k: int) -> float:
    """pass@k over a benchmark: the mean of the per-task estimates (tasks with fewer than k samples
    are an error, not silently skipped, since they would bias the mean)."""
    if len(samples) != len(correct):
        raise ValueError(f"pass@k: {len(samples)} sample counts but {len(correct)} correct counts")
    if not samples:
        return 0.0
    return sum(pass_at_k(n, c, k) for n, c in zip(samples, correct)) / len(samples)
