"""`ray job submit` against a running head with its dashboard, as a user of a cluster does it."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ray_heads import RAY, running_head

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ray_job_submit_runs_the_pipeline_on_a_running_head(tmp_path, tiny_model):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    with running_head(env) as address:
        run_dir = tmp_path / "run"
        settings = [f"run_dir={run_dir}", f"model.name_or_path={tiny_model}", "stages=[collect]", "data.train.0.limit=2"]
        train = [sys.executable, "-m", "ledex_rl.train", "--config", "configs/tiny.yaml", *settings]
        submit_to = [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--submission-id", "ledex-tiny", "--"]
        submit = subprocess.run(submit_to + train, env=env, capture_output=True, text=True, timeout=900)
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
