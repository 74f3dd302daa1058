"""Stage 3, RL (ledex-method.md, section 3): PPO with the LeDex rewards, driven by one controller.

Every actor group is built in plain sight in `run`: executors (sandbox), rollout engines (vLLM),
reward actors (tests + CodeBLEU + embeddings), the trainer (DeepSpeed policy + value head) and the
frozen reference model. One PPO step (`PPOStep.run`):

  1. generate explain-then-refine and refine-only answers to wrong first attempts (engines);
  2. score them: execute (sandbox), CodeBLEU and explanation similarity (reward actors);
  3. reference log-probs (reference actor), old log-probs and values (trainer);
  4. per-token rewards: R(e) on the last explanation token, R(r) on the last code token, minus the
     KL to the reference on every token; GAE (or GRPO) advantages;
  5. PPO epochs over mini-batches (trainer);
  6. sync the new weights to the engines.

Output in `run_dir/rl/`: `model/` (the final policy, picked up by evaluation), `metrics.jsonl`
(+ TensorBoard under `run_dir/tensorboard/rl`), `checkpoints/` for resuming, `summary.json`, and
`evals/step-N/` when `rl.eval_every_steps` evaluates the policy during training.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ledex_rl import ppo, prompts
from ledex_rl.config import LedexConfig
from ledex_rl.rl_data import RLPrompt, reward_positions, rl_prompts, token_end_offsets

log = logging.getLogger(__name__)

MODES = ("explain_refine", "refine")


@dataclass
class PhaseTimer:
    seconds: dict = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str):
        started = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


class ActorDied(RuntimeError):
    """An actor the run cannot replace (a trainer rank, the reference model) died; the message says
    where the run can resume."""


class PPOStep:
    """One PPO step across the actors. Holds no state besides the KL controller and the data order."""

    def __init__(self, cfg: LedexConfig, items: list[RLPrompt], problems: dict, tokenizer, style: str,
                 engines, rewards, reference, trainer):
        self.cfg, self.p = cfg, cfg.rl.ppo
        self.items, self.problems, self.tokenizer, self.style = items, problems, tokenizer, style
        self.engines, self.rewards, self.reference, self.trainer = engines, rewards, reference, trainer
        self.kl = ppo.KLController(self.p.kl_coef, self.p.adaptive_kl, self.p.kl_target, self.p.kl_horizon)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    def choose(self, step: int) -> list[tuple[RLPrompt, str]]:
        """The step's (prompt, mode) pairs: a seeded pass over the data per epoch, modes alternating."""
        per_step = self.p.batch_size // self.p.samples_per_prompt
        order: list[int] = []
        epoch = 0
        while len(order) < (step + 1) * per_step:
            indices = list(range(len(self.items)))
            random.Random(f"{self.cfg.seed}:rl:{epoch}").shuffle(indices)
            order += indices
            epoch += 1
        chosen = order[step * per_step : (step + 1) * per_step]
        return [(self.items[i], MODES[(step * per_step + k) % 2]) for k, i in enumerate(chosen)]

    def run(self, step: int) -> dict:
        from actors.reference_model import reference_logprobs
        from actors.reward_pool import ScoreRequest
        from actors.rollout_engine import GenerationRequest
        from ledex_rl.seeds import request_seed

        p, timer = self.p, PhaseTimer()
        pairs = self.choose(step)
        requests = [
            GenerationRequest(prompts.render(self._conversation(item, mode), self.tokenizer, self.style), n=p.samples_per_prompt,
                              temperature=p.temperature, max_tokens=p.max_new_tokens, seed=request_seed(self.cfg.seed, "rl", step, k))
            for k, (item, mode) in enumerate(pairs)
        ]
        with timer.phase("generate"):
            outputs = self.engines.generate(requests)
        samples = [(k, item, mode, c) for k, ((item, mode), cs) in enumerate(zip(pairs, outputs)) for c in cs]
        with timer.phase("score"):
            scored = self.rewards.score([ScoreRequest(self.problems[item.task_id], c.text, mode, item.reference_codes,
                                                      item.reference_explanations) for _, item, mode, c in samples])
        positions = []
        for (_, _, mode, c), (parts, _) in zip(samples, scored):
            text = self.tokenizer.decode(list(c.token_ids), skip_special_tokens=True)
            positions.append(reward_positions(text, token_end_offsets(self.tokenizer, c.token_ids), mode, parts))

        rows = [self._row(c) for _, _, _, c in samples]
        width = max(len(r["response"]) for r in rows)
        micro = self._micro_batches(rows, width, range(len(rows)))
        with timer.phase("reference"):
            ref_all = reference_logprobs(self.reference, micro)
        ref = torch.zeros(len(rows), width)
        for i, (r, lp) in enumerate(zip(rows, ref_all)):
            s, n = r["start"], len(r["response"])
            ref[i, :n] = torch.tensor(lp[s - 1 : s - 1 + n])
        with timer.phase("values"):
            evaluated = self.trainer.ppo_evaluate(micro)
        old_logprobs = torch.tensor([row for mb in evaluated for row in mb["logprobs"]])
        old_values = torch.tensor([row for mb in evaluated for row in mb["values"]])
        mask = torch.tensor([[1.0] * len(r["response"]) + [0.0] * (width - len(r["response"])) for r in rows])
        old_logprobs, old_values = old_logprobs * mask, old_values * mask

        token_rewards, kl = ppo.token_rewards(old_logprobs, ref, mask, self.kl.value, positions)
        if self.cfg.rl.advantage == "grpo":
            totals = torch.tensor([sum(v for _, v in placed) for placed in positions])
            advantages = ppo.grpo_advantages(totals, [k for k, _, _, _ in samples], mask)
            returns = old_values
        else:
            advantages, returns = ppo.gae(token_rewards, old_values, mask, p.gamma, p.lam)
            advantages = ppo.masked_whiten(advantages, mask)

        train_metrics = []
        with timer.phase("train"):
            generator = random.Random(f"{self.cfg.seed}:ppo:{step}")
            for _ in range(p.ppo_epochs):
                order = list(range(len(rows)))
                generator.shuffle(order)
                for start in range(0, len(order), p.mini_batch_size):
                    chosen = order[start : start + p.mini_batch_size]
                    batch = self._micro_batches(rows, width, chosen, old_logprobs, old_values, advantages, returns, mask)
                    train_metrics.append(self.trainer.ppo_step(batch, p.clip_range, p.value_clip_range, p.vf_coef))
        with timer.phase("sync"):
            self._sync()

        mean_kl = float((kl.sum(1)).mean())
        self.kl.update(mean_kl, p.batch_size)
        parts = [pt for pt, _ in scored]
        explanation_rewards = [pt.explanation_reward for pt in parts if pt.explanation_reward is not None]
        metrics = {
            "reward/code": _mean([pt.code_reward for pt in parts]),
            "reward/explanation": _mean(explanation_rewards) if explanation_rewards else 0.0,
            "reward/total": float(sum(v for placed in positions for _, v in placed) / len(positions)),
            "reward/s_codebleu": _mean([pt.s_cb for pt in parts]),
            "reward/s_unit_tests": _mean([pt.s_ut for pt in parts]),
            "reward/pass_rate": _mean([float(pt.passed) for pt in parts]),
            "kl/mean_per_response": mean_kl, "kl/coef": self.kl.value,
            "response/count": len(samples), "response/length_mean": float(mask.sum(1).mean()), "response/length_max": float(mask.sum(1).max()),
            **{f"ppo/{k}": _mean([m[k] for m in train_metrics]) for k in ("policy_loss", "value_loss", "clip_fraction", "entropy", "approx_kl")},
            **{f"time/{k}_s": v for k, v in timer.seconds.items()}, "time/step_s": sum(timer.seconds.values()),
            "time/execute_s": self.rewards.last_timing["execute_s"],  # inside score: tests in the sandbox
            "time/rewards_s": self.rewards.last_timing["score_s"],  # inside score: CodeBLEU and embeddings
        }
        return metrics

    def _sync(self) -> None:
        """New weights to every engine; an engine that died meanwhile is replaced and the sync redone."""
        from actors.weight_sync import WeightSyncError

        try:
            self.trainer.sync_weights(self.engines)
        except WeightSyncError:
            if not self.engines.replace_dead():
                raise
            self.trainer.sync_weights(self.engines)

    def _conversation(self, item: RLPrompt, mode: str) -> list[dict]:
        problem = self.problems[item.task_id]
        return prompts.refinement_messages(problem, item.wrong_code, item.feedback, mode)

    def _row(self, completion) -> dict:
        prompt = list(completion.prompt_token_ids)
        return {"ids": prompt + list(completion.token_ids), "start": len(prompt), "response": list(completion.token_ids)}

    def _micro_batches(self, rows, width, indices, *response_fields) -> list[dict]:
        """Rows (prompt + response, right-padded) in micro-batches; response-aligned tensors sliced along."""
        names = ("old_logprobs", "old_values", "advantages", "returns", "response_mask")
        indices = list(indices)
        out = []
        for i in range(0, len(indices), self.p.micro_batch_size):
            chunk = indices[i : i + self.p.micro_batch_size]
            longest = max(len(rows[j]["ids"]) for j in chunk)
            mb = {
                "input_ids": [rows[j]["ids"] + [self.pad_id] * (longest - len(rows[j]["ids"])) for j in chunk],
                "attention_mask": [[1] * len(rows[j]["ids"]) + [0] * (longest - len(rows[j]["ids"])) for j in chunk],
                "response_start": [rows[j]["start"] for j in chunk],
                "response_mask": [[1] * len(rows[j]["response"]) + [0] * (width - len(rows[j]["response"])) for j in chunk],
            }
            for name, tensor in zip(names, response_fields):
                mb[name] = tensor[chunk].tolist()
            out.append(mb)
        return out


