"""The policy trainer: DeepSpeed ranks in Ray actors, holding the policy and (for PPO) the critic.

One actor per rank, all in one placement group; rank 0 also sends weights to the rollout engines.
The same code trains on CPUs (`DS_ACCELERATOR=cpu`, gloo) and GPUs (NCCL); `trainer.device` picks.

    group = TrainerGroup(model_path, cfg.trainer, cfg.model, optim, seed)
    metrics = group.train_step(micro_batches)          # one optimizer step
    group.sync_weights(engine_pool)                    # bucketed, through the object store
    group.save_checkpoint(dir, client_state); group.save_model(dir, tokenizer_dir)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import ray
import torch
from torch import nn

from actors.group import ActorGroup, ActorSpec
from ledex_rl.config import ActorResources, ModelConfig, PPOConfig, TrainerConfig
from ledex_rl.experience import MicroBatch, ResponseScores
from ledex_rl.hardware import cpu_threads, thread_env

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimSchedule:
    """AdamW with linear warmup, then cosine decay to zero over `total_steps` optimizer steps (SFT,
    as the paper) or a constant rate (`schedule="constant"`: PPO, as TRL)."""

    lr: float
    total_steps: int
    warmup_steps: int
    batch_size: int
    micro_batch_size: int
    weight_decay: float = 0.0
    schedule: str = "cosine"


@dataclass(frozen=True)
class TrainerSpec:
    """What every rank of a `TrainerGroup` builds: the policy from `model_path`, its optimizer, and
    with `critic` (the value model's optimizer schedule) a critic for PPO."""

    model_path: str
    cfg: TrainerConfig
    model_cfg: ModelConfig
    optim: OptimSchedule
    seed: int = 0
    critic: OptimSchedule | None = None


@dataclass(frozen=True)
class Rendezvous:
    """Where a rank stands in the process group and how it finds rank 0."""

    rank: int
    world_size: int
    master_addr: str
    master_port: int


class PolicyTrainer:
    """One DeepSpeed rank: the policy and, for PPO, the critic (its own model and optimizer)."""

    def __init__(self, spec: TrainerSpec, at: Rendezvous):
        rank, world_size, cfg, model_path = at.rank, at.world_size, spec.cfg, spec.model_path
        os.environ.update(
            RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0", MASTER_ADDR=at.master_addr, MASTER_PORT=str(at.master_port)
        )
        if cfg.device == "cpu":
            os.environ["DS_ACCELERATOR"] = "cpu"
        import deepspeed
        from transformers import AutoModelForCausalLM

        self.rank, self.world_size, self.cfg, self.model_path = rank, world_size, cfg, model_path
        self.export_dtype = getattr(torch, spec.model_cfg.dtype)
        torch.manual_seed(spec.seed)
        if cfg.device == "cpu":
            torch.set_num_threads(cpu_threads(cfg.cpu_threads))
        deepspeed.init_distributed(dist_backend="gloo" if cfg.device == "cpu" else "nccl")
        policy = _prepared(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32), cfg)  # fp32 master weights
        self.engine, self.scheduler = _deepspeed_engine(policy, spec.optim, cfg, world_size)
        self.critic = _deepspeed_engine(ValueModel(model_path, cfg), spec.critic, cfg, world_size)[0] if spec.critic else None
        self.device = self.engine.device
        self.trainable_params = sum(getattr(p, "ds_numel", p.numel()) for p in policy.parameters() if p.requires_grad)

    # --- training ---------------------------------------------------------------------------------

    def train_step(self, micro_batches: list[dict]) -> dict:
        """One optimizer step over this rank's micro-batches (their number is the accumulation count)."""
        self.engine.train()
        nll_total, tokens, grad_norm = 0.0, 0, None
        started = time.perf_counter()
        for mb in micro_batches:
            nll, n = self._nll(mb)
            self.engine.backward(nll / n.clamp_min(1))
            grad_norm = self._step(self.engine) or grad_norm
            nll_total += float(nll.detach())
            tokens += int(n)
        return {
            "nll_sum": nll_total,
            "tokens": tokens,
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": grad_norm or 0.0,
            "seconds": time.perf_counter() - started,
            "global_step": self.engine.global_steps,
        }

    def _nll(self, micro_batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed NLL over the micro-batch's loss tokens, their count), through the DeepSpeed engine."""
        from ledex_rl.losses import masked_nll

        t = self._tensors(micro_batch)
        logits = self.engine(input_ids=t["input_ids"], attention_mask=t["attention_mask"], logits_to_keep=_loss_tail(t["labels"])).logits
        return masked_nll(logits, t["labels"])

    def _step(self, engine) -> float | None:
        """`engine.step()`; at the end of an accumulation cycle, returns the gradient norm before
        clipping. DeepSpeed records that norm at ZeRO 1-3 only: at ZeRO 0 (fp32) it clips and drops
        it, so there the clipping is done here (`_deepspeed_engine` turns DeepSpeed's off)."""
        boundary = engine.is_gradient_accumulation_boundary()
        norm = None
        if boundary and engine.zero_optimization_stage() == 0:
            params = [p for p in engine.module.parameters() if p.grad is not None]
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm or float("inf")))
        engine.step()
        if boundary and norm is None and engine.get_global_grad_norm() is not None:
            norm = float(engine.get_global_grad_norm())
        return norm

    def eval_nll(self, micro_batches: list[dict]) -> tuple[float, int]:
        """(sum of NLL over loss tokens, number of loss tokens), without gradients."""
        self.engine.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for mb in micro_batches:
                nll, n = self._nll(mb)
                total, count = total + float(nll), count + int(n)
        return total, count

    def token_logprobs(self, micro_batches: list[dict]) -> list[list[list[float]]]:
        """Per micro-batch, per example: log p(token t | tokens < t) for t = 1 .. its length - 1."""
        from ledex_rl.losses import logprob_lists

        self.engine.eval()
        out = []
        with torch.no_grad():
            for mb in micro_batches:
                t = self._tensors(mb)
                logits = self.engine(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits
                out.append(logprob_lists(logits, t["input_ids"], t["attention_mask"]))
        return out

    # --- PPO -----------------------------------------------------------------------------------------

    def _policy_forward(self, mb: MicroBatch, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(response logits / temperature: [b, T, V], response log-probs: [b, T]); only the tail that
        holds responses goes through the LM head."""
        from ledex_rl.losses import logits_tail, response_logprobs

        ids = mb.input_ids.to(self.device)
        starts = mb.response_start.to(self.device)
        logits = self.engine(
            input_ids=ids, attention_mask=mb.attention_mask.to(self.device), logits_to_keep=logits_tail(ids, starts)
        ).logits
        return response_logprobs(logits, ids, starts, mb.width, temperature)

    def _critic_forward(self, mb: MicroBatch) -> torch.Tensor:
        """V(state before response token j): [b, T], read at the position that predicts token j."""
        ids = mb.input_ids.to(self.device)
        values = self.critic(ids, mb.attention_mask.to(self.device))
        steps = torch.arange(mb.width, device=self.device)[None]
        index = (mb.response_start.to(self.device)[:, None] - 1 + steps).clamp(max=ids.shape[1] - 2)
        return values.gather(1, index).float()

    def ppo_evaluate(self, micro_batches: list[MicroBatch], temperature: float) -> list[ResponseScores]:
        """Per micro-batch: the current policy's log-probs of the response tokens at the sampling
        temperature, and the critic's values."""
        self.engine.eval()
        if self.critic is not None:
            self.critic.eval()
        out = []
        with torch.no_grad():
            for mb in micro_batches:
                _, logprobs = self._policy_forward(mb, temperature)
                values = self._critic_forward(mb) if self.critic is not None else torch.zeros_like(logprobs)
                out.append(ResponseScores(logprobs.cpu(), values.cpu()))
        return out

    def ppo_step(self, micro_batches: list[MicroBatch], settings: PPOConfig, kl_coef: float = 0.0) -> dict:
        """One optimizer step of the clipped policy objective, and one of the critic's clipped value
        regression, over this rank's micro-batches. Separate optimizers and separate gradient
        clipping: the value loss, whose returns span +-5 and more, never scales the policy's step.
        `kl_coef` > 0 adds GRPO's KL term (the micro-batches then carry the reference's log-probs).
        Micro-batches without `old_logprobs` are the step's only update: the policy has not moved
        since sampling, so this forward's own log-probs are the old ones (the ratio is 1)."""
        from ledex_rl import ppo

        self.engine.train()
        totals = dict.fromkeys(("policy_loss", "kl_loss", "value_loss", "clip_fraction", "entropy", "approx_kl", "kl_per_response"), 0.0)
        norms = {"policy_grad_norm": None, "critic_grad_norm": None}
        for mb in micro_batches:
            mask = mb.response_mask.to(self.device)
            logits, logprobs = self._policy_forward(mb, settings.temperature)
            old_logprobs = mb.old_logprobs.to(self.device) if mb.old_logprobs is not None else logprobs.detach()
            policy_loss, clip_fraction = ppo.policy_loss(logprobs, old_logprobs, mb.advantages.to(self.device), mask, settings.clip_range)
            loss = policy_loss
            if mb.ref_logprobs is not None:
                ref_logprobs = mb.ref_logprobs.to(self.device)
                kl_loss = ppo.kl_loss(logprobs, ref_logprobs, mask)
                loss = policy_loss + kl_coef * kl_loss
                totals["kl_loss"] += float(kl_loss.detach())
                totals["kl_per_response"] += float(((old_logprobs - ref_logprobs) * mask).sum(1).mean())
            self.engine.backward(loss)
            norms["policy_grad_norm"] = self._step(self.engine) or norms["policy_grad_norm"]
            if self.critic is not None:
                self.critic.train()
                values = self._critic_forward(mb)
                value_loss = ppo.value_loss(
                    values, mb.old_values.to(self.device), mb.returns.to(self.device), mask, settings.value_clip_range
                )
                self.critic.backward(value_loss)
                norms["critic_grad_norm"] = self._step(self.critic) or norms["critic_grad_norm"]
                totals["value_loss"] += float(value_loss.detach())
            with torch.no_grad():
                totals["entropy"] += float(ppo.entropy(logits, mask))
                totals["approx_kl"] += float(ppo.masked_mean(old_logprobs - logprobs, mask))
            totals["policy_loss"] += float(policy_loss.detach())
            totals["clip_fraction"] += float(clip_fraction)
        n = max(len(micro_batches), 1)
        return {k: v / n for k, v in totals.items()} | {k: v or 0.0 for k, v in norms.items()} | {"global_step": self.engine.global_steps}

    def _tensors(self, mb: dict) -> dict:
        return {k: torch.tensor(v, dtype=torch.long, device=self.device) for k, v in mb.items()}

    # --- weights out --------------------------------------------------------------------------------

    def _export_buckets(self, max_bytes: int, include_tied: bool = True) -> Iterator[list]:
        """Every rank must iterate (ZeRO-3 gathers are collective); rank 0 receives the tensors."""
        import deepspeed

        from actors.weight_sync import plan_buckets
        from ledex_rl.lora import export_names, export_value

        policy = self.engine.module
        entries = dict(export_names(policy, include_tied))
        itemsize = self.export_dtype.itemsize
        # A merged LoRA weight has the base weight's size: count the first part only.
        sizes = [(name, getattr(parts[0][1], "ds_numel", parts[0][1].numel()) * itemsize) for name, parts in entries.items()]
        for names in plan_buckets(sizes, max_bytes):
            params = list({id(p): p for name in names for _, p in entries[name]}.values())
            gather = deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=self.cfg.zero_stage == 3)
            with gather:
                if self.rank == 0:
                    # No copy here: the consumer serialises each bucket while its weights are gathered.
                    yield [(name, export_value(policy, name, entries[name]).to("cpu", self.export_dtype)) for name in names]
                else:
                    yield []

    def sync_weights(self, engines: Sequence, version: int) -> dict:
        """Send the current weights to every engine (collective over ranks; rank 0 sends)."""
        from actors.weight_sync import send_buckets

        buckets = self._export_buckets(self.cfg.sync_bucket_mb << 20)
        if self.rank != 0:
            for _ in buckets:
                pass
            return {}
        return send_buckets(buckets, engines, version, self.cfg.sync_timeout_s)

    def save_model(self, directory: str, tokenizer_dir: str) -> None:
        """A Hugging Face folder (config, safetensors, tokenizer) that vLLM and transformers load.
        Written to a temporary folder and renamed, so it is whole or absent."""
        from safetensors.torch import save_file

        state = {}
        for bucket in self._export_buckets(256 << 20, include_tied=False):
            state.update((name, tensor.clone()) for name, tensor in bucket)
        adapter = self._adapter_state() if self.cfg.lora_rank else {}
        if self.rank != 0:
            return
        final, tmp = Path(directory), Path(f"{directory}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        policy = self.engine.module
        config = policy.config
        config.dtype = self.export_dtype
        config.use_cache = True
        config.save_pretrained(tmp)
        if getattr(policy, "generation_config", None) is not None:
            policy.generation_config.save_pretrained(tmp)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if adapter:  # the adapter alone too, in PEFT's format (PeftModel.from_pretrained(base, folder / "adapter"))
            self._save_adapter(adapter, tmp / "adapter")
        _copy_tokenizer(Path(tokenizer_dir), tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)

    def _adapter_state(self) -> dict[str, torch.Tensor]:
        """The LoRA adapter under PEFT's names (collective under ZeRO-3; rank 0 gets the tensors)."""
        import deepspeed

        from ledex_rl.lora import adapter_names

        named = adapter_names(self.engine.module)
        with deepspeed.zero.GatheredParameters(list(named.values()), modifier_rank=None, enabled=self.cfg.zero_stage == 3):
            if self.rank != 0:
                return {}
            return {name: param.detach().to("cpu", self.export_dtype).clone() for name, param in named.items()}

    def _save_adapter(self, adapter: dict[str, torch.Tensor], folder: Path) -> None:
        from safetensors.torch import save_file

        from ledex_rl.lora import DEFAULT_TARGETS, lora_config

        config = lora_config(self.cfg.lora_rank, self.cfg.lora_alpha, DEFAULT_TARGETS)
        config.base_model_name_or_path, config.task_type = self.model_path, "CAUSAL_LM"
        config.target_modules = sorted({name.split(".lora_")[0].rsplit(".", 1)[1] for name in adapter})  # those it has
        config.save_pretrained(str(folder))
        save_file(adapter, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})

    # --- checkpoints (weights, optimizer, scheduler, step) ------------------------------------------

    def save_checkpoint(self, directory: str, client_state: dict) -> None:
        tag = f"step-{self.engine.global_steps}"
        if self.critic is not None:  # first, so that the policy's `latest` marks a whole checkpoint
            self.critic.save_checkpoint(str(Path(directory) / "critic"), tag=tag)
        self.engine.save_checkpoint(directory, tag=tag, client_state={"ledex": client_state})

    def load_checkpoint(self, directory: str) -> dict | None:
        if not (Path(directory) / "latest").is_file():
            return None
        path, client_state = self.engine.load_checkpoint(directory)
        if self.critic is not None:
            self.critic.load_checkpoint(str(Path(directory) / "critic"))
        return client_state.get("ledex") if path is not None else None

    def info(self) -> dict:
        return {
            "rank": self.rank,
            "pid": os.getpid(),
            "global_step": self.engine.global_steps,
            "trainable_params": self.trainable_params,
            "device": str(self.device),
        }


class ValueModel(nn.Module):
    """The critic (the paper's value model): the starting policy's transformer without its LM head,
    and a linear head on the last hidden state. Its own model, as OpenRLHF and verl train it, so that
    regressing returns never rewrites the policy's weights."""

    def __init__(self, model_path: str, cfg: TrainerConfig):
        super().__init__()
        from transformers import AutoModel

        self.trunk = _prepared(AutoModel.from_pretrained(model_path, dtype=torch.float32), cfg)
        text_config = self.trunk.config.get_text_config() if hasattr(self.trunk.config, "get_text_config") else self.trunk.config
        self.head = nn.Linear(text_config.hidden_size, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (text_config.hidden_size + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Values at every position: [b, L]."""
        hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return self.head(hidden).squeeze(-1)


def _prepared(model: nn.Module, cfg: TrainerConfig) -> nn.Module:
    """No KV cache while training; gradient checkpointing and LoRA as configured."""
    from ledex_rl.lora import apply_lora

    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.lora_rank:
        apply_lora(model, cfg.lora_rank, cfg.lora_alpha)
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
    return model


def _deepspeed_engine(module: nn.Module, optim: OptimSchedule, cfg: TrainerConfig, world_size: int):
    """(DeepSpeed engine, LR scheduler) for `module` with a torch AdamW (nothing to compile).
    At ZeRO 0 gradient clipping is left to `PolicyTrainer._step`, which also reports the norm."""
    import deepspeed
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    params = [p for p in module.parameters() if p.requires_grad]
    # Fused: one kernel over all parameters (CPU and CUDA; transformers' default optimizer too). Measured
    # on this CPU for SmolLM2-135M's shapes: 0.05 s a step against 0.2-0.9 s for torch's per-tensor loop.
    optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay, fused=True)
    if optim.schedule == "constant":
        scheduler = get_constant_schedule_with_warmup(optimizer, optim.warmup_steps)
    else:
        scheduler = get_cosine_schedule_with_warmup(optimizer, optim.warmup_steps, max(optim.total_steps, 1))
    ds_config = {
        "train_batch_size": optim.batch_size,
        "train_micro_batch_size_per_gpu": optim.micro_batch_size,
        "gradient_accumulation_steps": optim.batch_size // (optim.micro_batch_size * world_size),
        "gradient_clipping": cfg.max_grad_norm if cfg.zero_stage else 0.0,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.bf16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
    }
    engine, _, _, scheduler = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    return engine, scheduler


def _loss_tail(labels: torch.Tensor) -> int:
    """How many final positions need logits: from the one before the first labelled token on.
    Prompts carry no loss, and at a 49k vocabulary their logits would be most of the memory."""
    has_loss = (labels != -100).any(0).nonzero()
    if has_loss.numel() == 0:
        return 2
    return labels.shape[1] - int(has_loss[0]) + 1


def _copy_tokenizer(source: Path, target: Path) -> None:
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.model",
        "chat_template.jinja",
        "added_tokens.json",
    ):
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


# --- the group ------------------------------------------------------------------------------------------


def _free_port() -> tuple[str, int]:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return ray.util.get_node_ip_address(), port


class TrainerGroup:
    """`trainer.num_ranks` PolicyTrainer actors in one placement group (bundle 0 also fits the
    reference model when it is colocated). Calls fan out to every rank and return rank 0's answer.
    With `critic` (its optimizer schedule) each rank also trains a value model for PPO."""

    def __init__(
        self,
        model_path: str,
        cfg: TrainerConfig,
        model_cfg: ModelConfig,
        optim: OptimSchedule,
        seed: int = 0,
        critic: OptimSchedule | None = None,
        extra_bundle0: ActorResources | None = None,
        name_prefix: str = "trainer",
        node_role: dict[str, float] | None = None,
    ):
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if optim.batch_size % (optim.micro_batch_size * cfg.num_ranks):
            raise ValueError(
                f"batch size {optim.batch_size} must be a multiple of micro batch size x trainer.num_ranks "
                f"({optim.micro_batch_size} x {cfg.num_ranks})"
            )
        self.cfg, self.version = cfg, 0
        # node_role (NodeRolesConfig.resources("trainer")) goes in every bundle: the bundles steer the ranks,
        # and the colocated reference model, to the trainer's node type.
        rank = cfg.rank_resources()
        bundles = [(rank + extra_bundle0 if i == 0 and extra_bundle0 else rank).bundle(node_role) for i in range(cfg.num_ranks)]
        self.placement_group = placement_group(bundles, strategy="PACK")
        try:
            try:
                ray.get(self.placement_group.ready(), timeout=min(30.0, cfg.start_timeout_s))
            except ray.exceptions.GetTimeoutError:
                log.warning(
                    "trainer: waiting up to %.0f s for the cluster to fit %d rank(s) of %s (free now: %s)",
                    cfg.start_timeout_s,
                    cfg.num_ranks,
                    bundles[0],
                    ray.available_resources(),
                )
                ray.get(self.placement_group.ready(), timeout=max(cfg.start_timeout_s - 30.0, 1.0))
        except ray.exceptions.GetTimeoutError:
            raise RuntimeError(
                f"trainer: the cluster cannot fit {cfg.num_ranks} rank(s) of {bundles[0]} within "
                f"{cfg.start_timeout_s:.0f} s; lower trainer.num_cpus_per_rank / num_gpus_per_rank or add nodes"
            ) from None

        in_bundle0 = PlacementGroupSchedulingStrategy(self.placement_group, placement_group_bundle_index=0)
        addr, port = ray.get(ray.remote(_free_port).options(num_cpus=0, scheduling_strategy=in_bundle0).remote())
        env = thread_env(cfg.cpu_threads) if cfg.device == "cpu" else {}
        spec = TrainerSpec(model_path, cfg, model_cfg, optim, seed, critic)
        placed = ActorSpec(rank, env=env, placement_group=self.placement_group, naming="{prefix}-rank{i}")
        self.group = ActorGroup(
            PolicyTrainer, name_prefix, placed, [(spec, Rendezvous(r, cfg.num_ranks, addr, port)) for r in range(cfg.num_ranks)]
        )
        self.ranks = self.group.actors

    def _all(self, method: str, per_rank_args: Sequence[tuple] | None = None, *args):
        calls = [getattr(rank, method).remote(*(per_rank_args[i] if per_rank_args else args)) for i, rank in enumerate(self.ranks)]
        return ray.get(calls)

    def shard(self, micro_batches: Sequence[dict]) -> list[tuple]:
        """Micro-batches dealt round-robin to ranks, padded so that every rank runs as many forward
        passes as the others (ZeRO-3 gathers weights collectively in each). A pad has no loss tokens."""
        from ledex_rl.losses import IGNORE

        k = len(self.ranks)
        mbs = list(micro_batches)
        if mbs and len(mbs) % k:
            if isinstance(mbs[0], MicroBatch):
                pad = mbs[0].padding()
            else:
                pad = dict(mbs[0], labels=[[IGNORE] * len(row) for row in mbs[0]["labels"]])
            mbs += [pad] * (k - len(mbs) % k)
        return [(mbs[r::k],) for r in range(k)]

    def train_step(self, micro_batches: Sequence[dict]) -> dict:
        """One optimizer step; the micro-batches are the whole batch (micro-batch count x size = batch)."""
        results = self._all("train_step", self.shard(micro_batches))
        nll, tokens = sum(r["nll_sum"] for r in results), sum(r["tokens"] for r in results)
        return {
            "loss": nll / max(tokens, 1),
            "tokens": tokens,
            "lr": results[0]["lr"],
            "grad_norm": results[0]["grad_norm"],
            "seconds": max(r["seconds"] for r in results),
            "global_step": results[0]["global_step"],
        }

    def eval_loss(self, micro_batches: Sequence[dict]) -> float:
        """Mean NLL per loss token over the micro-batches."""
        results = self._all("eval_nll", self.shard(micro_batches))
        return sum(r[0] for r in results) / max(sum(r[1] for r in results), 1)

    def token_logprobs(self, micro_batches: Sequence[dict]) -> list[list[float]]:
        """Per example, in order: log p(token t | tokens < t) for t = 1 .. its length - 1."""
        k = len(self.ranks)
        per_rank = self._all("token_logprobs", self.shard(micro_batches))
        out: list[list[float]] = []
        for i in range(len(micro_batches)):
            out += per_rank[i % k][i // k]
        return out

    def ppo_evaluate(self, micro_batches: Sequence[MicroBatch], temperature: float) -> list[ResponseScores]:
        """Per micro-batch, in order: the policy's log-probs (at `temperature`) and the critic's values."""
        k = len(self.ranks)
        per_rank = self._all("ppo_evaluate", [(mbs, temperature) for (mbs,) in self.shard(micro_batches)])
        return [per_rank[i % k][i // k] for i in range(len(micro_batches))]

    def ppo_step(self, micro_batches: Sequence[MicroBatch], settings: PPOConfig, kl_coef: float = 0.0) -> dict:
        """One optimizer step of the policy and one of the critic over a mini-batch of micro-batches
        (with `kl_coef`, GRPO's KL term in the policy's loss)."""
        results = self._all("ppo_step", [(mbs, settings, kl_coef) for (mbs,) in self.shard(micro_batches)])
        return {k: sum(r[k] for r in results) / len(results) for k in results[0]}

    def sync_weights(self, engines) -> dict:
        """Push the current weights to every engine of an EnginePool (or a list of engine actors)."""
        self.version += 1
        handles = getattr(engines, "engines", engines)
        return self._all("sync_weights", None, list(handles), self.version)[0]

    def push_weights(self, engines: list) -> dict | None:
        """Send the current weights, without a new version, to engines that lack them (a replaced
        engine). Before the first sync the engines already hold the starting weights."""
        if self.version == 0:
            return None
        return self._all("sync_weights", None, list(engines), self.version)[0]

    def save_model(self, directory: str | Path, tokenizer_dir: str | Path) -> None:
        self._all("save_model", None, str(directory), str(tokenizer_dir))

    def save_checkpoint(self, directory: str | Path, client_state: dict) -> None:
        self._all("save_checkpoint", None, str(directory), client_state)
        (Path(directory) / "client_state.json").write_text(json.dumps(client_state) + "\n")

    def load_checkpoint(self, directory: str | Path) -> dict | None:
        return self._all("load_checkpoint", None, str(directory))[0]

    def resume(self, checkpoints: Path) -> tuple[dict | None, int]:
        """(what the newest checkpoint under `checkpoints` saved, the step to start from): (None, 0) without one."""
        resumed = self.load_checkpoint(checkpoints) if checkpoints.is_dir() else None
        return resumed, resumed["step"] if resumed else 0

    def info(self) -> list[dict]:
        return self.group.info()

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        self.group.shutdown()
        remove_placement_group(self.placement_group)
