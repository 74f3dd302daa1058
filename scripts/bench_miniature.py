"""LeDex in miniature, the paper's Table 4 on 2 cores: prompting vs SFT vs RL on held-out code repair.

For each seed, the real pipeline on `configs/miniature.yaml`: collect (miniature-base's own first
attempts on 480 training tasks, explained and fixed by the scripted teacher behind a real HTTP
endpoint, every fix verified in the sandbox) -> SFT (on 240 of them) -> RL (PPO with the LeDex rewards,
on the wrong attempts at the other 240, which SFT never saw fixed) -> evaluation of
the base model (prompting), the SFT model and the RL model on 80 new instances of the training
families and 80 instances of 4 families never trained on. The base model is built once (its own seed);
the seeds vary everything after it: sampling, teacher answers, data order, initialisation of the critic.

Writes `docs/bench/miniature.json` (per seed: the three rows' held-out explain-then-refine success rate,
refine-only success rate and pass@1 after one round of refinement, for new instances and for the
unseen families; the seconds per stage; RL's own samples and its validation tasks per block of 10
steps, `rl_blocks`), `docs/bench/miniature.md` (Table 4's shape: mean and
spread over seeds) and `docs/bench/miniature.png` (held-out success rate over RL steps). Run it alone
on the machine: the vLLM CPU engine slows down about 6x when its cores are shared.

    .venv/bin/python scripts/bench_miniature.py [--seeds 0 1 2] [--out docs/bench] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledex_rl.config import load_config  # noqa: E402
from ledex_rl.metrics import rl_blocks  # noqa: E402
from ledex_rl.miniature_teacher import ScriptedTeacher, TeacherServer  # noqa: E402

ROWS = ("prompting", "sft", "rl")
EVAL_EVERY = 14  # RL steps between evaluations of the policy on 40 held-out tasks (the plot)
LABELS = {"prompting": "base", "sft": "sft", "rl": "rl"}
BENCHMARKS = {"new_instances": "miniature", "unseen_families": "miniature-unseen"}


def row_metrics(results: dict, benchmark: str) -> dict:
    """Table 4's numbers for one model on one benchmark, from its eval results.json."""
    m = results["benchmarks"][benchmark]
    er, refine = m["explain_refine"][0], m["refine"][0]
    return {
        "explain_refine_success": er["success_rate"],
        "refine_success": refine["success_rate"],
        "pass@1_after_refine": er["pass@1"],
        "pass@1_after_refine_only": refine["pass@1"],
        "pass@1_init": m["init"]["pass@1"],
        "wrong_first_attempts": er["attempted"],
    }


def run_seed(seed: int, work: Path, overrides: list[str], error_rate: float) -> dict:
    from ledex_rl.pipeline import run_pipeline

    run_dir = work / f"seed-{seed}"
    with TeacherServer(ScriptedTeacher.for_every_split(error_rate)) as teacher:
        cfg = load_config(
            "configs/miniature.yaml",
            [
                f"run_dir={run_dir}",
                f"seed={seed}",
                f"collect.teacher.base_url={teacher.url}",
                f"rl.eval_every_steps={EVAL_EVERY}",
                "rl.eval_tasks=40",
                *overrides,
            ],
        )
        started = time.time()
        run_pipeline(cfg)
        wall = time.time() - started
    results = {row: json.loads((run_dir / "eval" / LABELS[row] / "results.json").read_text()) for row in ROWS}
    out = {
        "seed": seed,
        **{row: row_metrics(results[row], "miniature") for row in ROWS},
        "unseen_families": {row: row_metrics(results[row], "miniature-unseen") for row in ROWS},
    }
    out["seconds"] = {stage: json.loads((run_dir / stage / "DONE").read_text())["seconds"] for stage in ("collect", "sft", "rl", "eval")}
    out["seconds"]["total"] = round(wall, 1)
    out["collect"] = json.loads((run_dir / "collect" / "summary.json").read_text())["table1"]
    out["rl_curve"] = rl_curve(run_dir / "rl" / "metrics.jsonl")
    history = [json.loads(line) for line in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines()]
    out["rl_blocks"] = rl_blocks(history)  # RL's own samples per 10 steps, and the validation tasks (held out of SFT and RL)
    return out


