"""SFT: the paper's examples and loss mask (pure), then the stage end to end on the tiny model."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledex_rl import prompts, sft_data
from ledex_rl.collected import CollectedRow, write_rows
from ledex_rl.config import load_config
from ledex_rl.losses import IGNORE
from ledex_rl.problems import stage_problems
from ledex_rl.stages.sft import build_examples

REPO = Path(__file__).resolve().parents[1]


def start_detached(cmd: list[str]) -> subprocess.Popen:
    """A CLI run in its own session (to be killed with its actors), quiet, importing this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def row(task_id, kind, passed, code, explanation="", wrong_code="", wrong_feedback="", parent=-1, task="Write f."):
    if kind == "first_attempt":
        messages = [{"role": "user", "content": task}]
    else:
        messages = prompts.refinement_conversation(task, wrong_code, wrong_feedback, "explain_refine")
    return CollectedRow(
        task_id=task_id,
        source="humaneval",
        kind=kind,
        mode="generate" if kind == "first_attempt" else "explain_refine",
        sample_index=0,
        parent_index=parent,
        messages=json.dumps(messages),
        response="",
        explanation=explanation,
        code=code,
        wrong_code=wrong_code,
        wrong_feedback=wrong_feedback,
        passed=passed,
        pass_rate=1.0 if passed else 0.0,
        num_tests=1,
        status="passed" if passed else "failed",
        feedback="" if passed else "assert f() == 1: got 2",
        test_results="[]",
        model="m",
        temperature=1.0,
        max_tokens=64,
        seed=1,
        duplicates=1,
    )


WRONG = "def f():\n    return 2"
RIGHT = "def f():\n    return 1"
ROWS = [
    row("A", "first_attempt", True, RIGHT),
    row("B", "first_attempt", False, WRONG),
    row("B", "refinement", True, RIGHT, "It returns 2; the task wants 1.", WRONG, "assert f() == 1: got 2", parent=0),
    row("B", "refinement", False, "def f():\n    return 3", "Off by one.", WRONG, "assert f() == 1: got 2", parent=0),
    row("B", "refinement", True, RIGHT, "", WRONG, "assert f() == 1: got 2", parent=0),  # no explanation
]


def test_examples_follow_the_paper():
    examples = sft_data.examples_from_rows(ROWS)
    kinds = sorted(e.kind for e in examples)
    # correct first attempt -> generation; each verified refinement -> refine and explain+refine
    # (the one without an explanation gives refine only, and its refine duplicate is dropped);
    # the failed refinement and the wrong first attempt give nothing.
    assert kinds == ["explain_refine", "generate", "refine"]
    by_kind = {e.kind: e for e in examples}
    assert by_kind["generate"].answer == prompts.answer_text(RIGHT)
    refine, explain = by_kind["refine"], by_kind["explain_refine"]
    for ex in (refine, explain):
        assert [m["role"] for m in ex.prompt] == ["user", "assistant", "user"]
        assert WRONG in ex.prompt[1]["content"]  # the wrong attempt is an earlier assistant turn
    assert refine.prompt[2]["content"].endswith(prompts.REFINE_REQUEST)
    assert explain.prompt[2]["content"].endswith(prompts.EXPLAIN_REFINE_REQUEST)
    assert explain.answer.startswith("It returns 2") and prompts.parse_response(explain.answer).code == RIGHT
    assert prompts.parse_response(refine.answer) == prompts.parse_response(prompts.answer_text(RIGHT))


