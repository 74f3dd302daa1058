"""Collection throughput: problems per minute, and where the time goes (generating, executing, waiting).

    .venv/bin/python scripts/bench_collect.py [--model tiny|smollm2-135m-instruct|PATH] [--problems 8] [OVERRIDES...]

Runs the real collect stage (engines, executor pool, teacher = the policy) on the first HumanEval
problems in a temporary run dir and prints its Table 1 and throughput. Extra `key=value` overrides
go to the config (e.g. `collect.samples_per_problem=2`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [
            sys.executable,
            "-m",
            "ledex_rl.train",
            "stages=[collect]",
            f"run_dir={run_dir}",
            f"model.name_or_path={args.model}",
            f"data.train.0.limit={args.problems}",
            *args.overrides,
        ]
        if args.model == "tiny":
            command[3:3] = ["--config", "configs/tiny.yaml"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        summary = json.loads((run_dir / "collect" / "summary.json").read_text())
    t = summary["throughput"]
    print(f"\nmodel: {args.model}; {t['problems']} HumanEval problems; teacher: the policy\n")
    print("| problems/min | wall s | generating s | executing s | waiting for execution s | generating share |")
    print("|---|---|---|---|---|---|")
    share = t["generating_s"] / t["wall_s"] if t["wall_s"] else 0.0
    print(f"| {t['problems_per_minute']} | {t['wall_s']} | {t['generating_s']} | {t['executing_s']} | {t['waiting_s']} | {share:.0%} |")
    print("\n" + json.dumps(summary["table1"], indent=2))


if __name__ == "__main__":
    main()
