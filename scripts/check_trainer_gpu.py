"""The trainer rank on a GPU: DeepSpeed policy and critic (actors/trainer.py) on CUDA, in one process.

For a GPU machine where the whole stack is not installed (no Ray, no vLLM): it needs torch,
transformers, peft and deepspeed, and runs one `PolicyTrainer` as the trainer group's rank 0 would,
at ZeRO 0 (fp32), 2 and 3 (bf16). Checks: token log-probs equal transformers' fp32 forward (also at
the sampling temperature), three SFT steps lower the loss, weights live on the GPU, and three PPO
steps raise rewarded answers and lower punished ones. Prints one JSON line per check and writes
them to $OUT/gpu_trainer_check.json.

    python3 scripts/check_trainer_gpu.py [MODEL_DIR]     # default: the tiny model
    CHECK_DEVICE=cpu DS_ACCELERATOR=cpu .venv/bin/python scripts/check_trainer_gpu.py   # a dry run here
"""

import json
import os
import socket
import sys
import time
import types

sys.path.insert(0, os.getcwd())
try:
    import ray  # noqa: F401
except ImportError:  # not installed there: actors/trainer.py imports it for the group, which this does not use
    sys.modules["ray"] = types.ModuleType("ray")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from actors.trainer import OptimSchedule, PolicyTrainer, Rendezvous, TrainerSpec  # noqa: E402
from ledex_rl import prompts  # noqa: E402
from ledex_rl.config import load_config  # noqa: E402
from ledex_rl.experience import Experience  # noqa: E402
from ledex_rl.sft_data import SFTExample, collate, tokenize  # noqa: E402

T = 0.8
MODEL = sys.argv[1] if len(sys.argv) > 1 else ""
DEVICE = os.environ.get("CHECK_DEVICE", "cuda")  # cpu: a dry run of this script where there is no GPU
OUT = os.environ.get("OUT", ".")
results = []
if not MODEL:
    from ledex_rl.models import build_tiny_model

    MODEL = str(build_tiny_model())
tok = AutoTokenizer.from_pretrained(MODEL)
reference = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).to(DEVICE).eval()


def check(name, ok, **detail):
    results.append({"check": name, "ok": bool(ok), **detail})
    print(json.dumps(results[-1]), flush=True)


def port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = port()


def trainer(zero, bf16, critic=False, lr=1e-3):
    cfg = load_config(
        "configs/tiny.yaml",
        [
            f"trainer.device={DEVICE}",
            f"trainer.num_gpus_per_rank={int(DEVICE == 'cuda')}",
            f"trainer.zero_stage={zero}",
            f"trainer.bf16={'true' if bf16 and DEVICE == 'cuda' else 'false'}",
            f"rl.ppo.temperature={T}",
        ],
    )
    optim = OptimSchedule(lr=lr, total_steps=20, warmup_steps=0, batch_size=4, micro_batch_size=2, schedule="constant")
    spec = TrainerSpec(MODEL, cfg.trainer, cfg.model, optim, 0, optim if critic else None)
    return PolicyTrainer(spec, Rendezvous(0, 1, "127.0.0.1", PORT)), cfg


def sft_micro():
    examples = [
        SFTExample(
            "generate", f"t{i}", ({"role": "user", "content": f"Return {i} plus one."},), f"```python\ndef f():\n    return {i} + 1\n```"
        )
        for i in range(4)
    ]
    batch = collate([tokenize(ex, tok, "chat", 256) for ex in examples], tok.pad_token_id or 0)
    return [{k: v[i : i + 2] for k, v in batch.items()} for i in (0, 2)]


def reference_logprobs(micro):
    out = []
    with torch.no_grad():
        for mb in micro:
            ids = torch.as_tensor(mb["input_ids"]).to(DEVICE)
            logp = reference(ids, attention_mask=torch.as_tensor(mb["attention_mask"]).to(DEVICE)).logits.log_softmax(-1)
            for row, mask in zip(range(len(ids)), mb["attention_mask"]):
                n = int(sum(mask))
                out.append(logp[row, : n - 1].gather(1, ids[row, 1:n, None])[:, 0].cpu())
    return out


