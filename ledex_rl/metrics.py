"""Training metrics: a JSON-lines file per stage (easy to read back and plot), the same values as Ray
metrics for the dashboard (`ledex_rl.ray_metrics`), and the trackers `logging.backends` names:
TensorBoard (the default), Weights & Biases, MLflow.

    metrics = MetricsLogger(run_dir, "sft", cfg.logging)
    metrics.log(step, {"train/loss": 1.2, "train/lr": 2e-5})
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import time
from pathlib import Path

from ledex_rl.config import LoggingConfig
from ledex_rl.errors import UserError
from ledex_rl.modes import ANSWER_MODES


class TrackerMissing(UserError, ImportError):
    """A tracker named in logging.backends is not installed."""


class MetricsLogger:
    def __init__(self, run_dir: str | Path, stage: str, logging: LoggingConfig = LoggingConfig()):
        self.stage = stage
        self.sinks = [SINKS[name](Path(run_dir), stage, logging.project) for name in logging.backends]
        self.jsonl = Path(run_dir) / stage / "metrics.jsonl"
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)

    def log(self, step: int, values: dict[str, float]) -> None:
        for sink in self.sinks:
            sink.log(step, values)
        with self.jsonl.open("a") as f:
            f.write(json.dumps({"step": step, "time": round(time.time(), 3), **values}) + "\n")
        from ledex_rl.ray_metrics import record

        record({**values, "step": step}, self.stage)

    def read(self) -> list[dict]:
        if not self.jsonl.is_file():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class TensorBoardSink:
    """run_dir/tensorboard/<stage> (`tensorboard --logdir runs`)."""

    def __init__(self, run_dir: Path, stage: str, project: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard" / stage))

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """One W&B run per stage of a run dir, grouped by the run dir; a resumed stage continues its run."""

    def __init__(self, run_dir: Path, stage: str, project: str):
        wandb = _optional("wandb")
        self.run = wandb.init(
            project=project,
            group=run_dir.name,
            job_type=stage,
            name=f"{run_dir.name}-{stage}",
            id=_run_id(run_dir, stage),
            resume="allow",
            dir=str(run_dir),
            reinit="create_new",
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class MLflowSink:
    """One MLflow run per stage of a run dir, in the experiment `project`; a resumed stage continues its run."""

    def __init__(self, run_dir: Path, stage: str, project: str):
        mlflow = _optional("mlflow")
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):  # MLflow 3 refuses its file store unless told; a local run needs no server
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client, self.metric = mlflow.MlflowClient(tracking_uri=uri), mlflow.entities.Metric
        experiment = self.client.get_experiment_by_name(project)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(project)
        run_id = _run_id(run_dir, stage)
        found = self.client.search_runs([experiment_id], filter_string=f"tags.`ledex.run_id` = '{run_id}'")
        self.run_id = (
            found[0].info.run_id
            if found
            else self.client.create_run(
                experiment_id, run_name=f"{run_dir.name}-{stage}", tags={"ledex.run_id": run_id, "ledex.stage": stage}
            ).info.run_id
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self.metric(mlflow_key(k), float(v), now, step) for k, v in values.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


SINKS = {"tensorboard": TensorBoardSink, "wandb": WandbSink, "mlflow": MLflowSink}


def mlflow_key(key: str) -> str:
    """MLflow allows letters, digits, `_-. /` in metric names: `eval/pass@1` -> `eval/pass_at_1`."""
    return re.sub(r"[^\w\-. /]", "_", key.replace("@", "_at_"))


def _run_id(run_dir: Path, stage: str) -> str:
    """The same id for the same run dir and stage, so that a resumed stage logs into the run it started."""
    return hashlib.sha1(f"{run_dir.resolve()}:{stage}".encode()).hexdigest()[:16] + f"-{stage}"


def _optional(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TrackerMissing(
            f"logging.backends names {module}, which is not installed; pip install -e .[tracking] "
            f"(or pip install {module}), or drop it from logging.backends"
        ) from None


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
        row = {
            "steps": [rows[0]["step"], rows[-1]["step"]],
            "pass_rate": {m: _mean(r.get(f"reward/pass_rate/{m}") for r in rows) for m in ANSWER_MODES},  # None: mode not trained
            "code_reward": {m: _mean(r.get(f"reward/code/{m}") for r in rows) for m in ANSWER_MODES},
            "explanation_reward": _mean(r.get("reward/explanation") for r in rows),
            "kl": _mean(r.get("kl/mean_per_response") for r in rows),
            "entropy": _mean(r.get("ppo/entropy") for r in rows),
            "length": _mean(r.get("response/length_mean") for r in rows),
            "heldout": validation.get(rows[-1]["step"]) or None,
        }
        if i == 0 and validation.get(0):
            row["heldout_before_rl"] = validation[0]
        out.append(row)
    return out


def _prefixed(row: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None
