"""Stage 2, SFT (docs/method.md §1): fine-tune the policy on the verified trajectories.

Reads `run_dir/collect/`, builds the paper's examples (see ledex_rl/sft_data.py), holds out a few
tasks to measure generalisation, and trains with the DeepSpeed trainer group (AdamW, warmup, cosine
decay). Writes, in `run_dir/sft/`:
- `model/`: the fine-tuned policy as a Hugging Face folder; RL and evaluation start from it;
- `checkpoints/`: DeepSpeed checkpoints (weights, optimizer, schedule, step) every
  `sft.save_every_steps`, so a stopped run resumes where it was; removed at the end unless kept;
- `metrics.jsonl` and TensorBoard scalars in `run_dir/tensorboard/sft`; `summary.json`.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from ledex_rl import problem_set, prompts, sft_data
from ledex_rl.collected import CollectedRow, NoTrainingData, read_collected
from ledex_rl.config import LedexConfig
from ledex_rl.console import STAGE_LOG

log = logging.getLogger(__name__)
stage_log = logging.getLogger(STAGE_LOG)  # shown on the console


def build_examples(cfg: LedexConfig, rows: list[CollectedRow]) -> list[sft_data.SFTExample]:
    """The paper's SFT examples from the collected rows of the tasks SFT learns from (not those of
    sources kept for RL alone), plus the datasets' solutions with `sft.use_reference_solutions`."""
    problems = problem_set.for_stage(Path(cfg.run_dir) / "collect", cfg.data.train, "sft")
    if not all("sft" in source.stages for source in cfg.data.train):
        kept = {p.task_id for p in problems}
        rows = [row for row in rows if row.task_id in kept]
    examples = sft_data.examples_from_rows(rows)
    if cfg.sft.use_reference_solutions:
        examples += sft_data.reference_examples(problems, rows)
    if not examples:
        raise NoTrainingData(
            "sft: the collected data has no correct first attempt and no verified refinement; sample more "
            "(collect.samples_per_problem), use a stronger teacher (collect.teacher.kind=openai), or set "
            "sft.use_reference_solutions=true"
        )
    return examples


def run(cfg: LedexConfig, out: Path) -> None:
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    from actors.trainer import OptimSchedule, TrainerGroup
    from ledex_rl.cluster import connect
    from ledex_rl.metrics import MetricsLogger
    from ledex_rl.models import resolve_model

    s = cfg.sft
    rows = read_collected(Path(cfg.run_dir) / "collect")
    examples = build_examples(cfg, rows)
    train_ex, held_ex = sft_data.split_held_out(examples, s.eval_fraction, cfg.seed, tasks={row.task_id for row in rows})
    model_path = resolve_model(cfg.model.name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    style = prompts.prompt_style(cfg.model.prompt_style, tokenizer)
    train = [t for t in (sft_data.tokenize(e, tokenizer, style, s.max_seq_len) for e in train_ex) if t is not None]
    held = [t for t in (sft_data.tokenize(e, tokenizer, style, s.max_seq_len) for e in held_ex) if t is not None]
    dropped = len(train_ex) + len(held_ex) - len(train) - len(held)
    if not train:
        raise NoTrainingData(f"sft: every training example is longer than sft.max_seq_len={s.max_seq_len}; raise it")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    schedule = sft_data.step_schedule(len(train), s.batch_size, s.epochs, cfg.seed)[: s.max_steps or None]
    lengths = [len(t.input_ids) for t in train]
    held_batches = [sft_data.collate(held[i : i + s.micro_batch_size], pad_id) for i in range(0, len(held), s.micro_batch_size)]
    log.info(
        "sft: %d training and %d held-out examples (%s), %d too long; %d steps",
        len(train),
        len(held),
        _kinds(train_ex + held_ex),
        dropped,
        len(schedule),
    )

    connect(cfg.ray)
    optim = OptimSchedule(
        lr=s.lr,
        total_steps=len(schedule),
        warmup_steps=s.warmup_steps,
        batch_size=s.batch_size,
        micro_batch_size=s.micro_batch_size,
        weight_decay=s.weight_decay,
    )
    group = TrainerGroup(
        model_path, cfg.trainer, cfg.model, optim, cfg.seed, name_prefix="sft-trainer", node_role=cfg.ray.roles.resources("trainer")
    )
    checkpoints = out / "checkpoints"
    metrics = MetricsLogger(cfg.run_dir, "sft", cfg.logging)
    try:
        resumed, start = group.resume(checkpoints)
        if resumed:
            stage_log.info("sft: resuming from step %d of %d", start, len(schedule))
        elif held_batches:
            metrics.log(0, {"eval/loss": group.eval_loss(held_batches)})
        bar = tqdm(total=len(schedule), initial=start, desc="sft", unit="step")
        for step in range(start, len(schedule)):
            groups = sft_data.micro_batches(schedule[step], lengths, s.micro_batch_size)
            result = group.train_step([sft_data.collate([train[i] for i in g], pad_id) for g in groups])
            values = {
                "train/loss": result["loss"],
                "train/lr": result["lr"],
                "train/grad_norm": result["grad_norm"],
                "train/answer_tokens_per_s": result["tokens"] / max(result["seconds"], 1e-9),
            }
            done = step + 1
            checkpoint = done % s.save_every_steps == 0 or done == len(schedule)
            if checkpoint and held_batches:
                values["eval/loss"] = group.eval_loss(held_batches)
            metrics.log(done, values)  # before the checkpoint: a step a rerun resumes after has its line
            if checkpoint:
                group.save_checkpoint(checkpoints, {"step": done})
            bar.update(1)
            bar.set_postfix(loss=f"{result['loss']:.3f}")
        bar.close()
        group.save_model(out / "model", model_path)
    finally:
        metrics.close()
        group.shutdown()
    history = metrics.read()
    train_losses = [m["train/loss"] for m in history if "train/loss" in m]
    eval_losses = [m["eval/loss"] for m in history if "eval/loss" in m]
    summary = {
        "examples": _kinds(train_ex + held_ex),
        "train_examples": len(train),
        "held_out_examples": len(held),
        "too_long": dropped,
        "steps": len(schedule),
        "model": str(out / "model"),
        "train_loss_first": train_losses[0] if train_losses else None,
        "train_loss_last": train_losses[-1] if train_losses else None,
        "held_out_loss_before": eval_losses[0] if eval_losses else None,
        "held_out_loss_after": eval_losses[-1] if eval_losses else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not s.keep_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)
    print(json.dumps(summary, indent=2))


def _kinds(examples) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ex in examples:
        counts[ex.kind] = counts.get(ex.kind, 0) + 1
    return counts
