"""Compare evaluations: a Markdown report in the shape of the paper's Table 2 (model x mode rows,
benchmark columns, pass@1 / pass@10 with deltas to the first model) and PNG plots (pass@k per round
of refinement; reward and pass-rate curves from the training logs).

    ledex-rl report runs/default runs/other/eval/base/results.json --out reports/
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ledex_rl.errors import UserError
from ledex_rl.eval_metrics import MODE_NAMES

Result = tuple[str, dict]  # (label, results.json)


class NoResults(UserError, ValueError):
    """Nothing to report; the message names what was looked for."""


def find_results(paths: Sequence[str | Path]) -> list[Result]:
    """Each path: a results.json, an eval folder of one model, a stage folder `eval/`, or a run dir."""
    found: list[Result] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            files = [path]
        elif (path / "results.json").is_file():
            files = [path / "results.json"]
        elif path.is_dir():
            files = sorted(path.glob("*/results.json")) or sorted(path.glob("eval/*/results.json"))
        else:
            raise NoResults(f"report: {path} does not exist; pass a run dir, its eval/ folder, or a results.json")
        if not files:
            raise NoResults(f"report: no results.json under {path}; run `ledex-rl eval` first")
        for file in files:
            results = json.loads(file.read_text())
            label = results.get("label") or file.parent.name
            if len(paths) > 1 and any(label == seen for seen, _ in found):
                label = f"{file.parent.parent.parent.name}/{label}"
            found.append((label, results))
    return found


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _delta(x: float, base: float | None) -> str:
    return "" if base is None else f"{100 * (x - base):+.2f}"


def _mode_rows(results: dict) -> list[tuple[str, dict]]:
    """(mode name, {benchmark: {pass@k: x}}) for Init and each mode after its last round."""
    out = []
    benchmarks = results["benchmarks"]
    out.append((MODE_NAMES["generate"], {b: m["init"] for b, m in benchmarks.items()}))
    for mode in results["modes"]:
        if results["rounds"]:
            out.append((MODE_NAMES[mode], {b: m[mode][-1] for b, m in benchmarks.items()}))
    return out


def markdown(results: Sequence[Result]) -> str:
    if not results:
        raise NoResults("report: no results to compare")
    benchmarks = list(dict.fromkeys(b for _, r in results for b in r["benchmarks"]))
    ks = [k for k in results[0][1]["ks"] if all(k in r["ks"] for _, r in results)]
    cell_keys = [f"pass@{k}" for k in ks]
    lines = [
        "# Evaluation",
        "",
        f"pass@k (%), {' / '.join(cell_keys)}; in brackets the difference to **{results[0][0]}** "
        "in the same mode. Refinement rows are after the last round.",
        "",
    ]
    lines.append("| Model | Mode | " + " | ".join(benchmarks) + " |")
    lines.append("|---|---|" + "---|" * len(benchmarks))
    base_rows = dict(_mode_rows(results[0][1]))
    for index, (label, r) in enumerate(results):
        for mode_name, cells in _mode_rows(r):
            row = []
            for b in benchmarks:
                cell = cells.get(b)
                if cell is None:
                    row.append("-")
                    continue
                text = " / ".join(_pct(cell[k]) for k in cell_keys)
                base = base_rows.get(mode_name, {}).get(b)
                if index and base is not None:
                    text += " (" + " / ".join(_delta(cell[k], base[k]) for k in cell_keys) + ")"
                row.append(text)
            lines.append(f"| {label} | {mode_name} | " + " | ".join(row) + " |")
    lines += ["", "## Refinement success rate (%)", "", "Share of wrong samples whose refinement passes, per round.", ""]
    lines.append("| Model | Benchmark | Mode | " + " | ".join(f"round {i}" for i in range(1, _max_rounds(results) + 1)) + " |")
    lines.append("|---|---|---|" + "---|" * _max_rounds(results))
    for label, r in results:
        for b, m in r["benchmarks"].items():
            for mode in r["modes"]:
                cells = [f"{_pct(x['success_rate'])} ({x['fixed']}/{x['attempted']})" for x in m.get(mode, [])]
                lines.append(f"| {label} | {b} | {MODE_NAMES[mode]} | " + " | ".join(cells) + " |")
    lines += ["", "## Setup", ""]
    for label, r in results:
        tasks = ", ".join(f"{b}: {m['tasks']}" for b, m in r["benchmarks"].items())
        judge = r.get("judge") or {}
        judged = (
            f"; judge {judge['model']}: {judge['score']:.2f} / 5 over {judge['rated']} explanations"
            if judge.get("score") is not None
            else ""
        )
        lines.append(
            f"- **{label}**: `{r.get('model', '?')}`; tasks {tasks}; {r.get('samples_per_task')} samples per task at "
            f"T={r.get('temperature')}, refinements at T={r.get('refine_temperature')}, {r['rounds']} round(s), "
            f"up to {r.get('max_new_tokens')} new tokens{judged}."
        )
    return "\n".join(lines) + "\n"


def _max_rounds(results: Sequence[Result]) -> int:
    return max((r["rounds"] for _, r in results), default=0)


def plot_rounds(results: Sequence[Result], path: Path) -> Path:
    """pass@k against the round of refinement (round 0 = first attempts), one panel per benchmark and k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benchmarks = list(dict.fromkeys(b for _, r in results for b in r["benchmarks"]))
    ks = results[0][1]["ks"]
    fig, axes = plt.subplots(len(ks), len(benchmarks), figsize=(4.2 * len(benchmarks), 3.4 * len(ks)), squeeze=False)
    for col, b in enumerate(benchmarks):
        for row, k in enumerate(ks):
            ax = axes[row][col]
            for label, r in results:
                m = r["benchmarks"].get(b)
                if m is None:
                    continue
                for mode in r["modes"]:
                    ys = [m["init"][f"pass@{k}"]] + [x[f"pass@{k}"] for x in m[mode]]
                    ax.plot(range(len(ys)), [100 * y for y in ys], marker="o", label=f"{label}: {MODE_NAMES[mode]}")
            ax.set_title(f"{b}: pass@{k}")
            ax.set_xlabel("round of refinement")
            ax.set_ylabel("%")
            ax.set_xticks(range(_max_rounds(results) + 1))
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


