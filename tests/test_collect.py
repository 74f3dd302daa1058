"""The collect stage end to end on the tiny model: a real engine, the sandbox pool, an HTTP teacher.

A run is killed (SIGKILL) as soon as a chunk is saved, then resumed; its rows and Table 1 must equal an
uninterrupted run's. The teacher is a local OpenAI-compatible server that answers one correct and one
wrong refinement per wrong attempt, so verified and failed refinements both appear.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ledex_rl import problem_set
from ledex_rl.config import ProblemSourceConfig, load_config
from ledex_rl.problems import load_problems

from .teacher_server import TeacherServer

PROBLEMS = 8


@pytest.fixture(scope="module")
def teacher():
    problems = load_problems(ProblemSourceConfig(name="humaneval", limit=PROBLEMS))[0]
    with TeacherServer(problems) as server:
        yield server


def collect_command(run_dir, model, ray_address, extra):
    return [
        sys.executable,
        "-m",
        "ledex_rl.train",
        "--config",
        "configs/tiny.yaml",
        "stages=[collect]",
        f"run_dir={run_dir}",
        f"model.name_or_path={model}",
        f"ray.address={ray_address}",
        *extra,
    ]


def rows(run_dir):
    table = pa.concat_tables([pq.read_table(p) for p in sorted((run_dir / "collect" / "parts").glob("part-*.parquet"))])
    return sorted(table.to_pylist(), key=lambda r: (r["task_id"], r["kind"], r["parent_index"], r["sample_index"]))


def run_whole_and_killed(tmp_path, model, ray_cluster, extra, problems, timeout=600):
    """One uninterrupted run, and one SIGKILLed as soon as a chunk is saved, then resumed."""
    address = ray_cluster.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    whole = tmp_path / "whole"
    done = subprocess.run(collect_command(whole, model, address, extra), env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen(collect_command(stopped, model, address, extra), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = stopped / "collect" / "parts"
    deadline = time.time() + timeout
    while time.time() < deadline and not list(parts.glob("part-*.parquet")) and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = len(list(parts.glob("part-*.parquet")))
    assert saved >= 1 and saved * int(_option(extra, "collect.chunk_size")) < problems, "the run was not stopped midway"
    assert not (stopped / "collect" / "DONE").exists()
    resumed = subprocess.run(collect_command(stopped, model, address, extra), env=env, capture_output=True, text=True, timeout=timeout)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming; " in resumed.stderr
    return whole, stopped


def _option(extra, key):
    return next(item.split("=", 1)[1] for item in extra if item.startswith(key + "="))


def test_collect_resumes_after_a_kill_with_identical_results(tmp_path, tiny_model, teacher, ray_cluster):
    extra = [
        f"data.train.0.limit={PROBLEMS}",
        "collect.chunk_size=1",
        "collect.samples_per_problem=3",
        "collect.teacher.kind=openai",
        "collect.teacher.model=fake-teacher",
        f"collect.teacher.base_url={teacher.url}",
        "collect.teacher_samples=2",
        "rollout.num_cpus_per_engine=0.25",
        # Token for token only without the prefix cache: the resumed run's fresh engine prefills a prompt
        # that the whole run's engine had partly cached, and sampled it differently once (vllm#40896).
        "rollout.prefix_caching=false",
    ]
    whole, stopped = run_whole_and_killed(tmp_path, tiny_model, ray_cluster, extra, PROBLEMS)

    assert rows(stopped) == rows(whole)
    summary = json.loads((whole / "collect" / "summary.json").read_text())
    assert json.loads((stopped / "collect" / "summary.json").read_text())["table1"] == summary["table1"]
    table = summary["table1"]["humaneval"]
    # The tiny model never solves HumanEval; the teacher fixes every wrong attempt with its first answer.
    assert table["problems"] == PROBLEMS and table["correct"] == 0 and table["wrong"] == table["unique_solutions"] >= PROBLEMS
    assert table["wrong_with_correct_refinement"] == table["wrong"] and table["refinement_rate"] == 1.0
    assert table["refinements"] == 2 * table["wrong"] and table["correct_refinements"] == table["wrong"]
    refinement = next(r for r in rows(whole) if r["kind"] == "refinement" and r["passed"])
    assert refinement["explanation"] == "The code does not implement the task." and refinement["mode"] == "explain_refine"
    assert refinement["wrong_feedback"] and json.loads(refinement["messages"])[1]["role"] == "assistant"
    assert f"| humaneval ({PROBLEMS}) |" in (whole / "collect" / "summary.md").read_text()
    # The problem set is saved once, for SFT and RL to read back.
    sources = load_config("configs/tiny.yaml", [f"data.train.0.limit={PROBLEMS}"]).data.train
    saved = problem_set.load(whole / "collect", sources, "rl")
    assert saved == load_problems(sources[0])[0]


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_smollm2_collects_mbpp_and_resumes(tmp_path, shared_data, ray_cluster):
    """Issue 4's real-model check: SmolLM2-135M as sampler and teacher on 20 MBPP training problems."""
    from ledex_rl.models import prepare_smollm2

    mbpp = shared_data / "mbpp" / "mbpp.jsonl"
    extra = [
        f"data.train=[{{name: mbpp, path: {mbpp}, split: train, limit: 20}}]",
        "collect.chunk_size=5",
        "model.dtype=float32",
        "model.max_model_len=2048",
        "collect.samples_per_problem=2",
        "collect.max_new_tokens=192",
        "collect.teacher_samples=1",
        "collect.teacher_max_new_tokens=256",
        "rollout.num_cpus_per_engine=1",
    ]
    whole, stopped = run_whole_and_killed(tmp_path, prepare_smollm2(), ray_cluster, extra, 20, timeout=1800)
    first = json.loads((whole / "collect" / "summary.json").read_text())["table1"]
    again = json.loads((stopped / "collect" / "summary.json").read_text())["table1"]
    assert first == again
    assert first["mbpp"]["problems"] == 20 and first["mbpp"]["unique_solutions"] >= 20
    print((whole / "collect" / "summary.md").read_text())
