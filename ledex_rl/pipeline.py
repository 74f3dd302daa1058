"""The four LeDex stages in order, each skipped when its output already exists (unless forced).

A stage writes into `run_dir/<stage>/` and marks completion with a `DONE` file written last, so a
stage stopped midway is resumed (its own code picks up partial output), never mistaken for finished
(the layout: ledex_rl/run_dir.py).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ledex_rl.config import LedexConfig
from ledex_rl.console import STAGE_LOG
from ledex_rl.run_dir import STAGE_ORDER, is_done, stage_dir

stage_log = logging.getLogger(STAGE_LOG)  # the console's one line per stage


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[LedexConfig, Path], None]

    def output_dir(self, cfg: LedexConfig) -> Path:
        return stage_dir(cfg, self.name)

    def is_done(self, cfg: LedexConfig) -> bool:
        return is_done(cfg, self.name)


def _collect(cfg: LedexConfig, out: Path) -> None:
    from ledex_rl.stages import collect

    collect.run(cfg, out)


def _sft(cfg: LedexConfig, out: Path) -> None:
    from ledex_rl.stages import sft

    sft.run(cfg, out)


def _rl(cfg: LedexConfig, out: Path) -> None:
    from ledex_rl.stages import rl

    rl.run(cfg, out)


def _eval(cfg: LedexConfig, out: Path) -> None:
    from ledex_rl.stages import eval as evaluate

    evaluate.run(cfg, out)


STAGES: dict[str, Stage] = {
    "collect": Stage("collect", _collect),
    "sft": Stage("sft", _sft),
    "rl": Stage("rl", _rl),
    "eval": Stage("eval", _eval),
}


def run_stage(name: str, cfg: LedexConfig, force: bool = False) -> bool:
    """Run one stage; returns False when it was skipped because its output exists."""
    stage = STAGES[name]
    out = stage.output_dir(cfg)
    if stage.is_done(cfg) and not force:
        stage_log.info("%s: output exists in %s, skipped (use --force to redo)", name, out)
        return False
    if force:  # redo from scratch: a stage would otherwise resume from (and reuse) its partial output
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    stage_log.info("%s: started", name)
    started = time.time()
    stage.run(cfg, out)
    seconds = round(time.time() - started, 1)
    (out / "DONE").write_text(json.dumps({"seconds": seconds}) + "\n")
    stage_log.info("%s: done in %.1f min; output in %s", name, seconds / 60, out)
    return True


def run_pipeline(cfg: LedexConfig, force: tuple[str, ...] = ()) -> None:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    for name in STAGE_ORDER:
        if name in cfg.stages:
            run_stage(name, cfg, force="all" in force or name in force)