TRAINING_PANELS = (
    ("sft", "train/loss", "SFT training loss"),
    ("sft", "eval/loss", "SFT held-out loss"),
    ("rl", "reward/total", "RL total reward"),
    ("rl", "reward/code", "RL code reward R(r)"),
    ("rl", "reward/explanation", "RL explanation reward R(e)"),
    ("rl", "reward/pass_rate", "RL pass rate of answers"),
    ("rl", "kl/mean_per_response", "RL KL to the reference"),
)


def plot_training(run_dir: Path, path: Path) -> Path | None:
    """Reward, pass-rate and loss curves from `run_dir/<stage>/metrics.jsonl`, plus pass@1 measured
    during RL when it ran; None when the run has no training logs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = {}
    for stage in ("sft", "rl"):
        file = Path(run_dir) / stage / "metrics.jsonl"
        if file.is_file():
            logs[stage] = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    panels = [(s, key, title) for s, key, title in TRAINING_PANELS if any(key in m for m in logs.get(s, []))]
    during = sorted({k for m in logs.get("rl", []) for k in m if k.startswith("eval/") and k.endswith("pass@1")})
    if during:
        panels.append(("rl", during, "pass@1 during RL"))
    validation = sorted({k for m in logs.get("rl", []) for k in m if k.startswith("validation/pass_rate/")})
    if validation:
        panels.append(("rl", validation, "RL validation pass rate (held-out tasks)"))
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (stage, keys, title) in zip([a for line in axes for a in line], panels):
        for key in [keys] if isinstance(keys, str) else keys:
            points = [(m["step"], m[key]) for m in logs[stage] if key in m]
            ax.plot([s for s, _ in points], [v for _, v in points], marker=".", label=key)
        ax.set_title(title)
        ax.set_xlabel(f"{stage} step")
        ax.grid(alpha=0.3)
        if not isinstance(keys, str):
            ax.legend(fontsize=7)
    for ax in [a for line in axes for a in line][len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: Sequence[Result], out_dir: Path, run_dir: Path | None = None) -> list[Path]:
    """report.md, refinement_rounds.png and (with a run dir that has training logs) training.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.md"]
    text = markdown(results)
    written.append(plot_rounds(results, out_dir / "refinement_rounds.png"))
    text += "\n![pass@k per round of refinement](refinement_rounds.png)\n"
    if run_dir is not None:
        training = plot_training(run_dir, out_dir / "training.png")
        if training is not None:
            written.append(training)
            text += "\n![training curves](training.png)\n"
    (out_dir / "report.md").write_text(text)
    return written
