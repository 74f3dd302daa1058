"""Weight sync from trainer to rollout engine, against a plain in-process memory copy of the same bytes.

For each model: the time to move every weight into a live vLLM engine through the Ray object store
in buckets (`actors/weight_sync.py`), and the time `torch` takes to copy the same bytes from one
tensor to another in one process (the physical floor on this machine). Two senders:
- `trainer`: the real DeepSpeed trainer group (tiny and SmolLM2-135M);
- `state`: an actor holding a synthetic state with the model's names and shapes, sent by the same
  bucket code (all three, including a 1B-parameter Llama that a CPU trainer could not hold here).
The engine for the 1B state starts with random weights (`rollout.load_format=dummy`).

A CPU engine cannot use new weights as they arrive: vLLM's CPU build hands each linear layer's weight
to oneDNN, which packs it into its own blocked layout (and frees the original). `pack_s` is what
packing the same matrices with vLLM's own op takes in one process: the floor for any in-place load
into a CPU engine, whatever the transport. The figures go to docs/bench/weight_sync.json.

    .venv/bin/python scripts/bench_weight_sync.py [--models tiny,smollm2,1b] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
import torch  # noqa: E402

from actors.rollout_engine import EnginePool  # noqa: E402
from actors.trainer import OptimSchedule, TrainerGroup  # noqa: E402
from ledex_rl.config import load_config  # noqa: E402
from ledex_rl.hardware import cpu_threads  # noqa: E402
from ledex_rl.models import build_tiny_model, resolve_model  # noqa: E402


class StateSender:
    """A synthetic state dict (random values, the model's names and shapes) sent like the trainer sends."""

    def __init__(self, config_dir: str, dtype: str):
        from transformers import AutoConfig, AutoModelForCausalLM

        torch.set_num_threads(1)
        config = AutoConfig.from_pretrained(config_dir)
        with torch.device("meta"):
            shapes = AutoModelForCausalLM.from_config(config)
        self.state = [
            (name, torch.randn(p.shape, dtype=getattr(torch, dtype))) for name, p in shapes.named_parameters(remove_duplicate=False)
        ]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for _, t in self.state)

    def pack_seconds(self, repeats: int) -> float:
        """Best of `repeats`: every matrix of the state packed for oneDNN as the CPU engine packs its
        linear layers after a load (the embedding table is a lookup and is not packed; an untied
        lm_head is)."""
        from vllm import _custom_ops as ops

        matrices = [t for name, t in self.state if t.ndim == 2 and "embed_tokens" not in name]
        torch.set_num_threads(cpu_threads())  # the engine's threads (rollout.cpu_threads: every core)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for matrix in matrices:
                ops.create_onednn_mm(matrix.t(), 32)
            best = min(best, time.perf_counter() - started)
        return best

    def send(self, engines, bucket_mb: int, version: int) -> dict:
        from actors.weight_sync import plan_buckets, send_buckets

        tensors = dict(self.state)
        plan = plan_buckets([(n, t.numel() * t.element_size()) for n, t in self.state], bucket_mb << 20)
        return send_buckets(([(n, tensors[n]) for n in names] for names in plan), engines, version, 600)


def memcpy_seconds(nbytes: int, repeats: int) -> float:
    """One in-process copy of `nbytes` (in 256 MB pieces, like a bucketed copy), best of `repeats`."""
    piece = 256 << 20
    src = torch.empty(min(nbytes, piece), dtype=torch.uint8).random_()
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        left = nbytes
        while left > 0:
            n = min(left, piece)
            dst[:n].copy_(src[:n])
            left -= n
        best = min(best, time.perf_counter() - started)
    return best


