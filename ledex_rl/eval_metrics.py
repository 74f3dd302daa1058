"""Evaluation rows -> the paper's numbers: pass@k of first attempts and after each round of refinement
(refine-only and explain-then-refine), and the refinement success rate. Pure functions.

Each row is one executed sample (`ledex_rl.evaluation.SCHEMA`): round 0 is a first attempt; round r
in a mode is the r-th refinement of that sample in that mode. After round r a sample counts with its
latest code in that mode (a sample that passed earlier was not refined again and keeps its verdict).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from ledex_rl.passk import mean_pass_at_k

MODE_NAMES = {"generate": "Init", "refine": "Refine", "explain_refine": "Expl. + Refine"}


def summarize(rows: Sequence[dict], ks: Sequence[int], rounds: int, modes: Sequence[str]) -> dict:
    """-> {"ks", "rounds", "modes", "benchmarks": {name: {...}}}. A benchmark with EvalPlus "plus"
    tests is reported twice: on every test (its own name) and on its base tests ("<name> (base tests)")."""
    by_source: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_source[row["benchmark"]].append(row)
    benchmarks = {}
    for source, source_rows in sorted(by_source.items()):
        benchmarks[source] = benchmark_metrics(source_rows, "passed", ks, rounds, modes)
        if any(r["plus_tests"] for r in source_rows):
            benchmarks[f"{source} (base tests)"] = benchmark_metrics(source_rows, "passed_base", ks, rounds, modes)
    return {"ks": list(ks), "rounds": rounds, "modes": list(modes), "benchmarks": benchmarks}


def benchmark_metrics(rows: Sequence[dict], verdict: str, ks: Sequence[int], rounds: int, modes: Sequence[str]) -> dict:
    first: dict[str, dict[int, bool]] = defaultdict(dict)  # task -> sample -> passed
    refined: dict[tuple[str, str, int], dict[int, bool]] = defaultdict(dict)  # (mode, task, sample) -> round -> passed
    for row in rows:
        if row["round"] == 0:
            first[row["task_id"]][row["sample_index"]] = bool(row[verdict])
        else:
            refined[(row["mode"], row["task_id"], row["sample_index"])][row["round"]] = bool(row[verdict])
    tasks = sorted(first)
    n = [len(first[t]) for t in tasks]

    def at_k(correct: list[int]) -> dict:
        return {f"pass@{k}": mean_pass_at_k(n, correct, k) for k in ks}

    out = {"tasks": len(tasks), "samples": sum(n), "init": at_k([sum(first[t].values()) for t in tasks])}
    for mode in modes:
        per_round = []
        for r in range(1, rounds + 1):
            correct, attempted, fixed = [], 0, 0
            for t in tasks:
                c = 0
                for i, passed in first[t].items():
                    history = refined.get((mode, t, i), {})
                    if r in history:
                        attempted += 1
                        fixed += history[r]
                    done = [history[q] for q in sorted(history) if q <= r]
                    c += done[-1] if done else passed
                correct.append(c)
            per_round.append(
                {
                    "round": r,
                    **at_k(correct),
                    "attempted": attempted,
                    "fixed": fixed,
                    "success_rate": fixed / attempted if attempted else None,
                }
            )
        out[mode] = per_round
    out["best"] = (
        [{"round": r, **{f"pass@{k}": max(out[m][r - 1][f"pass@{k}"] for m in modes) for k in ks}} for r in range(1, rounds + 1)]
        if modes
        else []
    )
    return out
