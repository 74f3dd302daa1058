"""A run's folder: where each stage writes (`run_dir/<stage>/`), when it has finished (a `DONE` file
written last, so a stage stopped midway is resumed, never mistaken for finished), and which model a
stage starts from. The pipeline and the stages both read it; it imports neither."""

from __future__ import annotations

from pathlib import Path

from ledex_rl.config import LedexConfig

STAGE_ORDER = ("collect", "sft", "rl", "eval")


def stage_dir(cfg: LedexConfig, stage: str) -> Path:
    return Path(cfg.run_dir) / stage


def is_done(cfg: LedexConfig, stage: str) -> bool:
    return (stage_dir(cfg, stage) / "DONE").is_file()


def trained_model(cfg: LedexConfig, stage: str) -> Path | None:
    """The model a finished training stage (sft, rl) wrote, or None."""
    model = stage_dir(cfg, stage) / "model"
    return model if is_done(cfg, stage) and (model / "config.json").is_file() else None


def policy_for(cfg: LedexConfig, stage: str) -> str:
    """The model a stage starts from: the newest model written by a finished earlier training stage
    (RL's, else SFT's), else the configured base model. Collection always samples the base model."""
    from ledex_rl.models import resolve_model  # torch and transformers: kept out of the CLI's start-up

    earlier = STAGE_ORDER[: STAGE_ORDER.index(stage)]
    for name in reversed([n for n in earlier if n in ("sft", "rl")]):
        model = trained_model(cfg, name)
        if model is not None:
            return str(model)
    return resolve_model(cfg.model.name_or_path)
