"""Two checkouts' sandboxes side by side: CPU per trivial execution, measured in alternating batches.

    .venv/bin/python scripts/bench_sandbox_pair.py --base ../old-checkout [--candidate .] [--rounds 16] [--out F]

On a VM whose speed drifts by 20% within minutes, two runs of bench_sandbox.py minutes apart cannot tell
a 10% change. Here each checkout runs in a worker process of its own (its `sandbox` package, 2 slots,
the same trivial job as bench_sandbox.py, each batch one `Sandbox.run` call, as bench_sandbox.py and the
executor actors make it); the driver asks them in turn for a batch of executions, swapping the order every round, and measures machine-wide busy CPU around each batch the
way bench_sandbox.py does. Between rounds it measures the fork floor (scripts/fork_floor.py of the
candidate) so that each round has its own ratio to the floor, twice: as bench_sandbox.py does (the
floor process's own getrusage) and timed like the sandboxes (machine-wide busy CPU around a batch of
the floor's forks, run by `fork_floor.py --serve` in the same alternation). It prints medians with quartiles and the
median of the per-round candidate/base ratios. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_sandbox import TRIVIAL_CODE, TRIVIAL_TESTS, ask, batch_cpu_ms, run_batch, start_floor_server

from ledex_rl.problems.base import Problem, TestCase
from sandbox import Job, Limits, Sandbox

HERE = Path(__file__).resolve().parent


def serve(batch: int) -> None:
    """Worker: a sandbox of this checkout (first on sys.path) runs `batch` trivial jobs per line read."""
    asserts = tuple(TestCase(kind="assert", source=s.strip()) for s in TRIVIAL_TESTS.splitlines() if s.strip().startswith("assert"))
    job = Job.for_problem(Problem("trivial", "bench", "", "add", TRIVIAL_CODE, asserts), TRIVIAL_CODE)
    with Sandbox(slots=2, limits=Limits(test_timeout_s=3.0, job_timeout_s=30.0)) as box:
        box.run([job] * 20)  # warm both slots
        print(json.dumps({"ready": True, "sandbox": sys.modules["sandbox"].__file__}), flush=True)
        for _ in sys.stdin:
            run_batch(box, job, batch)
            print("done", flush=True)


def start_worker(checkout: str, batch: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{checkout}{os.pathsep}{HERE}"}
    argv = [sys.executable, str(HERE / "bench_sandbox_pair.py"), "--serve", str(batch)]
    proc = subprocess.Popen(argv, cwd=checkout, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready = json.loads(proc.stdout.readline())
    print(f"{checkout}: sandbox from {ready['sandbox']}", flush=True)
    return proc


def fork_floor_ms(checkout: str) -> float:
    script = os.path.join(checkout, "scripts", "fork_floor.py")
    out = subprocess.run([sys.executable, "-I", "-S", script, "--json", "--forks", "400"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["zygote_fork_trivial_ms"]


def commit_of(checkout: str) -> str:
    """The checkout's git commit, with "+changes" when its tree differs from it ("" outside git)."""
    head = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", checkout, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "") if head.returncode == 0 else ""


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    n = len(ordered)
    return {"median": statistics.median(ordered), "q1": ordered[n // 4], "q3": ordered[(3 * n) // 4]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="the checkout to compare against")
    parser.add_argument("--candidate", default=str(HERE.parent), help="the checkout measured (default: this one)")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--batch", type=int, default=200, help="executions per batch")
    parser.add_argument("--out", help="write the figures to this JSON file")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    if not args.base:
        parser.error("--base CHECKOUT is required (the checkout to compare against)")
    checkouts = {"base": os.path.abspath(args.base), "candidate": os.path.abspath(args.candidate)}
    workers = {name: start_worker(path, args.batch) for name, path in checkouts.items()}
    workers["floor"] = start_floor_server(args.batch, checkouts["candidate"])
    per_exec = {name: [] for name in workers}
    floors = []
    started = time.time()
    for round_ in range(args.rounds):
        for name in ("base", "candidate", "floor") if round_ % 2 == 0 else ("floor", "candidate", "base"):
            per_exec[name].append(batch_cpu_ms(lambda: ask(workers[name]), args.batch))
        floors.append(fork_floor_ms(checkouts["candidate"]))
        print(
            f"round {round_ + 1}: base {per_exec['base'][-1]:.2f}, candidate {per_exec['candidate'][-1]:.2f} CPU ms/exec; floor {floors[-1]:.2f} ms (getrusage), {per_exec['floor'][-1]:.2f} ms (timed alike)",
            flush=True,
        )
    for proc in workers.values():
        proc.stdin.close()
        proc.wait()
    report(args, checkouts, per_exec, floors, time.time() - started)


def report(args, checkouts: dict, per_exec: dict, floors: list[float], seconds: float) -> None:
    figures = {
        "checkouts": {name: {"path": path, "commit": commit_of(path)} for name, path in checkouts.items()},
        "rounds": args.rounds,
        "batch": args.batch,
        "seconds": round(seconds),
        "cpu_ms_per_exec": {name: summary(values) for name, values in per_exec.items()},
        "candidate_to_base": summary([c / b for b, c in zip(per_exec["base"], per_exec["candidate"])]),
        "fork_floor_ms": summary(floors),
        "to_floor": {name: summary([v / f for v, f in zip(per_exec[name], floors)]) for name in ("base", "candidate")},
        "to_floor_timed_alike": {
            name: summary([v / f for v, f in zip(per_exec[name], per_exec["floor"])]) for name in ("base", "candidate")
        },
        "raw": {"cpu_ms_per_exec": per_exec, "fork_floor_ms": floors},
    }
    for name in ("base", "candidate"):
        cpu, floor, alike = figures["cpu_ms_per_exec"][name], figures["to_floor"][name], figures["to_floor_timed_alike"][name]
        print(
            f"{name:>9}: {cpu['median']:.2f} CPU ms/exec ({cpu['q1']:.2f}-{cpu['q3']:.2f}), "
            f"{floor['median']:.2f}x the fork floor ({floor['q1']:.2f}-{floor['q3']:.2f}); "
            f"{alike['median']:.2f}x the floor timed alike ({alike['q1']:.2f}-{alike['q3']:.2f})"
        )
    ratio = figures["candidate_to_base"]
    print(f"candidate / base, per round: {ratio['median']:.3f} ({ratio['q1']:.3f}-{ratio['q3']:.3f})")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
