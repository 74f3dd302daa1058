"""Training metrics: TensorBoard scalars, a JSON-lines file per stage (easy to read back and plot), and
the same values as Ray metrics for the dashboard (`ledex_rl.ray_metrics`).

    metrics = MetricsLogger(run_dir, "sft")
    metrics.log(step, {"train/loss": 1.2, "train/lr": 2e-5})
"""

from __future__ import annotations

import json
import time
from pathlib import Path


class MetricsLogger:
    def __init__(self, run_dir: str | Path, stage: str):
        from torch.utils.tensorboard import SummaryWriter

        self.stage = stage
        self.tensorboard_dir = Path(run_dir) / "tensorboard" / stage
        self.writer = SummaryWriter(str(self.tensorboard_dir))
        self.jsonl = Path(run_dir) / stage / "metrics.jsonl"
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        with self.jsonl.open("a") as f:
            f.write(json.dumps({"step": step, "time": round(time.time(), 3), **values}) + "\n")
        self.writer.flush()
        from ledex_rl.ray_metrics import record

        record({**values, "step": step}, self.stage)

    def read(self) -> list[dict]:
        if not self.jsonl.is_file():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

    def close(self) -> None:
        self.writer.close()


RL_MODES = ("explain_refine", "refine", "generate")


def rl_blocks(history: list[dict], block: int = 10) -> list[dict]:
    """RL's metrics.jsonl rows -> per block of `block` steps: the means of what the step logged about its
    own samples (pass rate and R(r) per mode, R(e), KL per answer, entropy, answer length) and the
    held-out validation logged at the block's last step (`heldout`; the first block also gets the one
    before any training as `heldout_before_rl`). Judge learning on the pass rates, not the total reward."""
    validation = {m["step"]: _prefixed(m, "validation/pass_rate/") for m in history}
    steps = [m for m in history if "reward/total" in m]
    out = []
    for i in range(0, len(steps), block):
        rows = steps[i : i + block]
        row = {"steps": [rows[0]["step"], rows[-1]["step"]],
               "pass_rate": {m: _mean(r.get(f"reward/pass_rate/{m}") for r in rows) for m in RL_MODES},  # None: mode not trained
               "code_reward": {m: _mean(r.get(f"reward/code/{m}") for r in rows) for m in RL_MODES},
               "explanation_reward": _mean(r.get("reward/explanation") for r in rows),
               "kl": _mean(r.get("kl/mean_per_response") for r in rows),
               "entropy": _mean(r.get("ppo/entropy") for r in rows),
               "length": _mean(r.get("response/length_mean") for r in rows),
               "heldout": validation.get(rows[-1]["step"]) or None}
        if i == 0 and validation.get(0):
            row["heldout_before_rl"] = validation[0]
        out.append(row)
    return out


def _prefixed(row: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None
