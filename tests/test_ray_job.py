"""`ray job submit` against a running head with its dashboard, as a user of a cluster does it."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_job_submit_runs_the_pipeline_on_a_running_head(tmp_path, tiny_model):
    ray = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard, agent = _free_port(), _free_port(), _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    # --block keeps the head in this process group, so the test can stop it without `ray stop`
    # (which would stop every Ray on the machine, the test session's own cluster included).
    head = subprocess.Popen([ray, "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
                             # the session's own cluster already holds the agent's default port, 52365
                             f"--dashboard-agent-listen-port={agent}", "--dashboard-host=127.0.0.1", "--num-cpus=2", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while subprocess.run([ray, "job", "list", "--address", address], env=env, capture_output=True).returncode != 0:
            assert time.time() < deadline and head.poll() is None, "the Ray head did not come up"
            time.sleep(2)
        run_dir = tmp_path / "run"
        submit = subprocess.run(
            [ray, "job", "submit", "--address", address, "--working-dir", str(REPO), "--submission-id", "ledex-tiny",
             "--", sys.executable, "-m", "ledex_rl.train", "--config", "configs/tiny.yaml", f"run_dir={run_dir}",
             f"model.name_or_path={tiny_model}", "stages=[collect]", "data.train.0.limit=2"],
            env=env, capture_output=True, text=True, timeout=900)
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        assert "done: every stage's output is in" in submit.stdout
        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(address)
        assert client.get_job_status("ledex-tiny") == JobStatus.SUCCEEDED
        logs = client.get_job_logs("ledex-tiny")
        assert "joined" in logs  # the driver joined the running cluster instead of starting its own
        summary = json.loads((run_dir / "collect" / "summary.json").read_text())
        assert summary["table1"]["humaneval"]["problems"] == 2
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
