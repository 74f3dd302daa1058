"""Stage 4, evaluate (docs/method.md §7): every model named in `eval.models`, then a report.

The executor pool and the problems are built once; each model gets its own rollout engines, its own
folder `run_dir/eval/<label>/` (parts, results.json, summary.md, judge.jsonl) and is skipped when that
folder is complete. Then `run_dir/eval/report.md` compares all of them in the paper's table shape, with
`refinement_rounds.png` and `training.png` (the run's SFT/RL curves) beside it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import asdict
from pathlib import Path

from ledex_rl import prompts
from ledex_rl.config import ConfigError, LedexConfig
from ledex_rl.evaluation import load_eval_problems
from ledex_rl.run_dir import policy_for, stage_dir, trained_model

log = logging.getLogger(__name__)


def eval_targets(cfg: LedexConfig) -> list[tuple[str, str]]:
    """(label, model path) for each entry of eval.models: `final` (the newest trained policy of this
    run, else the base model), `base`, `sft`, `rl`, or a model id / folder."""
    from ledex_rl.models import resolve_model

    targets: dict[str, str] = {}
    for spec in cfg.eval.models:
        if spec == "final":
            path = policy_for(cfg, "eval")
            label = next((s for s in ("rl", "sft") if path == str(stage_dir(cfg, s) / "model")), "base")
        elif spec == "base":
            label, path = "base", resolve_model(cfg.model.name_or_path)
        elif spec in ("sft", "rl"):
            model = stage_dir(cfg, spec) / "model"
            if trained_model(cfg, spec) is None:
                raise ConfigError(f"eval.models: '{spec}' has no finished model in {model}; run `ledex-rl {spec}` first or drop it")
            label, path = spec, str(model)
        else:
            path = resolve_model(spec, "eval.models")
            label = re.sub(r"[^A-Za-z0-9._-]+", "--", spec.strip("/").replace("/", "--"))[-80:]
        targets.setdefault(label, path)
    return list(targets.items())


def _spec(cfg: LedexConfig, model_path: str, problems) -> dict:
    return {
        "model": model_path,
        "eval": {k: v for k, v in asdict(cfg.eval).items() if k not in ("models", "judge", "chunk_size")},
        "seed": cfg.seed,
        "tasks": [p.task_id for p in problems],
    }


def evaluate_model(cfg: LedexConfig, label: str, model_path: str, problems, executors, out: Path) -> dict:
    """Evaluate one model into `out` (resuming a partial run of the same settings), judge its
    explanations when a judge is configured, and write results.json and summary.md."""
    from transformers import AutoTokenizer

    from actors.rollout_engine import EnginePool
    from ledex_rl import judge
    from ledex_rl.eval_report import markdown
    from ledex_rl.evaluation import Evaluator

    spec = _spec(cfg, model_path, problems)
    spec_file = out / "spec.json"
    if spec_file.is_file() and json.loads(spec_file.read_text()) != spec:
        raise ConfigError(
            f"{out} holds an evaluation with other settings (model, eval.*, seed or tasks); "
            "rerun with --force to replace it, or use another run_dir"
        )
    out.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps(spec, indent=2) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    engines = EnginePool(
        model_path, cfg.rollout, cfg.model, cfg.seed, name_prefix=f"eval-{label}-rollout", node_role=cfg.ray.roles.resources("rollout")
    )
    try:
        evaluator = Evaluator(
            out,
            engines,
            tokenizer,
            prompts.prompt_style(cfg.model.prompt_style, tokenizer),
            executors,
            cfg.eval,
            cfg.seed,
            model_path,
            label=label,
        )
        results = evaluator.run(problems)
    finally:
        engines.shutdown()
    results["label"] = label
    results["judge"] = judge.judge(evaluator.parts.read_rows(), {p.task_id: p for p in problems}, cfg.eval.judge, cfg.seed, out)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "summary.md").write_text(markdown([(label, results)]))
    (out / "DONE").write_text("")
    return results


def run(cfg: LedexConfig, out: Path, force: bool = False) -> list[tuple[str, dict]]:
    """Evaluate every target, then write the comparison report into `out`."""
    from actors.executor_pool import ExecutorPool
    from ledex_rl.cluster import connect
    from ledex_rl.eval_report import write_report

    targets = eval_targets(cfg)
    connect(cfg.ray)
    executors = ExecutorPool(cfg.sandbox, name_prefix="eval-executor", node_role=cfg.ray.roles.resources("sandbox"))
    results = []
    try:
        problems = load_eval_problems(cfg, executors.run)
        for label, path in targets:
            folder = out / label
            if force:
                shutil.rmtree(folder, ignore_errors=True)
            if (folder / "DONE").is_file() and (folder / "results.json").is_file():
                log.info("eval %s: results exist in %s, reused (--force to redo)", label, folder)
                results.append((label, json.loads((folder / "results.json").read_text())))
                continue
            log.info("eval %s: %s on %d tasks", label, path, len(problems))
            results.append((label, evaluate_model(cfg, label, path, problems, executors, folder)))
    finally:
        executors.shutdown()
    written = write_report(results, out, run_dir=Path(cfg.run_dir))
    print((out / "report.md").read_text())
    log.info("eval: report in %s", ", ".join(str(p) for p in written))
    return results
