"""What a run prints, and where its logs go.

On the console: one line per stage (started, done or skipped), the stages' progress bars, warnings and
errors. Everything else, in run_dir/logs/: `driver.log` (this process's log at INFO) and, for the Ray
cluster this process started or joined, `ray/` (a link to the node's Ray logs: each engine's,
trainer's, executor's and reward actor's stdout and stderr, vLLM's and DeepSpeed's lines among them).
`-v` puts all of it on the console too, the actors' output included.

Without `setup` (the Python API, the tests) logging is left as the caller configured it, and actors'
output is streamed to the driver as Ray does by default.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

STAGE_LOG = "ledex_rl.stage"  # the logger whose INFO lines are the console's one line per stage
FORMAT = "%(asctime)s %(name)s: %(message)s"


class _Settings:
    logs_dir: Path | None = None
    actor_logs_live = True  # Ray's default: actors' stdout and stderr streamed to the driver


def setup(run_dir: str | Path, verbose: bool) -> Path:
    """Send this process's logs to run_dir/logs/driver.log, and to the console only what is listed above
    (everything with `verbose`) -> the logs folder."""
    logs = Path(run_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):  # ours from an earlier setup, and basicConfig's plain console handler
        if isinstance(handler, (_Console, _LogFile)) or type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.INFO)
    file = _LogFile(logs / "driver.log")
    file.setFormatter(logging.Formatter(FORMAT))
    console = _Console()
    console.setFormatter(logging.Formatter(FORMAT if verbose else "%(message)s"))
    if not verbose:
        console.addFilter(lambda record: record.levelno >= logging.WARNING or record.name == STAGE_LOG)
    root.addHandler(file)
    root.addHandler(console)
    _Settings.logs_dir, _Settings.actor_logs_live = logs, verbose
    return logs


class _LogFile(logging.FileHandler):
    """run_dir/logs/driver.log."""


class _Console(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (click's test runner swaps it per command)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def actor_logs_live() -> bool:
    return _Settings.actor_logs_live


def link_ray_logs() -> Path | None:
    """run_dir/logs/ray -> this node's Ray logs, once Ray is initialized (after `setup`) -> the link."""
    import ray

    if _Settings.logs_dir is None or not ray.is_initialized():
        return None
    try:  # no public API names the session's log folder (Ray 2.60)
        target = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    except AttributeError:
        return None
    link = _Settings.logs_dir / "ray"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(target, link, target_is_directory=True)
    return link
