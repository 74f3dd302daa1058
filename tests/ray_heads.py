"""A Ray head of its own on this machine (ports, temp dir), started as a user's `ray start --head` starts
one, for the slow tests that submit jobs to it: tests/test_ray_job.py and tests/test_many_nodes.py."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_head(env: dict, *start_args: str, gcs_port: int = 0):
    """`ray start --head` with `start_args` (`--num-cpus=2` unless they name it) -> the address of its
    dashboard and job API. Stopped at the end, with every process of the nodes that joined it."""
    gcs, dashboard, agent = gcs_port or free_port(), free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    cpus = [] if any(a.startswith("--num-cpus") for a in start_args) else ["--num-cpus=2"]
    # --block keeps the head in this process group, so the test can stop it without `ray stop`
    # (which would stop every Ray on the machine, the test session's own cluster included).
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={gcs}",
            f"--dashboard-port={dashboard}",
            # the session's own cluster already holds the agent's default port, 52365
            f"--dashboard-agent-listen-port={agent}",
            "--dashboard-host=127.0.0.1",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
            *cpus,
            *start_args,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True).returncode != 0:
            assert time.time() < deadline and head.poll() is None, "the Ray head did not come up"
            time.sleep(2)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
        _kill_processes_under(temp_dir)


def _kill_processes_under(temp_dir: str) -> None:
    """Nodes an autoscaler started live in sessions of their own; their command lines name the temp dir."""
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(temp_dir in arg for arg in proc.info["cmdline"] or ()):
                proc.kill()