def answers():
    prompt_ids, answer_ids, rewards = [], [], []
    for task in ("Write f that returns 1.", "Write g that returns 2."):
        prompt = tok(prompts.render([{"role": "user", "content": task}], tok, "chat")).input_ids
        for answer, reward in ((prompts.answer_text("def f():\n    return 1"), 1.0), ("I am not sure.", -1.0)):
            prompt_ids.append(prompt)
            answer_ids.append(tok(answer, add_special_tokens=False).input_ids + [tok.eos_token_id])
            rewards.append(reward)
    return prompt_ids, answer_ids, torch.tensor(rewards)


def sft_checks(zero, bf16):
    rank, _ = trainer(zero, bf16)
    micro = sft_micro()
    ours = [torch.tensor(row) for rows in rank.token_logprobs(micro) for row in rows]
    diff = max(float((a - b).abs().max()) for a, b in zip(ours, reference_logprobs(micro)))
    check(
        f"zero{zero}{'-bf16' if bf16 else ''}: token log-probs equal transformers' fp32 forward",
        diff < (0.1 if bf16 else 1e-3),
        max_abs_diff=diff,
    )
    before = rank.eval_nll(micro)
    started = time.perf_counter()
    for _ in range(3):
        metrics = rank.train_step(micro)
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    after = rank.eval_nll(micro)
    check(
        f"zero{zero}{'-bf16' if bf16 else ''}: three SFT steps lower the loss",
        after[0] / after[1] < before[0] / before[1] - 0.05,
        nll_before=before[0] / before[1],
        nll_after=after[0] / after[1],
        grad_norm=metrics["grad_norm"],
        step_s=(time.perf_counter() - started) / 3,
    )
    state = dict(rank.engine.module.named_parameters())
    check(f"zero{zero}{'-bf16' if bf16 else ''}: weights live on the GPU", all(p.device.type == DEVICE for p in state.values()))


def ppo_checks(zero, bf16):
    rank, cfg = trainer(zero, bf16, critic=True, lr=1e-4)
    prompt_ids, answer_ids, rewards = answers()

    def evaluate():
        exp = Experience.from_samples(prompt_ids, answer_ids, tok.pad_token_id)
        micro = exp.micro_batches(range(len(exp)), 2)
        scores = rank.ppo_evaluate(micro, T)
        exp.old_logprobs = torch.cat([s.logprobs for s in scores])
        exp.old_values = torch.cat([s.values for s in scores])
        return exp

    exp = evaluate()
    with torch.no_grad():  # the sampling temperature's log-probs, from transformers
        seq = torch.tensor(exp.sequences[0]).to(DEVICE)[None]
        logp = (reference(seq).logits[0] / T).log_softmax(-1)
        start, n = exp.response_start[0], int(exp.response_mask[0].sum())
        expected = logp[start - 1 : start - 1 + n].gather(1, seq[0, start : start + n, None])[:, 0].cpu()
    diff = float((exp.old_logprobs[0, :n] - expected).abs().max())
    check(
        f"ppo zero{zero}{'-bf16' if bf16 else ''}: log-probs at the sampling temperature", diff < (0.1 if bf16 else 1e-3), max_abs_diff=diff
    )
    before = exp.old_logprobs.sum(1) / exp.response_mask.sum(1)
    for _ in range(3):
        exp = evaluate()
        exp.advantages = rewards[:, None] * exp.response_mask
        exp.returns = rewards[:, None] * exp.response_mask
        metrics = rank.ppo_step(exp.micro_batches(range(len(exp)), 2, with_targets=True), cfg.rl.ppo)
    exp = evaluate()
    change = exp.old_logprobs.sum(1) / exp.response_mask.sum(1) - before
    check(
        f"ppo zero{zero}{'-bf16' if bf16 else ''}: rewarded answers rise, punished ones fall",
        bool((change[rewards > 0] > 0.02).all() and (change[rewards < 0] < -0.02).all()),
        change=change.tolist(),
        policy_grad_norm=metrics.get("policy_grad_norm"),
        critic_grad_norm=metrics.get("critic_grad_norm"),
    )


print(torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", torch.__version__, flush=True)
for zero, bf16 in ((0, False), (2, True), (3, True)):
    for run in (sft_checks, ppo_checks):
        try:
            run(zero, bf16)
        except Exception as exc:  # noqa: BLE001
            check(f"{run.__name__} zero{zero}{'-bf16' if bf16 else ''}", False, error=f"{type(exc).__name__}: {exc}"[:2000])
with open(os.path.join(OUT, "gpu_trainer_check.json"), "w") as f:
    json.dump(results, f, indent=1)
print("passed", sum(r["ok"] for r in results), "of", len(results))
