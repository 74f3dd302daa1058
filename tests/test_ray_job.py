"""`ray job submit` against a running head with its dashboard, as a user of a cluster does it."""

import contextlib
import json
import os
import secrets
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


RAY = str(Path(sys.executable).parent / "ray")


@contextlib.contextmanager
def running_head(env: dict):
    """A Ray head of its own (ports, temp dir) with its dashboard and job API -> their address."""
    gcs, dashboard, agent = _free_port(), _free_port(), _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    # --block keeps the head in this process group, so the test can stop it without `ray stop`
    # (which would stop every Ray on the machine, the test session's own cluster included).
    head = subprocess.Popen([RAY, "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
                             # the session's own cluster already holds the agent's default port, 52365
                             f"--dashboard-agent-listen-port={agent}", "--dashboard-host=127.0.0.1", "--num-cpus=2", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
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


@pytest.mark.slow
def test_ray_job_submit_runs_the_pipeline_on_a_running_head(tmp_path, tiny_model):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    with running_head(env) as address:
        run_dir = tmp_path / "run"
        submit = subprocess.run(
            [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--submission-id", "ledex-tiny",
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


@pytest.mark.slow
def test_a_head_with_token_auth_runs_only_its_owners_jobs():
    # As the shipped cluster files start it: RAY_AUTH_MODE=token on every node, the token given to
    # `ray job submit` (here through RAY_AUTH_TOKEN, so that no token file of this machine is touched).
    token = secrets.token_hex(16)
    owner = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    owner.pop("RAY_ADDRESS", None)
    owner.pop("RAY_AUTH_TOKEN_PATH", None)
    with running_head(owner) as address:
        job = [RAY, "job", "submit", "--address", address, "--", sys.executable, "-c", "print('ran for ' + 'the owner')"]
        for stranger in ({**owner, "RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": ""}, {**owner, "RAY_AUTH_TOKEN": "x" + token}):
            refused = subprocess.run(job, env=stranger, capture_output=True, text=True, timeout=300)
            said = refused.stdout + refused.stderr
            assert refused.returncode != 0 and "ran for the owner" not in said, said[-2000:]
            assert "401" in said or "nauthori" in said or "uthentication" in said, said[-2000:]
        accepted = subprocess.run(job, env=owner, capture_output=True, text=True, timeout=300)
        assert accepted.returncode == 0 and "ran for the owner" in accepted.stdout, (accepted.stdout + accepted.stderr)[-2000:]
