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