def _mean(values) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else 0.0


# --- the stage ------------------------------------------------------------------------------------------


def run(cfg: LedexConfig, out: Path) -> None:
    """Build every actor group in plain sight, then run `rl.ppo.steps` PPO steps."""
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    from actors.executor_pool import ExecutorPool
    from actors.reference_model import start_reference
    from actors.reward_pool import RewardPool
    from actors.rollout_engine import EnginePool
    from actors.trainer import OptimSchedule, TrainerGroup
    from ledex_rl.cluster import connect
    from ledex_rl.expected_outputs import fill_expected_outputs
    from ledex_rl.metrics import MetricsLogger
    from ledex_rl.pipeline import policy_for
    from ledex_rl.problems import load_problems
    from ledex_rl.stages.eval import during_training, load_eval_problems
    from ledex_rl.stages.sft import NoTrainingData, read_collected

    import ray

    p = cfg.rl.ppo
    rows = read_collected(Path(cfg.run_dir) / "collect")
    connect(cfg.ray)
    executors = ExecutorPool(cfg.sandbox, name_prefix="rl-executor")
    problem_list = [pr for source in cfg.data.train for pr in load_problems(source)[0]]
    problem_list, _ = fill_expected_outputs(problem_list, executors.run)
    problems = {pr.task_id: pr for pr in problem_list}
    items = rl_prompts(rows, problems, cfg.rl.use_reference_solutions)
    if not items:
        raise NoTrainingData("rl: no wrong first attempt has a verified refinement to compare with; collect more data "
                             "or set rl.use_reference_solutions=true")
    policy_path = policy_for(cfg, "rl")
    log.info("rl: %d prompts (wrong first attempts), starting from %s", len(items), policy_path)
    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    style = prompts.prompt_style(cfg.model.prompt_style, tokenizer)

    engines = EnginePool(policy_path, cfg.rollout, cfg.model, cfg.seed, name_prefix="rl-rollout")
    rewards = RewardPool(cfg.rl.rewards, executors, name_prefix="rl-reward")
    ref_cfg = cfg.rl.reference
    extra = {"CPU": ref_cfg.num_cpus, **({"GPU": ref_cfg.num_gpus} if ref_cfg.num_gpus else {})} if ref_cfg.colocate else None
    optim = OptimSchedule(lr=p.lr, total_steps=p.steps, warmup_steps=0, batch_size=p.mini_batch_size,
                          micro_batch_size=p.micro_batch_size, schedule="constant")
    trainer = TrainerGroup(policy_path, cfg.trainer, cfg.model, optim, cfg.seed, value_head=True, extra_bundle0=extra,
                           name_prefix="rl-trainer")
    reference = start_reference(policy_path, cfg.model, ref_cfg, cfg.trainer.device, cfg.trainer.cpu_threads,
                                placement_group=trainer.placement_group if ref_cfg.colocate else None, name="rl-reference")
    engines.on_replace = trainer.push_weights  # a replaced engine gets the current policy, not the start
    stepper = PPOStep(cfg, items, problems, tokenizer, style, engines, rewards, reference, trainer)
    eval_problems = load_eval_problems(cfg, executors.run, limit=cfg.rl.eval_tasks) if cfg.rl.eval_every_steps else []
    checkpoints = out / "checkpoints"
    metrics = MetricsLogger(cfg.run_dir, "rl")
    try:
        resumed = trainer.load_checkpoint(checkpoints) if checkpoints.is_dir() else None
        start = resumed["step"] if resumed else 0
        if resumed:
            stepper.kl.value = resumed["kl_coef"]
            trainer.sync_weights(engines)  # the engines start from the SFT model; bring them to the checkpoint
            log.info("rl: resuming after step %d of %d", start, p.steps)
        saved = start
        bar = tqdm(total=p.steps, initial=start, desc="rl", unit="step")
        for step in range(start, p.steps):
            try:
                values = stepper.run(step)
            except ray.exceptions.RayActorError as exc:
                raise ActorDied(f"rl: an actor of step {step + 1} died ({str(exc).splitlines()[0][:160]}); the run stopped. "
                                + (f"Rerun the same command to resume after step {saved} from its checkpoint" if saved
                                   else "No step was checkpointed yet; rerunning starts the stage again")) from None
            done = step + 1
            if eval_problems and (done % cfg.rl.eval_every_steps == 0 or done == p.steps):
                values.update(during_training(cfg, done, engines, tokenizer, style, executors, eval_problems, out / "evals"))
            if done % p.save_every_steps == 0 or done == p.steps:
                trainer.save_checkpoint(checkpoints, {"step": done, "kl_coef": stepper.kl.value})
                saved = done
            metrics.log(done, values)
            bar.update(1)
            bar.set_postfix(reward=f"{values['reward/total']:.2f}", kl=f"{values['kl/mean_per_response']:.3f}")
        bar.close()
        trainer.save_model(out / "model", policy_path)
        engine_versions = [info["weights_version"] for info in engines.info()]
        replacements = engines.replacements
    finally:
        metrics.close()
        for group in (trainer, engines, rewards, executors):
            group.shutdown()
        ray.kill(reference)
    history = metrics.read()
    summary = {"steps": p.steps, "prompts": len(items), "model": str(out / "model"), "engine_weights_versions": engine_versions,
               "engine_replacements": replacements,
               "reward_first": history[0]["reward/total"] if history else None, "reward_last": history[-1]["reward/total"] if history else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not p.keep_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)
    print(json.dumps(summary, indent=2))
