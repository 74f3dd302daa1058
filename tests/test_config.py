"""Config validation: good configs load, bad keys and values give one-line errors naming the key."""

from pathlib import Path

import pytest

from ledex_rl.config import ConfigError, LedexConfig, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["default.yaml", "tiny.yaml", "codellama-7b.yaml", "miniature.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, LedexConfig)


def test_default_yaml_equals_the_dataclass_defaults():
    assert load_config(CONFIGS / "default.yaml") == LedexConfig()


def test_paper_setting_values():
    cfg = load_config(CONFIGS / "codellama-7b.yaml")
    assert cfg.collect.samples_per_problem == 20
    assert (cfg.collect.teacher_samples, cfg.collect.teacher_temperature) == (10, 0.8)
    assert (cfg.sft.lr, cfg.sft.epochs) == (2e-5, 2)
    assert (cfg.rl.ppo.lr, cfg.rl.ppo.batch_size, cfg.rl.ppo.gamma) == (2e-6, 64, 0.99)
    assert [s.name for s in cfg.data.train] == ["mbpp", "apps", "codecontests"]


def test_overrides_parse_yaml_values_and_index_lists():
    cfg = load_config(CONFIGS / "tiny.yaml", ["rl.ppo.kl_coef=0.05", "data.train.0.limit=2", "eval.ks=[1, 2]", "rl.ppo.adaptive_kl=false"])
    assert cfg.rl.ppo.kl_coef == 0.05
    assert cfg.data.train[0].limit == 2
    assert cfg.eval.ks == (1, 2)
    assert cfg.rl.ppo.adaptive_kl is False


def test_int_is_accepted_where_a_float_is_expected():
    assert load_config(None, ["rl.ppo.kl_coef=1"]).rl.ppo.kl_coef == 1.0


def test_exponent_without_a_dot_is_a_number():
    """PyYAML reads `1e-3` as a string; a float setting accepts it anyway."""
    assert load_config(None, ["sft.lr=1e-3"]).sft.lr == 0.001


@pytest.mark.parametrize(
    "override, message",
    [
        ("rl.ppo.kl_coeff=0.1", "unknown config key 'rl.ppo.kl_coeff'; accepted keys under rl.ppo: adaptive_kl"),
        ("modle.name_or_path=x", "unknown config key 'modle'"),
        ("rl.ppo.kl_coef=abc", "rl.ppo.kl_coef: expected a number, got 'abc' (str)"),
        ("sandbox.isolation=docker", "accepted values: auto, bwrap, unshare, process, none"),
        ("trainer.bf16=true", "trainer.bf16: the CPU path trains in float32"),
        ("trainer.num_gpus_per_rank=1", "set trainer.device=cuda"),
        ("trainer.zero_stage=4", "trainer.zero_stage: 4 (int) is not accepted; accepted values: 0, 1, 2, 3"),
        ("sft.epochs=1.5", "sft.epochs: expected an integer"),
        ("rl.ppo.adaptive_kl=maybe", "rl.ppo.adaptive_kl: expected true or false"),
        ("data.train.5.limit=1", "list index must be 0..0"),
        ("rl.ppo.gamma=1.5", "rl.ppo.gamma: must be in (0, 1]"),
        ("sandbox.isolation=none", "also set sandbox.allow_unsafe=true"),
        ("data.train.0.name=leetcode", "accepted values: humaneval"),
        ("collect.teacher.kind=openai", "collect.teacher.model: required for kind=openai"),
        ("novalue", "expected key.path=value"),
    ],
)
def test_bad_config_gives_one_line_error(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_bad_yaml_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name_or_path: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml.*not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_unsafe_isolation_is_allowed_only_when_asked_for():
    cfg = load_config(None, ["sandbox.isolation=none", "sandbox.allow_unsafe=true"])
    assert cfg.sandbox.isolation == "none"


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(CONFIGS / "codellama-7b.yaml")
    path = tmp_path / "again.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_pass_at_k_above_the_sample_count_is_refused():
    with pytest.raises(ConfigError, match=r"pass@5 needs eval.samples_per_task >= 5 \(it is 2\)"):
        load_config(CONFIGS / "tiny.yaml", ["eval.ks=[1, 5]"])


def test_engines_are_eager_on_a_cpu_and_compiled_on_gpus_unless_told():
    assert load_config(None).rollout.eager()
    assert not load_config(None, ["rollout.device=cuda"]).rollout.eager()
    assert not load_config(None, ["rollout.enforce_eager=false"]).rollout.eager()
    assert load_config(None, ["rollout.device=cuda", "rollout.enforce_eager=true"]).rollout.eager()
