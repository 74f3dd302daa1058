"""`python -m ledex_rl.train [--config X.yaml] [key=value ...]`: the whole LeDex pipeline.

This is the entry point for `ray job submit -- python -m ledex_rl.train ...` too. Each stage is
skipped when its output exists in `run_dir`, so re-running the command resumes a stopped run.
"""

from __future__ import annotations

import click

from ledex_rl import console
from ledex_rl.cli import OVERRIDES_HELP, config_options, fail_cleanly, load_or_exit


@click.command(help=f"Run collect -> sft -> rl -> eval.\n\n{OVERRIDES_HELP}")
@config_options
@click.option("--force", multiple=True, help="Redo a stage even if its output exists (repeatable, or 'all').")
@click.option("-v", "--verbose", is_flag=True, help="Show every log line live, the actors' too (always in RUN_DIR/logs/).")
@fail_cleanly
def train(config_path, overrides, force, verbose):
    from ledex_rl.models import resolve_model
    from ledex_rl.pipeline import run_pipeline
    from ledex_rl.problems import load_problems

    cfg = load_or_exit(config_path, overrides)
    logs = console.setup(cfg.run_dir, verbose)
    click.echo(f"run dir: {cfg.run_dir} (logs: {logs}{'' if verbose else '; -v to see them live'})")
    click.echo(f"model: {cfg.model.name_or_path} -> {resolve_model(cfg.model.name_or_path)}")
    for source in cfg.data.train:
        problems, report = load_problems(source)
        click.echo(f"train data {source.name} [{source.split}]: {len(problems)} problems, {len(report.skipped)} skipped")
    run_pipeline(cfg, force=tuple(force))
    click.echo(f"done: every stage's output is in {cfg.run_dir}")


if __name__ == "__main__":
    train()
