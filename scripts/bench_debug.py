"""How many of a set of buggy programs `ledex-rl debug` fixes, how long it takes, and how fast it starts.

The set: scripts/debug_programs/, 12 small programs written for this benchmark, each with one seeded bug
(off-by-one, wrong operator, wrong base case, wrong order, a missed case ...) and a tests file in the
styles users write (plain asserts, test functions, pytest's parametrize, raises, approx, a Test class,
the program imported by its file name). Every program fails its tests as given and passes them with a
one-line fix (checked by tests/test_debug_programs.py).

One `ledex-rl debug` call debugs them all (one model, started once), on copies, with `--json`. Start-up
is the wall time of `ledex-rl debug --help` and of an argument error (a missing file), median of 5.
Run it alone on the machine:

    .venv/bin/python scripts/bench_debug.py [--model smollm2-135m-instruct] [--rounds 2] [--max-new-tokens 256]

Writes docs/bench/debug.json and docs/bench/debug.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROGRAMS = Path(__file__).resolve().parent / "debug_programs"
CLI = [sys.executable, "-m", "ledex_rl"]


def wall(command: list[str], repeats: int = 5) -> float:
    """Median wall seconds of a command (its exit code ignored)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def debug_all(folder: Path, args: argparse.Namespace) -> tuple[dict, float]:
    """One `ledex-rl debug` call over every program in `folder` -> (its JSON report, wall seconds)."""
    programs = sorted(str(p) for p in folder.glob("*.py") if not p.name.startswith("test_"))
    command = [
        *CLI,
        "debug",
        *programs,
        "--json",
        "--model",
        args.model,
        "--rounds",
        str(args.rounds),
        "--max-new-tokens",
        str(args.max_new_tokens),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        sys.exit(f"ledex-rl debug failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout), seconds


def table(report: dict) -> str:
    rows = ["| program | tests passing before | fixed | rounds | seconds |", "|---|---|---|---|---|"]
    for p in report["programs"]:
        rows.append(
            f"| {Path(p['program']).stem} | {p['passed_before']} of {p['tests']} | {'yes' if p['fixed'] else 'no'} | "
            f"{len(p['rounds'])} | {p['seconds']:.1f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--out", default="docs/bench")
    args = parser.parse_args()
    startup = {
        "help_s": round(wall([*CLI, "debug", "--help"]), 2),
        "argument_error_s": round(wall([*CLI, "debug", "missing.py", "--tests", "missing_test.py"]), 2),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "programs"
        shutil.copytree(PROGRAMS, folder)
        report, seconds = debug_all(folder, args)
    programs = report["programs"]
    result = {
        "model": args.model,
        "rounds": args.rounds,
        "max_new_tokens": args.max_new_tokens,
        "programs": len(programs),
        "fixed": report["fixed"],
        "total_seconds": round(seconds, 1),
        "median_seconds_per_program": round(statistics.median(p["seconds"] for p in programs), 1),
        "startup": startup,
        "per_program": [
            {k: p[k] for k in ("program", "tests", "passed_before", "fixed", "seconds")}
            | {"rounds": len(p["rounds"]), "program": Path(p["program"]).stem}
            for p in programs
        ],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "debug.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "debug.md").write_text(
        f"# `ledex-rl debug` on scripts/debug_programs ({args.model}, {args.rounds} rounds, {args.max_new_tokens} new tokens)\n\n"
        f"Fixed {report['fixed']} of {len(programs)}; {seconds:.0f} s in all (one call, one model); start-up: "
        f"`--help` {startup['help_s']} s, an argument error {startup['argument_error_s']} s.\n\n{table(report)}\n"
    )
    print((out / "debug.md").read_text())


if __name__ == "__main__":
    main()
