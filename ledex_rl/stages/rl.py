"""Stage 3, RL (docs/method.md §3-§5): PPO with the LeDex rewards, driven by one controller.

Every actor group is built in plain sight in `run`: executors (sandbox), rollout engines (vLLM),
reward actors (tests + CodeBLEU + embeddings), the trainer (DeepSpeed policy + critic) and the
frozen reference model. One PPO step (`PPOStep.run`):

  1. generate explain-then-refine and refine-only answers to wrong first attempts (engines);
  2. score them: execute (sandbox), CodeBLEU and explanation similarity (reward actors);
  3. reference log-probs (reference actor), old log-probs and values (trainer), all at the sampling
     temperature;
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ledex_rl.errors import UserError
from actors.executor_pool import ExecutorPool
from actors.reference_model import reference_response_logprobs, start_reference
from actors.reward_pool import RewardPool, ScoreRequest
from actors.rollout_engine import Completion, EnginePool, GenerationRequest
from actors.trainer import OptimSchedule, TrainerGroup
from actors.weight_sync import WeightSyncError
from ledex_rl import ppo, problem_set, prompts
from ledex_rl.config import LedexConfig
from ledex_rl.console import STAGE_LOG
from ledex_rl.experience import Experience
from ledex_rl.modes import AnswerMode
from ledex_rl.rewards import RewardParts
from ledex_rl.rl_data import RLPrompt, reward_positions, rl_prompts, token_end_offsets
from ledex_rl.seeds import held_out_tasks, request_seed

log = logging.getLogger(__name__)
stage_log = logging.getLogger(STAGE_LOG)  # shown on the console


@dataclass
class PhaseTimer:
    seconds: dict = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str):
        started = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


class ActorDied(UserError, RuntimeError):
    """An actor the run cannot replace (a trainer rank, the reference model) died; the message says
    where the run can resume."""


def _actor_died(step: int, saved: int, exc: Exception) -> ActorDied:
    """The one-line stop for an actor lost during `step`, naming the checkpoint a rerun resumes from."""
    resume = (
        f"Rerun the same command to resume after step {saved} from its checkpoint"
        if saved
        else "No step was checkpointed yet; rerunning starts the stage again"
    )
    return ActorDied(f"rl: an actor of step {step} died ({str(exc).splitlines()[0][:160]}); the run stopped. {resume}")


@dataclass(frozen=True)
class Rollout:
    """One sampled answer to an RL prompt in a mode."""

    prompt_index: int  # which (prompt, mode) pair of the step: answers to the same pair form a group
    item: RLPrompt
    mode: AnswerMode
    completion: Completion


class PPOStep:
    """One PPO step across the actors. Holds no state besides the KL controller and the data order."""

    def __init__(
        self, cfg: LedexConfig, items: list[RLPrompt], problems: dict, tokenizer, style: str, engines, rewards, reference, trainer
    ):
        self.cfg, self.p = cfg, cfg.rl.ppo
        self.items, self.problems, self.tokenizer, self.style = items, problems, tokenizer, style
        self.engines, self.rewards, self.reference, self.trainer = engines, rewards, reference, trainer
        self.kl = ppo.KLController(self.p.kl_coef, self.p.adaptive_kl, self.p.kl_target, self.p.kl_horizon)
        self.scaler = ppo.RewardScaler()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    @property
    def single_update(self) -> bool:
        """GRPO with one optimizer step per PPO step: the update's own forward gives the sampling
        policy's log-probs (TRL's GRPOTrainer skips the same pass), so no separate pass computes them."""
        p = self.p
        return self.cfg.rl.advantage == "grpo" and p.ppo_epochs == 1 and p.mini_batch_size >= p.batch_size

    def choose(self, step: int) -> list[tuple[RLPrompt, AnswerMode]]:
        """The step's (prompt, mode) pairs: a seeded pass over the data per epoch, modes alternating (a
        `generate` pair asks for a first attempt at the prompt's task)."""
        per_step = self.p.batch_size // self.p.samples_per_prompt
        order: list[int] = []
        epoch = 0
        while len(order) < (step + 1) * per_step:
            indices = list(range(len(self.items)))
            random.Random(f"{self.cfg.seed}:rl:{epoch}").shuffle(indices)
            order += indices
            epoch += 1
        chosen = order[step * per_step : (step + 1) * per_step]
        modes = self.cfg.rl.modes
        return [(self.items[i], modes[(step * per_step + k) % len(modes)]) for k, i in enumerate(chosen)]

    def run(self, step: int) -> dict:
        """The six phases: generate, score, reference and old log-probs/values, advantages, train, sync."""
        timer, started = PhaseTimer(), time.perf_counter()
        with timer.phase("generate"):
            rollouts = self.generate(step)
        with timer.phase("score"):
            scored = self.score(rollouts)
        exp = Experience.from_samples(
            [r.completion.prompt_token_ids for r in rollouts], [r.completion.token_ids for r in rollouts], self.pad_id
        )
        micro = exp.micro_batches(range(len(exp)), self.p.micro_batch_size)
        with timer.phase("reference"):
            exp.ref_logprobs = reference_response_logprobs(self.reference, micro, self.p.temperature) * exp.response_mask
        with timer.phase("values"):
            if not self.single_update:
                self.evaluate(exp, micro)
        self.advantages(exp, [self.placements(r, parts) for r, parts in zip(rollouts, scored)], [r.prompt_index for r in rollouts])
        with timer.phase("train"):
            train_metrics = self.train(exp, step)
        with timer.phase("sync"):
            self._sync()
        kl = float(exp.kl.sum(1).mean()) if exp.kl is not None else _mean(m["kl_per_response"] for m in train_metrics)
        self.kl.update(kl, self.p.batch_size)
        return self.metrics(rollouts, scored, exp, train_metrics, timer, kl) | {"time/step_s": time.perf_counter() - started}

    # --- the phases ----------------------------------------------------------------------------------

    def generate(self, step: int) -> list[Rollout]:
        """Explain-then-refine and refine-only answers to the step's wrong first attempts (engines)."""
        p = self.p
        pairs = self.choose(step)
        requests = [
            GenerationRequest(
                prompts.render(self._conversation(item, mode), self.tokenizer, self.style),
                n=p.samples_per_prompt,
                temperature=p.temperature,
                max_tokens=p.max_new_tokens,
                seed=request_seed(self.cfg.seed, "rl", step, k),
            )
            for k, (item, mode) in enumerate(pairs)
        ]
        outputs = self.engines.generate(requests)
        return [Rollout(k, item, mode, c) for k, ((item, mode), cs) in enumerate(zip(pairs, outputs)) for c in cs]

    def score(self, rollouts: list[Rollout]) -> list[RewardParts]:
        """Tests in the sandbox, CodeBLEU and explanation similarity (reward actors)."""
        return self.rewards.score(
            [
                ScoreRequest(
                    self.problems[r.item.task_id], r.completion.text, r.mode, r.item.reference_codes, r.item.reference_explanations
                )
                for r in rollouts
            ]
        )

    def placements(self, rollout: Rollout, parts: RewardParts) -> list[tuple[int, float]]:
        """(response token, reward) pairs: R(e) on the last explanation token, R(r) on the last code token."""
        ids = rollout.completion.token_ids
        text = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return reward_positions(text, token_end_offsets(self.tokenizer, ids), rollout.mode, parts)

    def evaluate(self, exp: Experience, micro: list) -> None:
        """The sampling policy's log-probs (at the sampling temperature) and the critic's values (trainer)."""
        scores = self.trainer.ppo_evaluate(micro, self.p.temperature)
        exp.old_logprobs = torch.cat([s.logprobs for s in scores]) * exp.response_mask
        exp.old_values = torch.cat([s.values for s in scores]) * exp.response_mask

    def advantages(self, exp: Experience, placements: list[list[tuple[int, float]]], groups: list[int]) -> None:
        """Per-token rewards (scores at their tokens minus the KL penalty), then GAE advantages
        (whitened) and returns; or GRPO's group-normalised totals, whose KL term is in the loss."""
        exp.extras["totals"] = [sum(v for _, v in placed) for placed in placements]
        if self.cfg.rl.advantage == "grpo":
            if exp.old_logprobs is not None:  # the KL per token, for the metrics and the KL controller
                exp.kl = (exp.old_logprobs - exp.ref_logprobs) * exp.response_mask
            exp.advantages = ppo.grpo_advantages(torch.tensor(exp.extras["totals"]), groups, exp.response_mask)
            return
        exp.rewards, exp.kl = ppo.token_rewards(exp.old_logprobs, exp.ref_logprobs, exp.response_mask, self.kl.value, placements)
        if self.p.scale_rewards:
            self.scaler.update(exp.rewards.sum(1))
            exp.rewards = self.scaler.scale(exp.rewards)
        advantages, exp.returns = ppo.gae(exp.rewards, exp.old_values, exp.response_mask, self.p.gamma, self.p.lam)
        exp.advantages = ppo.masked_whiten(advantages, exp.response_mask)

    def train(self, exp: Experience, step: int) -> list[dict]:
        """`ppo_epochs` passes over the batch in shuffled mini-batches, one optimizer step each (trainer)."""
        generator = random.Random(f"{self.cfg.seed}:ppo:{step}")
        kl_coef = self.kl.value if self.cfg.rl.advantage == "grpo" else 0.0  # PPO's KL penalty is in its rewards
        results = []
        for _ in range(self.p.ppo_epochs):
            order = list(range(len(exp)))
            generator.shuffle(order)
            for start in range(0, len(order), self.p.mini_batch_size):
                batch = exp.micro_batches(order[start : start + self.p.mini_batch_size], self.p.micro_batch_size, with_targets=True)
                results.append(self.trainer.ppo_step(batch, self.p, kl_coef))
        return results

    def _sync(self) -> None:
        """New weights to every engine; an engine that died meanwhile is replaced and the sync redone."""
        try:
            self.trainer.sync_weights(self.engines)
        except WeightSyncError:
            if not self.engines.replace_dead():
                raise
            self.trainer.sync_weights(self.engines)

    def metrics(
        self, rollouts: list[Rollout], parts: list[RewardParts], exp: Experience, train: list[dict], timer: PhaseTimer, kl: float
    ) -> dict:
        mask = exp.response_mask
        explanation_rewards = [pt.explanation_reward for pt in parts if pt.explanation_reward is not None]
        values = {
            "reward/code": _mean(pt.code_reward for pt in parts),
            "reward/explanation": _mean(explanation_rewards),
            "reward/total": _mean(exp.extras["totals"]),
            "reward/s_codebleu": _mean(pt.s_cb for pt in parts),
            "reward/s_unit_tests": _mean(pt.s_ut for pt in parts),
            "reward/pass_rate": _mean(float(pt.passed) for pt in parts),
            "kl/mean_per_response": kl,
            "kl/coef": self.kl.value,
            "critic/explained_variance": ppo.explained_variance(exp.old_values, exp.returns, mask) if exp.returns is not None else 0.0,
            "critic/reward_scale": self.scaler.std,
            "response/count": len(rollouts),
            "response/length_mean": float(mask.sum(1).mean()),
            "response/length_max": float(mask.sum(1).max()),
            **{
                f"ppo/{k}": _mean(m[k] for m in train)
                for k in (
                    "policy_loss",
                    "kl_loss",
                    "value_loss",
                    "clip_fraction",
                    "entropy",
                    "approx_kl",
                    "policy_grad_norm",
                    "critic_grad_norm",
                )
            },
            **{f"time/{k}_s": v for k, v in timer.seconds.items()},
            "time/execute_s": self.rewards.last_timing["execute_s"],  # inside score: tests in the sandbox
            "time/rewards_s": self.rewards.last_timing["score_s"],  # inside score: CodeBLEU and embeddings
        }
        for mode in self.cfg.rl.modes:  # what the code reward means per mode: R(e) must not stand in for it
            of_mode = [pt for r, pt in zip(rollouts, parts) if r.mode == mode]
            if of_mode:
                values[f"reward/pass_rate/{mode}"] = _mean(float(pt.passed) for pt in of_mode)
                values[f"reward/code/{mode}"] = _mean(pt.code_reward for pt in of_mode)
        return values

    def validate(self, items: list[RLPrompt]) -> dict:
        """Held-out prompts in both modes, answered greedily and at the sampling temperature (the same
        seeds every time) and scored; nothing is trained. -> validation/<what>/<mode>/<greedy|sampled>."""
        first_of_task = list({item.task_id: item for item in reversed(items)}.values())  # one first attempt per task
        pairs = [(item, mode) for mode in self.cfg.rl.modes for item in (first_of_task if mode == "generate" else items)]
        values = {}
        for label, temperature in (("greedy", 0.0), ("sampled", self.p.temperature)):
            requests = [
                GenerationRequest(
                    prompts.render(self._conversation(item, mode), self.tokenizer, self.style),
                    temperature=temperature,
                    max_tokens=self.p.max_new_tokens,
                    seed=request_seed(self.cfg.seed, "rl-validation", k),
                )
                for k, (item, mode) in enumerate(pairs)
            ]
            rollouts = [Rollout(k, item, mode, cs[0]) for k, ((item, mode), cs) in enumerate(zip(pairs, self.engines.generate(requests)))]
            for r, parts in zip(rollouts, self.score(rollouts)):
                values.setdefault(f"validation/pass_rate/{r.mode}/{label}", []).append(float(parts.passed))
                values.setdefault(f"validation/code_reward/{r.mode}/{label}", []).append(parts.code_reward)
        return {key: _mean(v) for key, v in values.items()}

    def _conversation(self, item: RLPrompt, mode: AnswerMode) -> list[dict]:
        return prompts.answer_messages(self.problems[item.task_id], item.wrong_code, item.feedback, mode)


