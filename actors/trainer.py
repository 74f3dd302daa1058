"""The policy trainer: DeepSpeed ranks in Ray actors, holding the policy and (for PPO) a value head.

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

from ledex_rl.config import ModelConfig, TrainerConfig

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


class PolicyTrainer:
    """One DeepSpeed rank."""

    def __init__(self, model_path: str, cfg: TrainerConfig, model_cfg: ModelConfig, optim: OptimSchedule, rank: int,
                 world_size: int, master_addr: str, master_port: int, seed: int = 0, value_head: bool = False):
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0", MASTER_ADDR=master_addr,
                          MASTER_PORT=str(master_port))
        if cfg.device == "cpu":
            os.environ["DS_ACCELERATOR"] = "cpu"
        import deepspeed
        from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup

        from ledex_rl.lora import apply_lora

        self.rank, self.world_size, self.cfg = rank, world_size, cfg
        self.export_dtype = getattr(torch, model_cfg.dtype)
        torch.manual_seed(seed)
        if cfg.device == "cpu":
            torch.set_num_threads(cfg.cpu_threads or os.cpu_count() or 1)
        deepspeed.init_distributed(dist_backend="gloo" if cfg.device == "cpu" else "nccl")
        policy = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)  # fp32 master weights
        policy.config.use_cache = False
        if cfg.gradient_checkpointing:
            policy.gradient_checkpointing_enable()
        if cfg.lora_rank:
            apply_lora(policy, cfg.lora_rank, cfg.lora_alpha)
            if cfg.gradient_checkpointing:
                policy.enable_input_require_grads()
        module = PolicyWithValue(policy, value_head)
        if value_head:
            nn.init.normal_(module.value_head.weight, std=1.0 / (module.hidden_size + 1) ** 0.5)
            nn.init.zeros_(module.value_head.bias)
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)  # torch's: no op to compile
        if optim.schedule == "constant":
            from transformers import get_constant_schedule_with_warmup

            scheduler = get_constant_schedule_with_warmup(optimizer, optim.warmup_steps)
        else:
            scheduler = get_cosine_schedule_with_warmup(optimizer, optim.warmup_steps, max(optim.total_steps, 1))
        ds_config = {
            "train_batch_size": optim.batch_size,
            "train_micro_batch_size_per_gpu": optim.micro_batch_size,
            "gradient_accumulation_steps": optim.batch_size // (optim.micro_batch_size * world_size),
            "gradient_clipping": cfg.max_grad_norm,
            "zero_optimization": {"stage": cfg.zero_stage},
            "bf16": {"enabled": cfg.bf16},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 1 << 30,
        }
        self.engine, _, _, self.scheduler = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
        self.device = self.engine.device
        self.trainable_params = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in params)

    # --- training ---------------------------------------------------------------------------------

    def train_step(self, micro_batches: list[dict]) -> dict:
        """One optimizer step over this rank's micro-batches (their number is the accumulation count)."""
        from ledex_rl.losses import masked_nll

        self.engine.train()
        nll_total, tokens = 0.0, 0
        started = time.perf_counter()
        for mb in micro_batches:
            t = self._tensors(mb)
            logits, _ = self.engine(t["input_ids"], t["attention_mask"], _loss_tail(t["labels"]))
            nll, n = masked_nll(logits, t["labels"])
            self.engine.backward(nll / n.clamp_min(1))
            self.engine.step()
            nll_total += float(nll.detach())
            tokens += int(n)
        grad_norm = self.engine.get_global_grad_norm()
        return {"nll_sum": nll_total, "tokens": tokens, "lr": self.scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm) if grad_norm is not None else 0.0, "seconds": time.perf_counter() - started,
                "global_step": self.engine.global_steps}

    def eval_nll(self, micro_batches: list[dict]) -> tuple[float, int]:
        """(sum of NLL over loss tokens, number of loss tokens), without gradients."""
        from ledex_rl.losses import masked_nll

        self.engine.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for mb in micro_batches:
                t = self._tensors(mb)
                logits, _ = self.engine(t["input_ids"], t["attention_mask"], _loss_tail(t["labels"]))
                nll, n = masked_nll(logits, t["labels"])
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
                logits, _ = self.engine(t["input_ids"], t["attention_mask"])
                out.append(logprob_lists(logits, t["input_ids"], t["attention_mask"]))
        return out

    # --- PPO -----------------------------------------------------------------------------------------

    def _response_forward(self, mb: dict):
        """Forward a micro-batch of prompt+response rows; log-probs and values at response positions.
        Response token j of a row sits at position start + j; it is predicted, and its state valued,
        at position start + j - 1."""
        ids = torch.tensor(mb["input_ids"], device=self.device)
        length = ids.shape[1]
        starts = torch.tensor(mb["response_start"], device=self.device)
        width = len(mb["response_mask"][0])
        index = (starts[:, None] - 1 + torch.arange(width, device=self.device)[None]).clamp(max=length - 2)
        # Only the tail that holds responses goes through the LM head: the prompt's logits are never
        # needed, and at a 49k vocabulary they are most of the step's memory.
        keep = length - (min(mb["response_start"]) - 1)
        logits, values = self.engine(ids, torch.tensor(mb["attention_mask"], device=self.device), keep)
        response_logits = logits.gather(1, (index - (length - keep))[..., None].expand(-1, -1, logits.shape[-1]))
        targets = ids.gather(1, (index + 1).clamp(max=length - 1))
        logprobs = torch.log_softmax(response_logits.float(), dim=-1).gather(-1, targets[..., None]).squeeze(-1)
        return response_logits, logprobs, values[:, :-1].gather(1, index)

    def ppo_evaluate(self, micro_batches: list[dict]) -> list[dict]:
        """Per micro-batch: the current policy's log-probs and values of the response tokens."""
        self.engine.eval()
        out = []
        with torch.no_grad():
            for mb in micro_batches:
                _, logprobs, values = self._response_forward(mb)
                out.append({"logprobs": logprobs.float().tolist(), "values": values.float().tolist()})
        return out

    def ppo_step(self, micro_batches: list[dict], clip_range: float, value_clip_range: float, vf_coef: float) -> dict:
        """One optimizer step of the clipped PPO objective over this rank's micro-batches."""
        from ledex_rl import ppo

        self.engine.train()
        totals = {"policy_loss": 0.0, "value_loss": 0.0, "clip_fraction": 0.0, "entropy": 0.0, "approx_kl": 0.0}
        for mb in micro_batches:
            response_logits, logprobs, values = self._response_forward(mb)

            def field(key):
                return torch.tensor(mb[key], dtype=torch.float32, device=self.device)

            mask, old_logprobs = field("response_mask"), field("old_logprobs")
            policy_loss, clip_fraction = ppo.policy_loss(logprobs, old_logprobs, field("advantages"), mask, clip_range)
            value_loss = ppo.value_loss(values.float(), field("old_values"), field("returns"), mask, value_clip_range)
            self.engine.backward(policy_loss + vf_coef * value_loss)
            self.engine.step()
            with torch.no_grad():
                totals["entropy"] += float(ppo.entropy(response_logits, mask))
                totals["approx_kl"] += float(ppo.masked_mean(old_logprobs - logprobs.float(), mask))
            totals["policy_loss"] += float(policy_loss.detach())
            totals["value_loss"] += float(value_loss.detach())
            totals["clip_fraction"] += float(clip_fraction)
        n = max(len(micro_batches), 1)
        return {k: v / n for k, v in totals.items()} | {"global_step": self.engine.global_steps}

    def _tensors(self, mb: dict) -> dict:
        return {k: torch.tensor(v, dtype=torch.long, device=self.device) for k, v in mb.items()}

    # --- weights out --------------------------------------------------------------------------------

    def _export_buckets(self, max_bytes: int, include_tied: bool = True) -> Iterator[list]:
        """Every rank must iterate (ZeRO-3 gathers are collective); rank 0 receives the tensors."""
        import deepspeed

        from actors.weight_sync import plan_buckets
        from ledex_rl.lora import export_names, export_value

        policy = self.engine.module.policy
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
        if self.rank != 0:
            return
        final, tmp = Path(directory), Path(f"{directory}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        policy = self.engine.module.policy
        config = policy.config
        config.dtype = self.export_dtype
        config.use_cache = True
        config.save_pretrained(tmp)
        if getattr(policy, "generation_config", None) is not None:
            policy.generation_config.save_pretrained(tmp)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _copy_tokenizer(Path(tokenizer_dir), tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)

    # --- checkpoints (weights, optimizer, scheduler, step) ------------------------------------------

    def save_checkpoint(self, directory: str, client_state: dict) -> None:
        tag = f"step-{self.engine.global_steps}"
        self.engine.save_checkpoint(directory, tag=tag, client_state={"ledex": client_state})

    def load_checkpoint(self, directory: str) -> dict | None:
        if not (Path(directory) / "latest").is_file():
            return None
        path, client_state = self.engine.load_checkpoint(directory)
        return client_state.get("ledex") if path is not None else None

    def info(self) -> dict:
        return {"rank": self.rank, "pid": os.getpid(), "global_step": self.engine.global_steps,
                "trainable_params": self.trainable_params, "device": str(self.device)}


class PolicyWithValue(nn.Module):
    """The policy and a linear value head on its last hidden state (the paper's value model)."""

    def __init__(self, policy, value_head: bool):
        super().__init__()
        self.policy = policy
        text_config = policy.config.get_text_config() if hasattr(policy.config, "get_text_config") else policy.config
        self.hidden_size = text_config.hidden_size
        self.value_head = nn.Linear(self.hidden_size, 1) if value_head else None

    def forward(self, input_ids, attention_mask, logits_to_keep: int = 0):
        """(logits of the last `logits_to_keep` positions, or all when 0; values at every position)."""
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                          output_hidden_states=self.value_head is not None, logits_to_keep=logits_to_keep)
        values = self.value_head(out.hidden_states[-1]).squeeze(-1) if self.value_head is not None else None
        return out.logits, values


