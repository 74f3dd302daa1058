"""The command line as a user meets it: one-line errors, skipping finished stages."""

import subprocess
import sys

from click.testing import CliRunner

from ledex_rl.cli import main
from ledex_rl.train import train


def test_config_command_prints_resolved_yaml():
    result = CliRunner().invoke(main, ["config", "--config", "configs/tiny.yaml", "rl.ppo.kl_coef=0.07"])
    assert result.exit_code == 0 and "kl_coef: 0.07" in result.output


def test_bad_key_is_one_line_error():
    result = subprocess.run([sys.executable, "-m", "ledex_rl.train", "rl.ppo.kl_coeff=0.1"], capture_output=True, text=True)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "unknown config key 'rl.ppo.kl_coeff'" in errors[0]


def test_train_reports_a_missing_stage_input(tmp_path, tiny_model):
    result = CliRunner().invoke(
        train, ["--config", "configs/tiny.yaml", f"run_dir={tmp_path}", f"model.name_or_path={tiny_model}", "stages=[sft]"]
    )
    assert result.exit_code == 2
    assert "train data humaneval [test]: 4 problems" in result.output
    assert "no collected data" in result.output and "run the collect stage first" in result.output
    assert (tmp_path / "config.yaml").is_file()


def test_stage_skipped_when_output_exists(tmp_path):
    (tmp_path / "collect").mkdir()
    (tmp_path / "collect" / "DONE").write_text("{}")
    result = CliRunner().invoke(main, ["collect", f"run_dir={tmp_path}"])
    assert result.exit_code == 0 and "use --force to redo it" in result.output


def test_problems_command_summarises_a_source():
    result = CliRunner().invoke(main, ["problems", "apps", "--path", "tests/fixtures/apps.jsonl", "--split", "train"])
    assert result.exit_code == 0 and "apps [train]: 2 problems, 4 tests, 3 rows skipped" in result.output


def test_sandbox_check_command():
    result = CliRunner().invoke(main, ["sandbox-check"])
    assert result.exit_code == 0, result.output
    assert "isolation tier: " in result.output and result.output.count("[ok]") == 3


def test_a_sandbox_tier_that_cannot_start_is_one_line(monkeypatch):
    """SandboxUnavailable is a user error: one line naming what each tier said, exit code 2."""
    from sandbox import isolation

    # A host where the tier's zygote cannot start (its command exits at once).
    monkeypatch.setattr(isolation, "launch", lambda tier, *args, **kwargs: isolation.Launch(tier, ["/bin/false"], "/tmp", None))
    result = CliRunner().invoke(main, ["sandbox-check", "sandbox.isolation=bwrap"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: no isolation tier works here: bwrap:") and result.output.count("\n") == 1


def test_the_cli_starts_without_torch_or_ray():
    """`ledex-rl --help`, `config` and argument errors answer without importing the heavy stack."""
    code = "import sys, ledex_rl.cli; sys.exit(sorted({'torch', 'ray', 'vllm', 'transformers'} & set(sys.modules)) != [])"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