def synthetic_1b(folder: Path, tokenizer_from: Path) -> Path:
    """A Llama config with about 1.0B parameters and the tiny tokenizer (vLLM needs one to start)."""
    from transformers import AutoTokenizer, LlamaConfig

    LlamaConfig(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=16,
        vocab_size=32000,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        dtype="float32",
    ).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny,smollm2,1b")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bucket-mb", type=int, default=128)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    tiny = build_tiny_model(target=work / "tiny")
    paths = {"tiny": tiny, "smollm2": Path(resolve_model("smollm2-135m-instruct"))}
    rows = []
    for name in args.models.split(","):
        dummy = name == "1b"
        path = synthetic_1b(work / "llama-1b", tiny) if dummy else paths[name]
        cfg = load_config(
            "configs/tiny.yaml",
            [
                f"model.name_or_path={path}",
                "rollout.num_cpus_per_engine=0.5",
                f"rollout.load_format={'dummy' if dummy else 'auto'}",
                "model.max_model_len=512",
                "trainer.num_cpus_per_rank=0.5",
                f"trainer.sync_bucket_mb={args.bucket_mb}",
            ],
        )
        engines = EnginePool(str(path), cfg.rollout, cfg.model, name_prefix=f"bench-{name}")
        senders = {}
        if not dummy:
            optim = OptimSchedule(lr=1e-5, total_steps=1, warmup_steps=0, batch_size=2, micro_batch_size=2)
            senders["trainer"] = TrainerGroup(str(path), cfg.trainer, cfg.model, optim, name_prefix=f"bench-trainer-{name}")
        state = ray.remote(StateSender).options(num_cpus=0.5).remote(str(path), cfg.model.dtype)
        nbytes = ray.get(state.nbytes.remote())
        senders["state"] = state
        for sender_name, sender in senders.items():
            times, stats = [], {}
            for version in range(1, args.repeats + 1):
                before = sum(i["update_seconds"] for i in engines.info())
                if sender_name == "trainer":
                    stats = sender.sync_weights(engines)
                else:
                    stats = ray.get(state.send.remote(engines.engines, args.bucket_mb, version))
                stats["engine_load_s"] = sum(i["update_seconds"] for i in engines.info()) - before
                times.append(stats["seconds"])
            floor = memcpy_seconds(stats["bytes"], args.repeats)
            pack = ray.get(state.pack_seconds.remote(args.repeats))
            loads = engines.info()[0]  # how the engine took the buckets so far: in place, or through vLLM's reload
            sync = statistics.median(times)
            rows.append(
                {
                    "model": name,
                    "sender": sender_name,
                    "params_m": round(nbytes / 4 / 1e6, 1),
                    "bytes": stats["bytes"],
                    "bytes_mb": round(stats["bytes"] / 2**20),
                    "buckets": stats["buckets"],
                    "sync_s": round(sync, 3),
                    "engine_load_s": round(stats["engine_load_s"], 3),
                    "gb_per_s": round(stats["bytes"] / sync / 1e9, 2),
                    "memcpy_s": round(floor, 4),
                    "x_memcpy": round(sync / floor, 1),
                    "pack_s": round(pack, 3),
                    "pack_x_memcpy": round(pack / floor, 1),
                    "buckets_in_place": loads["buckets_in_place"],
                    "buckets_reloaded": loads["buckets_reloaded"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        for sender in senders.values():
            sender.shutdown() if hasattr(sender, "shutdown") else ray.kill(sender)
        engines.shutdown()
    out = Path(__file__).resolve().parents[1] / "docs" / "bench" / "weight_sync.json"
    out.write_text(json.dumps({"bucket_mb": args.bucket_mb, "repeats": args.repeats, "rows": rows}, indent=2) + "\n")
    print()
    print(
        "| model | sender | params (M) | MB | buckets | sync s | engine load s | GB/s | memcpy s | sync / memcpy | oneDNN pack s | pack / memcpy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['sender']} | {r['params_m']} | {r['bytes_mb']} | {r['buckets']} | {r['sync_s']} | "
            f"{r['engine_load_s']} | {r['gb_per_s']} | {r['memcpy_s']} | {r['x_memcpy']}x | {r['pack_s']} | {r['pack_x_memcpy']}x |"
        )


if __name__ == "__main__":
    main()