def _loss_tail(labels: torch.Tensor) -> int:
    """How many final positions need logits: from the one before the first labelled token on.
    Prompts carry no loss, and at a 49k vocabulary their logits would be most of the memory."""
    has_loss = (labels != -100).any(0).nonzero()
    if has_loss.numel() == 0:
        return 2
    return labels.shape[1] - int(has_loss[0]) + 1


def _copy_tokenizer(source: Path, target: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                 "tokenizer.model", "chat_template.jinja", "added_tokens.json"):
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
    reference model when it is colocated). Calls fan out to every rank and return rank 0's answer."""

    def __init__(self, model_path: str, cfg: TrainerConfig, model_cfg: ModelConfig, optim: OptimSchedule, seed: int = 0,
                 value_head: bool = False, extra_bundle0: dict | None = None, name_prefix: str = "trainer"):
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if optim.batch_size % (optim.micro_batch_size * cfg.num_ranks):
            raise ValueError(f"batch size {optim.batch_size} must be a multiple of micro batch size x trainer.num_ranks "
                             f"({optim.micro_batch_size} x {cfg.num_ranks})")
        self.cfg, self.version = cfg, 0
        bundles = [{"CPU": cfg.num_cpus_per_rank, **({"GPU": cfg.num_gpus_per_rank} if cfg.num_gpus_per_rank else {})}
                   for _ in range(cfg.num_ranks)]
        for key, amount in (extra_bundle0 or {}).items():
            bundles[0][key] = bundles[0].get(key, 0) + amount
        self.placement_group = placement_group(bundles, strategy="PACK")
        try:
            try:
                ray.get(self.placement_group.ready(), timeout=min(30.0, cfg.start_timeout_s))
            except ray.exceptions.GetTimeoutError:
                log.warning("trainer: waiting up to %.0f s for the cluster to fit %d rank(s) of %s (free now: %s)",
                            cfg.start_timeout_s, cfg.num_ranks, bundles[0], ray.available_resources())
                ray.get(self.placement_group.ready(), timeout=max(cfg.start_timeout_s - 30.0, 1.0))
        except ray.exceptions.GetTimeoutError:
            raise RuntimeError(f"trainer: the cluster cannot fit {cfg.num_ranks} rank(s) of {bundles[0]} within "
                               f"{cfg.start_timeout_s:.0f} s; lower trainer.num_cpus_per_rank / num_gpus_per_rank or add nodes") from None

        def in_bundle(i):
            return PlacementGroupSchedulingStrategy(self.placement_group, placement_group_bundle_index=i)

        addr, port = ray.get(ray.remote(_free_port).options(num_cpus=0, scheduling_strategy=in_bundle(0)).remote())
        threads = str(cfg.cpu_threads or os.cpu_count() or 1)
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} if cfg.device == "cpu" else {}
        remote = ray.remote(PolicyTrainer)
        self.ranks = [
            remote.options(name=f"{name_prefix}-rank{r}", num_cpus=cfg.num_cpus_per_rank, num_gpus=cfg.num_gpus_per_rank,
                           scheduling_strategy=in_bundle(r), runtime_env={"env_vars": env}, max_restarts=0).remote(
                model_path, cfg, model_cfg, optim, r, cfg.num_ranks, addr, port, seed, value_head)
            for r in range(cfg.num_ranks)
        ]
        ray.get([rank.info.remote() for rank in self.ranks])

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
            pad = dict(mbs[0])
            if "labels" in pad:
                pad["labels"] = [[IGNORE] * len(row) for row in pad["labels"]]
            if "response_mask" in pad:
                pad["response_mask"] = [[0] * len(row) for row in pad["response_mask"]]
            mbs += [pad] * (k - len(mbs) % k)
        return [(mbs[r::k],) for r in range(k)]

    def train_step(self, micro_batches: Sequence[dict]) -> dict:
        """One optimizer step; the micro-batches are the whole batch (micro-batch count x size = batch)."""
        results = self._all("train_step", self.shard(micro_batches))
        nll, tokens = sum(r["nll_sum"] for r in results), sum(r["tokens"] for r in results)
        return {"loss": nll / max(tokens, 1), "tokens": tokens, "lr": results[0]["lr"], "grad_norm": results[0]["grad_norm"],
                "seconds": max(r["seconds"] for r in results), "global_step": results[0]["global_step"]}

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

    def ppo_evaluate(self, micro_batches: Sequence[dict]) -> list[dict]:
        k = len(self.ranks)
        per_rank = self._all("ppo_evaluate", self.shard(micro_batches))
        return [per_rank[i % k][i // k] for i in range(len(micro_batches))]

    def ppo_step(self, micro_batches: Sequence[dict], clip_range: float, value_clip_range: float, vf_coef: float) -> dict:
        """One optimizer step over a mini-batch given as micro-batches."""
        shards = [(mbs, clip_range, value_clip_range, vf_coef) for (mbs,) in self.shard(micro_batches)]
        results = self._all("ppo_step", shards)
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

    def info(self) -> list[dict]:
        return self._all("info")

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for rank in self.ranks:
            ray.kill(rank)
        remove_placement_group(self.placement_group)
