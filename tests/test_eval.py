"""Evaluation: the loop (first attempts, rounds of refinement in both modes, resume) with the real
sandbox and a scripted model; the judge against a real HTTP endpoint; the stage end to end on the
tiny model with real vLLM engines and the executor pool on Ray."""

import json

import pytest

from actors.rollout_engine import Completion
from ledex_rl import prompts
from ledex_rl.config import EvalConfig, JudgeConfig, load_config
from ledex_rl.evaluation import Evaluator
from ledex_rl.judge import judge, parse_scores
from ledex_rl.problems import load_problems
from ledex_rl.config import ProblemSourceConfig
from tests.teacher_server import TeacherServer


@pytest.fixture(scope="module")
def problems():
    return load_problems(ProblemSourceConfig(name="humaneval", limit=3))[0]


@pytest.fixture(scope="module")
def sandbox():
    from sandbox import Sandbox

    with Sandbox(slots=1) as box:
        yield box


class ScriptedModel:
    """Stands in for the model (not the component under test): first attempts are correct for
    sample 0 of each task only; refine-only answers are correct, explain-then-refine answers are
    correct only in their second round. Every prompt is recorded."""

    def __init__(self, problems):
        self.problems, self.prompts = problems, []

    def _problem(self, prompt):
        return next(p for p in self.problems if p.starter_code.strip() in prompt)

    def generate(self, requests):
        outputs = []
        for request in requests:
            self.prompts.append(request.prompt)
            problem = self._problem(request.prompt)
            good = f"```python\n{problem.reference_solution}\n```"
            bad = f"```python\ndef {problem.entry_point}(*args):\n    return None\n```"
            if prompts.REFINE_REQUEST in request.prompt:
                texts = [good]
            elif prompts.EXPLAIN_REFINE_REQUEST in request.prompt:
                second_round = "return None" not in request.prompt.split("<|assistant|>")[1]
                texts = [f"It returns None.\n\n{good if second_round else bad.replace('None', '0')}"]
            else:
                texts = [good if i == 0 else bad for i in range(request.n)]
            outputs.append([Completion(t, (), (), "stop") for t in texts])
        return outputs


def test_rounds_of_refinement_in_both_modes(tmp_path, problems, sandbox):
    cfg = EvalConfig(samples_per_task=3, ks=(1, 2), refine_rounds=2, chunk_size=2)
    model = ScriptedModel(problems)
    results = Evaluator(tmp_path, model, None, "base", sandbox, cfg, seed=0, model_name="scripted", progress=False).run(problems)
    m = results["benchmarks"]["humaneval"]
    assert m["tasks"] == 3 and m["samples"] == 9
    assert m["init"]["pass@1"] == pytest.approx(1 / 3)
    # refine-only fixes every wrong sample in round 1; round 2 has nothing left to refine
    assert [r["pass@1"] for r in m["refine"]] == [1.0, 1.0]
    assert [(r["attempted"], r["fixed"]) for r in m["refine"]] == [(6, 6), (0, 0)]
    # explain-then-refine: round 1 returns another wrong program, round 2 fixes it
    assert [r["pass@1"] for r in m["explain_refine"]] == [pytest.approx(1 / 3), 1.0]
    assert [(r["attempted"], r["fixed"]) for r in m["explain_refine"]] == [(6, 0), (6, 6)]
    assert m["explain_refine"][0]["success_rate"] == 0.0
    # the refinement prompt carries the execution feedback of the code it fixes
    refine_prompts = [p for p in model.prompts if prompts.REFINE_REQUEST in p]
    assert refine_prompts and all("Feedback from running the tests:" in p and "tests passed" in p for p in refine_prompts)
    assert json.loads((tmp_path / "results.json").read_text())["benchmarks"] == results["benchmarks"]


def test_a_stopped_evaluation_resumes_with_the_same_results(tmp_path, problems, sandbox):
    cfg = EvalConfig(samples_per_task=2, ks=(1,), refine_rounds=1, chunk_size=1)
    whole = Evaluator(tmp_path / "whole", ScriptedModel(problems), None, "base", sandbox, cfg, 0, "m", progress=False).run(problems)
    Evaluator(tmp_path / "part", ScriptedModel(problems), None, "base", sandbox, cfg, 0, "m", progress=False).run(problems[:1])
    model = ScriptedModel(problems)
    resumed = Evaluator(tmp_path / "part", model, None, "base", sandbox, cfg, 0, "m", progress=False).run(problems)
    assert resumed["benchmarks"] == whole["benchmarks"]
    assert not any(problems[0].starter_code.strip() in p for p in model.prompts)  # the finished task was not redone
    assert len(list((tmp_path / "part" / "parts").glob("part-*.parquet"))) == 3


class JudgeServer(TeacherServer):
    def answer(self, messages, index):
        assert "Correctness:" in messages[0]["content"] and "Explanation to rate" in messages[1]["content"]
        return "Correctness: 4\nHelpfulness: **2**"


def test_judge_rates_explanations_and_skips_without_an_endpoint(tmp_path, problems, sandbox):
    cfg = EvalConfig(samples_per_task=2, ks=(1,), refine_rounds=1)
    evaluator = Evaluator(tmp_path, ScriptedModel(problems), None, "base", sandbox, cfg, 0, "m", progress=False)
    evaluator.run(problems)
    rows = evaluator.parts.read_rows()
    by_id = {p.task_id: p for p in problems}
    with JudgeServer(problems) as server:
        out = judge(rows, by_id, JudgeConfig(base_url=server.url, model="judge", max_explanations=2), 0, tmp_path)
    assert (out["rated"], out["correctness"], out["helpfulness"], out["score"]) == (2, 4.0, 2.0, 3.0)
    assert len((tmp_path / "judge.jsonl").read_text().splitlines()) == 2
    skipped = judge(rows, by_id, JudgeConfig(), 0, tmp_path)
    assert "set eval.judge.base_url" in skipped["skipped"]
    assert parse_scores("Correctness = 5, helpfulness: 1") == (5, 1) and parse_scores("great job") is None


def test_eval_stage_on_the_tiny_model(ray_cluster, tiny_env, tmp_path):
    from ledex_rl.pipeline import run_stage

    cfg = load_config(
        "configs/tiny.yaml",
        [
            f"run_dir={tmp_path}",
            f"model.name_or_path={tiny_env}",
            "eval.models=[base]",
            "data.eval.0.limit=2",
            "eval.refine_rounds=2",
            "eval.max_new_tokens=16",
            "sandbox.executor_num_cpus=0.1",
            "rollout.num_cpus_per_engine=0.25",
        ],
    )
    assert run_stage("eval", cfg)
    out = tmp_path / "eval"
    results = json.loads((out / "base" / "results.json").read_text())
    m = results["benchmarks"]["humaneval"]
    assert (m["tasks"], m["samples"]) == (2, 4) and results["label"] == "base"
    assert "set eval.judge.base_url" in results["judge"]["skipped"]
    # every sample that failed was refined in both modes, and the counts in the results match the parts
    import pyarrow.parquet as pq

    rows = [r for f in sorted((out / "base" / "parts").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert sum(r["round"] == 0 for r in rows) == 4
    wrong_first = sum(r["round"] == 0 and not r["passed"] for r in rows)
    for mode in ("refine", "explain_refine"):
        assert m[mode][0]["attempted"] == wrong_first == sum(r["round"] == 1 and r["mode"] == mode for r in rows)
    report = (out / "report.md").read_text()
    assert "| base | Init |" in report and "| base | Expl. + Refine |" in report
    assert (out / "refinement_rounds.png").stat().st_size > 10_000