def _mean(values) -> float:
    """The mean, 0.0 for none."""
    values = list(values)
    return float(sum(values) / len(values)) if values else 0.0


# --- the stage ------------------------------------------------------------------------------------------


def run(cfg: LedexConfig, out: Path) -> None:
    """Build every actor group in plain sight, then run `rl.ppo.steps` PPO steps."""
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    from ledex_rl.cluster import connect
    from ledex_rl.metrics import MetricsLogger
    from ledex_rl.run_dir import policy_for
    from ledex_rl.collected import NoTrainingData, read_collected
    from ledex_rl.evaluation import during_training, load_eval_problems

    import ray

    p = cfg.rl.ppo
    rows = read_collected(Path(cfg.run_dir) / "collect")
    connect(cfg.ray)
    roles = cfg.ray.roles
    executors = ExecutorPool(cfg.sandbox, name_prefix="rl-executor", node_role=roles.resources("sandbox"))
    # Tasks of sources kept for SFT alone give no prompts; the expected outputs are collection's.
    problem_list = problem_set.for_stage(Path(cfg.run_dir) / "collect", cfg.data.train, "rl", executors.run)
    problems = {pr.task_id: pr for pr in problem_list}
    items = rl_prompts(rows, problems, cfg.rl.use_reference_solutions)
    if not items:
        raise NoTrainingData(
            "rl: no wrong first attempt has a verified refinement to compare with; collect more data or set rl.use_reference_solutions=true"
        )
    held = held_out_tasks({row.task_id for row in rows}, cfg.rl.validation_fraction, cfg.seed)  # as SFT holds out
    validation = [item for item in items if item.task_id in held]
    items = [item for item in items if item.task_id not in held]
    if cfg.rl.max_prompts and len(items) > cfg.rl.max_prompts:
        items = random.Random(f"{cfg.seed}:rl-prompts").sample(items, cfg.rl.max_prompts)
    policy_path = policy_for(cfg, "rl")
    log.info(
        "rl: %d prompts (wrong first attempts) of %d tasks, %d held out for validation; starting from %s",
        len(items),
        len({item.task_id for item in items}),
        len(validation),
        policy_path,
    )
    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    style = prompts.prompt_style(cfg.model.prompt_style, tokenizer)

    engines = EnginePool(policy_path, cfg.rollout, cfg.model, cfg.seed, name_prefix="rl-rollout", node_role=roles.resources("rollout"))
    rewards = RewardPool(cfg.rl.rewards, executors, name_prefix="rl-reward", node_role=roles.resources("sandbox"))
    ref_cfg = cfg.rl.reference
    extra = ref_cfg.resources() if ref_cfg.colocate else None  # rank 0's bundle also holds the reference
    optim = OptimSchedule(
        lr=p.lr, total_steps=p.steps, warmup_steps=0, batch_size=p.mini_batch_size, micro_batch_size=p.micro_batch_size, schedule="constant"
    )
    critic = replace(optim, lr=p.critic_lr) if cfg.rl.advantage == "gae" else None  # GRPO needs no value model
    trainer = TrainerGroup(
        policy_path,
        cfg.trainer,
        cfg.model,
        optim,
        cfg.seed,
        critic=critic,
        extra_bundle0=extra,
        name_prefix="rl-trainer",
        node_role=roles.resources("trainer"),
    )
    reference = start_reference(
        policy_path,
        cfg.model,
        ref_cfg,
        cfg.trainer.device,
        cfg.trainer.cpu_threads,
        placement_group=trainer.placement_group if ref_cfg.colocate else None,
        name="rl-reference",
        node_role=roles.resources("trainer"),
    )
    engines.on_replace = trainer.push_weights  # a replaced engine gets the current policy, not the start
    stepper = PPOStep(cfg, items, problems, tokenizer, style, engines, rewards, reference, trainer)
    eval_problems = load_eval_problems(cfg, executors.run, limit=cfg.rl.eval_tasks) if cfg.rl.eval_every_steps else []
    checkpoints = out / "checkpoints"
    metrics = MetricsLogger(cfg.run_dir, "rl", cfg.logging)
    try:
        resumed, start = trainer.resume(checkpoints)
        if resumed:
            stepper.kl.value = resumed["kl_coef"]
            stepper.scaler = ppo.RewardScaler(**resumed.get("reward_scaler", {}))
            trainer.sync_weights(engines)  # the engines start from the SFT model; bring them to the checkpoint
            stage_log.info("rl: resuming after step %d of %d", start, p.steps)
        saved = start
        if validation and not resumed:
            metrics.log(0, stepper.validate(validation))
        bar = tqdm(total=p.steps, initial=start, desc="rl", unit="step")
        for step in range(start, p.steps):
            try:  # a death while validating, evaluating or checkpointing stops the run the same way
                values = stepper.run(step)
                done = step + 1
                if validation and (done % cfg.rl.validation_every_steps == 0 or done == p.steps):
                    values.update(stepper.validate(validation))
                if eval_problems and (done % cfg.rl.eval_every_steps == 0 or done == p.steps):
                    values.update(during_training(cfg, done, engines, tokenizer, style, executors, eval_problems, out / "evals"))
                metrics.log(done, values)  # before the checkpoint: a step a rerun resumes after has its line
                if done % p.save_every_steps == 0 or done == p.steps:
                    trainer.save_checkpoint(
                        checkpoints, {"step": done, "kl_coef": stepper.kl.value, "reward_scaler": asdict(stepper.scaler)}
                    )
                    saved = done
            except ray.exceptions.RayActorError as exc:
                raise _actor_died(step + 1, saved, exc) from None
            bar.update(1)
            bar.set_postfix(reward=f"{values['reward/total']:.2f}", kl=f"{values['kl/mean_per_response']:.3f}")
        bar.close()
        trainer.save_model(out / "model", policy_path)
        engine_versions = [info["weights_version"] for info in engines.info()]
        replacements = engines.replacements
    finally:
        metrics.close()
        # The reference first: colocated, it lives in the trainer's placement group, and removing the group
        # under it would have Ray try to restart it (max_restarts=1) somewhere else.
        ray.kill(reference)
        for group in (trainer, engines, rewards, executors):
            group.shutdown()
    history = [m for m in metrics.read() if "reward/total" in m]  # step 0 holds only the first validation
    summary = {
        "steps": p.steps,
        "prompts": len(items),
        "model": str(out / "model"),
        "engine_weights_versions": engine_versions,
        "engine_replacements": replacements,
        "reward_first": history[0]["reward/total"] if history else None,
        "reward_last": history[-1]["reward/total"] if history else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not p.keep_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)
    print(json.dumps(summary, indent=2))