def rl_curve(metrics_file: Path) -> list[dict]:
    """Held-out (eval/miniature/...) success rate and pass@1 measured during RL, per step."""
    curve = []
    for line in metrics_file.read_text().splitlines():
        m = json.loads(line)
        keys = {k: v for k, v in m.items() if k.startswith("eval/miniature")}
        if keys:
            curve.append({"step": m["step"], **keys})
    return curve


def spread(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]  # a success rate with no wrong attempt to refine
    if not values:
        return "n/a"
    mean = statistics.mean(values)
    return f"{100 * mean:.1f} ± {100 * statistics.pstdev(values):.1f}" if len(values) > 1 else f"{100 * mean:.1f}"


def _points(rl: float | None, sft: float | None) -> str:
    return "n/a" if rl is None or sft is None else f"{100 * (rl - sft):+.1f}"


def markdown(seeds: list[dict]) -> str:
    lines = []
    for title, pick in (
        ("Held-out new instances of the training families", lambda s: s),
        ("Families never trained on", lambda s: s["unseen_families"]),
    ):
        lines += [
            f"**{title}** (%, mean ± standard deviation over seeds {', '.join(str(s['seed']) for s in seeds)})",
            "",
            "| model | Expl. + Refine success | Refine success | pass@1 after one round (E+R) | pass@1 first attempts |",
            "|---|---|---|---|---|",
        ]
        for row in ROWS:
            cells = [
                spread([pick(s)[row][key] for s in seeds])
                for key in ("explain_refine_success", "refine_success", "pass@1_after_refine", "pass@1_init")
            ]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "**RL minus SFT, seed by seed** (points, held-out new instances)",
        "",
        "| seed | Expl. + Refine success | Refine success | pass@1 after one round (E+R) |",
        "|---|---|---|---|",
    ]
    for s in seeds:
        cells = [_points(s["rl"][key], s["sft"][key]) for key in ("explain_refine_success", "refine_success", "pass@1_after_refine")]
        lines.append(f"| {s['seed']} | " + " | ".join(cells) + " |")
    lines.append("")
    minutes = [s["seconds"]["total"] / 60 for s in seeds]
    lines.append(f"Minutes per seed (whole pipeline, 2 cores, alone on the machine): {', '.join(f'{m:.1f}' for m in minutes)}.")
    return "\n".join(lines) + "\n"


def plot(seeds: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, mode in zip(axes, ("explain_refine", "refine")):
        key = f"eval/miniature/{mode}_success_rate"
        for s in seeds:
            points = [(c["step"], c[key]) for c in s["rl_curve"] if key in c and c[key] is not None]
            ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker=".", label=f"seed {s['seed']}")
        ax.set_title(f"{'Expl. + Refine' if mode == 'explain_refine' else 'Refine'} success during RL (40 held-out tasks)", fontsize=9)
        ax.set_xlabel("RL step")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="docs/bench")
    parser.add_argument("--work", default="runs/bench-miniature")
    parser.add_argument("--error-rate", type=float, default=0.2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    seeds = []
    for seed in args.seeds:
        seeds.append(run_seed(seed, work, args.overrides, args.error_rate))
        print(json.dumps({k: seeds[-1][k] for k in ("seed", *ROWS, "seconds")}, indent=1))
    (out / "miniature.json").write_text(
        json.dumps(
            {"config": "configs/miniature.yaml", "overrides": args.overrides, "teacher_error_rate": args.error_rate, "seeds": seeds},
            indent=1,
        )
        + "\n"
    )
    (out / "miniature.md").write_text(markdown(seeds))
    plot(seeds, out / "miniature.png")
    print(markdown(seeds))


if __name__ == "__main__":
    main()
