"""The main job end to end: wall time per stage and the peak memory of the whole Ray system.

Runs `python -m ledex_rl.train` (the embedded default unless a config is given) in a fresh run
directory with its own local Ray cluster, and samples, every second, the proportional set size (PSS:
shared pages split between the processes that share them) of the driver and every process under it:
the Ray head (GCS, raylet, dashboard), every actor (engines, trainer, reference, rewards, executors)
and the sandboxes. Prints each stage's time (from its DONE marker) and the peak total.

    .venv/bin/python scripts/bench_pipeline.py [--config configs/default.yaml] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tree_pss_mb(root: int) -> float:
    """Sum of PSS over `root` and all its descendants, in MiB."""
    import psutil

    try:
        procs = [psutil.Process(root)] + psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in procs:
        try:
            with open(f"/proc/{proc.pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-pipeline-")) / "run"
    cmd = [
        sys.executable,
        "-m",
        "ledex_rl.train",
        *(["--config", args.config] if args.config else []),
        f"run_dir={run_dir}",
        *args.overrides,
    ]
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"mb": 0.0, "at_s": 0.0}

    def sample():
        while proc.poll() is None:
            mb = tree_pss_mb(proc.pid)
            if mb > peak["mb"]:
                peak.update(mb=mb, at_s=time.time() - started)
            time.sleep(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tail: list[str] = []
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-5:]
    proc.wait()
    sampler.join(timeout=5)
    wall = time.time() - started
    print(f"command: {' '.join(cmd[1:])}")
    print(f"exit code {proc.returncode}; last line: {tail[-1] if tail else ''}")
    print("| stage | seconds |")
    print("|---|---|")
    for stage in ("collect", "sft", "rl", "eval"):
        done = run_dir / stage / "DONE"
        if done.is_file():
            print(f"| {stage} | {json.loads(done.read_text())['seconds']} |")
    print(f"| total (with Ray start-up and stops) | {wall:.1f} |")
    print(f"peak memory of the driver, Ray and every actor together (PSS): {peak['mb'] / 1024:.2f} GiB, {peak['at_s']:.0f} s into the run")
    rl_metrics = run_dir / "rl" / "metrics.jsonl"
    if rl_metrics.is_file():
        for line in rl_metrics.read_text().splitlines():
            m = json.loads(line)
            phases = {k[5:-2]: round(v, 1) for k, v in m.items() if k.startswith("time/")}
            print(f"ppo step {m['step']}: reward {m['reward/total']:.2f}, phases (s) {phases}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