def test_loss_is_only_on_the_final_answer(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    explain = next(e for e in sft_data.examples_from_rows(ROWS) if e.kind == "explain_refine")
    tok = sft_data.tokenize(explain, tokenizer, "chat", 1024)
    first_loss = next(i for i, label in enumerate(tok.labels) if label != IGNORE)
    # Everything before the answer (user turns, the wrong first attempt) is masked; everything after is learned.
    assert all(label == IGNORE for label in tok.labels[:first_loss])
    assert all(label == token for label, token in zip(tok.labels[first_loss:], tok.input_ids[first_loss:]))
    prompt_text = prompts.render(explain.prompt, tokenizer, "chat")
    assert tokenizer.decode(tok.input_ids[:first_loss]) == prompt_text
    assert WRONG in prompt_text
    assert tokenizer.decode(tok.input_ids[first_loss:]) == explain.answer + "<|im_end|>"  # the model learns to stop
    # Cut to a length: the prompt survives whole, the answer is shortened.
    short = sft_data.tokenize(explain, tokenizer, "chat", first_loss + 3)
    assert short.labels[:first_loss] == tok.labels[:first_loss] and short.num_loss_tokens == 3
    assert sft_data.tokenize(explain, tokenizer, "chat", first_loss) is None


def test_schedule_batches_and_held_out_split():
    steps = sft_data.step_schedule(10, 4, 2, seed=3)
    assert len(steps) == 6 and all(len(s) == 4 for s in steps)
    assert set(i for s in steps[:3] for i in s) == set(range(10))  # every example in every epoch
    assert steps[:3] != steps[3:]  # reshuffled per epoch
    assert sft_data.step_schedule(10, 4, 2, seed=3) == steps
    lengths = [5, 1, 9, 3]
    assert sft_data.micro_batches([0, 1, 2, 3], lengths, 2) == [[1, 3], [0, 2]]
    examples = [sft_data.SFTExample("generate", f"T{i % 5}", (), "x") for i in range(20)]
    train, held = sft_data.split_held_out(examples, 0.2, seed=0)
    assert len({e.task_id for e in held}) == 1 and not {e.task_id for e in held} & {e.task_id for e in train}
    assert sft_data.split_held_out(examples, 0.2, seed=0) == (train, held)


def test_collate_pads_right_and_masks_padding():
    a = sft_data.TokenizedExample("generate", "A", (1, 2, 3), (IGNORE, 2, 3))
    b = sft_data.TokenizedExample("generate", "B", (4,), (IGNORE,))
    batch = sft_data.collate([a, b], pad_id=0)
    assert batch == {
        "input_ids": [[1, 2, 3], [4, 0, 0]],
        "attention_mask": [[1, 1, 1], [1, 0, 0]],
        "labels": [[IGNORE, 2, 3], [IGNORE, IGNORE, IGNORE]],
    }


# --- the stage, end to end on the tiny model -----------------------------------------------------------


def write_collected(run_dir: Path, n_tasks: int = 8) -> None:
    """A collected dataset in the collect stage's format: HumanEval tasks, a wrong first attempt each,
    a verified explain+refine answer (the reference solution) and a correct first attempt."""
    from ledex_rl.config import ProblemSourceConfig
    from ledex_rl.problems import load_problems

    problems, _ = load_problems(ProblemSourceConfig(name="humaneval", limit=n_tasks))
    rows = []
    for p in problems:
        task = prompts.task_text(p)
        wrong = p.starter_code.rstrip() + "\n    pass\n"
        feedback = "assert candidate(...) == ...: got None"
        rows.append(row(p.task_id, "first_attempt", False, wrong, task=task))
        rows.append(
            row(
                p.task_id,
                "refinement",
                True,
                p.reference_solution,
                f"The body of {p.entry_point} is empty; it must compute the result.",
                wrong,
                feedback,
                parent=0,
                task=task,
            )
        )
        rows.append(row(p.task_id, "first_attempt", True, p.reference_solution, task=task))
    parts = run_dir / "collect" / "parts"
    parts.mkdir(parents=True)
    write_rows(parts / "part-00000.parquet", rows)
    (run_dir / "collect" / "DONE").write_text("{}\n")


def sft_overrides(run_dir, *extra):
    return [
        f"run_dir={run_dir}",
        f"model.name_or_path={os.environ['LEDEX_TEST_TINY']}",
        "sft.use_reference_solutions=false",
        "sft.epochs=3",
        "sft.lr=1e-3",
        "sft.eval_fraction=0.25",
        "trainer.num_cpus_per_rank=0.25",
        "trainer.cpu_threads=1",
        *extra,
    ]


def test_sft_stage_lowers_held_out_loss_and_hands_its_model_on(ray_cluster, tiny_env, tmp_path):
    from transformers import AutoModelForCausalLM

    from ledex_rl.pipeline import run_stage
    from ledex_rl.run_dir import policy_for

    write_collected(tmp_path)
    cfg = load_config("configs/tiny.yaml", sft_overrides(tmp_path))
    assert policy_for(cfg, "rl") == str(tiny_env)  # before SFT: the base model
    assert run_stage("sft", cfg)
    summary = json.loads((tmp_path / "sft" / "summary.json").read_text())
    assert summary["examples"] == {"refine": 8, "explain_refine": 8, "generate": 8}
    assert summary["held_out_examples"] == 6 and summary["train_examples"] == 18
    assert summary["held_out_loss_after"] < summary["held_out_loss_before"] - 0.2
    assert policy_for(cfg, "rl") == str(tmp_path / "sft" / "model")  # the next stage picks up the new model
    assert policy_for(cfg, "eval") == str(tmp_path / "sft" / "model")
    # The new model loads in transformers and in a vLLM engine, and both score tokens alike.
    import torch

    from actors.rollout_engine import EnginePool
    from ledex_rl.losses import logprob_lists

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "sft" / "model")
    ids = model.generation_config.eos_token_id, 5, 17, 3, 99, 42
    with torch.no_grad():
        expected = logprob_lists(model(torch.tensor([ids])).logits, torch.tensor([ids]), torch.ones(1, len(ids)))[0]
    engine = EnginePool(str(tmp_path / "sft" / "model"), cfg.rollout, cfg.model, name_prefix="test-sft-rollout")
    try:
        assert engine.score([ids])[0] == pytest.approx(expected, abs=2e-3)
    finally:
        engine.shutdown()
    metrics = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "train/loss" in m] == list(range(1, summary["steps"] + 1))
    assert list((tmp_path / "tensorboard" / "sft").glob("events.out.tfevents.*"))
    assert not (tmp_path / "sft" / "checkpoints").exists()  # removed once the model is written


def test_sft_max_steps_cuts_the_schedule(ray_cluster, tiny_env, tmp_path):
    from ledex_rl.pipeline import run_stage

    write_collected(tmp_path)
    assert run_stage("sft", load_config("configs/tiny.yaml", sft_overrides(tmp_path, "sft.max_steps=2")))
    assert json.loads((tmp_path / "sft" / "summary.json").read_text())["steps"] == 2  # of 3 epochs x 5


def test_sft_without_verified_data_says_how_to_get_some(tiny_env, tmp_path):
    from ledex_rl.collected import NoTrainingData
    from ledex_rl.stages.sft import build_examples

    cfg = load_config("configs/tiny.yaml", sft_overrides(tmp_path))
    with pytest.raises(NoTrainingData, match="sft.use_reference_solutions=true"):
        build_examples(cfg, [ROWS[1], ROWS[3]])
    with_refs = load_config("configs/tiny.yaml", sft_overrides(tmp_path, "sft.use_reference_solutions=true"))
    rows = [row("HumanEval/0", "first_attempt", False, WRONG)]
    kinds = sorted(e.kind for e in build_examples(with_refs, rows))
    assert kinds[0] == "generate" and "refine" in kinds


@pytest.mark.parametrize("kill_after", [2, pytest.param(5, marks=pytest.mark.slow)], ids=["mid-epoch", "epoch-boundary"])
def test_sft_resumes_after_a_kill(ray_cluster, tiny_env, tmp_path, kill_after):
    """SIGKILL the `ledex-rl sft` process once step `kill_after` is checkpointed (step 5 ends the first
    of 3 epochs of 5 steps); rerunning resumes from that step and ends with the same held-out loss as
    an uninterrupted run."""
    import ray

    from ledex_rl.pipeline import run_stage

    address = ray.get_runtime_context().gcs_address
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    for d in (killed, whole):
        write_collected(d)
    extra = ("sft.save_every_steps=1", "sft.keep_checkpoints=true", f"ray.address={address}")
    cmd = [sys.executable, "-m", "ledex_rl.cli", "sft", "--config", "configs/tiny.yaml", *sft_overrides(killed, *extra)]
    proc = start_detached(cmd)
    latest = killed / "sft" / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not (latest.is_file() and latest.read_text().strip() == f"step-{kill_after}") and time.time() < deadline:
        assert proc.poll() is None, "sft finished or failed before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "sft" / "DONE").exists()
    time.sleep(2)  # let Ray reap the dead driver's trainer actors

    assert run_stage("sft", load_config("configs/tiny.yaml", sft_overrides(killed, *extra[:2])))
    assert run_stage("sft", load_config("configs/tiny.yaml", sft_overrides(whole, *extra[:2])))
    resumed = json.loads((killed / "sft" / "summary.json").read_text())
    expected = json.loads((whole / "sft" / "summary.json").read_text())
    assert resumed["held_out_loss_after"] == pytest.approx(expected["held_out_loss_after"], rel=1e-4)
    steps = [json.loads(line)["step"] for line in (killed / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(1) == 1 and steps.count(kill_after) == 1  # the rerun started after the checkpoint
    assert max(steps) == 15


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_sft_on_the_embedded_smollm2(ray_cluster, tmp_path):
    """The embedded default model through the SFT stage with the default SFT settings: it finishes on
    the CPU, lowers the held-out loss, and leaves a model the next stage picks up."""
    from ledex_rl.pipeline import run_stage
    from ledex_rl.run_dir import policy_for

    write_collected(tmp_path, n_tasks=10)
    cfg = load_config(
        None, [f"run_dir={tmp_path}", "sft.use_reference_solutions=false", "sft.eval_fraction=0.2", "trainer.num_cpus_per_rank=0.5"]
    )
    assert run_stage("sft", cfg)
    summary = json.loads((tmp_path / "sft" / "summary.json").read_text())
    assert summary["held_out_loss_after"] < summary["held_out_loss_before"]
    assert policy_for(cfg, "rl") == str(tmp_path / "sft" / "model")


def test_tasks_kept_for_rl_alone_give_sft_nothing(tmp_path):
    """A training source with `stages: [rl]` is collected, but only RL learns from it."""
    config = tmp_path / "split.yaml"
    config.write_text(
        "data:\n  train:\n    - {name: miniature, split: train, limit: 2}\n"
        "    - {name: miniature, split: train, offset: 2, limit: 2, stages: [rl]}\n"
        "sft: {use_reference_solutions: false}\n"
    )
    cfg = load_config(str(config))
    sft_tasks = [p.task_id for p in stage_problems(cfg.data.train, "sft")]
    rl_tasks = [p.task_id for p in stage_problems(cfg.data.train, "rl")]
    assert len(sft_tasks) == 2 and len(rl_tasks) == 4 and set(sft_tasks) < set(rl_tasks)
    rows = [row(task, "first_attempt", True, RIGHT) for task in rl_tasks]
    assert sorted(e.task_id for e in build_examples(cfg, rows)) == sorted(sft_tasks)
    everything = load_config(str(config), ["data.train.1.stages=[sft, rl]"])
    assert len(build_examples(everything, rows)) == 4
